"""inject_hyperparams: bitwise equal to the plain optimizer, no recompiles, float32 hyperparameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

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
    """Parameters after every step, under jit (lax.scan)."""
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    grads = jax.tree.map(lambda x: jnp.asarray(x, dtype), grads)

    @jax.jit
    def go(params, grads):
        def body(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            p = gf.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(body, (params, tx.init(params)), grads)

    (_, state), traj = go(params, grads)
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
