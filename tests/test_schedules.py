"""Schedules against their closed forms (NumPy, float64), optax, and recorded PyTorch schedulers."""

from __future__ import annotations

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf
from gradflow import schedules as S

PARITY = pathlib.Path(__file__).parent / "parity" / "torch_schedules.npz"


# ----------------------------------------------------------------------------
# NumPy closed forms, written from each schedule's formula (float64, one step at a time)


def np_polynomial(t, i0, e, p, n, b=0):
    if t < b:
        return i0
    if t >= b + n:
        return e
    return (i0 - e) * (1.0 - (t - b) / n) ** p + e


def np_exponential(t, i0, n, r, b=0, staircase=False, end=None):
    if t <= b:
        v = i0
    else:
        x = (t - b) / n
        v = i0 * r ** (math.floor(x) if staircase else x)
    if end is not None:
        v = max(v, end) if r < 1 else min(v, end)
    return v


def np_cosine(t, i0, n, a=0.0, p=1.0):
    c = 0.5 * (1.0 + math.cos(math.pi * min(t, n) / n))
    return i0 * ((1.0 - a) * c**p + a)


def np_warmup_cosine(t, i0, peak, w, d, end=0.0, p=1.0):
    if t < w:
        return i0 + (peak - i0) * t / w
    if t >= d:
        return end
    c = 0.5 * (1.0 + math.cos(math.pi * (t - w) / (d - w)))
    return end + (peak - end) * c**p


def np_piecewise_constant(t, i0, pairs):
    v = i0
    for b, s in pairs:
        if t >= b:
            v *= s
    return v


def np_piecewise_interpolate(t, kind, i0, pairs):
    bounds = [0] + [b for b, _ in pairs]
    values = [i0]
    for _, s in pairs:
        values.append(values[-1] * s)
    for k in range(len(pairs)):
        lo, hi = bounds[k], bounds[k + 1]
        if lo <= t < hi:
            x = (t - lo) / (hi - lo)
            if kind == "linear":
                return values[k] + (values[k + 1] - values[k]) * x
            return values[k + 1] + (values[k] - values[k + 1]) * 0.5 * (1 + math.cos(math.pi * x))
    return values[-1]


def np_warm_restarts(t, i0, t0, m=1.0, q=1.0, lo=0.0, w=0):
    start, length, i = 0.0, float(t0), 0
    while t >= start + length:  # walk the cycles one by one
        start += length
        length *= m
        i += 1
    tau = t - start
    peak = lo + (i0 - lo) * q**i
    if tau < w:
        return lo + (peak - lo) * tau / w
    return lo + (peak - lo) * 0.5 * (1 + math.cos(math.pi * (tau - w) / (length - w)))


def np_onecycle(t, n, peak, kind, pct_start=0.3, pct_final=0.85, div=25.0, final_div=1e4):
    init = peak / div
    if kind == "cosine":
        pairs = [(int(pct_start * n), div), (n, 1.0 / (div * final_div))]
    else:
        pairs = [(int(pct_start * n), div), (int(pct_final * n), 1.0 / div), (n, 1.0 / final_div)]
    return np_piecewise_interpolate(t, kind, init, pairs)


def np_wsd(t, peak, w, s, d, i0=0.0, end=0.0, shape="linear"):
    if t < w:
        return i0 + (peak - i0) * t / w
    if t < w + s:
        return peak
    if t >= w + s + d:
        return end
    x = (t - w - s) / d
    f = {"linear": 1 - x, "cosine": 0.5 * (1 + math.cos(math.pi * x)), "1-sqrt": 1 - math.sqrt(x)}[shape]
    return end + (peak - end) * f


def np_inverse_sqrt(t, peak, w, tau=None, i0=0.0):
    tau = tau if tau is not None else max(w, 1)
    if t < w:
        return i0 + (peak - i0) * t / w
    return peak / math.sqrt(1 + (t - w) / tau)


# ----------------------------------------------------------------------------
# Cases: (id, gradflow schedule, reference t -> value, key steps [boundaries], end)

