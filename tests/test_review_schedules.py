"""Hostile review of gradflow/schedules.py and the schedule plumbing in gradflow/hparams.py.

Tests without a "# guarantee" mark reproduce a bug and fail on the code they were written against.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf


def _sgdr_ref(t, t0, m, i0=1.0, lo=0.0, q=1.0, w=0):
    """CosineAnnealingWarmRestarts / Keras CosineDecayRestarts in float64 (exact cycle starts by summation)."""
    if m == 1.0:
        i, tau, length = t // t0, t % t0, float(t0)
    else:
        i, start, length = 0, 0.0, float(t0)
        while start + length <= t:
            start, length, i = start + length, length * m, i + 1
        tau = t - start
    peak = lo + (i0 - lo) * q**i
    if tau < w:
        return lo + (peak - lo) * tau / w
    return lo + (peak - lo) * 0.5 * (1 + math.cos(math.pi * (tau - w) / (length - w)))


# ----------------------------------------------------------------------------
# 1. warm_restarts_schedule with cycle_mult > 1: every step past the table of cycle starts
#    (which stops at 2**31 - 1) is put in the last tabled cycle, past its end, so the value is min_value.


@pytest.mark.parametrize("step", [2**33, 10**10])
def test_warm_restarts_growing_cycles_past_int32(step):
    # warm_restarts_schedule(1.0, 10, 2.0)(2**33) gives 0.0 (and 0.0 at 1e10); torch's
    # CosineAnnealingWarmRestarts(T_0=10, T_mult=2) closed form gives 0.3454915 (0.0458330 at 1e10):
    # cycle 29 starts at 10·(2**29 − 1). 2**33 and 1e10 are exact in float32, so this is not the step's rounding.
    schedule = gf.warm_restarts_schedule(1.0, 10, 2.0)
    np.testing.assert_allclose(float(schedule(step)), _sgdr_ref(step, 10, 2.0), atol=1e-4)


def test_warm_restarts_first_cycle_longer_than_int32():
    # warm_restarts_schedule(1.0, 2**31, 2.0)(2**31 + 2**30): the table holds only cycle 0, so the step
    # lands 3·2**30 steps into a cycle of 2**31 steps and gives 0.0; it is 2**30 steps into cycle 1
    # (length 2**32): ½(1 + cos(π/4)) = 0.8535534.
    schedule = gf.warm_restarts_schedule(1.0, 2**31, 2.0)
    np.testing.assert_allclose(float(schedule(2**31 + 2**30)), 0.5 * (1 + math.cos(math.pi / 4)), rtol=1e-6)


def test_warm_restarts_growing_cycles_int64_steps_in_x64(x64):
    # With jax_enable_x64 the int64 step 2**33 is exact, and still gives 0.0 instead of 0.3454915 (torch).
    schedule = gf.warm_restarts_schedule(1.0, 10, 2.0)
    np.testing.assert_allclose(float(schedule(jnp.int64(2**33))), _sgdr_ref(2**33, 10, 2.0), atol=1e-4)


# ----------------------------------------------------------------------------
# 2. warm_restarts_schedule with cycle_mult = 1: a Python int step >= 2**31 becomes a float32 step
#    (schedules._step), and ⌊t/T₀⌋·T₀ is then formed in float32 and rounds past t: τ = t − i·T₀ = −32.


def test_warm_restarts_fixed_cycles_python_int_step_2_pow_31():
    # warm_restarts_schedule(1.0, 10, min_value=0.5)(2**31) gives 1.0 (the peak: τ = −32 < 0);
    # 2**31 mod 10 = 8, so torch's CosineAnnealingWarmRestarts(T_0=10, eta_min=0.5) gives 0.5477458.
    # 2**31 is exact in float32: jnp.remainder(t, T₀) would give τ = 8 exactly.
    schedule = gf.warm_restarts_schedule(1.0, 10, min_value=0.5)
    np.testing.assert_allclose(float(schedule(2**31)), _sgdr_ref(2**31, 10, 1.0, lo=0.5), rtol=1e-6)


def test_warm_restarts_fixed_cycles_with_warmup_python_int_step_2_pow_31():
    # With warmup_steps=2 the same step gives 0.5 (a negative warm-up fraction, clamped); τ = 8 gives
    # 0.5 + 0.5·½(1 + cos(π·6/8)) = 0.5732233.
    schedule = gf.warm_restarts_schedule(1.0, 10, min_value=0.5, warmup_steps=2)
    np.testing.assert_allclose(float(schedule(2**31)), _sgdr_ref(2**31, 10, 1.0, lo=0.5, w=2), rtol=1e-6)


# ----------------------------------------------------------------------------
# 3. A float16 step meets a step constant above float16's range (65504): _fit makes it inf,
#    and max(t, inf) − inf is NaN. The module promises "never returns NaN".


@pytest.mark.parametrize(
    "make, want",
    [
        (lambda: gf.linear_schedule(1.0, 0.0, 10, transition_begin=100_000), 1.0),
        (lambda: gf.exponential_decay(1.0, 10, 0.5, transition_begin=100_000), 1.0),
        (lambda: gf.warm_restarts_schedule(1.0, 100_000), 0.5 * (1 + math.cos(math.pi * 5 / 100_000))),
    ],
)
def test_float16_step_with_large_constants_is_not_nan(make, want):
    # each gives nan for jnp.float16(5); the same schedule at the int step 5 gives `want`
    # (schedules._step should widen float16/bfloat16 steps to float32 as it widens int8/int16 to int32).
    np.testing.assert_allclose(float(make()(jnp.float16(5))), want, rtol=1e-6)


# ----------------------------------------------------------------------------
# 4. Build-time checks accept values that are finite in float64 but not in float32.


def test_value_beyond_float32_is_refused_not_nan():
    # linear_schedule(1e39, 0.0, 10)(5) returns nan (float32(1e39) = inf, inf − inf); the module says a
    # value must be "a finite number" and a schedule "never returns NaN": refuse it at build time.
    with pytest.raises(ValueError, match=r"^linear_schedule: init_value.*1e\+39"):
        gf.linear_schedule(1e39, 0.0, 10)


def test_onecycle_factors_whose_product_underflows_raise_valueerror():
    # cosine_onecycle_schedule(10, 1.0, div_factor=1e-200, final_div_factor=1e-200) raises
    # ZeroDivisionError ("float division by zero", 1.0 / (d·f)); bad arguments must raise ValueError
    # naming the function.
    with pytest.raises(ValueError, match=r"^cosine_onecycle_schedule: "):
        gf.cosine_onecycle_schedule(10, 1.0, div_factor=1e-200, final_div_factor=1e-200)


# ----------------------------------------------------------------------------
# 5. Errors that are not ValueError naming the function (module docstring: "a bad one raises ValueError
#    naming the function, the argument and the value").


def test_non_iterable_boundaries_and_scales_raise_valueerror():
    # piecewise_constant_schedule(1.0, 0.5) raises TypeError "'float' object is not iterable";
    # _pairs already raises ValueError for other malformed values.
    with pytest.raises(ValueError, match=r"^piecewise_constant_schedule: boundaries_and_scales"):
        gf.piecewise_constant_schedule(1.0, 0.5)


def test_piecewise_interpolate_boundary_beyond_int64():
    # piecewise_interpolate_schedule("linear", 1.0, {2**63: 0.5}) raises OverflowError ("Python int too
    # large to convert to C long", np.asarray(..., np.int64)), and so does cosine_onecycle_schedule(2**64, 1.0);
    # piecewise_constant_schedule(1.0, {2**64: 0.5}) accepts such a boundary (never passed by an int32 step).
    # Expected: 1.0 − 0.5·5/2**63 ≈ 1.0 at step 5 (or a ValueError naming the function).
    schedule = gf.piecewise_interpolate_schedule("linear", 1.0, {2**63: 0.5})
    np.testing.assert_allclose(float(schedule(5)), 1.0, rtol=1e-6)


def test_sgdr_bad_cycle_names_sgdr_schedule():
    # sgdr_schedule([dict(..., decay_steps=0)]) raises "warmup_cosine_decay_schedule: decay_steps ...";
    # the caller called sgdr_schedule (warmup_exponential_decay_schedule renames the inner error the same way).
    with pytest.raises(ValueError, match=r"^sgdr_schedule: "):
        gf.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=0, decay_steps=0)])


# ----------------------------------------------------------------------------
# Guarantees (pass now; pin claimed parities no existing test covers)


def test_multisteplr_with_repeated_milestones_as_pairs():  # guarantee
    # torch MultiStepLR(milestones=[3, 3, 7], gamma=0.5), lr=0.1 multiplies by gamma² at 3 (a Counter):
    # 0.1, 0.1, 0.1, 0.025, ..., 0.0125 from 7. The pairs form does it; the docstring's dict recipe
    # {m: gamma for m in milestones} drops the repeat (0.05 at 3).
    schedule = gf.piecewise_constant_schedule(0.1, [(m, 0.5) for m in [3, 3, 7]])
    got = np.asarray(jax.vmap(schedule)(jnp.arange(9)))
    np.testing.assert_allclose(got, [0.1, 0.1, 0.1, 0.025, 0.025, 0.025, 0.025, 0.0125, 0.0125], rtol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: gf.warmup_cosine_decay_schedule(0.0, 1.0, 3, 10, 0.1),
        lambda: gf.warm_restarts_schedule(1.0, 3, 2.0, warmup_steps=1),
        lambda: gf.wsd_schedule(1.0, 2, 2, 3, decay_shape="1-sqrt"),
        lambda: gf.join_schedules([gf.constant_schedule(0.5), gf.linear_schedule(1.0, 0.0, 4)], [2]),
    ],
)
def test_schedule_step_is_the_update_count_from_zero(make):  # guarantee
    # sgd(schedule) and inject_hyperparams(sgd)(learning_rate=schedule) use schedule(k) for update k
    # (k = 0 first), and the injected state shows schedule(k) before update k.
    schedule = make()
    want = [float(schedule(k)) for k in range(10)]
    params, grads = jnp.array([1.0]), jnp.array([1.0])
    for tx in (gf.sgd(schedule), gf.inject_hyperparams(gf.sgd)(learning_rate=schedule)):
        state, got, shown = tx.init(params), [], []
        update = jax.jit(tx.update)
        for _ in range(10):
            if hasattr(state, "hyperparams"):
                shown.append(float(gf.current_hyperparams(state)["learning_rate"]))
            updates, state = update(grads, state, params)
            got.append(-float(updates[0]))
        np.testing.assert_allclose(got, want, rtol=1e-6)
        if shown:
            np.testing.assert_allclose(shown, want, rtol=1e-6)


@pytest.mark.parametrize("d, w", [(512, 4000), (64, 2), (1024, 3)])
def test_inverse_sqrt_is_the_transformer_rule(d, w):  # guarantee
    # inverse_sqrt_schedule's docstring: d^−½·min(s^−½, s·W^−1.5), s = t + 1 (Vaswani et al.), is
    # inverse_sqrt_schedule(d^−½·W^−½, W − 1, timescale=W, init_value=d^−½·W^−1.5) for W ≥ 2.
    schedule = gf.inverse_sqrt_schedule(d**-0.5 * w**-0.5, w - 1, timescale=w, init_value=d**-0.5 * w**-1.5)
    t = np.arange(0, 3 * w + 50)
    want = d**-0.5 * np.minimum((t + 1.0) ** -0.5, (t + 1.0) * w**-1.5)
    np.testing.assert_allclose(np.asarray(jax.vmap(schedule)(jnp.asarray(t)), np.float64), want, rtol=1e-6)
