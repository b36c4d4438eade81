"""inject_hyperparams: bitwise equal to the plain optimizer, no recompiles, float32 hyperparameters."""

from __future__ import annotations

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import gradflow as gf
from gradflow import hparams
from tests import reference

SHAPES = {"w": (8, 5), "b": (5,), "s": ()}
STEPS = 500


def _problem(seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = reference.spiky_gradients(rng, SHAPES, steps)
    stacked = {k: np.stack([g[k] for g in grads]) for k in SHAPES}
    return params, stacked


def _trajectory(tx, params, grads, dtype=jnp.float32):
    """Parameters after every step, under jit (lax.scan).

    The state is initialised outside and passed in, as a training loop does:
    the injected hyperparameters are then run-time values, not constants XLA
    could fold into the compiled step.
    """
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    grads = jax.tree.map(lambda x: jnp.asarray(x, dtype), grads)

    @jax.jit
    def go(params, state, grads):
        def body(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            p = gf.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(body, (params, state), grads)

    (_, state), traj = go(params, tx.init(params), grads)
    return jax.tree.map(np.asarray, traj), state


def _bits_equal(a, b):
    for k in a:
        assert a[k].dtype == b[k].dtype
        np.testing.assert_array_equal(a[k].view(np.uint32 if a[k].dtype == np.float32 else np.uint64),
                                      b[k].view(np.uint32 if b[k].dtype == np.float32 else np.uint64), err_msg=k)


def wd_momentum(learning_rate, weight_decay, momentum=0.9):
    """A local factory: decayed weights, momentum, step (L2-regularised SGD)."""
    return gf.chain(gf.add_decayed_weights(weight_decay), gf.trace(momentum), gf.scale_by_learning_rate(learning_rate))


COSINE = gf.warmup_cosine_decay_schedule(0.0, 0.1, 50, 400, 0.001)

CASES = [
    ("sgd", gf.sgd, dict(learning_rate=0.05)),
    ("sgd_momentum", gf.sgd, dict(learning_rate=0.01, momentum=0.9)),
    ("sgd_nesterov", gf.sgd, dict(learning_rate=0.01, momentum=0.9, nesterov=True)),
    ("sgd_dampening", gf.sgd, dict(learning_rate=0.02, momentum=0.8, dampening=0.3)),
    ("sgd_schedule", gf.sgd, dict(learning_rate=COSINE, momentum=0.9)),
    ("scale_by_learning_rate", gf.scale_by_learning_rate, dict(learning_rate=0.03)),
    ("add_decayed_weights", gf.add_decayed_weights, dict(weight_decay=1e-2)),
    ("wd_momentum_chain", wd_momentum, dict(learning_rate=0.01, weight_decay=5e-4, momentum=0.95)),
    # Every optimizer of gradflow.optimizers, and the adaptive blocks.
    ("adagrad", gf.adagrad, dict(learning_rate=0.05)),
    ("adagrad_lr_decay", gf.adagrad, dict(learning_rate=0.05, lr_decay=0.01, initial_accumulator_value=0.1)),
    ("adagrad_eps_in_sqrt", gf.adagrad, dict(learning_rate=0.05, eps=1e-7, eps_in_sqrt=True)),
    ("adagrad_schedule_lr_decay", gf.adagrad, dict(learning_rate=COSINE, lr_decay=0.02)),
    ("rmsprop", gf.rmsprop, dict(learning_rate=0.01)),
    ("rmsprop_centered", gf.rmsprop, dict(learning_rate=0.01, decay=0.95, centered=True)),
    ("rmsprop_momentum", gf.rmsprop, dict(learning_rate=0.01, momentum=0.9)),
    ("rmsprop_nesterov", gf.rmsprop, dict(learning_rate=0.01, momentum=0.9, nesterov=True)),
    ("rmsprop_centered_momentum_bias_correction", gf.rmsprop,
     dict(learning_rate=0.01, decay=0.99, centered=True, momentum=0.8, initial_scale=0.1, bias_correction=True)),
    ("rmsprop_eps_in_sqrt_bias_correction", gf.rmsprop,
     dict(learning_rate=0.01, decay=0.99, eps_in_sqrt=True, initial_scale=0.1, bias_correction=True)),
    ("adam", gf.adam, dict(learning_rate=0.01)),
    ("adam_nesterov", gf.adam, dict(learning_rate=0.01, nesterov=True)),
    ("adam_no_bias_correction", gf.adam, dict(learning_rate=0.01, b1=0.8, b2=0.99, bias_correction=False)),
    ("adam_eps_root_schedule", gf.adam, dict(learning_rate=COSINE, b2=0.95, eps=1e-6, eps_root=1e-8)),
    ("amsgrad", gf.amsgrad, dict(learning_rate=0.01)),
    ("amsgrad_no_bias_correction", gf.amsgrad, dict(learning_rate=0.01, bias_correction=False)),
    ("amsgrad_max_of_debiased", gf.amsgrad, dict(learning_rate=0.01, b1=0.0, max_of_debiased=True)),
    ("adamw", gf.adamw, dict(learning_rate=0.01, weight_decay=0.05)),
    ("adamw_schedules", gf.adamw, dict(learning_rate=COSINE, weight_decay=gf.linear_schedule(0.1, 0.0, 300))),
    ("lars", gf.lars, dict(learning_rate=0.1, weight_decay=1e-3)),
    ("lars_nesterov_eps", gf.lars, dict(learning_rate=0.1, eps=1e-6, momentum=0.8, nesterov=True)),
    ("lars_decay_inside_norm", gf.lars, dict(learning_rate=0.1, weight_decay=1e-3, eps=1e-9, decay_inside_norm=True)),
    ("lamb", gf.lamb, dict(learning_rate=0.01, weight_decay=0.01)),
    ("scale_by_trust_ratio", gf.scale_by_trust_ratio, dict(trust_coefficient=0.01, weight_decay=0.1)),
    # The spike remedies of gradflow.spikes (spam, whose moments follow two selects, is a contraction case).
    ("stable_adamw", gf.stable_adamw, dict(learning_rate=0.01, weight_decay=0.05, clip_threshold=0.5)),
    ("adam_atan2", gf.adam_atan2, dict(learning_rate=0.01, weight_decay=0.05)),
]


@pytest.mark.parametrize("name,factory,kwargs", CASES, ids=[c[0] for c in CASES])
def test_bitwise_equal_to_plain_optimizer_over_500_steps(name, factory, kwargs):
    params, grads = _problem()
    plain, _ = _trajectory(factory(**kwargs), params, grads)
    injected, state = _trajectory(gf.inject_hyperparams(factory)(**kwargs), params, grads)
    _bits_equal(injected, plain)
    assert int(state.count) == STEPS
    assert all(v.dtype == jnp.float32 for v in state.hyperparams.values())
    assert {k for k, v in kwargs.items() if not isinstance(v, bool)} <= set(state.hyperparams)
    # The trajectory really moves (so equality is not the trivial one).
    assert all(not np.array_equal(injected[k][-1], params[k].astype(np.float32)) for k in injected)


def test_cases_cover_every_optimizer():
    from gradflow import optimizers

    public = {
        name for name, f in vars(optimizers).items()
        if inspect.isfunction(f) and f.__module__ == optimizers.__name__ and not name.startswith("_")
    }
    assert public <= {factory.__name__ for _, factory, _ in CASES}


def test_bitwise_equal_in_float64(x64):
    params, grads = _problem(1, steps=60)
    kwargs = dict(learning_rate=0.01, momentum=0.9, dampening=0.1)
    plain, _ = _trajectory(gf.sgd(**kwargs), params, grads, jnp.float64)
    injected, state = _trajectory(gf.inject_hyperparams(gf.sgd)(**kwargs), params, grads, jnp.float64)
    _bits_equal(injected, plain)
    assert state.hyperparams["learning_rate"].dtype == jnp.float64


def test_new_learning_rate_takes_effect_without_recompiling():
    tx = gf.inject_hyperparams(gf.sgd)(learning_rate=0.1, momentum=0.0)
    params = {"w": jnp.ones((4,), jnp.float32)}
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        u, state = tx.update({"w": jnp.ones((4,), jnp.float32)}, state, params)
        return u, state

    u, state = step(params, state)
    np.testing.assert_array_equal(u["w"], np.full(4, -0.1, np.float32))
    state = gf.set_hyperparams(state, learning_rate=0.01)
    assert float(gf.current_hyperparams(state)["learning_rate"]) == np.float32(0.01)
    u, state = step(params, state)
    np.testing.assert_array_equal(u["w"], np.full(4, -0.01, np.float32))
    state = gf.set_hyperparams(state, momentum=0.5)  # momentum too: sgd keeps its buffer when injected
    u, state = step(params, state)
    np.testing.assert_allclose(u["w"], np.full(4, -0.01 * 1.5), rtol=1e-6)
    assert len(traces) == 1
    assert step._cache_size() == 1


def test_schedule_count_matches_scale_by_schedule():
    sched = gf.piecewise_constant_schedule(1.0, {1: 0.5, 3: 0.1})
    params, grads = _problem(2, steps=6)
    injected_tx = gf.inject_hyperparams(gf.scale_by_learning_rate)(learning_rate=sched)
    plain_tx = gf.scale_by_schedule(lambda c: -1.0 * sched(c))
    injected, istate = _trajectory(injected_tx, params, grads)
    plain, pstate = _trajectory(plain_tx, params, grads)
    _bits_equal(injected, plain)
    assert int(istate.count) == int(pstate.count) == 6
    # The state shows the value the next update uses: sched(count).
    tx = gf.inject_hyperparams(gf.sgd)(learning_rate=sched)
    p = {"w": jnp.zeros(())}
    state = tx.init(p)
    seen = [float(gf.current_hyperparams(state)["learning_rate"])]
    for _ in range(4):
        u, state = tx.update({"w": jnp.ones(())}, state, p)
        seen.append(float(gf.current_hyperparams(state)["learning_rate"]))
        assert float(u["w"]) == -seen[-2]
    np.testing.assert_allclose(seen, [1.0, 0.5, 0.5, 0.05, 0.05], rtol=1e-6)


def test_bf16_params_keep_decay_exact_in_float32():
    # A momentum decay of 0.999 rounds to 1.0 in bfloat16; injected, it stays a float32 0.999.
    decay = 0.999
    assert float(jnp.asarray(decay, jnp.bfloat16)) == 1.0
    params = {"w": jnp.zeros((64,), jnp.bfloat16)}
    rng = np.random.default_rng(4)
    grads = rng.standard_normal((300, 64)).astype(np.float32)
    tx = gf.inject_hyperparams(gf.trace)(decay=decay)
    state = tx.init(params)
    assert state.hyperparams["decay"].dtype == jnp.float32
    assert state.hyperparams["decay"] == np.float32(decay)
    step = jax.jit(tx.update)
    b = np.zeros(64, jnp.bfloat16)
    for g in grads:
        gb = jnp.asarray(g, jnp.bfloat16)
        _, state = step({"w": gb}, state, params)
        # Reference: the buffer's arithmetic in float32 with b = 0.999 exactly, stored in bfloat16.
        b = (np.float32(decay) * b.astype(np.float32) + np.asarray(gb, np.float32)).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(state.inner_state.trace["w"]), b)
    assert gf.current_hyperparams(state)["decay"] == np.float32(decay)
    # The plain transform in bfloat16 really does lose the decay (the buffer just sums).
    plain = gf.trace(decay)
    pstate = plain.init(params)
    for g in grads:
        _, pstate = jax.jit(plain.update)({"w": jnp.asarray(g, jnp.bfloat16)}, pstate, params)
    assert not np.array_equal(np.asarray(pstate.trace["w"]), b)
    # optax's inject_hyperparams stores the decay in the parameters' dtype: 1.0.
    ostate = optax.inject_hyperparams(optax.trace)(decay=decay).init(params)
    assert float(ostate.hyperparams["decay"]) == 1.0


def test_current_hyperparams_under_jit_and_nested():
    tx = gf.chain(gf.inject_hyperparams(gf.sgd)(learning_rate=COSINE, momentum=0.9), gf.reduce_on_plateau())
    params = {"w": jnp.ones(3)}
    state = tx.init(params)

    @jax.jit
    def step(state):
        _, state = tx.update({"w": jnp.ones(3)}, state, params, value=1.0)
        return state, gf.current_hyperparams(state)

    for _ in range(60):
        state, hp = step(state)
    np.testing.assert_allclose(float(hp["learning_rate"]), float(COSINE(60)), rtol=1e-7)
    assert float(hp["momentum"]) == np.float32(0.9)
    with pytest.raises(ValueError, match="no inject_hyperparams state"):
        gf.current_hyperparams(gf.sgd(0.1).init(params))
    with pytest.raises(ValueError, match="lr"):
        gf.set_hyperparams(state, lr=0.1)


def test_factory_validates_at_build_time_and_accepts_tracers_in_update():
    with pytest.raises(ValueError, match=r"sgd: learning_rate must be a finite number >= 0, got -1.0"):
        gf.inject_hyperparams(gf.sgd)(learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"sgd: momentum must be in \[0, 1\], got 1.5"):
        gf.inject_hyperparams(gf.sgd)(learning_rate=0.1, momentum=1.5)
    # hparams' checks: tracers pass (their values were checked at build time), numbers and
    # concrete arrays are still checked.
    jax.jit(lambda x: hparams.check_positive("f", "x", x) or x)(jnp.float32(-1.0))
    jax.jit(lambda x: hparams.check_range("f", "x", x, 0.0, 1.0) or x)(jnp.float32(3.0))
    with pytest.raises(ValueError, match="f: x must be a finite number > 0"):
        hparams.check_positive("f", "x", jnp.float32(-1.0))
    assert hparams.static_number(0.5) == 0.5 and hparams.static_number(np.float32(0.5)) == 0.5
    assert hparams.static_number(jnp.float32(0.5)) is None and hparams.static_number(COSINE) is None


def test_static_args_and_branching_factories():
    params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    mask = lambda p: {"w": True, "b": False}  # noqa: E731
    tx = gf.inject_hyperparams(gf.add_decayed_weights, static_args="mask")(weight_decay=0.5, mask=mask)
    u, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(u["w"], 0.5)
    np.testing.assert_allclose(u["b"], 0.0)

    def branching(learning_rate):
        if learning_rate > 0.5:  # Python control flow on the value
            return gf.scale(-1.0)
        return gf.scale_by_learning_rate(learning_rate)

    tx = gf.inject_hyperparams(branching)(learning_rate=0.1)
    with pytest.raises(TypeError, match="static_args"):
        jax.jit(tx.update)({"w": jnp.ones(3)}, tx.init(params), params)
    with pytest.raises(ValueError, match="static_args"):
        gf.inject_hyperparams(gf.sgd, static_args="lr")


def test_wraps_optax_factories():
    params, grads = _problem(5, steps=50)
    plain, _ = _trajectory(optax.adam(1e-2), params, grads)
    injected, state = _trajectory(gf.inject_hyperparams(optax.adam)(learning_rate=1e-2), params, grads)
    for k in plain:
        np.testing.assert_allclose(injected[k], plain[k], rtol=1e-5, atol=1e-6)
    assert {"learning_rate", "b1", "b2", "eps"} <= set(state.hyperparams)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_optax_factories_keep_low_precision_dtypes_and_compile_once(dtype):
    # optax computes b1·μ with the float32 value as it is; the updates and moments must come back
    # in their own dtypes, or the state changes type and the step compiles again.
    params = {"w": jnp.ones((3,), dtype), "b": jnp.zeros((2,), dtype)}
    tx = gf.inject_hyperparams(optax.adam)(learning_rate=1e-2)
    traces = []

    @jax.jit
    def step(state, g):
        traces.append(1)
        return tx.update(g, state, params)

    state = tx.init(params)
    for t in range(3):
        g = jax.tree.map(lambda p: jnp.full_like(p, 0.5 + t), params)
        u, new_state = step(state, g)
        assert jax.tree.map(lambda x: x.dtype, u) == jax.tree.map(lambda x: x.dtype, g)
        assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)
        state = new_state
    assert len(traces) == 1