CASES = [
    ("constant", S.constant_schedule(0.3), lambda t: 0.3, [], 1),
    ("polynomial_doc000", S.polynomial_schedule(0.1, 0.0, 2.0, 100), lambda t: np_polynomial(t, 0.1, 0.0, 2.0, 100), [], 100),
    ("polynomial_begin", S.polynomial_schedule(1.0, 0.01, 0.5, 80, 20), lambda t: np_polynomial(t, 1.0, 0.01, 0.5, 80, 20), [20], 100),
    ("linear_doc000", S.linear_schedule(0.1, 0.0, 100), lambda t: np_polynomial(t, 0.1, 0.0, 1.0, 100), [], 100),
    ("linear_up_begin", S.linear_schedule(0.01, 0.5, 40, 7), lambda t: np_polynomial(t, 0.01, 0.5, 1.0, 40, 7), [7], 47),
    ("exponential", S.exponential_decay(0.1, 25, 0.5), lambda t: np_exponential(t, 0.1, 25, 0.5), [25, 50], 200),
    ("exponential_staircase_end", S.exponential_decay(1.0, 30, 0.3, 10, True, 0.01),
     lambda t: np_exponential(t, 1.0, 30, 0.3, 10, True, 0.01), [10, 40, 70, 100], 130),
    ("exponential_growth_capped", S.exponential_decay(0.01, 10, 2.0, 0, False, 1.0),
     lambda t: np_exponential(t, 0.01, 10, 2.0, 0, False, 1.0), [10, 60], 67),
    ("warmup_constant_doc003", S.warmup_constant_schedule(0.0, 0.1, 50), lambda t: np_polynomial(t, 0.0, 0.1, 1.0, 50), [], 50),
    ("warmup_constant_zero_warmup", S.warmup_constant_schedule(0.0, 0.1, 0), lambda t: 0.1, [], 1),
    ("piecewise_constant", S.piecewise_constant_schedule(0.5, {30: 0.1, 10: 0.5, 60: 2.0}),
     lambda t: np_piecewise_constant(t, 0.5, [(10, 0.5), (30, 0.1), (60, 2.0)]), [10, 30], 60),
    ("piecewise_linear", S.piecewise_interpolate_schedule("linear", 1.0, {20: 0.5, 50: 0.1}),
     lambda t: np_piecewise_interpolate(t, "linear", 1.0, [(20, 0.5), (50, 0.1)]), [20], 50),
    ("piecewise_cosine", S.piecewise_interpolate_schedule("cosine", 0.2, [(15, 5.0), (15, 1.0), (45, 0.01)]),
     lambda t: np_piecewise_interpolate(t, "cosine", 0.2, [(15, 5.0), (15, 1.0), (45, 0.01)]), [15], 45),
    ("cosine", S.cosine_decay_schedule(0.1, 100), lambda t: np_cosine(t, 0.1, 100), [50], 100),
    ("cosine_alpha_exponent", S.cosine_decay_schedule(1.0, 60, 0.1, 3.0), lambda t: np_cosine(t, 1.0, 60, 0.1, 3.0), [30], 60),
    ("warmup_cosine", S.warmup_cosine_decay_schedule(0.0, 1.0, 20, 120, 0.05),
     lambda t: np_warmup_cosine(t, 0.0, 1.0, 20, 120, 0.05), [20], 120),
    ("warmup_cosine_exponent", S.warmup_cosine_decay_schedule(0.1, 0.5, 10, 50, 0.0, 2.0),
     lambda t: np_warmup_cosine(t, 0.1, 0.5, 10, 50, 0.0, 2.0), [10], 50),
    ("warmup_exponential", S.warmup_exponential_decay_schedule(0.0, 1.0, 10, 20, 0.5, 5, False, 0.02),
     lambda t: (t / 10 if t < 10 else np_exponential(t - 10, 1.0, 20, 0.5, 5, False, 0.02)), [10, 15, 35], 125),
    ("warm_restarts_tmult1", S.warm_restarts_schedule(0.1, 20, min_value=0.001),
     lambda t: np_warm_restarts(t, 0.1, 20, lo=0.001), [20, 40, 60], 80),
    ("warm_restarts_tmult2", S.warm_restarts_schedule(0.1, 10, 2.0), lambda t: np_warm_restarts(t, 0.1, 10, 2.0), [10, 30, 70], 150),
    ("warm_restarts_keras", S.warm_restarts_schedule(1.0, 10, 1.5, 0.5, 0.1, 3),
     lambda t: np_warm_restarts(t, 1.0, 10, 1.5, 0.5, 0.1, 3), [3, 10, 13, 25, 47.5], 81),
    ("sgdr_optax", S.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=40),
                                     dict(init_value=0.1, peak_value=0.5, warmup_steps=0, decay_steps=60, end_value=0.01)]),
     lambda t: (np_warmup_cosine(t, 0.0, 1.0, 5, 40) if t < 40 else np_warmup_cosine(t - 40, 0.1, 0.5, 0, 60, 0.01)), [5, 40], 100),
    ("cosine_onecycle", S.cosine_onecycle_schedule(200, 0.4), lambda t: np_onecycle(t, 200, 0.4, "cosine"), [60], 200),
    ("linear_onecycle", S.linear_onecycle_schedule(200, 0.4), lambda t: np_onecycle(t, 200, 0.4, "linear"), [60, 170], 200),
    ("wsd_linear", S.wsd_schedule(1.0, 10, 50, 40), lambda t: np_wsd(t, 1.0, 10, 50, 40), [10, 60], 100),
    ("wsd_cosine", S.wsd_schedule(0.3, 0, 30, 20, end_value=0.01, decay_shape="cosine"),
     lambda t: np_wsd(t, 0.3, 0, 30, 20, end=0.01, shape="cosine"), [30], 50),
    ("wsd_1sqrt", S.wsd_schedule(0.5, 5, 20, 25, init_value=0.05, decay_shape="1-sqrt"),
     lambda t: np_wsd(t, 0.5, 5, 20, 25, i0=0.05, shape="1-sqrt"), [5, 25], 50),
    ("inverse_sqrt", S.inverse_sqrt_schedule(1e-3, 40), lambda t: np_inverse_sqrt(t, 1e-3, 40), [40], 400),
    ("inverse_sqrt_timescale", S.inverse_sqrt_schedule(0.1, 0, 100), lambda t: np_inverse_sqrt(t, 0.1, 0, 100), [100], 1000),
    ("join", S.join_schedules([S.linear_schedule(0.0, 1.0, 10), S.constant_schedule(1.0), S.cosine_decay_schedule(1.0, 30)], [10, 40]),
     lambda t: (t / 10 if t < 10 else 1.0 if t < 40 else np_cosine(t - 40, 1.0, 30)), [10, 40], 70),
]


