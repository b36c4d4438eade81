"""The adaptive optimizers against the documents' equations (tests/reference.py), and their contracts.

Every optimizer row of docs/equations.md is run for 200 steps on a multi-leaf tree with
occasional 50x gradient spikes, under jit, and compared with the NumPy reference
written from the formula: float64 to 1e-12 relative, float32 to 1e-5.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
from tests import reference
from tests.fast_trajectory import scan_trajectory as run_trajectory
from tests.helpers import assert_trajectories_close

SHAPES = {"w": (4, 3), "b": (3,), "s": ()}
STEPS = 200


def _problem(seed: int):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    return params, reference.spiky_gradients(rng, SHAPES, STEPS)


def _np_schedule(t):
    return 0.02 / (1.0 + 0.05 * t)


def _jnp_schedule(t):
    return 0.02 / (1.0 + 0.05 * t)


def _wd_schedule(t):
    return 0.1 * 0.99**t


# id -> (gradflow optimizer, reference call). The ids name the document row.
EQUATION_CASES = {
    "adagrad-doc002": (lambda: gf.adagrad(0.1, eps=1e-10), lambda p, g: reference.adagrad(p, g, 0.1, eps=1e-10)),
    "adagrad-doc001-eps_in_sqrt": (
        lambda: gf.adagrad(0.1, eps=1e-6, eps_in_sqrt=True),
        lambda p, g: reference.adagrad(p, g, 0.1, eps=1e-6, eps_in_sqrt=True),
    ),
    "adagrad-doc002-code-lr_decay": (
        lambda: gf.adagrad(0.1, lr_decay=0.01, initial_accumulator_value=0.1),
        lambda p, g: reference.adagrad(p, g, 0.1, lr_decay=0.01, initial_accumulator_value=0.1),
    ),
    "adagrad-schedule-lr_decay": (
        lambda: gf.adagrad(_jnp_schedule, lr_decay=0.02),
        lambda p, g: reference.adagrad(p, g, _np_schedule, lr_decay=0.02),
    ),
    "rmsprop-doc000-002": (
        lambda: gf.rmsprop(0.01, decay=0.9, eps=1e-8),
        lambda p, g: reference.rmsprop(p, g, 0.01, decay=0.9, eps=1e-8),
    ),
    "rmsprop-doc001-eps_in_sqrt": (
        lambda: gf.rmsprop(0.01, decay=0.95, eps=1e-6, eps_in_sqrt=True),
        lambda p, g: reference.rmsprop(p, g, 0.01, decay=0.95, eps=1e-6, eps_in_sqrt=True),
    ),
    "rmsprop-centered-momentum-initial_scale": (
        lambda: gf.rmsprop(0.01, decay=0.9, centered=True, momentum=0.8, initial_scale=0.5),
        lambda p, g: reference.rmsprop(p, g, 0.01, decay=0.9, centered=True, momentum=0.8, initial_scale=0.5),
    ),
    "rmsprop-momentum-schedule": (
        lambda: gf.rmsprop(_jnp_schedule, decay=0.99, momentum=0.9),
        lambda p, g: reference.rmsprop(p, g, _np_schedule, decay=0.99, momentum=0.9),
    ),
    "adam-kingma-ba": (lambda: gf.adam(0.01), lambda p, g: reference.adam(p, g, 0.01)),
    "adam-doc001-no-bias-correction": (
        lambda: gf.adam(0.01, b1=0.8, b2=0.99, eps=1e-7, bias_correction=False),
        lambda p, g: reference.adam(p, g, 0.01, b1=0.8, b2=0.99, eps=1e-7, bias_correction=False),
    ),
    "nadam": (lambda: gf.adam(0.01, nesterov=True), lambda p, g: reference.adam(p, g, 0.01, nesterov=True)),
    "nadam-no-bias-correction": (
        lambda: gf.adam(0.01, b1=0.8, nesterov=True, bias_correction=False),
        lambda p, g: reference.adam(p, g, 0.01, b1=0.8, nesterov=True, bias_correction=False),
    ),
    "adam-schedule": (lambda: gf.adam(_jnp_schedule), lambda p, g: reference.adam(p, g, _np_schedule)),
    "amsgrad-pytorch-form": (
        lambda: gf.amsgrad(0.01, b2=0.99),
        lambda p, g: reference.amsgrad(p, g, 0.01, b2=0.99),
    ),
    "amsgrad-reddi-alg2": (
        lambda: gf.amsgrad(0.01, b2=0.99, bias_correction=False),
        lambda p, g: reference.amsgrad(p, g, 0.01, b2=0.99, bias_correction=False),
    ),
    "adamw": (
        lambda: gf.adamw(0.01, weight_decay=0.1),
        lambda p, g: reference.adam(p, g, 0.01, weight_decay=0.1),
    ),
    "adamw-schedules": (
        lambda: gf.adamw(_jnp_schedule, weight_decay=lambda t: 0.1 * 0.99**t),
        lambda p, g: reference.adam(p, g, _np_schedule, weight_decay=_wd_schedule),
    ),
    "lars-you2017": (
        lambda: gf.lars(1.0, weight_decay=0.01, trust_coefficient=0.02, momentum=0.9),
        lambda p, g: reference.lars(p, g, 1.0, weight_decay=0.01, trust_coefficient=0.02, momentum=0.9),
    ),
    "lars-no-decay-eps-no-momentum": (
        lambda: gf.lars(0.5, trust_coefficient=0.01, eps=1e-3, momentum=0.0),
        lambda p, g: reference.lars(p, g, 0.5, trust_coefficient=0.01, eps=1e-3, momentum=0.0),
    ),
    "lamb": (
        lambda: gf.lamb(0.01, weight_decay=0.01),
        lambda p, g: reference.lamb(p, g, 0.01, weight_decay=0.01),
    ),
}


@pytest.mark.parametrize("case", sorted(EQUATION_CASES))
def test_matches_equation_float64(case, x64):
    make, ref = EQUATION_CASES[case]
    params, grads = _problem(11)
    got = run_trajectory(make(), params, grads, np.float64)
    assert_trajectories_close(got, ref(params, grads), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(EQUATION_CASES))
def test_matches_equation_float32(case):
    make, ref = EQUATION_CASES[case]
    params, grads = _problem(12)
    # The reference sees the same float32-rounded inputs.
    params = {k: np.float32(v).astype(np.float64) for k, v in params.items()}
    grads = [{k: np.float32(v).astype(np.float64) for k, v in g.items()} for g in grads]
    got = run_trajectory(make(), params, grads, np.float32)
    assert_trajectories_close(got, ref(params, grads), rtol=1e-5, atol=1e-5)


def test_spikes_are_present_in_the_parity_gradients():
    _, grads = _problem(11)
    norms = np.array([max(np.abs(v).max() for v in g.values()) for g in grads])
    assert (norms > 25).sum() >= 10 and np.median(norms) < 5


# ------------------------------------------------------------------------------------------
# Conventions that the trajectories alone would not pin down
# ------------------------------------------------------------------------------------------


def test_adagrad_eps_placement_defaults_outside_the_root():
    params = {"w": jnp.zeros(())}
    g = {"w": jnp.array(0.5)}
    out = gf.adagrad(1.0, eps=0.25).update(g, gf.adagrad(1.0, eps=0.25).init(params), params)[0]
    np.testing.assert_allclose(out["w"], -0.5 / (0.5 + 0.25))
    tx = gf.adagrad(1.0, eps=0.25, eps_in_sqrt=True)
    np.testing.assert_allclose(tx.update(g, tx.init(params), params)[0]["w"], -0.5 / np.sqrt(0.25 + 0.25))


def test_adagrad_zero_accumulator_gives_zero_not_nan():
    params = {"w": jnp.zeros(3)}
    tx = gf.adagrad(1.0, eps=0.0)
    u, _ = tx.update({"w": jnp.array([0.0, 1.0, 0.0])}, tx.init(params), params)
    np.testing.assert_array_equal(u["w"], [0.0, -1.0, 0.0])


def test_adagrad_lr_decay_uses_pytorch_step_convention():
    # PyTorch: clr = lr / (1 + (step − 1)·lr_decay) with step counted from 1, so the first update uses α.
    params = {"w": jnp.zeros(())}
    tx = gf.adagrad(1.0, lr_decay=0.5, initial_accumulator_value=1.0, eps=0.0)
    state = tx.init(params)
    rates = []
    for k in range(1, 4):
        u, state = tx.update({"w": jnp.array(1e-3)}, state, params)
        rates.append(float(-u["w"]) / 1e-3 * np.sqrt(1.0 + k * 1e-6))  # undo g/√G
    np.testing.assert_allclose(rates, [1.0, 1.0 / 1.5, 1.0 / 2.0], rtol=1e-5)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_rmsprop_centered_never_takes_the_root_of_a_negative(bias_correction):
    # A constant gradient makes v − m² vanish; rounding must not turn it into NaN.
    params = {"w": jnp.zeros(64)}
    tx = gf.rmsprop(0.01, centered=True, eps=1e-8, bias_correction=bias_correction)
    state = tx.init(params)
    step = jax.jit(tx.update)
    g = {"w": jnp.linspace(0.01, 10.0, 64)}  # many constants: some round v − m² below 0
    for _ in range(400):
        u, state = step(g, state, params)
        chex.assert_tree_all_finite(u)


def test_amsgrad_keeps_the_maximum_of_the_raw_second_moment():
    params = {"w": jnp.zeros(())}
    tx = gf.amsgrad(1.0, b1=0.0, b2=0.5, eps=0.0)
    state = tx.init(params)
    for g in [4.0, 0.0, 0.0]:
        _, state = tx.update({"w": jnp.array(g)}, state, params)
    inner = state[0]
    np.testing.assert_allclose(inner.nu["w"], 16 * 0.5 * 0.25)  # v decays
    np.testing.assert_allclose(inner.nu_max["w"], 16 * 0.5)  # the max of raw v stays
    # u = g/(√(v_max/(1−β₂³)) + 0): with g = 1 at step 4, v_max = 8 ≥ v₄.
    u, _ = tx.update({"w": jnp.array(1.0)}, state, params)
    np.testing.assert_allclose(u["w"], -1.0 / np.sqrt(8.0 / (1 - 0.5**4)), rtol=1e-6)


def test_adam_bias_correction_is_accurate_in_float32():
    # 1 − β₂ at k = 1 loses four digits if formed as 1 − 0.999 in float32.
    params = {"w": jnp.zeros((), jnp.float32)}
    tx = gf.scale_by_adam(b1=0.0, b2=0.999, eps=0.0)
    u, _ = tx.update({"w": jnp.float32(3.0)}, tx.init(params))
    assert abs(float(u["w"]) - 1.0) < 2e-7  # 1 − float32(0.999) would be off by 6e-6 here


@pytest.mark.parametrize("beta", [0.999, 0.9999])
def test_bias_correction_keeps_its_digits_over_many_steps(beta):
    # 1 − βᵏ formed as 1 − pow(β, k) in float32 loses ~5 digits to cancellation for β near 1
    # (6.7e-6 relative at β = 0.999, 1e-4 at 0.9999); −expm1(k·log1p(−(1 − β))) keeps them.
    from gradflow.adaptive import _bias_correction

    k = np.arange(1, 201)
    b = np.float64(np.float32(beta))  # β as the float32 step holds it
    exact = -np.expm1(k * np.log1p(-(1 - b)))
    got = np.asarray(_bias_correction(beta, jnp.asarray(k, jnp.float32)), np.float64)
    np.testing.assert_allclose(got, exact, rtol=1e-6)


def test_adamw_mask_leaves_unmasked_leaves_undecayed():
    params, grads = _problem(3)
    mask = {"w": True, "b": False, "s": True}
    got = run_trajectory(gf.adamw(0.01, weight_decay=0.5, mask=mask), params, grads[:30])
    decayed = run_trajectory(gf.adamw(0.01, weight_decay=0.5), params, grads[:30])
    plain = run_trajectory(gf.adam(0.01), params, grads[:30])
    np.testing.assert_allclose(got[-1]["b"], plain[-1]["b"], rtol=1e-6)
    np.testing.assert_allclose(got[-1]["w"], decayed[-1]["w"], rtol=1e-6)
    assert not np.allclose(got[-1]["w"], plain[-1]["w"], rtol=1e-3)


def test_adamw_decay_is_scaled_by_the_learning_rate():
    params = {"w": jnp.full((), 2.0)}
    tx = gf.adamw(0.1, weight_decay=0.5)
    u, _ = tx.update({"w": jnp.array(0.0)}, tx.init(params), params)
    np.testing.assert_allclose(u["w"], -0.1 * 0.5 * 2.0, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Trust ratio
# ------------------------------------------------------------------------------------------


def test_trust_ratio_is_one_per_leaf_scalar():
    params = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([1.0, 0.0])}
    g = {"a": jnp.array([0.0, 10.0]), "b": jnp.array([2.0, 0.0])}
    tx = gf.scale_by_trust_ratio(trust_coefficient=0.5)
    u, _ = tx.update(g, tx.init(params), params)
    np.testing.assert_allclose(u["a"], 0.5 * 5.0 / 10.0 * np.array([0.0, 10.0]))
    np.testing.assert_allclose(u["b"], 0.5 * 1.0 / 2.0 * np.array([2.0, 0.0]))


def test_trust_ratio_is_one_when_a_norm_is_zero():
    params = {"zero_w": jnp.zeros(3), "zero_g": jnp.ones(3)}
    g = {"zero_w": jnp.array([1.0, 2.0, 3.0]), "zero_g": jnp.zeros(3)}
    for tx in [gf.scale_by_trust_ratio(1e-3), gf.scale_by_trust_ratio(1e-3, weight_decay=0.0, eps=0.0)]:
        u, _ = tx.update(g, tx.init(params), params)
        np.testing.assert_array_equal(u["zero_w"], [1.0, 2.0, 3.0])
        np.testing.assert_array_equal(u["zero_g"], [0.0, 0.0, 0.0])
        chex.assert_tree_all_finite(u)


def test_lars_with_decay_uses_gradient_norm_plus_decayed_weight_norm():
    # You et al.: η‖w‖/(‖g‖ + λ‖w‖), not η‖w‖/‖g + λw‖.
    params = {"w": jnp.array([3.0, 4.0])}
    g = {"w": jnp.array([0.0, -2.0])}
    tx = gf.lars(1.0, weight_decay=0.2, trust_coefficient=0.1, momentum=0.0)
    u, _ = tx.update(g, tx.init(params), params)
    ratio = 0.1 * 5.0 / (2.0 + 0.2 * 5.0)
    np.testing.assert_allclose(u["w"], -ratio * (np.array([0.0, -2.0]) + 0.2 * np.array([3.0, 4.0])), rtol=1e-6)



def test_trust_ratio_reads_a_weight_decay_schedule_at_each_step():
    params = {"w": jnp.array([3.0, 4.0])}
    g = {"w": jnp.array([0.0, -2.0])}
    tx = gf.scale_by_trust_ratio(0.1, weight_decay=lambda t: 0.2 * (t + 1))
    state = tx.init(params)
    for k in range(3):
        u, state = tx.update(g, state, params)
        lam = 0.2 * (k + 1)
        ratio = 0.1 * 5.0 / (2.0 + lam * 5.0)
        np.testing.assert_allclose(u["w"], ratio * (np.array([0.0, -2.0]) + lam * np.array([3.0, 4.0])), rtol=1e-6)


# ------------------------------------------------------------------------------------------
# dtypes, jit, state
# ------------------------------------------------------------------------------------------

ALL_OPTIMIZERS = {
    "sgd": lambda: gf.sgd(0.1, momentum=0.9, nesterov=True),
    "adagrad": lambda: gf.adagrad(0.1),
    "rmsprop": lambda: gf.rmsprop(0.01, centered=True, momentum=0.9),
    "adam": lambda: gf.adam(0.01),
    "amsgrad": lambda: gf.amsgrad(0.01),
    "adamw": lambda: gf.adamw(0.01),
    "lars": lambda: gf.lars(0.1, weight_decay=1e-4),
    "lamb": lambda: gf.lamb(0.01, weight_decay=0.01),
}


@pytest.mark.parametrize("name", sorted(ALL_OPTIMIZERS))
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_updates_in_gradient_dtype_and_state_dtypes_fixed(name, dtype):
    params = {"w": jnp.ones((3, 2), dtype), "b": jnp.full((2,), 0.5, dtype)}
    tx = ALL_OPTIMIZERS[name]()
    state = tx.init(params)
    step = jax.jit(tx.update)
    dtypes = jax.tree.map(lambda x: x.dtype, state)
    for i in range(3):
        g = jax.tree.map(lambda p: jnp.full(p.shape, 0.1 * (i + 1), dtype), params)
        u, state = step(g, state, params)
        assert all(x.dtype == dtype for x in jax.tree.leaves(u))
        assert jax.tree.map(lambda x: x.dtype, state) == dtypes
        chex.assert_tree_all_finite(u)
    float_state = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert all(x.dtype == dtype for x in float_state)
    assert all(x.dtype == jnp.int32 for x in jax.tree.leaves(state) if not jnp.issubdtype(x.dtype, jnp.floating))


@pytest.mark.parametrize("name", sorted(ALL_OPTIMIZERS))
def test_float64_state_and_updates(name, x64):
    params = {"w": jnp.ones((3, 2), jnp.float64)}
    tx = ALL_OPTIMIZERS[name]()
    state = tx.init(params)
    u, state = jax.jit(tx.update)({"w": jnp.full((3, 2), 0.1, jnp.float64)}, state, params)
    assert u["w"].dtype == jnp.float64
    assert all(x.dtype in (jnp.float64, jnp.int32) for x in jax.tree.leaves(state))


def test_bfloat16_adam_tracks_float32_adam():
    params, grads = _problem(5)
    lo = run_trajectory(gf.adam(0.01), params, grads[:50], jnp.bfloat16)
    hi = run_trajectory(gf.adam(0.01), params, grads[:50], np.float32)
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(lo[-1][k], np.float32), hi[-1][k], atol=0.05)


@pytest.mark.parametrize("mu_dtype", [jnp.bfloat16, jnp.float32])
def test_adam_mu_dtype_is_honoured(mu_dtype):
    params = {"w": jnp.ones(4, jnp.float32)}
    tx = gf.adam(0.01, mu_dtype=mu_dtype)
    state = tx.init(params)
    assert state[0].mu["w"].dtype == mu_dtype and state[0].nu["w"].dtype == jnp.float32
    u, state = jax.jit(tx.update)({"w": jnp.full(4, 1.0 / 3.0)}, state, params)
    assert state[0].mu["w"].dtype == mu_dtype and u["w"].dtype == jnp.float32
    np.testing.assert_allclose(state[0].mu["w"], 0.1 / 3.0, rtol=1e-2 if mu_dtype == jnp.bfloat16 else 1e-6)


@pytest.mark.parametrize(
    "make, fields",
    [
        (lambda: gf.scale_by_adam(nu_dtype=jnp.float32), ("nu",)),
        (lambda: gf.scale_by_amsgrad(nu_dtype=jnp.float32), ("nu", "nu_max")),
        (lambda: gf.scale_by_adam_atan2(nu_dtype=jnp.float32), ("nu",)),
        (lambda: gf.scale_by_stable_adam(nu_dtype=jnp.float32), ("nu",)),
        (lambda: gf.scale_by_spam(nu_dtype=jnp.float32), ("nu",)),
    ],
)
def test_nu_dtype_holds_every_second_moment_buffer(make, fields):
    # With float16 parameters v must live in float32 (see scale_by_adam's nu_dtype), all of it.
    params = {"w": jnp.ones(4, jnp.float16)}
    tx = make()
    state = tx.init(params)
    u, state = jax.jit(tx.update)({"w": jnp.full(4, 1e-3, jnp.float16)}, state)
    assert u["w"].dtype == jnp.float16
    for f in fields:
        assert getattr(state, f)["w"].dtype == jnp.float32, f


@pytest.mark.parametrize("mu_dtype", [jnp.bfloat16, jnp.float32])
def test_lamb_mu_dtype_is_honoured(mu_dtype):
    params = {"w": jnp.ones(4, jnp.float32)}
    tx = gf.lamb(0.01, mu_dtype=mu_dtype)
    state = tx.init(params)
    assert state[0].mu["w"].dtype == mu_dtype and state[0].nu["w"].dtype == jnp.float32
    u, state = jax.jit(tx.update)({"w": jnp.full(4, 1.0 / 3.0)}, state, params)
    assert state[0].mu["w"].dtype == mu_dtype and u["w"].dtype == jnp.float32
    np.testing.assert_allclose(state[0].mu["w"], 0.1 / 3.0, rtol=1e-2 if mu_dtype == jnp.bfloat16 else 1e-6)
    want, _ = gf.lamb(0.01).update({"w": jnp.full(4, 1.0 / 3.0)}, gf.lamb(0.01).init(params), params)
    np.testing.assert_allclose(u["w"], want["w"], rtol=1e-2 if mu_dtype == jnp.bfloat16 else 1e-6)


def test_rmsprop_state_structure_does_not_depend_on_momentum():
    params = {"w": jnp.ones(3)}
    plain, heavy = gf.rmsprop(0.1).init(params), gf.rmsprop(0.1, momentum=0.9).init(params)
    assert len(plain) == len(heavy) == 3
    assert isinstance(plain[1], gf.EmptyState) and isinstance(heavy[1], gf.TraceState)
    assert isinstance(plain[0], gf.ScaleByRmsState) and isinstance(heavy[2], type(plain[2]))


def test_init_works_on_shape_dtype_structs():
    params = {"w": jax.ShapeDtypeStruct((3, 2), jnp.float32)}
    for name, make in ALL_OPTIMIZERS.items():
        state = jax.eval_shape(make().init, params)
        assert jax.tree.leaves(state), name


def test_second_jitted_step_does_not_recompile():
    traces = []
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    for make in ALL_OPTIMIZERS.values():
        tx = make()

        @jax.jit
        def step(params, state, g, tx=tx):
            traces.append(1)
            u, state = tx.update(g, state, params)
            return gf.apply_updates(params, u), state

        state = tx.init(params)
        p = params
        for i in range(3):
            p, state = step(p, state, jax.tree.map(lambda x: jnp.full(x.shape, float(i + 1)), params))
    assert len(traces) == len(ALL_OPTIMIZERS)


def test_tuple_and_nested_params_work():
    params = (jnp.ones(2), {"a": jnp.ones(3), "b": (jnp.ones(()),)})
    g = jax.tree.map(lambda p: p * 0.5, params)
    for name, make in ALL_OPTIMIZERS.items():
        tx = make()
        u, _ = tx.update(g, tx.init(params), params)
        assert jax.tree.structure(u) == jax.tree.structure(params), name
        assert jax.tree.map(jnp.shape, u) == jax.tree.map(jnp.shape, params), name


def test_mismatched_gradient_tree_raises_type_error():
    params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    for make in ALL_OPTIMIZERS.values():
        tx = make()
        with pytest.raises(TypeError, match="structure"):
            tx.update({"w": jnp.ones(2)}, tx.init(params), params)


# ------------------------------------------------------------------------------------------
# Convergence smoke tests
# ------------------------------------------------------------------------------------------


def _quadratic(p):
    return 0.5 * jnp.sum(jnp.array([1.0, 10.0]) * (p["x"] - 1.0) ** 2) + 0.5 * jnp.sum((p["y"] + 2.0) ** 2)


def _rosenbrock(p):
    x, y = p["xy"][0], p["xy"][1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


# name -> (optimizer on the quadratic, optimizer on Rosenbrock)
CONVERGENCE = {
    "adagrad": (lambda: gf.adagrad(0.5), lambda: gf.adagrad(0.1)),
    "rmsprop": (lambda: gf.rmsprop(0.01), lambda: gf.rmsprop(1e-3)),
    "adam": (lambda: gf.adam(0.05), lambda: gf.adam(0.02)),
    "amsgrad": (lambda: gf.amsgrad(0.05), lambda: gf.amsgrad(0.02)),
    "adamw": (lambda: gf.adamw(0.05, weight_decay=1e-4), lambda: gf.adamw(0.02, weight_decay=1e-4)),
    # LARS steps are a fixed fraction of ‖θ‖, so it needs a decaying rate to settle.
    "lars": (
        lambda: gf.lars(lambda t: (1 - t / 1000) ** 2, trust_coefficient=0.01),
        lambda: gf.lars(lambda t: (1 - t / 3000) ** 2, trust_coefficient=0.01),
    ),
    "lamb": (lambda: gf.lamb(0.02), lambda: gf.lamb(0.01)),
}


def _minimise(tx, loss, params, steps):
    def body(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return (gf.apply_updates(p, u), s), None

    (p, _), _ = jax.jit(lambda p, s: jax.lax.scan(body, (p, s), None, length=steps))(params, tx.init(params))
    return p


@pytest.mark.parametrize("name", sorted(CONVERGENCE))
def test_converges_on_quadratic_and_rosenbrock(name):
    quad_tx, rosen_tx = CONVERGENCE[name]
    p0 = {"x": jnp.array([3.0, -2.0]), "y": jnp.array([0.5, 1.5, -0.5])}
    p = _minimise(quad_tx(), _quadratic, p0, 1000)
    assert float(_quadratic(p)) < 1e-3 * float(_quadratic(p0)), float(_quadratic(p))
    r0 = {"xy": jnp.array([-1.2, 1.0])}
    r = _minimise(rosen_tx(), _rosenbrock, r0, 3000)
    assert float(_rosenbrock(r)) < 0.05 * float(_rosenbrock(r0)), float(_rosenbrock(r))
    assert float(jnp.linalg.norm(r["xy"] - 1.0)) < float(jnp.linalg.norm(r0["xy"] - 1.0)) / 2


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------

BAD_INPUT = [
    (lambda: gf.adam(0.1, b1=1.0), r"adam: b1 must be in \[0, 1\), got 1.0"),
    (lambda: gf.adam(0.1, b1=-0.1), r"adam: b1 must be in \[0, 1\), got -0.1"),
    (lambda: gf.adam(0.1, b2=1.5), r"adam: b2 must be in \[0, 1\), got 1.5"),
    (lambda: gf.adam(0.1, eps=-1e-8), r"adam: eps must be a finite number >= 0, got -1e-08"),
    (lambda: gf.adam(0.1, eps_root=-1.0), r"adam: eps_root must be a finite number >= 0, got -1.0"),
    (lambda: gf.adam(0.1, b1=0.0, nesterov=True), r"adam: nesterov=True needs b1 > 0, got b1=0.0"),
    (lambda: gf.adam(-0.1), r"adam: learning_rate must be a finite number >= 0, got -0.1"),
    (lambda: gf.amsgrad(0.1, b1=1.0), r"amsgrad: b1 must be in \[0, 1\), got 1.0"),
    (lambda: gf.amsgrad(0.1, b2=-0.5), r"amsgrad: b2 must be in \[0, 1\), got -0.5"),
    (lambda: gf.amsgrad(0.1, eps=-1.0), r"amsgrad: eps must be a finite number >= 0, got -1.0"),
    (lambda: gf.amsgrad(0.1, bias_correction=False, max_of_debiased=True), r"amsgrad: max_of_debiased=True needs"),
    (lambda: gf.adamw(0.1, b2=1.0), r"adamw: b2 must be in \[0, 1\), got 1.0"),
    (lambda: gf.adamw(0.1, weight_decay=-0.01), r"adamw: weight_decay must be a finite number >= 0, got -0.01"),
    (lambda: gf.lamb(0.1, b1=2.0), r"lamb: b1 must be in \[0, 1\), got 2.0"),
    (lambda: gf.lamb(0.1, eps=-1e-6), r"lamb: eps must be a finite number >= 0, got -1e-06"),
    (lambda: gf.lamb(0.1, weight_decay=-1.0), r"lamb: weight_decay must be a finite number >= 0, got -1.0"),
    (lambda: gf.rmsprop(0.1, decay=1.0), r"rmsprop: decay must be in \[0, 1\), got 1.0"),
    (lambda: gf.rmsprop(0.1, decay=-0.1), r"rmsprop: decay must be in \[0, 1\), got -0.1"),
    (lambda: gf.rmsprop(0.1, eps=-1e-8), r"rmsprop: eps must be a finite number >= 0, got -1e-08"),
    (lambda: gf.rmsprop(0.1, nesterov=True), r"rmsprop: nesterov=True needs momentum > 0, got momentum=0.0"),
    (lambda: gf.rmsprop(0.1, initial_scale=-1.0), r"rmsprop: initial_scale must be a finite number >= 0"),
    (lambda: gf.adagrad(0.1, eps=-1e-10), r"adagrad: eps must be a finite number >= 0, got -1e-10"),
    (lambda: gf.adagrad(0.1, lr_decay=-0.01), r"adagrad: lr_decay must be a finite number >= 0, got -0.01"),
    (
        lambda: gf.adagrad(0.1, initial_accumulator_value=-0.1),
        r"adagrad: initial_accumulator_value must be a finite number >= 0, got -0.1",
    ),
    (lambda: gf.adagrad(float("nan")), r"adagrad: learning_rate must not be NaN"),
    (lambda: gf.lars(0.1, weight_decay=-1e-4), r"lars: weight_decay must be a finite number >= 0, got -0.0001"),
    (lambda: gf.lars(0.1, eps=-1.0), r"lars: eps must be a finite number >= 0, got -1.0"),
    (lambda: gf.lars(0.1, momentum=0.0, nesterov=True), r"lars: nesterov=True needs momentum > 0, got momentum=0.0"),
    (lambda: gf.lars(0.1, trust_coefficient=-1.0), r"lars: trust_coefficient must be a finite number >= 0"),
    (lambda: gf.scale_by_adam(b1=1.0), r"scale_by_adam: b1 must be in \[0, 1\), got 1.0"),
    (lambda: gf.scale_by_amsgrad(b2=1.0), r"scale_by_amsgrad: b2 must be in \[0, 1\), got 1.0"),
    (lambda: gf.scale_by_rms(decay=1.0), r"scale_by_rms: decay must be in \[0, 1\), got 1.0"),
    (lambda: gf.scale_by_rss(eps=-1.0), r"scale_by_rss: eps must be a finite number >= 0, got -1.0"),
    (
        lambda: gf.scale_by_rss(initial_accumulator_value=-1.0),
        r"scale_by_rss: initial_accumulator_value must be a finite number >= 0, got -1.0",
    ),
    (lambda: gf.scale_by_trust_ratio(weight_decay=-1.0), r"scale_by_trust_ratio: weight_decay must be a finite"),
]


@pytest.mark.parametrize("build, match", BAD_INPUT, ids=lambda x: x if isinstance(x, str) else "")
def test_bad_hyperparameters_raise_when_built(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_trust_ratio_needs_params():
    tx = gf.scale_by_trust_ratio()
    with pytest.raises(ValueError, match="scale_by_trust_ratio: update needs params"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: gf.scale_by_adam(), "nu"),
        (lambda: gf.scale_by_adam(), "mu"),
        (lambda: gf.scale_by_rms(), "nu"),
        (lambda: gf.scale_by_rms(centered=True), "mu"),
        (lambda: gf.scale_by_amsgrad(), "nu_max"),
        (lambda: gf.scale_by_rss(), "sum_of_squares"),
    ],
)
def test_float64_state_with_float32_gradients_is_computed_in_float64(make, field, x64):
    # Issue 13, item 5: float64 moments must not be float32-exact.
    tx = make()
    params = {"w": jnp.zeros(64, jnp.float64)}
    state = tx.init(params)
    rng = np.random.default_rng(0)
    step = jax.jit(tx.update)
    for _ in range(5):
        g = {"w": jnp.asarray(rng.normal(size=64), jnp.float32)}
        u, state = step(g, state, params)
    assert u["w"].dtype == jnp.float32
    moment = np.asarray(getattr(state, field)["w"])
    assert moment.dtype == np.float64
    assert np.any(moment.astype(np.float32).astype(np.float64) != moment)


@pytest.mark.parametrize(
    "make",
    [
        lambda b1, b2: gf.adam(0.1, b1=b1, b2=b2),
        lambda b1, b2: gf.adamw(0.1, b1=b1, b2=b2),
        lambda b1, b2: gf.amsgrad(0.1, b1=b1, b2=b2),
        lambda b1, b2: gf.lamb(0.1, b1=b1, b2=b2),
        lambda b1, b2: gf.scale_by_adam(b1=b1, b2=b2, nesterov=False),
        lambda b1, b2: gf.scale_by_rms(decay=b2, bias_correction=True),
    ],
)
@pytest.mark.parametrize("at", [(0.0, 0.999), (0.9, 0.0), (0.0, 0.0)])
def test_grad_wrt_decays_is_finite_at_zero(make, at):
    # Issue 13, item 9: the bias correction 1 − βᵏ is differentiable at β = 0 (optax's is).
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = [{"w": jnp.array([0.5, -1.0, 2.0])}, {"w": jnp.array([-0.3, 0.2, 1.0])}]

    def loss(b1, b2):
        tx = make(b1, b2)
        state = tx.init(params)
        total = 0.0
        for g in grads:
            u, state = tx.update(g, state, params)
            total = total + jnp.sum(u["w"] * jnp.arange(1.0, 4.0))
        return total

    d = jax.jit(jax.grad(loss, argnums=(0, 1)))(*map(jnp.float32, at))
    assert all(np.isfinite(np.asarray(x)) for x in d), d
    # and the value at β = 0 is unchanged: u is the same as with a tiny positive β
    np.testing.assert_allclose(loss(*map(jnp.float32, at)), loss(*(jnp.float32(max(a, 1e-30)) for a in at)), rtol=1e-5)


def test_grad_wrt_b1_at_zero_matches_optax():
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    g = {"w": jnp.array([0.5, -1.0, 2.0])}

    def loss(make, b1):
        tx = make(b1)
        state = tx.init(params)
        u, state = tx.update(g, state, params)
        u, state = tx.update(g, state, params)
        return jnp.sum(u["w"])

    ours = jax.grad(lambda b: loss(lambda b1: gf.adam(0.1, b1=b1), b))(jnp.float32(0.0))
    theirs = jax.grad(lambda b: loss(lambda b1: __import__("optax").adam(0.1, b1=b1), b))(jnp.float32(0.0))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