def test_init_runs_on_shapes_only():
    shapes = {"w": jax.ShapeDtypeStruct((1000, 10), jnp.bfloat16), "b": jax.ShapeDtypeStruct((10,), jnp.float32)}
    for tx in (
        gf.inject_hyperparams(gf.sgd)(learning_rate=COSINE, momentum=0.9),
        gf.reduce_on_plateau(),
        gf.restart_on_loss(COSINE, patience=3),
    ):
        state = jax.eval_shape(tx.init, shapes)
        assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(state))
    assert state.scale.dtype == jnp.float32


# XLA's CPU backend contracts a·b + c·d into one fused multiply-add, and which product it
# fuses can depend on whether a factor is a compile-time constant. Where momentum follows a
# step that is itself a product (g·rsqrt(v) with eps_in_sqrt, or LARS' α·r·(g + λθ) with
# ε = 0), or SPAM's moments follow its reset and clip selects, the plain and injected
# builds may then differ in the last bit of a few elements.
CONTRACTION_CASES = [
    ("rmsprop_eps_in_sqrt_momentum", gf.rmsprop,
     dict(learning_rate=0.01, decay=0.99, centered=True, momentum=0.8, eps_in_sqrt=True, bias_correction=True)),
    ("lars_decay_inside_norm_eps0", gf.lars, dict(learning_rate=0.1, weight_decay=1e-3, decay_inside_norm=True)),
    # SPAM's m ← β₁·m + (1 − β₁)·g after its reset and clip selects
    ("spam", gf.spam, dict(learning_rate=0.01, reset_interval=100, warmup_steps=20, clip_start=5)),
]