def _key_steps(bounds, end):
    pts = {0, 1, end - 1, end, end + 1, 10 * end, 10 * end + 7}
    for b in bounds:
        b = int(math.floor(b))
        pts |= {b - 1, b, b + 1, b + 2}
    return sorted(p for p in pts if p >= 0)


@pytest.mark.parametrize("name,sched,ref,bounds,end", CASES, ids=[c[0] for c in CASES])
def test_schedule_matches_closed_form(name, sched, ref, bounds, end):
    steps = _key_steps(bounds, end)
    dense = list(range(0, 2 * end + 3))
    for pts, how in ((steps, "key steps"), (dense, "every step")):
        got = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(pts, jnp.int32)))
        want = np.asarray([ref(t) for t in pts], np.float64)
        assert got.dtype == np.float32
        scale = np.max(np.abs(want))
        np.testing.assert_allclose(got, want, rtol=3e-6, atol=2e-7 * scale, err_msg=f"{name} at {how}")


@pytest.mark.parametrize("name,sched,ref,bounds,end", CASES, ids=[c[0] for c in CASES])
def test_schedule_is_defined_far_past_the_end(name, sched, ref, bounds, end):
    steps = jnp.asarray([10 * end, 10**6, 2**24 + 1, 2**31 - 1], jnp.int32)
    got = np.asarray(jax.jit(sched)(steps))
    assert got.shape == (4,) and got.dtype == np.float32
    assert np.all(np.isfinite(got)) and np.all(got >= 0)
    if name.startswith(("warm_restarts", "inverse_sqrt")):
        return  # periodic / decaying for ever: no end value to hold
    np.testing.assert_allclose(got, np.full(4, ref(10 * end)), rtol=3e-6, atol=1e-9)


def test_schedules_jit_vmap_and_python_int_agree():
    sched = S.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, 0.1)
    steps = jnp.arange(0, 130, dtype=jnp.int32)
    a = np.asarray(jax.vmap(sched)(steps))
    b = np.asarray(jax.jit(sched)(steps))
    c = np.asarray([float(sched(int(t))) for t in range(0, 130, 13)])
    # XLA may fuse the jitted version differently: equal to float32 rounding.
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a[::13], c, rtol=1e-6, atol=1e-7)
    assert sched(5).dtype == jnp.float32 and sched(5).shape == ()


