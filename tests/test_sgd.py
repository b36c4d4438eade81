"""SGD and its blocks against the NumPy reference, under jit, over spiky gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
from tests import reference
from tests.helpers import assert_trajectories_close, run_trajectory

SHAPES = {"w": (4, 3), "b": (3,), "s": ()}
STEPS = 200


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    return params, reference.spiky_gradients(rng, SHAPES, STEPS)


SGD_CASES = [
    dict(lr=0.01),
    dict(lr=0.01, momentum=0.9),
    dict(lr=0.01, momentum=0.9, nesterov=True),
    dict(lr=0.01, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.5, dampening=1.0),
    dict(lr=0.01, dampening=0.5),  # PyTorch ignores d without momentum
]


@pytest.mark.parametrize("case", SGD_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_reference_float32(case):
    params, grads = _problem()
    want = reference.sgd(params, grads, **case)
    case = dict(case)
    lr = case.pop("lr")
    got = run_trajectory(gf.sgd(lr, **case), params, grads, np.float32)
    assert_trajectories_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", SGD_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_reference_float64(case, x64):
    params, grads = _problem(1)
    want = reference.sgd(params, grads, **case)
    case = dict(case)
    lr = case.pop("lr")
    got = run_trajectory(gf.sgd(lr, **case), params, grads, np.float64)
    assert_trajectories_close(got, want, rtol=1e-12, atol=1e-12)


def test_dampening_without_momentum_is_ignored_as_in_pytorch():
    # torch.optim.SGD(lr=1, momentum=0, dampening=0.5) steps by −g every time: no buffer, no d.
    params = {"w": jnp.zeros(())}
    txs = [gf.sgd(1.0, dampening=0.5), gf.trace(0.0, dampening=0.5),
           gf.inject_hyperparams(gf.sgd)(learning_rate=1.0, momentum=0.0, dampening=0.5)]
    for tx in txs:
        state = tx.init(params)
        step = jax.jit(tx.update)
        seen = []
        for _ in range(3):
            u, state = step({"w": jnp.ones(())}, state, params)
            seen.append(float(u["w"]))
        assert abs(seen[0]) == abs(seen[1]) == abs(seen[2]) == 1.0, seen


def test_sgd_with_schedule_uses_step_count_from_zero():
    params = {"w": jnp.zeros(())}
    tx = gf.sgd(lambda t: 0.1 * (t + 1))
    state = tx.init(params)
    seen = []
    for _ in range(3):
        u, state = tx.update({"w": jnp.ones(())}, state, params)
        seen.append(float(u["w"]))
    np.testing.assert_allclose(seen, [-0.1, -0.2, -0.3], rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_updates_and_state_keep_dtypes(dtype):
    params = {"w": jnp.ones(5, dtype)}
    tx = gf.sgd(0.1, momentum=0.9)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for _ in range(3):
        u, new_state = step({"w": jnp.ones(5, dtype)}, state, params)
        assert u["w"].dtype == dtype
        assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)
        state = new_state


def test_second_jitted_step_does_not_recompile():
    traces = []
    tx = gf.sgd(0.1, momentum=0.9, nesterov=True)
    params = {"w": jnp.ones(3)}

    @jax.jit
    def step(params, state, g):
        traces.append(1)
        u, state = tx.update(g, state, params)
        return gf.apply_updates(params, u), state

    state = tx.init(params)
    for i in range(3):
        params, state = step(params, state, {"w": jnp.full(3, float(i))})
    assert len(traces) == 1


def test_trace_counter_saturates_instead_of_wrapping():
    max32 = np.iinfo(np.int32).max
    assert int(gf.safe_increment(jnp.int32(max32 - 1))) == max32
    assert int(gf.safe_increment(jnp.int32(max32))) == max32


def test_add_decayed_weights_with_mask_and_schedule():
    params = {"w": jnp.full(2, 2.0), "b": jnp.full(2, 2.0)}
    tx = gf.add_decayed_weights(lambda t: 0.5 * (t + 1), mask={"w": True, "b": False})
    state = tx.init(params)
    g = {"w": jnp.ones(2), "b": jnp.ones(2)}
    u, state = tx.update(g, state, params)
    np.testing.assert_array_equal(u["w"], [2.0, 2.0])  # 1 + 0.5·2
    np.testing.assert_array_equal(u["b"], [1.0, 1.0])
    u, state = tx.update(g, state, params)
    np.testing.assert_array_equal(u["w"], [3.0, 3.0])  # 1 + 1.0·2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(learning_rate=-0.1), r"sgd: learning_rate must be a finite number >= 0, got -0.1"),
        (dict(learning_rate=float("nan")), r"sgd: learning_rate must not be NaN, got nan"),
        (dict(learning_rate=0.1, momentum=1.5), r"sgd: momentum must be in \[0, 1\], got 1.5"),
        (dict(learning_rate=0.1, momentum=-0.1), r"sgd: momentum must be in \[0, 1\], got -0.1"),
        (dict(learning_rate=0.1, nesterov=True), r"sgd: nesterov=True needs momentum > 0"),
        (dict(learning_rate=0.1, momentum=0.9, nesterov=True, dampening=0.1), r"sgd: nesterov=True needs .*dampening == 0"),
    ],
)
def test_sgd_bad_hyperparameters_raise_when_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gf.sgd(**kwargs)