@pytest.mark.parametrize("name,factory,kwargs", CONTRACTION_CASES, ids=[c[0] for c in CONTRACTION_CASES])
def test_fma_contraction_cases_agree_to_rounding(name, factory, kwargs):
    params, grads = _problem()
    plain, _ = _trajectory(factory(**kwargs), params, grads)
    injected, _ = _trajectory(gf.inject_hyperparams(factory)(**kwargs), params, grads)
    for k in plain:
        np.testing.assert_allclose(injected[k], plain[k], rtol=2e-6, atol=1e-7, err_msg=k)


ADAPTIVE_B2 = [
    ("adam", gf.adam, dict(learning_rate=1e-3)),
    ("amsgrad", gf.amsgrad, dict(learning_rate=1e-3)),
    ("adamw", gf.adamw, dict(learning_rate=1e-3)),
    ("lamb", gf.lamb, dict(learning_rate=1e-3)),
]


@pytest.mark.parametrize("name,factory,kwargs", ADAPTIVE_B2, ids=[c[0] for c in ADAPTIVE_B2])
def test_bf16_params_keep_b2_exact_in_float32(name, factory, kwargs):
    # b2 = 0.999 is 1.0 in bfloat16; injected it stays a float32 0.999, and v follows it.
    assert float(jnp.asarray(0.999, jnp.bfloat16)) == 1.0
    params = {"w": jnp.ones((64,), jnp.bfloat16)}
    tx = gf.inject_hyperparams(factory)(**kwargs)
    state = tx.init(params)
    hp = gf.current_hyperparams(state)
    assert hp["b2"].dtype == jnp.float32 and hp["b2"] == np.float32(0.999)
    rng = np.random.default_rng(7)
    grads = rng.standard_normal((20, 64)).astype(np.float32)
    step = jax.jit(tx.update)
    v = np.zeros(64, jnp.bfloat16)
    b2 = np.float32(0.999)
    for g in grads:
        gb = jnp.asarray(g, jnp.bfloat16)
        _, state = step({"w": gb}, state, params)
        # Reference from the formula, in float32 with b2 = 0.999 exactly, stored in bfloat16.
        g32 = np.asarray(gb, np.float32)
        v = (v.astype(np.float32) * b2 + (g32 * g32) * (np.float32(1) - b2)).astype(jnp.bfloat16)
    assert gf.current_hyperparams(state)["b2"] == np.float32(0.999)
    adam_state = state.inner_state[0]
    np.testing.assert_allclose(np.asarray(adam_state.nu["w"], np.float32), v.astype(np.float32), rtol=1e-2)
    # With b2 rounded to 1.0 (what bfloat16 hyperparameters would give) v would stay 0.
    assert np.all(np.asarray(adam_state.nu["w"], np.float32) > 0)