def test_warm_restarts_restarts_at_the_peak_on_every_cycle_start():
    # Each cycle's first step is the peak (the float path for cycle_mult > 1 must not
    # land on the previous cycle's last step).
    sched = S.warm_restarts_schedule(1.0, 7, 3.0, 0.5)
    starts = [0, 7, 28, 91, 280, 847, 2548]
    got = np.asarray(jax.vmap(sched)(jnp.asarray(starts)))
    np.testing.assert_allclose(got, 0.5 ** np.arange(len(starts)), rtol=1e-6)
    before = np.asarray(jax.vmap(sched)(jnp.asarray(starts[1:]) - 1))
    assert np.all(before < 0.06 * got[:-1])  # the last step of a cycle is near the floor


# ----------------------------------------------------------------------------
# optax parity: the same arguments give the same values

OPTAX_CASES = [
    ("constant_schedule", (0.25,), {}),
    ("polynomial_schedule", (1.0, 0.01, 2.0, 100, 5), {}),
    ("linear_schedule", (0.5, 0.01, 100, 10), {}),
    ("exponential_decay", (0.1, 50, 0.5, 10), {}),
    ("exponential_decay", (1.0, 30, 0.3, 10, True, 0.01), {}),
    ("exponential_decay", (0.01, 10, 2.0), dict(end_value=1.0)),
    ("warmup_constant_schedule", (0.0, 1.0, 30), {}),
    ("piecewise_constant_schedule", (1.0, {100: 0.1, 50: 0.5, 200: 0.2}), {}),
    ("piecewise_interpolate_schedule", ("linear", 1.0, {100: 0.1, 50: 0.5, 200: 0.2}), {}),
    ("piecewise_interpolate_schedule", ("cosine", 1.0, {4: 0.1, 8: 0.01}), {}),
    ("cosine_decay_schedule", (1.0, 300, 0.1, 2.0), {}),
    ("warmup_cosine_decay_schedule", (0.0, 1.0, 50, 300, 0.05), {}),
    ("warmup_exponential_decay_schedule", (0.0, 1.0, 50, 30, 0.7, 20, True, 0.01), {}),
    ("sgdr_schedule", ([dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=100),
                        dict(init_value=0.1, peak_value=0.5, warmup_steps=5, decay_steps=200, end_value=0.01)],), {}),
    ("cosine_onecycle_schedule", (1000, 1.0), {}),
    ("linear_onecycle_schedule", (1000, 1.0), dict(pct_start=0.2, pct_final=0.9, div_factor=10.0, final_div_factor=100.0)),
    # phase ends that are not whole steps (30.3, 85.85): optax rounds them down, and so must we
    ("cosine_onecycle_schedule", (101, 1.0), {}),
    ("linear_onecycle_schedule", (101, 1.0), {}),
]


@pytest.mark.parametrize("name,args,kwargs", OPTAX_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(OPTAX_CASES)])
def test_matches_optax(name, args, kwargs):
    ours = getattr(gf, name)(*args, **kwargs)
    theirs = getattr(optax, name)(*args, **kwargs)
    steps = jnp.arange(0, 3500, dtype=jnp.int32)
    got = np.asarray(jax.vmap(ours)(steps), np.float64)
    want = np.asarray(jax.vmap(lambda t: jnp.asarray(theirs(t), jnp.float32))(steps), np.float64)
    scale = np.max(np.abs(want))
    # Both are float32 evaluations of one formula, rounded in a different order.
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=2e-7 * scale)


def test_join_schedules_matches_optax():
    parts = [S.constant_schedule(1.0), S.linear_schedule(1.0, 0.0, 100), S.cosine_decay_schedule(0.5, 30)]
    oparts = [optax.constant_schedule(1.0), optax.linear_schedule(1.0, 0.0, 100), optax.cosine_decay_schedule(0.5, 30)]
    steps = jnp.arange(0, 400)
    got = jax.vmap(S.join_schedules(parts, [50, 120]))(steps)
    want = jax.vmap(optax.join_schedules(oparts, [50, 120]))(steps)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want, np.float32), rtol=1e-6, atol=1e-7)


