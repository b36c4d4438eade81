"""Long runs: step counters saturate at 2³¹−1, bias corrections and schedules stay finite there,
and float16 parameters meet the second moment's underflow."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
from tests import catalog

INT32_MAX = 2**31 - 1

STATEFUL = {**catalog.OPTIMIZERS, **catalog.CLIPPERS, **catalog.GUARDS}
STATEFUL.update(
    {
        "inject_adam_schedule": lambda: gf.inject_hyperparams(gf.adam)(
            learning_rate=gf.warmup_cosine_decay_schedule(0.0, 0.01, 2, 10)
        ),
        "inject_sgd": lambda: gf.inject_hyperparams(gf.sgd)(0.1, momentum=0.9),
        "reduce_on_plateau": lambda: gf.chain(gf.adam(0.01), gf.reduce_on_plateau()),
        "restart_on_loss": lambda: gf.chain(gf.sgd(1.0), gf.restart_on_loss(gf.cosine_decay_schedule(0.1, 100), patience=5)),
        "scale_by_schedule": lambda: gf.scale_by_schedule(gf.inverse_sqrt_schedule(0.1, 10)),
    }
)


# ReduceOnPlateauState.count counts the losses of one accumulation window (it returns to 0), not steps.
_NOT_STEPS = (gf.ReduceOnPlateauState,)


def _is_count(path, leaf) -> bool:
    if isinstance(leaf, _NOT_STEPS):
        return False
    last = path[-1] if path else None
    return (
        isinstance(last, jax.tree_util.GetAttrKey)
        and last.name == "count"
        and jnp.result_type(leaf) == jnp.int32
        and jnp.shape(leaf) == ()
    )


def _counts(state) -> list:
    leaves = jax.tree_util.tree_leaves_with_path(state, is_leaf=lambda x: isinstance(x, _NOT_STEPS))
    return [leaf for path, leaf in leaves if _is_count(path, leaf)]


def _set_counts(state, value: int):
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.asarray(value, jnp.int32) if _is_count(path, leaf) else leaf,
        state,
        is_leaf=lambda x: isinstance(x, _NOT_STEPS),
    )


# plain sgd (a constant learning rate) keeps no counter at all: test_plain_sgd_keeps_no_counter
COUNTED = [name for name in STATEFUL if name != "sgd"]


def test_plain_sgd_keeps_no_counter():
    state = STATEFUL["sgd"]().init({"w": jnp.zeros(2)})
    assert _counts(state) == [] and jax.tree.leaves(state) == []


@pytest.mark.parametrize("name", COUNTED)
def test_step_counters_saturate_at_int32_max(name):
    tx = STATEFUL[name]()
    params = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.1]], jnp.float32), "b": jnp.asarray([0.3, -0.2], jnp.float32)}
    state = tx.init(params)
    # Every check below is over the counters found: with none found it would pass on nothing.
    assert _counts(state), f"{name}: no step counter found in the state"
    state = _set_counts(state, INT32_MAX - 2)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p, value=jnp.float32(1.0)))
    rng = np.random.default_rng(0)
    for t in range(4):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
        updates, state = step(grads, state, params)
        chex.assert_tree_all_finite(updates)
        params = gf.apply_updates(params, updates)
        want = min(INT32_MAX - 2 + t + 1, INT32_MAX)
        assert all(int(c) == want for c in _counts(state)), (name, t, [int(c) for c in _counts(state)])
    assert all(int(c) == INT32_MAX for c in _counts(state))


def test_adam_bias_correction_vanishes_at_int32_max():
    """At k = 2³¹−1 both corrections are 1: the update is m/(√v + ε) of the uncorrected moments."""
    params = {"w": jnp.asarray([1.0, -2.0, 3.0], jnp.float32)}
    g = {"w": jnp.asarray([0.1, -0.4, 2.0], jnp.float32)}
    tx = gf.adam(1.0)
    state = _set_counts(tx.init(params), INT32_MAX - 1)
    updates, state = tx.update(g, state, params)
    m, v = 0.1 * np.asarray(g["w"]), 0.001 * np.asarray(g["w"]) ** 2
    np.testing.assert_allclose(updates["w"], -m / (np.sqrt(v) + 1e-8), rtol=1e-5)
    assert int(state[0].count) == INT32_MAX


@pytest.mark.parametrize("name", list(catalog.SCHEDULES))
def test_schedules_are_finite_at_the_last_steps(name):
    schedule = catalog.SCHEDULES[name]()
    for step in (INT32_MAX - 1, INT32_MAX):
        for value in (schedule(step), jax.jit(schedule)(jnp.int32(step))):
            value = jnp.asarray(value)
            assert value.dtype == jnp.float32 and value.shape == ()
            assert np.isfinite(float(value)) and float(value) >= 0, (name, step, value)


# --------------------------------------------------------------------------------------------
# float16 parameters: the second moment underflows
#
# With float16 parameters the moments are stored in float16 (the state takes the parameters'
# dtype). (1 − β₂)·g² for |g| ≲ 8e-3 is below float16's smallest subnormal (6e-8), so v is
# stored as 0; once g shrinks, m̂/(√v̂ + ε) ≈ m̂/ε overflows float16 to inf. bfloat16 has float32's
# exponent range and does not underflow. The remedy is to keep float32 parameters (master
# weights) and cast to float16 only for the forward pass: the state is then float32, while the
# updates still come back in the gradients' dtype.

_SMALL_THEN_ZERO = [1e-3] * 3 + [0.0] * 3


def _run_small_gradients(tx, param_dtype, grad_dtype):
    params = {"w": jnp.zeros((4,), param_dtype)}
    state = tx.init(params)
    out = []
    for g in _SMALL_THEN_ZERO:
        updates, state = jax.jit(tx.update)({"w": jnp.full((4,), g, grad_dtype)}, state, params)
        out.append(np.asarray(updates["w"], np.float64))
    return np.stack(out)


@pytest.mark.parametrize("factory", [gf.adam, gf.amsgrad, gf.adamw, gf.lamb], ids=["adam", "amsgrad", "adamw", "lamb"])
def test_float16_params_give_finite_updates_with_a_float32_second_moment(factory):
    default = _run_small_gradients(factory(1.0), jnp.float16, jnp.float16)
    fixed = _run_small_gradients(factory(1.0, nu_dtype=jnp.float32), jnp.float16, jnp.float16)
    want = _run_small_gradients(factory(1.0), jnp.float32, jnp.float32)
    assert np.all(np.isfinite(fixed))
    np.testing.assert_allclose(fixed, want, rtol=5e-3, atol=1e-3)
    if factory in (gf.adam, gf.amsgrad):  # the documented failure the flag avoids
        assert not np.all(np.isfinite(default))


def test_float32_master_params_avoid_the_float16_underflow():
    """float32 parameters with float16 gradients: float32 state, float16 updates, float32's numbers."""
    got = _run_small_gradients(gf.adam(1.0), jnp.float32, jnp.float16)
    want = _run_small_gradients(gf.adam(1.0), jnp.float32, jnp.float32)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=2e-3)
    state = gf.adam(1.0).init({"w": jnp.zeros((4,), jnp.float32)})
    assert state[0].nu["w"].dtype == jnp.float32


def test_bfloat16_params_do_not_underflow():
    got = _run_small_gradients(gf.adam(1.0), jnp.bfloat16, jnp.bfloat16)
    want = _run_small_gradients(gf.adam(1.0), jnp.float32, jnp.float32)
    np.testing.assert_allclose(got, want, rtol=2e-2)