LR_CASES = [c for c in CASES if c[1] is not gf.add_decayed_weights and c[1] is not gf.scale_by_trust_ratio
            and not callable(c[2].get("learning_rate"))]


@pytest.mark.parametrize("name,factory,kwargs", LR_CASES, ids=[c[0] for c in LR_CASES])
def test_new_learning_rate_changes_next_step_without_recompiling(name, factory, kwargs):
    tx = gf.inject_hyperparams(factory)(**kwargs)
    rng = np.random.default_rng(3)
    params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}
    g1, g2 = ({k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()} for _ in range(2))
    traces = []

    @jax.jit
    def step(params, state, g):
        traces.append(1)
        return tx.update(g, state, params)

    _, state = step(params, tx.init(params), g1)
    lr = float(gf.current_hyperparams(state)["learning_rate"])
    u_same, _ = step(params, state, g2)
    u_half, _ = step(params, gf.set_hyperparams(state, learning_rate=lr / 2), g2)
    assert len(traces) == 1 and step._cache_size() == 1
    for k in params:
        assert not np.array_equal(np.asarray(u_half[k]), np.asarray(u_same[k])), k
        # The step is α times something that does not depend on α, except for LARS' momentum,
        # which adds μ·b (b from earlier steps) after the scaling.
        if factory is not gf.lars:
            np.testing.assert_array_equal(np.asarray(u_half[k]) * 2, np.asarray(u_same[k]), err_msg=k)