def test_warmup_zero_steps_gives_the_peak_where_optax_holds_init():
    ours = S.warmup_constant_schedule(0.0, 0.1, 0)
    assert float(ours(0)) == pytest.approx(0.1) and float(ours(1000)) == pytest.approx(0.1)
    assert float(optax.warmup_constant_schedule(0.0, 0.1, 0)(1000)) == 0.0  # optax's documented quirk


# ----------------------------------------------------------------------------
# PyTorch parity (trajectories recorded by tests/parity/record_torch_schedules.py)


def _torch_cases():
    data = np.load(PARITY)
    spec = json.loads(str(data["spec"]))
    return data, spec


def _gradflow_for(kind: str, lr: float, kw: dict):
    """The gradflow schedule that the docstrings name for each PyTorch scheduler."""
    if kind == "StepLR":
        return S.exponential_decay(lr, kw["step_size"], kw["gamma"], staircase=True)
    if kind == "MultiStepLR":
        return S.piecewise_constant_schedule(lr, {m: kw["gamma"] for m in kw["milestones"]})
    if kind == "ExponentialLR":
        return S.exponential_decay(lr, 1, kw["gamma"])
    if kind == "PolynomialLR":
        return S.polynomial_schedule(lr, 0.0, kw["power"], kw["total_iters"])
    if kind == "CosineAnnealingLR":
        return S.cosine_decay_schedule(lr, kw["T_max"], alpha=kw["eta_min"] / lr)
    if kind == "CosineAnnealingWarmRestarts":
        return S.warm_restarts_schedule(lr, kw["T_0"], kw["T_mult"], min_value=kw["eta_min"])
    if kind == "LinearLR":
        return S.linear_schedule(kw["start_factor"] * lr, kw["end_factor"] * lr, kw["total_iters"])
    if kind == "OneCycleLR":
        n, p, d, f = kw["total_steps"], kw["pct_start"], kw["div_factor"], kw["final_div_factor"]
        peak_at = int(round(p * n)) - 1
        return S.piecewise_interpolate_schedule("cosine", kw["max_lr"] / d, {peak_at: d, n - 1: 1.0 / (d * f)})
    raise KeyError(kind)


def _torch_schedule_ids():
    # A missing or empty recording must fail the suite, not skip these tests: one case stands for it.
    if not PARITY.exists():
        return ["recording-missing"]
    _, spec = _torch_cases()
    return [c["name"] for c in spec["schedules"]] or ["recording-empty"]


@pytest.mark.parametrize("case_name", _torch_schedule_ids())
def test_matches_pytorch_scheduler(case_name):
    assert PARITY.exists(), f"{PARITY.name} is missing: run python -m tests.parity.record_torch_schedules"
    data, spec = _torch_cases()
    assert spec["schedules"], f"{PARITY.name} records no schedule"
    case = next(c for c in spec["schedules"] if c["name"] == case_name)
    want = data[case_name]  # lr used at step 0, 1, ... (float64)
    sched = _gradflow_for(case["kind"], case["lr"], case["kwargs"])
    got = np.asarray(jax.vmap(sched)(jnp.arange(len(want))), np.float64)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7 * np.max(want))


def test_pytorch_parity_file_covers_the_issue_list():
    _, spec = _torch_cases()
    kinds = {c["kind"] for c in spec["schedules"]}
    assert kinds >= {"StepLR", "MultiStepLR", "ExponentialLR", "PolynomialLR", "CosineAnnealingLR",
                     "CosineAnnealingWarmRestarts", "OneCycleLR", "LinearLR"}
    assert {c["kwargs"]["T_mult"] for c in spec["schedules"] if c["kind"] == "CosineAnnealingWarmRestarts"} == {1, 2}
    assert PARITY.stat().st_size < 200_000


# ----------------------------------------------------------------------------
# Bad input: refused when the schedule is built


