"""gradflow inside the JAX ecosystem's tools: optax wrappers, flax TrainState, nnx.Optimizer.

gradflow transforms are plain ``(init, update)`` NamedTuples, so optax's
wrappers take them as they are: ``optax.MultiSteps`` (gradient accumulation),
``optax.masked`` and ``optax.partition`` (parameter groups, hence gradflow has
no masked/partition of its own), ``optax.inject_hyperparams``; and so do flax's
``TrainState`` and ``nnx.Optimizer``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf
from tests import catalog

STEPS = 6


def _params() -> dict:
    rng = np.random.default_rng(0)
    return {
        "encoder": {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32), "b": jnp.zeros((3,), jnp.float32)},
        "head": {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32)},
    }


def _grads(n: int) -> list:
    rng = np.random.default_rng(1)
    return [jax.tree.map(lambda p: jnp.asarray(rng.standard_t(3, p.shape), p.dtype), _params()) for _ in range(n)]


def _run(tx, grads, params=None):
    params = _params() if params is None else params
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    for g in grads:
        params, state = step(params, state, g)
    return params, state


# --------------------------------------------------------------------------------------------
# optax.MultiSteps: k micro-batches, one optimizer step on their mean


MULTISTEPS_CASES = ["sgd_momentum", "adam", "lamb", "adam_warmup_cosine", "rmsprop_centered_momentum"]


@pytest.mark.parametrize("name", MULTISTEPS_CASES)
def test_multisteps_accumulates_then_steps_with_the_mean(name):
    k = 3
    micro = _grads(k * STEPS)
    got, state = _run(optax.MultiSteps(catalog.OPTIMIZERS[name](), every_k_schedule=k), micro)
    means = [jax.tree.map(lambda *g: sum(g) / k, *micro[i * k : (i + 1) * k]) for i in range(STEPS)]
    want, _ = _run(catalog.OPTIMIZERS[name](), means)
    chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-6)
    assert int(state.gradient_step) == STEPS
    # The inner state (and its step counter, which drives bias corrections and schedules) moved STEPS times.
    counts = [x for x in jax.tree.leaves(state.inner_opt_state) if x.dtype == jnp.int32]
    assert all(int(c) == STEPS for c in counts), counts


def test_multisteps_passes_the_loss_to_gradflow_loss_driven_transforms():
    """MultiSteps hands extra args (value=loss) to a gradflow transform with no wrapping.

    gradflow's transform type is ``optax.GradientTransformationExtraArgs``, so optax forwards them.
    """
    inner = gf.chain(gf.sgd(0.1), gf.reduce_on_plateau(0.5, patience=0))
    tx = optax.MultiSteps(inner, every_k_schedule=2)
    params = _params()
    state = tx.init(params)
    for g in _grads(8):
        _, state = jax.jit(tx.update)(g, state, params, value=jnp.float32(1.0))
    # A constant loss never improves after the first evaluation: 4 real steps -> 3 reductions.
    np.testing.assert_allclose(float(state.inner_opt_state[1].scale), 0.5**3)


def test_gradflow_transforms_are_optax_transforms():
    for name in catalog.OPTIMIZERS:
        tx = catalog.OPTIMIZERS[name]()
        assert isinstance(tx, optax.GradientTransformation), name
        assert isinstance(tx, optax.GradientTransformationExtraArgs), name
    assert isinstance(gf.identity().init({}), optax.EmptyState)
    assert gf.EmptyState is optax.EmptyState


def test_optax_chain_passes_the_loss_to_skip_spikes():
    """Inside optax.chain, skip_spikes watches the loss it is given (a 1e6 loss spike is skipped)."""
    tx = optax.chain(gf.skip_spikes(gf.sgd(0.1), min_samples=4, window=8))
    params = _params()
    state = tx.init(params)
    step = jax.jit(tx.update)
    g = jax.tree.map(jnp.ones_like, params)
    for i in range(8):
        _, state = step(g, state, params, value=jnp.float32(1.0 + 0.01 * (i % 3)))
    updates, state = step(g, state, params, value=jnp.float32(1e6))
    assert bool(state[0].skipped)
    assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))


def test_optax_chain_passes_the_loss_to_reduce_on_plateau():
    tx = optax.chain(gf.sgd(0.1), gf.reduce_on_plateau(0.5, patience=0))
    params = _params()
    state = tx.init(params)
    for g in _grads(4):
        _, state = jax.jit(tx.update)(g, state, params, value=jnp.float32(1.0))
    np.testing.assert_allclose(float(state[1].scale), 0.5**3)


# --------------------------------------------------------------------------------------------
# Parameter groups: optax.masked and optax.partition


def test_optax_masked_applies_gradflow_only_to_the_masked_leaves():
    mask = {"encoder": {"w": True, "b": False}, "head": {"w": True}}
    grads = _grads(STEPS)
    got, _ = _run(optax.chain(optax.masked(gf.adam(0.05), mask), optax.masked(gf.sgd(0.1), _invert(mask))), grads)
    adam_only, _ = _run(gf.adam(0.05), grads)
    sgd_only, _ = _run(gf.sgd(0.1), grads)
    chex.assert_trees_all_close(got["encoder"]["w"], adam_only["encoder"]["w"], rtol=1e-6)
    chex.assert_trees_all_close(got["head"]["w"], adam_only["head"]["w"], rtol=1e-6)
    chex.assert_trees_all_close(got["encoder"]["b"], sgd_only["encoder"]["b"], rtol=1e-6)


def _invert(mask):
    return jax.tree.map(lambda m: not m, mask)


@pytest.mark.parametrize(
    "mask",
    [{"encoder": {"w": True, "b": False}, "head": True}, {"encoder": False, "head": True}],
    ids=["per_leaf", "prefix"],
)
def test_weight_decay_mask_inside_partition_and_as_a_prefix_as_in_optax(mask):
    # optax.partition hands each group MaskedNode placeholders for the others' leaves; the
    # mask must read them, and a prefix mask, as optax.adamw's does.
    labels = {"encoder": "body", "head": "head"}
    grads = _grads(STEPS)
    for adamw in (gf.adamw, gf.lamb):
        make = lambda lib_adamw: optax.partition(  # noqa: E731
            {"body": lib_adamw(0.05, weight_decay=0.1, mask=mask), "head": optax.sgd(0.1)}, labels
        )
        got, _ = _run(make(adamw), grads)
        want, _ = _run(make(getattr(optax, adamw.__name__)), grads)
        chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    got, _ = _run(gf.adamw(0.05, weight_decay=0.1, mask=mask), grads)
    want, _ = _run(optax.adamw(0.05, weight_decay=0.1, mask=mask), grads)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


def test_optax_partition_gives_each_group_its_own_gradflow_optimizer():
    labels = {"encoder": {"w": "body", "b": "body"}, "head": {"w": "head"}}
    grads = _grads(STEPS)
    tx = optax.partition(
        {"body": gf.chain(gf.clip_by_global_norm(1.0), gf.adamw(0.05, weight_decay=0.1)), "head": gf.sgd(0.1, 0.9)},
        labels,
    )
    got, _ = _run(tx, grads)
    body = lambda tree: {"encoder": tree["encoder"]}  # noqa: E731
    head = lambda tree: {"head": tree["head"]}  # noqa: E731
    want_body, _ = _run(
        gf.chain(gf.clip_by_global_norm(1.0), gf.adamw(0.05, weight_decay=0.1)), [body(g) for g in grads], body(_params())
    )
    want_head, _ = _run(gf.sgd(0.1, 0.9), [head(g) for g in grads], head(_params()))
    chex.assert_trees_all_close(got["encoder"], want_body["encoder"], rtol=1e-6)
    chex.assert_trees_all_close(got["head"], want_head["head"], rtol=1e-6)


def test_optax_partition_can_freeze_a_group():
    labels = {"encoder": {"w": "frozen", "b": "frozen"}, "head": {"w": "train"}}
    got, _ = _run(optax.partition({"frozen": optax.set_to_zero(), "train": gf.lamb(0.05)}, labels), _grads(STEPS))
    chex.assert_trees_all_equal(got["encoder"], _params()["encoder"])
    assert not np.allclose(got["head"]["w"], _params()["head"]["w"])


# --------------------------------------------------------------------------------------------
# optax.inject_hyperparams


def test_optax_inject_hyperparams_drives_gradflow_sgd():
    grads = _grads(STEPS)
    tx = optax.inject_hyperparams(gf.sgd)(learning_rate=0.1, momentum=0.9)
    got, state = _run(tx, grads)
    want, _ = _run(gf.sgd(0.1, momentum=0.9), grads)
    chex.assert_trees_all_close(got, want, rtol=1e-6)
    # Changing the injected learning rate in the state changes the next step, without a new transform.
    state.hyperparams["learning_rate"] = jnp.asarray(0.0, jnp.float32)
    updates, _ = tx.update(grads[0], state, got)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, updates))


@pytest.mark.parametrize(
    "factory", [gf.adagrad, gf.rmsprop, gf.adam, gf.amsgrad, gf.adamw, gf.lars, gf.lamb], ids=lambda f: f.__name__
)
def test_optax_inject_hyperparams_drives_adaptive_optimizers(factory):
    """optax passes every float default (b1, eps, ...) as a traced array; gradflow's blocks must not branch on them."""
    grads = _grads(3)
    got, _ = _run(optax.inject_hyperparams(factory)(learning_rate=0.01), grads)
    want, _ = _run(factory(0.01), grads)
    chex.assert_trees_all_close(got, want, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# flax


def _loss(params, x, y):
    hidden = jnp.tanh(x @ params["encoder"]["w"] + params["encoder"]["b"])
    return jnp.mean((hidden @ params["head"]["w"] - y) ** 2)


def _batches(n: int):
    rng = np.random.default_rng(2)
    return [(jnp.asarray(rng.standard_normal((8, 4)), jnp.float32), jnp.asarray(rng.standard_normal((8, 2)), jnp.float32)) for _ in range(n)]


def test_flax_train_state_with_a_gradflow_optimizer():
    from flax.training import train_state

    tx = gf.chain(gf.clip_by_global_norm(1.0), gf.adam(0.05))
    state = train_state.TrainState.create(apply_fn=None, params=_params(), tx=tx)
    params, opt_state = _params(), tx.init(_params())

    @jax.jit
    def train_step(state, x, y):
        return state.apply_gradients(grads=jax.grad(_loss)(state.params, x, y))

    for x, y in _batches(STEPS):
        state = train_step(state, x, y)
        updates, opt_state = tx.update(jax.grad(_loss)(params, x, y), opt_state, params)
        params = gf.apply_updates(params, updates)
    chex.assert_trees_all_close(state.params, params, rtol=1e-6)
    assert int(state.step) == STEPS
    assert int(state.opt_state[1][0].count) == STEPS


def test_flax_nnx_optimizer_with_a_gradflow_optimizer_and_loss_driven_scale():
    from flax import nnx

    model = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
    tx = gf.chain(gf.adam(0.05), gf.reduce_on_plateau(0.5, patience=0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    params = jax.tree.map(jnp.array, nnx.state(model, nnx.Param))
    opt_state = tx.init(params)

    def loss_fn(model, x, y):
        return jnp.mean((model(x) - y) ** 2)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        optimizer.update(model, grads, value=loss)
        return loss

    batches = _batches(STEPS)
    for x, y in batches:
        train_step(model, optimizer, x, y)
    # The same steps by hand on the parameter state.
    reference = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
    graphdef, _ = nnx.split(reference, nnx.Param)
    for x, y in batches:
        loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p), x, y))(params)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        params = gf.apply_updates(params, updates)
    chex.assert_trees_all_close(
        jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(params), rtol=1e-5, atol=1e-7
    )
    assert int(optimizer.step[...]) == STEPS