@pytest.mark.parametrize("factory", [gf.lars, gf.lamb])
def test_trust_ratio_axis_name_inside_shard_map(factory):
    mesh = jax.make_mesh((1,), ("x",))
    rng = np.random.default_rng(9)
    params = {"w": jnp.asarray(rng.standard_normal((8, 4)), jnp.float32), "b": jnp.asarray(rng.standard_normal(4), jnp.float32)}
    grads = [{k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for k, v in params.items()} for _ in range(3)]
    specs = {"w": P("x"), "b": P("x")}

    def run(tx, wrap):
        p, s = params, tx.init(params)
        update = wrap(lambda g, s, p: tx.update(g, s, p))
        for g in grads:
            u, s = update(g, s, p)
            p = gf.apply_updates(p, u)
        return p

    plain = run(factory(0.1, weight_decay=0.01), jax.jit)
    sharded_tx = factory(0.1, weight_decay=0.01, axis_name="x")
    state_specs = jax.tree.map(lambda x: P() if x.ndim == 0 else P("x"), sharded_tx.init(params))
    shard = lambda f: jax.jit(jax.shard_map(  # noqa: E731
        f, mesh=mesh, in_specs=(specs, state_specs, specs), out_specs=(specs, state_specs)))
    put = lambda tree, spec: jax.tree.map(  # noqa: E731
        lambda x, sp: jax.device_put(x, jax.sharding.NamedSharding(mesh, sp)), tree, spec)
    p, s = put(params, specs), put(sharded_tx.init(params), state_specs)
    update = shard(lambda g, s, p: sharded_tx.update(g, s, p))
    for g in grads:
        u, s = update(put(g, specs), s, p)
        p = gf.apply_updates(p, u)
    sharded = p
    for k in params:
        np.testing.assert_allclose(np.asarray(sharded[k]), np.asarray(plain[k]), rtol=1e-6, err_msg=k)
    # The axis name reaches the norms: outside shard_map it is unbound.
    with pytest.raises(NameError):
        sharded_tx.update(grads[0], sharded_tx.init(params), params)