BAD = [
    (lambda: S.linear_schedule(1.0, 0.0, 0), "linear_schedule: transition_steps", "0"),
    (lambda: S.linear_schedule(1.0, 0.0, -5), "linear_schedule: transition_steps", "-5"),
    (lambda: S.polynomial_schedule(1.0, 0.0, 1.0, 0), "polynomial_schedule: transition_steps", "0"),
    (lambda: S.polynomial_schedule(1.0, 0.0, 0.0, 10), "polynomial_schedule: power", "0.0"),
    (lambda: S.polynomial_schedule(1.0, 0.0, -1.0, 10), "polynomial_schedule: power", "-1.0"),
    (lambda: S.polynomial_schedule(1.0, 0.0, 1.0, 10, -1), "polynomial_schedule: transition_begin", "-1"),
    (lambda: S.exponential_decay(1.0, 10, 0.0), "exponential_decay: decay_rate", "0.0"),
    (lambda: S.exponential_decay(1.0, 10, -0.5), "exponential_decay: decay_rate", "-0.5"),
    (lambda: S.exponential_decay(1.0, 0, 0.5), "exponential_decay: transition_steps", "0"),
    (lambda: S.exponential_decay(1.0, 10, 1.5), "exponential_decay: decay_rate", "1.5"),
    (lambda: S.cosine_decay_schedule(1.0, 0), "cosine_decay_schedule: decay_steps", "0"),
    (lambda: S.cosine_decay_schedule(1.0, -3), "cosine_decay_schedule: decay_steps", "-3"),
    (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, 101, 100), "warmup_cosine_decay_schedule: warmup_steps", "101"),
    (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, 0, 0), "warmup_cosine_decay_schedule: decay_steps", "0"),
    (lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, 5, 10, 0.0), "warmup_exponential_decay_schedule: decay_rate", "0.0"),
    (lambda: S.piecewise_constant_schedule(1.0, [(20, 0.1), (10, 0.1)]), "piecewise_constant_schedule: boundaries_and_scales", "[20, 10]"),
    (lambda: S.piecewise_constant_schedule(1.0, {10: -0.1}), "piecewise_constant_schedule: boundaries_and_scales[10]", "-0.1"),
    (lambda: S.piecewise_interpolate_schedule("linear", 1.0, [(30, 0.1), (5, 0.1)]), "piecewise_interpolate_schedule: boundaries_and_scales", "[30, 5]"),
    (lambda: S.piecewise_interpolate_schedule("cubic", 1.0), "piecewise_interpolate_schedule: interpolate_type", "cubic"),
    (lambda: S.join_schedules([S.constant_schedule(1.0)] * 3, [50, 10]), "join_schedules: boundaries", "[50, 10]"),
    (lambda: S.join_schedules([S.constant_schedule(1.0)] * 3, [10]), "join_schedules: boundaries", "1"),
    (lambda: S.warm_restarts_schedule(1.0, 0), "warm_restarts_schedule: first_cycle_steps", "0"),
    (lambda: S.warm_restarts_schedule(1.0, 10, 0.5), "warm_restarts_schedule: cycle_mult", "0.5"),
    (lambda: S.warm_restarts_schedule(1.0, 10, peak_mult=1.5), "warm_restarts_schedule: peak_mult", "1.5"),
    (lambda: S.warm_restarts_schedule(1.0, 10, warmup_steps=10), "warm_restarts_schedule: warmup_steps", "10"),
    (lambda: S.cosine_onecycle_schedule(0, 1.0), "cosine_onecycle_schedule: transition_steps", "0"),
    (lambda: S.linear_onecycle_schedule(100, 1.0, 0.5, 0.4), "linear_onecycle_schedule: pct_final", "0.4"),
    (lambda: S.wsd_schedule(1.0, 10, 10, 0), "wsd_schedule: decay_steps", "0"),
    (lambda: S.wsd_schedule(1.0, 10, 10, 10, decay_shape="sqrt"), "wsd_schedule: decay_shape", "sqrt"),
    (lambda: S.inverse_sqrt_schedule(1.0, 10, timescale=0), "inverse_sqrt_schedule: timescale", "0"),
    (lambda: S.constant_schedule(-0.1), "constant_schedule: value", "-0.1"),
    (lambda: S.cosine_decay_schedule(float("nan"), 10), "cosine_decay_schedule: init_value", "nan"),
]


@pytest.mark.parametrize("build,prefix,value", BAD, ids=[f"{b[1]}={b[2]}" for b in BAD])
def test_bad_arguments_raise_at_build_time(build, prefix, value):
    with pytest.raises(ValueError) as e:
        build()
    msg = str(e.value)
    assert msg.startswith(prefix), msg
    assert value in msg, msg


# ----------------------------------------------------------------------------
# plot_schedule