# set_hyperparams checks what it sets (issue 13, item 3).
@pytest.mark.parametrize(
    "values, message",
    [
        (dict(b2=1.0), r"set_hyperparams: adam: b2 must be in \[0, 1\), got 1.0"),
        (dict(learning_rate=-0.1), r"set_hyperparams: adam: learning_rate must be a finite number >= 0, got -0.1"),
        (dict(eps=float("nan")), r"set_hyperparams: adam: eps must not be NaN"),
        (dict(b1=np.array([0.9, 0.5, 0.0])), r"set_hyperparams: b1 must be a scalar number"),
        (dict(b1=True), r"set_hyperparams: b1 must be a scalar number, got True"),
    ],
)
def test_set_hyperparams_refuses_what_the_factory_refuses(values, message):
    state = gf.inject_hyperparams(gf.adam)(0.1).init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match=message):
        gf.set_hyperparams(state, **values)


def test_set_hyperparams_uses_the_other_arguments_of_the_build():
    state = gf.inject_hyperparams(gf.sgd)(0.1, momentum=0.9, nesterov=True).init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="set_hyperparams: sgd: nesterov=True needs momentum > 0"):
        gf.set_hyperparams(state, momentum=0.0)
    assert float(gf.set_hyperparams(state, momentum=0.5).hyperparams["momentum"]) == 0.5