def test_plot_schedule_writes_a_png(tmp_path):
    path = gf.plot_schedule(S.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100), 120, str(tmp_path / "s.png"))
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    many = gf.plot_schedule({"a": S.constant_schedule(0.5), "b": optax.linear_schedule(1.0, 0.0, 50)}, 60)
    assert pathlib.Path(many).read_bytes()[:4] == b"\x89PNG"
    pathlib.Path(many).unlink()


# Issue 13, item 8: giant integer steps and constants in jax's default 32-bit mode.
def test_with_giant_int_steps():
    # optax's test of the same name: decay_steps does not fit in int32.
    schedule = gf.cosine_decay_schedule(init_value=1000.0, decay_steps=int(1e10), alpha=0.0)
    np.testing.assert_allclose(jax.jit(schedule)(int(1e9)), 975.52826, rtol=1e-6)
    np.testing.assert_allclose(schedule(int(1e9)), 975.52826, rtol=1e-6)


@pytest.mark.parametrize(
    "make, step, want",
    [
        (lambda: gf.cosine_decay_schedule(1.0, 2**32), 2**31 + 2**30, 0.5 * (1 + np.cos(np.pi * 0.75))),
        (lambda: gf.linear_schedule(1.0, 0.0, 2**32), 2**31, 0.5),
        (lambda: gf.polynomial_schedule(1.0, 0.0, 1.0, 2**32), 2**31 - 1, 0.5),
        (lambda: gf.exponential_decay(1.0, 2**33, 0.5, staircase=True), 2**31 - 1, 1.0),
        (lambda: gf.exponential_decay(1.0, 10, 0.5, transition_begin=2**32), 5, 1.0),
        (lambda: gf.warmup_cosine_decay_schedule(0.0, 1.0, 2**31, 2**32), 2**30, 0.5),
        (lambda: gf.join_schedules([gf.constant_schedule(1.0), gf.constant_schedule(2.0)], [2**31]), 2**31 - 1, 1.0),
        (lambda: gf.join_schedules([gf.constant_schedule(1.0), gf.constant_schedule(2.0)], [2**31]), 2**31, 2.0),
        (lambda: gf.wsd_schedule(1.0, 10, 2**31, 10), 2**31 - 1, 1.0),
        (lambda: gf.inverse_sqrt_schedule(1.0, 2**31), 2**30, 0.5),
        (lambda: gf.warm_restarts_schedule(1.0, 2**32), 2**31, 0.5),
        (lambda: gf.piecewise_interpolate_schedule("linear", 1.0, {2**31: 0.5, 2**32: 0.5}), 3 * 2**30, 0.375),
    ],
)
def test_step_counts_beyond_int32(make, step, want):
    schedule = make()
    np.testing.assert_allclose(schedule(step), want, rtol=1e-6)
    if step <= 2**31 - 1:
        np.testing.assert_allclose(jax.jit(schedule)(jnp.int32(step)), want, rtol=1e-6)
    np.testing.assert_allclose(schedule(jnp.uint32(step)), want, rtol=1e-6)


def test_piecewise_boundaries_beyond_int32_do_not_wrap():
    schedule = gf.piecewise_constant_schedule(1.0, {2**31: 0.1, 2**32: 0.1})
    assert float(schedule(0)) == 1.0
    assert float(jax.jit(schedule)(jnp.int32(2**31 - 1))) == 1.0
    np.testing.assert_allclose(schedule(2**31), 0.1, rtol=1e-6)
    np.testing.assert_allclose(schedule(jnp.uint32(2**31 + 7)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(schedule(2**32 + 7), 0.01, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.uint16, jnp.uint32])
@pytest.mark.parametrize(
    "make, want",
    [
        (lambda: gf.linear_schedule(1.0, 0.0, 10, transition_begin=5), [1.0, 1.0, 1.0, 0.9, 0.0]),
        (lambda: gf.polynomial_schedule(1.0, 0.0, 1.0, 10, transition_begin=5), [1.0, 1.0, 1.0, 0.9, 0.0]),
        (lambda: gf.exponential_decay(1.0, 1, 0.5, transition_begin=5), [1.0, 1.0, 1.0, 0.5, 2.0**-15]),
        (lambda: gf.join_schedules([gf.constant_schedule(1.0), gf.linear_schedule(1.0, 0.0, 10)], [5]),
         [1.0, 1.0, 1.0, 0.9, 0.0]),
        (lambda: gf.inverse_sqrt_schedule(1.0, warmup_steps=5, timescale=1), [0.0, 0.2, 0.8, 2**-0.5, 4**-1]),
    ],
)
def test_unsigned_steps_do_not_wrap_during_transition_begin(make, want, dtype):
    schedule = make()
    steps = np.array([0, 1, 4, 6, 20], dtype)
    np.testing.assert_allclose(jax.jit(schedule)(jnp.asarray(steps)), want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.int16, jnp.uint16])