def test_set_hyperparams_refuses_a_scheduled_hyperparameter():
    tx = gf.inject_hyperparams(gf.adam)(gf.linear_schedule(0.1, 0.0, 10))
    state = tx.init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"set_hyperparams: \['learning_rate'\] follow a schedule"):
        gf.set_hyperparams(state, learning_rate=0.3)
    assert float(gf.set_hyperparams(state, b1=0.5).hyperparams["b1"]) == 0.5  # the numbers still can be set


def test_set_hyperparams_checks_inside_a_chain_and_keeps_the_tree():
    params = {"w": jnp.ones(3)}
    tx = gf.chain(gf.clip_by_global_norm(1.0), gf.inject_hyperparams(gf.rmsprop)(0.1))
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"set_hyperparams: rmsprop: decay must be in \[0, 1\)"):
        gf.set_hyperparams(state, decay=1.0)
    again = gf.inject_hyperparams(gf.rmsprop)(0.2)
    assert jax.tree.structure(again.init(params)) == jax.tree.structure(state[1])
    new = gf.set_hyperparams(state, decay=0.5)
    assert jax.tree.structure(new) == jax.tree.structure(state)


def test_two_builds_with_equal_mask_trees_give_states_of_one_type():
    params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    make = lambda mask: gf.inject_hyperparams(gf.adamw)(0.1, mask=mask).init(params)  # noqa: E731
    a, b = make({"w": True, "b": False}), make({"w": True, "b": False})
    assert type(a) is type(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    other = make({"w": False, "b": False})
    assert type(other) is not type(a)  # a different mask is a different configuration
    with pytest.raises(ValueError, match=r"set_hyperparams: adamw: b1 must be in \[0, 1\)"):
        gf.set_hyperparams(b, b1=1.0)


# Bad arguments are refused with the function, the argument and the value.


def test_an_integer_hyperparam_dtype_is_refused():
    # int32 would store lr=1e-3, b1=0.9, b2=0.999 as 0: every update 0
    with pytest.raises(ValueError, match=r"inject_hyperparams: hyperparam_dtype must be a floating dtype, got .*int32"):
        gf.inject_hyperparams(gf.adam, hyperparam_dtype=jnp.int32)


def test_a_hyperparam_dtype_that_is_no_dtype_is_refused_when_wrapping():
    with pytest.raises(ValueError, match=r"inject_hyperparams: hyperparam_dtype must be a floating dtype, got 'foo'"):
        gf.inject_hyperparams(gf.adam, hyperparam_dtype="foo")


@pytest.mark.parametrize("bad", [5, [1], ("mask", 2)])
def test_static_args_that_are_not_names_are_refused(bad):
    with pytest.raises(ValueError, match=r"inject_hyperparams: static_args must be a name or names of arguments, got "):
        gf.inject_hyperparams(gf.adamw, static_args=bad)


def test_a_factory_that_is_not_callable_is_refused():
    with pytest.raises(ValueError, match=r"inject_hyperparams: factory must be a function returning a transform, got 5"):
        gf.inject_hyperparams(5)


def test_a_schedule_of_no_argument_is_refused_with_its_argument_named():
    with pytest.raises(TypeError, match=r"inject_hyperparams\(sgd\): learning_rate: the schedule .*lambda.* must take one argument"):
        gf.inject_hyperparams(gf.sgd)(lambda: 0.1)


def test_a_schedule_of_two_arguments_is_refused_by_the_optimizer():
    tx = gf.sgd(lambda step, other: 0.1)
    params = jnp.ones(2)
    with pytest.raises(TypeError, match=r"learning_rate: the schedule .*lambda.* must take one argument, the step"):
        tx.update(params, tx.init(params), params)


PARAMS_AB = {"w": jnp.ones(3), "b": jnp.ones(2)}


def _adam_state():
    return gf.inject_hyperparams(gf.adam)(1e-3).init({"w": jnp.ones(3)})


@pytest.mark.parametrize("bad", ["0.1", "x", None, 1j, np.complex64(1), jnp.array(1.0 + 0j), [0.1], 10**400])
def test_set_hyperparams_takes_only_real_numbers(bad):
    # a string is not a number here, as nowhere else in gradflow; None is not NaN
    with pytest.raises(ValueError, match=r"set_hyperparams: learning_rate must be a scalar number, got "):
        gf.set_hyperparams(_adam_state(), learning_rate=bad)


@pytest.mark.parametrize("good", [0.5, 1, np.float32(0.5), np.int64(2), jnp.array(0.5), jnp.array(2, jnp.int32)])
def test_set_hyperparams_takes_python_numpy_and_jax_numbers(good):
    state = gf.set_hyperparams(_adam_state(), learning_rate=good)
    assert float(gf.current_hyperparams(state)["learning_rate"]) == float(good)


def test_set_hyperparams_does_not_round_a_fraction_into_an_integer_slot_of_an_optax_state():
    # optax.inject_hyperparams keeps learning_rate=1 as int32: 0.5 would be stored as 0
    state = optax.inject_hyperparams(optax.sgd)(learning_rate=1).init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"set_hyperparams: learning_rate is stored as int32, which would round 0.5"):
        gf.set_hyperparams(state, learning_rate=0.5)
    with pytest.raises(ValueError, match=r"set_hyperparams: learning_rate is stored as int32, which would round 1099511627776"):
        gf.set_hyperparams(state, learning_rate=2**40)  # numpy raised OverflowError
    assert int(gf.current_hyperparams(gf.set_hyperparams(state, learning_rate=3))["learning_rate"]) == 3


def test_set_hyperparams_refuses_a_scheduled_hyperparameter_of_an_optax_state():
    # optax's state names its schedules in hyperparams_states; a set value would be overwritten
    sched = optax.linear_schedule(0.1, 0.0, 10)
    state = optax.inject_hyperparams(optax.sgd)(learning_rate=sched, momentum=0.9).init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"set_hyperparams: \['learning_rate'\] follow a schedule"):
        gf.set_hyperparams(state, learning_rate=0.5)
    assert float(gf.current_hyperparams(gf.set_hyperparams(state, momentum=0.5))["momentum"]) == 0.5


def test_set_hyperparams_sets_a_name_in_every_injected_state_that_holds_it():
    tx = optax.partition(
        {"a": gf.inject_hyperparams(gf.sgd)(learning_rate=0.1), "b": gf.inject_hyperparams(gf.adam)(learning_rate=0.2)},
        {"w": "a", "b": "b"},
    )
    state = gf.set_hyperparams(tx.init(PARAMS_AB), learning_rate=0.05)
    found = [s for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "hyperparams")) if hasattr(s, "hyperparams")]
    assert len(found) == 2 and all(s.hyperparams["learning_rate"] == np.float32(0.05) for s in found)
    with pytest.raises(ValueError, match="current_hyperparams: two injected states both hold 'learning_rate'"):
        gf.current_hyperparams(state)


def test_set_hyperparams_judges_a_number_beyond_float32_as_the_inf_it_would_store():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and says so without a NumPy overflow warning
        with pytest.raises(ValueError, match=r"set_hyperparams: adam: learning_rate must be a finite number >= 0, got inf"):
            gf.set_hyperparams(_adam_state(), learning_rate=1e39)