def test_warm_restarts_with_narrow_integer_steps_equal_int32_steps(dtype):
    # the table of cycle starts (up to 2³¹) once wrapped in the step's dtype and picked the wrong cycle
    schedule = gf.warm_restarts_schedule(1.0, 10, cycle_mult=2.0, peak_mult=0.5, min_value=0.01, warmup_steps=2)
    steps = np.array([0, 5, 37, 200, 255], dtype)
    np.testing.assert_allclose(jax.jit(schedule)(jnp.asarray(steps)), schedule(jnp.asarray(steps, jnp.int32)), rtol=1e-6)


def test_inverse_sqrt_without_warmup_and_exponential_decay_at_rate_one():
    t = jnp.arange(6)
    np.testing.assert_allclose(gf.inverse_sqrt_schedule(1.0, warmup_steps=0)(t), 1 / np.sqrt(1 + np.arange(6)), rtol=1e-6)
    # decay_rate 1 with an end_value: the end value is a floor, as in optax
    schedule, theirs = gf.exponential_decay(1.0, 10, 1.0, end_value=0.5), optax.exponential_decay(1.0, 10, 1.0, end_value=0.5)
    np.testing.assert_allclose(schedule(t), jax.vmap(theirs)(t), rtol=1e-6)


def test_numpy_int64_steps_beyond_int32_do_not_wrap():
    schedule = gf.cosine_decay_schedule(0.1, 100)
    for step in (np.int64(2**31), np.int64(2**32 + 50), np.uint64(2**63)):
        assert float(schedule(step)) == float(schedule(int(step))) == 0.0, step


# Issue 13, item 11: a learning-rate sweep vmaps over a schedule's values, as with optax.
@pytest.mark.parametrize(
    "make",
    [
        lambda v: gf.constant_schedule(v),
        lambda v: gf.linear_schedule(v, 0.0, 100),
        lambda v: gf.polynomial_schedule(v, 0.001, 2.0, 100, 5),
        lambda v: gf.exponential_decay(v, 10, 0.5),
        lambda v: gf.cosine_decay_schedule(v, 100, alpha=0.01),
        lambda v: gf.warmup_cosine_decay_schedule(0.0, v, 10, 100),
        lambda v: gf.warmup_constant_schedule(0.0, v, 10),
        lambda v: gf.piecewise_constant_schedule(v, {10: 0.5, 50: 0.1}),
        lambda v: gf.piecewise_interpolate_schedule("cosine", v, {10: 0.5, 50: 0.1}),
        lambda v: gf.cosine_onecycle_schedule(100, v),
        lambda v: gf.wsd_schedule(v, 10, 50, 40),
        lambda v: gf.inverse_sqrt_schedule(v, warmup_steps=10),
        lambda v: gf.warm_restarts_schedule(v, 10, cycle_mult=2.0, warmup_steps=2),
    ],
)
def test_schedules_vmap_over_their_values(make):
    peaks = [0.1, 0.3, 1.0]
    steps = jnp.array([0, 7, 30, 99, 200])
    swept = jax.jit(jax.vmap(lambda v: make(v)(steps)))(jnp.asarray(peaks))
    want = np.stack([np.asarray(make(v)(steps)) for v in peaks])
    np.testing.assert_allclose(swept, want, rtol=1e-5, atol=1e-7)  # a traced value is float32, a number float64


def test_learning_rate_sweep_matches_optax():
    peaks = jnp.array([0.1, 0.3, 1.0])
    steps = jnp.array([0, 7, 30, 99, 200])
    ours = jax.vmap(lambda v: gf.cosine_decay_schedule(v, 100, alpha=0.01)(steps))(peaks)
    theirs = jax.vmap(lambda v: optax.cosine_decay_schedule(v, 100, alpha=0.01)(steps))(peaks)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
