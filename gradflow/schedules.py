"""Learning-rate schedules: pure functions ``step -> value``.

Every schedule here is a function of the step count ``t`` (0 for the first
update) that

- compiles under ``jax.jit`` and maps under ``jax.vmap`` (it also works
  elementwise on an array of steps);
- returns float32;
- is defined for every step ``t >= 0``: after its last transition it holds its
  end value, and it never returns NaN or a negative number.

Arguments are checked when the schedule is built; a bad one raises
``ValueError`` naming the function, the argument and the value, e.g.
``cosine_decay_schedule: decay_steps must be an integer >= 1, got 0``.

Names and arguments follow optax wherever optax has the schedule, so switching
is a change of import. Where gradflow's numbers differ from optax's (only in
corner cases optax gets wrong, such as ``warmup_steps=0``), the docstring says so.
Pass a schedule wherever a transform takes a learning rate
(``sgd(cosine_decay_schedule(0.1, 1000))``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import hparams
from gradflow import tree as tree_lib

__all__ = [
    "constant_schedule",
    "polynomial_schedule",
    "linear_schedule",
    "exponential_decay",
    "warmup_constant_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "cosine_decay_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "join_schedules",
    "warm_restarts_schedule",
    "sgdr_schedule",
    "cosine_onecycle_schedule",
    "linear_onecycle_schedule",
    "wsd_schedule",
    "inverse_sqrt_schedule",
    "plot_schedule",
]

Schedule = hparams.Schedule

_F32 = jnp.float32
_MAX_TABLED_CYCLES = 4096


# ----------------------------------------------------------------------------
# Argument checks (build time)


def _value(fn: str, name: str, value: Any) -> Any:
    """A schedule value: a finite number >= 0 (schedules never go negative) that float32, in
    which schedules compute, holds.

    A traced value (the schedule built inside ``jax.vmap`` for a learning-rate
    sweep, or inside ``jit``) cannot be checked and is kept as it is.
    """
    hparams.check_non_negative(fn, name, value)
    return _in_float32(fn, name, value)


def _in_float32(fn: str, name: str, value: Any) -> Any:
    """``value`` as a float, refused when float32 would hold it as inf (then inf − inf = NaN)."""
    if isinstance(value, jax.core.Tracer):
        return value
    if abs(float(value)) > float(np.finfo(np.float32).max):
        raise ValueError(f"{fn}: {name} must be at most float32's largest number (3.4e+38; schedules compute "
                         f"in float32), got {value!r}")
    return float(value)


def _table(values: list) -> Any:
    """The values as a float32 table: NumPy when all are numbers, JAX when one is traced."""
    if any(isinstance(v, jax.core.Tracer) for v in values):
        return jnp.stack([jnp.asarray(v, _F32) for v in values])
    return np.asarray(values, np.float32)


def _positive(fn: str, name: str, value: Any) -> Any:
    hparams.check_positive(fn, name, value)
    return _in_float32(fn, name, value)


def _boundaries(fn: str, name: str, boundaries: Sequence[Any]) -> list[int]:
    """Boundaries: integers >= 0 in non-decreasing order."""
    out = [hparams.check_int(fn, f"{name}[{i}]", b, 0) for i, b in enumerate(boundaries)]
    for i in range(1, len(out)):
        if out[i] < out[i - 1]:
            raise ValueError(f"{fn}: {name} must be sorted in increasing order, got {list(boundaries)!r}")
    return out


def _pairs(fn: str, boundaries_and_scales: Any) -> tuple[list[int], list[float]]:
    """``{step: scale}`` (any order; sorted here) or a sequence of ``(step, scale)`` pairs in order."""
    if boundaries_and_scales is None:
        return [], []
    if isinstance(boundaries_and_scales, Mapping):
        items = sorted(boundaries_and_scales.items())
    else:
        try:
            items = list(boundaries_and_scales)
        except TypeError:  # a number, say
            items = [None]
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in items):
            raise ValueError(
                f"{fn}: boundaries_and_scales must be a dict {{step: scale}} or a sequence of "
                f"(step, scale) pairs, got {boundaries_and_scales!r}"
            )
    bounds = _boundaries(fn, "boundaries_and_scales boundaries", [b for b, _ in items])
    scales = [_value(fn, f"boundaries_and_scales[{b}]", s) for b, s in items]
    return bounds, scales


def _levels(fn: str, init_value: Any, boundaries_and_scales: Any) -> tuple[list[int], list]:
    """The boundaries b_k and the levels v_0 = α₀, v_k = v_{k−1}·s_k of a piecewise schedule."""
    values = [_value(fn, "init_value", init_value)]
    bounds, scales = _pairs(fn, boundaries_and_scales)
    for s in scales:
        values.append(values[-1] * s)
    return bounds, values


def _warmup_args(fn: str, init_value: Any, peak_value: Any, warmup_steps: Any) -> tuple:
    """(α₀, α_peak, W) of a linear warm-up, checked."""
    i0, pk = _value(fn, "init_value", init_value), _value(fn, "peak_value", peak_value)
    return i0, pk, hparams.check_int(fn, "warmup_steps", warmup_steps, 0)


# ----------------------------------------------------------------------------
# Helpers used inside schedules (traced)


def _step(step: Any) -> jnp.ndarray:
    """The step as an array, clamped at 0 (integers stay integers, so clipping is exact;
    those narrower than 32 bits become int32, so that tables of boundaries fit; float16 and
    bfloat16 steps become float32, which holds constants beyond 65504).

    A Python or NumPy integer too large for jax's integer dtype (≥ 2³¹ in its
    default 32-bit mode) becomes a float32 step instead of an ``OverflowError``
    (a Python int) or a silent wrap-around (a NumPy ``int64``).
    """
    if isinstance(step, (int, np.integer)) and not isinstance(step, (bool, np.bool_)):
        info = np.iinfo(jax.dtypes.canonicalize_dtype(jnp.int64))
        if not info.min <= int(step) <= info.max:
            step = float(step)
    step = jnp.asarray(step)
    narrow = jnp.issubdtype(step.dtype, jnp.integer) and step.dtype.itemsize < 4  # int8/16, uint8/16: exact in int32
    if narrow or not (jnp.issubdtype(step.dtype, jnp.integer) or jnp.issubdtype(step.dtype, jnp.floating)):
        step = step.astype(jnp.int32)
    elif jnp.issubdtype(step.dtype, jnp.floating) and step.dtype.itemsize < 4:  # float16/bfloat16: exact in float32,
        step = step.astype(_F32)  # which holds the step constants (a float16 one above 65504 would be inf)
    return jnp.maximum(step, 0)


def _f32(x: Any) -> jnp.ndarray:
    return jnp.asarray(x).astype(_F32)


def _fit(step: jnp.ndarray, c: int) -> Any:
    """The step constant ``c`` (≥ 0) for arithmetic with ``step``: capped at the largest
    value of an integer step's dtype (a larger ``c`` is beyond every such step)."""
    if jnp.issubdtype(step.dtype, jnp.integer):
        return np.asarray(min(int(c), int(jnp.iinfo(step.dtype).max)), step.dtype)
    return np.asarray(c, step.dtype)


def _after(step: jnp.ndarray, begin: int) -> jnp.ndarray:
    """max(t − begin, 0), without wrapping an unsigned step or overflowing for begin ≥ 2³¹."""
    b = _fit(step, begin)
    return jnp.maximum(step, b) - b


def _floordiv(step: jnp.ndarray, n: int) -> jnp.ndarray:
    """⌊t / n⌋ for n > 0 that may exceed an integer step dtype's range (then 0)."""
    if jnp.issubdtype(step.dtype, jnp.integer) and n > int(jnp.iinfo(step.dtype).max):
        return jnp.zeros_like(step)
    return step // np.asarray(n, step.dtype)


def _passed(step: jnp.ndarray, bounds: Sequence[int]) -> jnp.ndarray:
    """The number of boundaries b_i ≤ t; a boundary beyond the step dtype's range is never passed."""
    if jnp.issubdtype(step.dtype, jnp.integer):
        bounds = [b for b in bounds if b <= int(jnp.iinfo(step.dtype).max)]
    if not bounds:
        return jnp.zeros(jnp.shape(step), jnp.int32)
    return jnp.sum(step[..., None] >= jnp.asarray(np.asarray(bounds).astype(step.dtype)), axis=-1)


def _before(step: jnp.ndarray, c: int) -> jnp.ndarray:
    """t < c, for a constant c that may exceed the step dtype's range (then always true)."""
    if jnp.issubdtype(step.dtype, jnp.integer) and c > int(jnp.iinfo(step.dtype).max):
        return jnp.ones(jnp.shape(step), jnp.bool_)
    return step < np.asarray(c, step.dtype)


def _done(step: jnp.ndarray, begin: int, length: int) -> jnp.ndarray:
    """clip(t − begin, 0, length), exact for integer steps of any width and sign."""
    return jnp.minimum(_after(step, begin), _fit(step, length))


def _progress(step: jnp.ndarray, begin: int, length: int) -> jnp.ndarray:
    """clip(t − begin, 0, length) / length in float32 (exact integer clipping first)."""
    return _f32(_done(step, begin, length)) / _F32(length)


def _remaining(step: jnp.ndarray, begin: int, length: int) -> jnp.ndarray:
    """1 − clip(t − begin, 0, length)/length, formed as (length − done)/length (one rounding)."""
    done = _done(step, begin, length)
    if jnp.issubdtype(step.dtype, jnp.integer) and length > int(jnp.iinfo(step.dtype).max):
        return (_F32(length) - _f32(done)) / _F32(length)
    return _f32(length - done) / _F32(length)


def _half_cosine(frac: jnp.ndarray) -> jnp.ndarray:
    """½(1 + cos(π·x)) for x in [0, 1]: 1 at x = 0, 0 at x = 1."""
    return 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


def _nonneg(x: jnp.ndarray) -> jnp.ndarray:
    """Clamp rounding noise below zero (a schedule is never negative)."""
    return jnp.maximum(_f32(x), 0.0)


def _warm(step: jnp.ndarray, i0: Any, pk: Any, w: int) -> jnp.ndarray:
    """The linear warm-up α₀ + (α_peak − α₀)·min(t, W)/W (α_peak from the start when W = 0)."""
    return i0 + (pk - i0) * _progress(step, 0, max(w, 1))


# ----------------------------------------------------------------------------
# The documents' schedules


def constant_schedule(value: float) -> Schedule:
    """α_t = α for every t (docs/equations.md, eq. (3): a fixed learning rate).

    Args:
      value: α ≥ 0.

    Returns:
      A schedule ``step -> α`` (float32, shaped like ``step``).

    Parity: ``optax.constant_schedule(value)``; ``torch.optim.lr_scheduler.ConstantLR``
    with ``factor=1``.

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.constant_schedule(0.1)
      >>> [round(float(schedule(t)), 4) for t in (0, 1000)]
      [0.1, 0.1]
    """
    v = _value("constant_schedule", "value", value)

    def schedule(step):
        return jnp.full(jnp.shape(step), v, _F32)

    return schedule


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Polynomial decay from ``init_value`` to ``end_value``.

    With τ = clip(t − B, 0, T):

        α_t = (α₀ − α_T)·(1 − τ/T)^β + α_T,

    so α_t = α₀ for t ≤ B and α_t = α_T for t ≥ B + T.

    docs/equations.md, eq. (1): two of the source articles call α(1 − t/T)^β
    "exponential decay"; it is this polynomial decay with ``end_value=0``, ``power=β``.
    True exponential decay is :func:`exponential_decay`.

    Args:
      init_value: α₀ ≥ 0.
      end_value: α_T ≥ 0 (held after the transition).
      power: β > 0.
      transition_steps: T > 0, the length of the transition.
      transition_begin: B ≥ 0, steps to hold α₀ before the transition.

    Returns:
      A schedule ``step -> α_t`` (float32).

    Parity: ``optax.polynomial_schedule`` (same arguments);
    ``torch.optim.lr_scheduler.PolynomialLR(total_iters=T, power=β)`` is
    ``polynomial_schedule(lr, 0.0, β, T)``.

    Raises:
      ValueError: ``power <= 0``, ``transition_steps <= 0``, ``transition_begin < 0``,
        or a negative value. (optax turns ``transition_steps <= 0`` into a constant
        schedule silently.)

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.polynomial_schedule(0.1, 0.0, 2.0, 100)   # 0.1·(1 − t/100)²
      >>> [round(float(schedule(t)), 4) for t in (0, 50, 100, 200)]
      [0.1, 0.025, 0.0, 0.0]
    """
    fn = "polynomial_schedule"
    i0 = _value(fn, "init_value", init_value)
    i1 = _value(fn, "end_value", end_value)
    p = _positive(fn, "power", power)
    n = hparams.check_int(fn, "transition_steps", transition_steps, 1)
    b = hparams.check_int(fn, "transition_begin", transition_begin, 0)

    def schedule(step):
        frac = _remaining(_step(step), b, n)
        return _nonneg((i0 - i1) * frac**p + i1)

    return schedule


def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Linear change from ``init_value`` to ``end_value`` over ``transition_steps``.

        α_t = α₀ + (α_T − α₀)·τ/T,   τ = clip(t − B, 0, T).

    The linear decay α(1 − t/T) of docs/equations.md, eq. (2), is ``linear_schedule(α, 0.0, T)``.

    Args:
      init_value: α₀ ≥ 0.
      end_value: α_T ≥ 0.
      transition_steps: T > 0.
      transition_begin: B ≥ 0.

    Returns:
      A schedule (float32).

    Parity: ``optax.linear_schedule`` (same arguments);
    ``torch.optim.lr_scheduler.LinearLR(start_factor=s, end_factor=e, total_iters=T)``
    is ``linear_schedule(s·lr, e·lr, T)``.

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.linear_schedule(0.1, 0.0, 100)
      >>> [round(float(schedule(t)), 4) for t in (0, 25, 100, 200)]
      [0.1, 0.075, 0.0, 0.0]
    """
    fn = "linear_schedule"
    i0 = _value(fn, "init_value", init_value)
    i1 = _value(fn, "end_value", end_value)
    n = hparams.check_int(fn, "transition_steps", transition_steps, 1)
    b = hparams.check_int(fn, "transition_begin", transition_begin, 0)

    def schedule(step):
        frac = _progress(_step(step), b, n)
        return _nonneg(i0 + (i1 - i0) * frac)

    return schedule


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """Exponential decay α_t = α₀·r^((t − B)/T) (the true exponential decay).

    With ``staircase=True`` the exponent is ⌊(t − B)/T⌋. Before B the value is α₀.
    ``end_value`` bounds the result: a floor when r < 1, a ceiling when r > 1.

    Args:
      init_value: α₀ ≥ 0.
      transition_steps: T > 0, the steps over which the value is multiplied by r.
      decay_rate: r > 0 (r > 1 needs ``end_value``, so the value stays finite).
      transition_begin: B ≥ 0.
      staircase: decay in discrete jumps every T steps.
      end_value: optional bound ≥ 0.

    Returns:
      A schedule (float32).

    Parity: ``optax.exponential_decay`` (same arguments).
    ``torch.optim.lr_scheduler.ExponentialLR(gamma)`` is ``exponential_decay(lr, 1, gamma)``;
    ``StepLR(step_size, gamma)`` is ``exponential_decay(lr, step_size, gamma, staircase=True)``.
    Keras ``ExponentialDecay(lr, decay_steps, decay_rate, staircase)`` is the same as
    ``exponential_decay(lr, decay_steps, decay_rate, staircase=staircase)``.

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.exponential_decay(0.1, 100, 0.5)   # 0.1·0.5^(t/100)
      >>> [round(float(schedule(t)), 4) for t in (0, 50, 100, 200)]
      [0.1, 0.0707, 0.05, 0.025]
      >>> stairs = gf.exponential_decay(0.1, 100, 0.5, staircase=True)   # 0.1·0.5^⌊t/100⌋
      >>> [round(float(stairs(t)), 4) for t in (0, 50, 100, 250)]
      [0.1, 0.1, 0.05, 0.025]
    """
    fn = "exponential_decay"
    i0 = _value(fn, "init_value", init_value)
    n = hparams.check_int(fn, "transition_steps", transition_steps, 1)
    r = _positive(fn, "decay_rate", decay_rate)
    b = hparams.check_int(fn, "transition_begin", transition_begin, 0)
    hparams.check_flags(fn, staircase=staircase)
    if end_value is not None:
        end = _value(fn, "end_value", end_value)
    elif r > 1.0:
        raise ValueError(
            f"{fn}: decay_rate > 1 grows without bound; give end_value as its cap, got decay_rate={decay_rate!r}"
        )
    # r^x = exp(x·ln r) with ln r taken in float64 once: one rounding of ln r instead of
    # a float32 r raised to a large power.
    log_r = math.log(r)

    def schedule(step):
        done = _after(_step(step), b)
        if staircase:
            expo = _f32(_floordiv(done, n))
        else:
            expo = _f32(done) / _F32(n)
        value = i0 * jnp.exp(expo * _F32(log_r))
        if end_value is not None:
            value = jnp.maximum(value, end) if r < 1.0 else jnp.minimum(value, end)
        return _nonneg(value)

    return schedule


def warmup_constant_schedule(init_value: float, peak_value: float, warmup_steps: int) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value``, then hold (docs/equations.md, eq. (5)).

        α_t = α₀ + (α_peak − α₀)·min(t, W)/W;   α_t = α_peak for t ≥ W.

    The "stepped" schedule of docs/equations.md, eq. (5): start low, rise to the best value, then hold.

    Args:
      init_value: α₀ ≥ 0.
      peak_value: α_peak ≥ 0.
      warmup_steps: W ≥ 0 (0 means α_peak from the first step).

    Returns:
      A schedule (float32).

    Parity: ``optax.warmup_constant_schedule`` for W > 0. With W = 0 optax holds
    ``init_value`` forever; gradflow gives ``peak_value`` (a warmup of no steps).

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.warmup_constant_schedule(0.0, 0.1, 10)
      >>> [round(float(schedule(t)), 4) for t in (0, 5, 10, 1000)]
      [0.0, 0.05, 0.1, 0.1]
    """
    i0, pk, w = _warmup_args("warmup_constant_schedule", init_value, peak_value, warmup_steps)
    if w == 0:
        return constant_schedule(pk)
    return linear_schedule(i0, pk, w)


# ----------------------------------------------------------------------------
# Step and piecewise


def piecewise_constant_schedule(init_value: float, boundaries_and_scales: Any = None) -> Schedule:
    """Piecewise constant: α_t = α₀·∏_{i: b_i ≤ t} s_i.

    Args:
      init_value: α₀ ≥ 0.
      boundaries_and_scales: ``{b_i: s_i}`` (steps ≥ 0, scales ≥ 0), or a sequence
        of ``(b_i, s_i)`` pairs in increasing order of b_i.

    Returns:
      A schedule (float32). The products are formed in float64 when it is built,
      so each value is rounded once.

    Parity: ``optax.piecewise_constant_schedule`` (same arguments).
    ``torch.optim.lr_scheduler.MultiStepLR(milestones, gamma)`` is
    ``piecewise_constant_schedule(lr, [(m, gamma) for m in sorted(milestones)])`` (pairs, not
    a dict, so that a milestone given twice decays twice, as torch's Counter does); Keras
    ``PiecewiseConstantDecay(boundaries, values)`` is the same with
    ``s_i = values[i] / values[i-1]`` and boundaries shifted by one (Keras switches
    after the boundary step).

    Raises:
      ValueError: a negative scale or boundary, or pairs out of order.

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.piecewise_constant_schedule(0.1, {100: 0.1, 200: 0.5})
      >>> [round(float(schedule(t)), 4) for t in (0, 99, 100, 200)]
      [0.1, 0.1, 0.01, 0.005]
    """
    bounds, values = _levels("piecewise_constant_schedule", init_value, boundaries_and_scales)
    table = _table(values)

    def schedule(step):
        step = _step(step)
        if not bounds:
            return jnp.full(jnp.shape(step), table[0], _F32)
        return jnp.asarray(table)[_passed(step, bounds)]

    return schedule


def _linear_interpolate(start, end, pct):
    return start + (end - start) * pct


def _cosine_interpolate(start, end, pct):
    return end + (start - end) * _half_cosine(pct)


def piecewise_interpolate_schedule(
    interpolate_type: str, init_value: float, boundaries_and_scales: Any = None
) -> Schedule:
    """Piecewise interpolation between the values v_k = α₀·∏_{i ≤ k} s_i at steps b_k.

    With b_0 = 0, v_0 = α₀ and p = (t − b_k)/(b_{k+1} − b_k) for b_k ≤ t < b_{k+1}:

        linear:  α_t = v_k + (v_{k+1} − v_k)·p
        cosine:  α_t = v_{k+1} + (v_k − v_{k+1})·½(1 + cos(π·p))

    and α_t = v_n for t ≥ b_n.

    Args:
      interpolate_type: ``"linear"`` or ``"cosine"``.
      init_value: α₀ ≥ 0.
      boundaries_and_scales: as in :func:`piecewise_constant_schedule`.

    Returns:
      A schedule (float32).

    Parity: ``optax.piecewise_interpolate_schedule`` (same arguments).
    ``torch.optim.lr_scheduler.OneCycleLR(max_lr, total_steps=N, pct_start=p,
    div_factor=d, final_div_factor=f)`` (cosine annealing) is
    ``piecewise_interpolate_schedule("cosine", max_lr/d, {int(p·N) − 1: d, N − 1: 1/(d·f)})``
    when p·N is an integer: PyTorch reaches the peak one step earlier than
    optax's one-cycle does.
    """
    fn = "piecewise_interpolate_schedule"
    if interpolate_type not in ("linear", "cosine"):
        raise ValueError(f"{fn}: interpolate_type must be 'linear' or 'cosine', got {interpolate_type!r}")
    interp = _linear_interpolate if interpolate_type == "linear" else _cosine_interpolate
    bounds, values = _levels(fn, init_value, boundaries_and_scales)
    in_int64 = [min(b, int(np.iinfo(np.int64).max)) for b in bounds]  # beyond it, never reached by any step
    starts = np.asarray([0] + in_int64, np.int64)
    ends = np.asarray(in_int64 + [in_int64[-1] if bounds else 0], np.int64)
    lengths = np.maximum(ends - starts, 1).astype(np.float32)
    v_lo = _table(values)
    v_hi = _table(values[1:] + values[-1:])
    n = len(bounds)

    def schedule(step):
        step = _step(step)
        if n == 0:
            return jnp.full(jnp.shape(step), v_lo[0], _F32)
        k = _passed(step, bounds)
        # Starts in the step's dtype; one beyond an integer dtype's range is never selected.
        if jnp.issubdtype(step.dtype, jnp.integer):
            table = np.minimum(starts, int(jnp.iinfo(step.dtype).max)).astype(step.dtype)
        else:
            table = starts.astype(step.dtype)
        pct = _f32(step - jnp.asarray(table)[k]) / jnp.asarray(lengths)[k]
        value = interp(jnp.asarray(v_lo)[k], jnp.asarray(v_hi)[k], jnp.minimum(pct, 1.0))
        return _nonneg(jnp.where(k >= n, v_lo[n], value))

    return schedule


# ----------------------------------------------------------------------------
# Cosine, warmup, restarts


def cosine_decay_schedule(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """Cosine decay (Loshchilov & Hutter's annealing without restarts).

        α_t = α₀·[(1 − a)·c_t^p + a],   c_t = ½(1 + cos(π·min(t, T)/T)),

    so the value falls from α₀ to a·α₀ at t = T and holds there.

    Args:
      init_value: α₀ ≥ 0.
      decay_steps: T > 0.
      alpha: a ≥ 0, the final value as a fraction of α₀.
      exponent: p > 0.

    Returns:
      A schedule (float32).

    Parity: ``optax.cosine_decay_schedule`` (same arguments);
    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=T, eta_min=η)`` for t ≤ T is
    ``cosine_decay_schedule(lr, T, alpha=η/lr)`` (PyTorch's value rises again after T;
    gradflow holds η); Keras ``CosineDecay(lr, T, alpha)`` the same.

    References:
      Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, 2017.
      https://arxiv.org/abs/1608.03983

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.cosine_decay_schedule(0.1, 100)   # 0.1·½(1 + cos(π·t/100))
      >>> [round(float(schedule(t)), 4) for t in (0, 50, 100, 200)]
      [0.1, 0.05, 0.0, 0.0]
    """
    fn = "cosine_decay_schedule"
    i0 = _value(fn, "init_value", init_value)
    n = hparams.check_int(fn, "decay_steps", decay_steps, 1)
    a = _value(fn, "alpha", alpha)
    p = _positive(fn, "exponent", exponent)

    def schedule(step):
        c = _half_cosine(_progress(_step(step), 0, n))
        c = jnp.maximum(c, 0.0)
        return _nonneg(i0 * ((1.0 - a) * c**p + a))

    return schedule


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Linear warmup to ``peak_value``, then cosine decay to ``end_value``.

        t < W:       α_t = α₀ + (α_peak − α₀)·t/W
        W ≤ t < D:   α_t = α_end + (α_peak − α_end)·c_t^p,  c_t = ½(1 + cos(π·(t − W)/(D − W)))
        t ≥ D:       α_t = α_end

    ``decay_steps`` D counts the warmup, as in optax.

    Args:
      init_value: α₀ ≥ 0.
      peak_value: α_peak ≥ 0.
      warmup_steps: W ≥ 0.
      decay_steps: D > 0, the total length (W ≤ D).
      end_value: α_end ≥ 0.
      exponent: p > 0.

    Returns:
      A schedule (float32).

    Parity: ``optax.warmup_cosine_decay_schedule`` (same arguments; optax refuses
    W = D, gradflow jumps to ``end_value`` at D; with ``peak_value=0`` optax takes
    α_end/α_peak as 0 and holds 0, where gradflow anneals from 0 to ``end_value``). Keras ``CosineDecay(α₀, D − W,
    alpha=α_end/α_peak, warmup_target=α_peak, warmup_steps=W)`` likewise.

    Raises:
      ValueError: ``warmup_steps > decay_steps``, ``decay_steps <= 0``, a negative value.

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.warmup_cosine_decay_schedule(0.0, 0.1, 10, 110, end_value=0.001)
      >>> [round(float(schedule(t)), 4) for t in (0, 5, 10, 60, 110, 500)]   # halfway: (0.1 + 0.001)/2
      [0.0, 0.05, 0.1, 0.0505, 0.001, 0.001]
    """
    fn = "warmup_cosine_decay_schedule"
    i0, pk, w = _warmup_args(fn, init_value, peak_value, warmup_steps)
    d = hparams.check_int(fn, "decay_steps", decay_steps, 1)
    end = _value(fn, "end_value", end_value)
    p = _positive(fn, "exponent", exponent)
    if w > d:
        raise ValueError(f"{fn}: warmup_steps must be <= decay_steps ({d}), got {warmup_steps!r}")
    cos_len = max(d - w, 1)

    def schedule(step):
        step = _step(step)
        warm = _warm(step, i0, pk, w)
        c = jnp.maximum(_half_cosine(_progress(step, w, cos_len)), 0.0)
        decay = end + (pk - end) * c**p
        value = jnp.where(_before(step, w), warm, jnp.where(_before(step, d), decay, end))
        return _nonneg(value)

    return schedule


def warmup_exponential_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """Linear warmup to ``peak_value`` over W steps, then :func:`exponential_decay` from it.

        t < W:  α_t = α₀ + (α_peak − α₀)·t/W;   t ≥ W:  α_t = E(t − W),

    where E is ``exponential_decay(peak_value, transition_steps, decay_rate,
    transition_begin, staircase, end_value)``.

    Args:
      init_value, peak_value: values ≥ 0.
      warmup_steps: W ≥ 0.
      transition_steps, decay_rate, transition_begin, staircase, end_value: as in
        :func:`exponential_decay`.

    Returns:
      A schedule (float32).

    Parity: ``optax.warmup_exponential_decay_schedule`` (same arguments).
    """
    fn = "warmup_exponential_decay_schedule"
    i0, pk, w = _warmup_args(fn, init_value, peak_value, warmup_steps)
    try:
        decay = exponential_decay(pk, transition_steps, decay_rate, transition_begin, staircase, end_value)
    except ValueError as e:
        raise ValueError(str(e).replace("exponential_decay:", f"{fn}:", 1)) from None
    if w == 0:
        return decay
    return join_schedules([linear_schedule(i0, pk, w), decay], [w])


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[i]`` from ``boundaries[i−1]`` on, each seeing the steps since its start.

        α_t = S_k(t − b_k)  for b_k ≤ t < b_{k+1}  (b_0 = 0).

    Args:
      schedules: n schedules (gradflow's, optax's, or any ``step -> value``).
      boundaries: n − 1 steps ≥ 0 in increasing order.

    Returns:
      A schedule (float32).

    Parity: ``optax.join_schedules`` (same arguments);
    ``torch.optim.lr_scheduler.SequentialLR(schedulers, milestones)``.

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.join_schedules([gf.constant_schedule(0.1), gf.linear_schedule(0.1, 0.0, 10)], [50])
      >>> [round(float(schedule(t)), 4) for t in (0, 49, 50, 55, 60)]   # the second starts at its step 0
      [0.1, 0.1, 0.1, 0.05, 0.0]
    """
    fn = "join_schedules"
    schedules = list(schedules)
    if not schedules or not all(callable(s) for s in schedules):
        raise ValueError(f"{fn}: schedules must be a non-empty sequence of callables, got {schedules!r}")
    bounds = _boundaries(fn, "boundaries", list(boundaries))
    if len(bounds) != len(schedules) - 1:
        raise ValueError(
            f"{fn}: boundaries must have len(schedules) - 1 = {len(schedules) - 1} entries, got {len(bounds)}"
        )

    def schedule(step):
        step = _step(step)
        out = _f32(schedules[0](step))
        for b, s in zip(bounds, schedules[1:]):
            out = jnp.where(_before(step, b), out, _f32(s(_after(step, b))))
        return out

    return schedule


def warm_restarts_schedule(
    init_value: float,
    first_cycle_steps: int,
    cycle_mult: float = 1.0,
    peak_mult: float = 1.0,
    min_value: float = 0.0,
    warmup_steps: int = 0,
) -> Schedule:
    """SGDR: cosine annealing with warm restarts, growing cycles and shrinking peaks.

    Cycle i (i = 0, 1, …) lasts T_i = T₀·m^i steps and starts at
    s_i = T₀·(m^i − 1)/(m − 1) (s_i = i·T₀ when m = 1). Within it, with τ = t − s_i
    and peak P_i = α_min + (α₀ − α_min)·q^i:

        τ < W:  α_t = α_min + (P_i − α_min)·τ/W
        τ ≥ W:  α_t = α_min + (P_i − α_min)·½(1 + cos(π·(τ − W)/(T_i − W)))

    The cycle starts are formed in float64 when the schedule is built (the first
    4096 cycles), so every restart lands on its exact step; only a ``cycle_mult``
    barely above 1 reaches past them, where the cycle is located in float32.

    Args:
      init_value: α₀ ≥ 0, the first peak.
      first_cycle_steps: T₀ > 0.
      cycle_mult: m ≥ 1, each cycle is m times longer than the last.
      peak_mult: q in (0, 1], each peak's height above α_min is q times the last.
      min_value: α_min ≥ 0, the floor the cosine anneals to.
      warmup_steps: W ≥ 0 steps of linear warmup at the start of every cycle
        (W < T₀).

    Returns:
      A schedule (float32).

    Parity: ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0, T_mult,
    eta_min)`` is ``warm_restarts_schedule(lr, T_0, T_mult, min_value=eta_min)``.
    Keras ``CosineDecayRestarts(lr, first_decay_steps, t_mul, m_mul, alpha)`` is
    ``warm_restarts_schedule(lr, first_decay_steps, t_mul, m_mul, min_value=alpha·lr)``
    (Keras scales the amplitude above the floor by m_mul, as here).
    optax's ``sgdr_schedule`` takes one dict per cycle instead: see :func:`sgdr_schedule`.

    References:
      Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, 2017.
      https://arxiv.org/abs/1608.03983

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.warm_restarts_schedule(0.1, 10)   # restarts at the peak every 10 steps
      >>> [round(float(schedule(t)), 4) for t in (0, 5, 9, 10, 15)]
      [0.1, 0.05, 0.0024, 0.1, 0.05]
    """
    fn = "warm_restarts_schedule"
    i0 = _value(fn, "init_value", init_value)
    t0 = hparams.check_int(fn, "first_cycle_steps", first_cycle_steps, 1)
    hparams.check_finite(fn, "cycle_mult", cycle_mult)
    if not cycle_mult >= 1.0:
        raise ValueError(f"{fn}: cycle_mult must be >= 1, got {cycle_mult!r}")
    hparams.check_range(fn, "peak_mult", peak_mult, 0.0, 1.0, low_open=True)
    lo = _value(fn, "min_value", min_value)
    w = hparams.check_int(fn, "warmup_steps", warmup_steps, 0)
    if w >= t0:
        raise ValueError(f"{fn}: warmup_steps must be < first_cycle_steps ({t0}), got {warmup_steps!r}")
    m, q, amp = float(cycle_mult), float(peak_mult), i0 - lo
    table = _CycleTable.build(t0, m) if m != 1.0 else None

    def schedule(step):
        step = _step(step)
        if table is None:
            n = _fit(step, t0)
            if jnp.issubdtype(step.dtype, jnp.floating):  # fmod is exact; ⌊t/T₀⌋·T₀ formed in floats is not
                tau = jnp.remainder(step, n)
                i = jnp.round((step - tau) / n)
            else:
                i = _floordiv(step, t0)
                tau = step - i * n
            tau = _f32(tau)
            length = jnp.full(jnp.shape(step), t0, _F32)
        else:
            i, tau, length = table.position(step)
        peak = amp * jnp.power(_F32(q), _f32(i)) if q != 1.0 else _F32(amp)
        return _nonneg(lo + peak * _warm_cosine(tau, length, w))

    return schedule


def _warm_cosine(tau: jnp.ndarray, length: jnp.ndarray, w: int) -> jnp.ndarray:
    """The shape of one cycle at τ steps into it: a linear warm-up over w steps, then a half cosine from 1 to 0."""
    if w > 0:
        cos_frac = jnp.clip((tau - w) / jnp.maximum(length - w, 1.0), 0.0, 1.0)
        return jnp.where(tau < w, tau / _F32(w), _half_cosine(cos_frac))
    return _half_cosine(jnp.clip(tau / length, 0.0, 1.0))


class _CycleTable:
    """Where a step falls among cycles whose lengths grow by m > 1: T_k = T₀·m^k, starts s_k = Σ_{j<k} T_j.

    The first ``_MAX_TABLED_CYCLES`` starts are tabled (formed in float64 here) and a step is
    compared with ⌈s_k⌉, which is exact; a step past the table (only for m barely above 1)
    uses the closed form of s_j from the last tabled start.
    """

    @classmethod
    def build(cls, t0: int, m: float) -> _CycleTable:
        starts, length = [0.0], float(t0)
        while len(starts) < _MAX_TABLED_CYCLES and starts[-1] + length <= tree_lib.INT32_MAX:
            starts.append(starts[-1] + length)
            length *= m
        self = cls()
        self.m, self.log_m = m, math.log(m)
        self.lengths = np.asarray([t0 * m**k for k in range(len(starts))], np.float64)
        # ⌈s_k⌉ of s_k less a bound on its float64 rounding (k sums and products of 2⁻⁵³ each, taken
        # 8 times over), so 201.00000000000003 is 201 and a start near 2³¹ still moves by under 0.01 of a step
        self.ceil_starts = np.asarray([math.ceil(x - (k + 1) * 2.0**-50 * x) for k, x in enumerate(starts)], np.int64)
        self.offsets = np.asarray(self.ceil_starts - np.asarray(starts), np.float32)  # ⌈s_k⌉ − s_k
        self.last_start, self.last_length = int(self.ceil_starts[-1]), self.lengths[-1]
        self.n_tabled = len(starts)
        self.beyond = starts[-1] + length <= tree_lib.INT32_MAX  # the table stops before the last int32 step
        return self

    def position(self, step: jnp.ndarray) -> tuple:
        """(cycle index i, steps τ into the cycle, the cycle's length), τ and length in float32."""
        table = jnp.asarray(self.ceil_starts).astype(step.dtype)
        k = jnp.searchsorted(table, step, side="right") - 1
        tau = _f32(step - table[k]) + jnp.asarray(self.offsets)[k]
        length = jnp.asarray(self.lengths, _F32)[k]
        int32_steps = jnp.issubdtype(step.dtype, jnp.integer) and jnp.iinfo(step.dtype).max <= tree_lib.INT32_MAX
        if not self.beyond and int32_steps:  # the table reaches past every step of the dtype
            return k, tau, length
        return self._past_the_table(step, k, tau, length)

    def _start(self, j: jnp.ndarray) -> jnp.ndarray:
        """s_j − s_last = L·(m^j − 1)/(m − 1) for the j-th cycle after the last tabled one."""
        return _F32(self.last_length) * jnp.expm1(j * _F32(self.log_m)) / _F32(self.m - 1.0)

    def _past_the_table(self, step, k, tau, length) -> tuple:
        m, start = self.m, self._start
        tf = _f32(jnp.maximum(step - self.last_start, 0)) + self.offsets[-1]
        j = jnp.floor(jnp.log1p(tf * _F32((m - 1.0) / self.last_length)) / _F32(self.log_m))
        j = j + (tf >= start(j + 1.0)) - (tf < start(j))  # corrected by one either way
        j = jnp.maximum(j, 0.0)
        far = step >= self.last_start
        tau = jnp.where(far, tf - start(j), tau)
        length = jnp.where(far, start(j + 1.0) - start(j), length)
        return jnp.where(far, (self.n_tabled - 1) + j, _f32(k)), tau, length


def sgdr_schedule(cosine_kwargs: Sequence[Mapping[str, Any]]) -> Schedule:
    """SGDR as optax builds it: one :func:`warmup_cosine_decay_schedule` per cycle, joined.

    Cycle k runs ``warmup_cosine_decay_schedule(**cosine_kwargs[k])`` for its
    ``decay_steps`` steps; after the last cycle its end value holds.

    Args:
      cosine_kwargs: one dict of :func:`warmup_cosine_decay_schedule` arguments per cycle.

    Returns:
      A schedule (float32).

    Parity: ``optax.sgdr_schedule`` (same argument). For growing cycles and a
    decaying peak in closed form use :func:`warm_restarts_schedule`.

    References:
      Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, 2017.
      https://arxiv.org/abs/1608.03983
    """
    cosine_kwargs = list(cosine_kwargs)
    if not cosine_kwargs:
        raise ValueError("sgdr_schedule: cosine_kwargs must hold at least one cycle, got []")
    schedules, boundaries, at = [], [], 0
    for k, kwargs in enumerate(cosine_kwargs):
        try:
            schedules.append(warmup_cosine_decay_schedule(**kwargs))
        except ValueError as e:
            raise ValueError(str(e).replace("warmup_cosine_decay_schedule:", f"sgdr_schedule: cosine_kwargs[{k}]:", 1)) from None
        at += int(kwargs["decay_steps"])
        boundaries.append(at)
    return join_schedules(schedules, boundaries[:-1])


# ----------------------------------------------------------------------------
# One-cycle, warmup-stable-decay, inverse square root


def _onecycle_checks(fn, transition_steps, peak_value, pct_start, div_factor, final_div_factor):
    n = hparams.check_int(fn, "transition_steps", transition_steps, 1)
    pk = _value(fn, "peak_value", peak_value)
    hparams.check_range(fn, "pct_start", pct_start, 0.0, 1.0, low_open=True, high_open=True)
    d = _positive(fn, "div_factor", div_factor)
    f = _positive(fn, "final_div_factor", final_div_factor)
    for name, x in (("div_factor", d), ("div_factor·final_div_factor", d * f)):
        if not isinstance(x, jax.core.Tracer) and not 0 < float(np.float32(x)) < np.inf:
            raise ValueError(f"{fn}: {name} must be a positive number within float32's range, got {x!r}")
    return n, pk, d, f


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """One-cycle policy with cosine phases (Smith & Topin).

    From α_peak/d at t = 0, cosine up to α_peak at t = ⌊p·N⌋, cosine down to
    α_peak/(d·f) at t = N, then hold.

    Args:
      transition_steps: N > 0.
      peak_value: α_peak ≥ 0.
      pct_start: p in (0, 1), the rising fraction.
      div_factor: d > 0 (initial value α_peak/d).
      final_div_factor: f > 0 (final value α_peak/(d·f)).

    Returns:
      A schedule (float32).

    Parity: ``optax.cosine_onecycle_schedule`` (same arguments). PyTorch's
    ``OneCycleLR`` peaks one step earlier and ends at N − 1: see
    :func:`piecewise_interpolate_schedule` for its exact equivalent.

    References:
      Smith & Topin, Super-Convergence: Very Fast Training of Neural Networks Using
      Large Learning Rates, 2017. https://arxiv.org/abs/1708.07120
    """
    n, pk, d, f = _onecycle_checks(
        "cosine_onecycle_schedule", transition_steps, peak_value, pct_start, div_factor, final_div_factor
    )
    return piecewise_interpolate_schedule(
        "cosine", pk / d, [(int(pct_start * n), d), (n, 1.0 / (d * f))]
    )


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """One-cycle policy with linear phases (Smith's three-phase form).

    Linear from α_peak/d up to α_peak at ⌊p_s·N⌋, down to α_peak/d at ⌊p_f·N⌋,
    down to α_peak/(d·f) at N, then hold.

    Args:
      transition_steps: N > 0.
      peak_value: α_peak ≥ 0.
      pct_start: p_s in (0, 1).
      pct_final: p_f in (p_s, 1].
      div_factor: d > 0.
      final_div_factor: f > 0.

    Returns:
      A schedule (float32).

    Parity: ``optax.linear_onecycle_schedule`` (same arguments), except at
    ``pct_final=1``: there optax's boundaries ⌊p_f·N⌋ and N coincide, its table keeps
    one of the two, and it falls from the peak straight to α_max/final_div_factor at
    step N, where this schedule falls to α_max/div_factor and then ends at
    α_max/(div_factor·final_div_factor) (its last phase has no steps); ``torch.optim.lr_scheduler.OneCycleLR(anneal_strategy="linear", three_phase=True)``
    up to PyTorch's one-step-earlier phase ends, when ``pct_final·N = 2·pct_start·N − 1``
    (torch's second phase is as long as its first; the default ``pct_final=0.85`` is
    another schedule).

    References:
      Smith & Topin, Super-Convergence, 2017. https://arxiv.org/abs/1708.07120
    """
    fn = "linear_onecycle_schedule"
    n, pk, d, f = _onecycle_checks(fn, transition_steps, peak_value, pct_start, div_factor, final_div_factor)
    hparams.check_finite(fn, "pct_final", pct_final)
    if not pct_start < pct_final <= 1.0:
        raise ValueError(f"{fn}: pct_final must be in (pct_start, 1] = ({pct_start}, 1], got {pct_final!r}")
    return piecewise_interpolate_schedule(
        "linear", pk / d, [(int(pct_start * n), d), (int(pct_final * n), 1.0 / d), (n, 1.0 / f)]
    )


_WSD_SHAPES = ("linear", "cosine", "1-sqrt")


def wsd_schedule(
    peak_value: float,
    warmup_steps: int,
    stable_steps: int,
    decay_steps: int,
    init_value: float = 0.0,
    end_value: float = 0.0,
    decay_shape: str = "linear",
) -> Schedule:
    """Warmup-stable-decay: linear warmup, a long constant phase, then a short cool-down.

        t < W:            α_t = α₀ + (α_peak − α₀)·t/W
        W ≤ t < W+S:      α_t = α_peak
        W+S ≤ t < W+S+D:  α_t = α_end + (α_peak − α_end)·f(x),  x = (t − W − S)/D
        t ≥ W+S+D:        α_t = α_end

    with the cool-down shape f(x) = 1 − x (``"linear"``), ½(1 + cos(πx))
    (``"cosine"``) or 1 − √x (``"1-sqrt"``, which Hägele et al. find best).

    Args:
      peak_value: α_peak ≥ 0.
      warmup_steps: W ≥ 0.
      stable_steps: S ≥ 0.
      decay_steps: D > 0, the cool-down length.
      init_value: α₀ ≥ 0.
      end_value: α_end ≥ 0.
      decay_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.

    Returns:
      A schedule (float32).

    Parity: no optax or PyTorch scheduler of this name; the NumPy closed form
    in the tests is the reference.

    References:
      Hägele et al., Scaling Laws and Compute-Optimal Training Beyond Fixed Training
      Durations, 2024. https://arxiv.org/abs/2405.18392
      Hu et al., MiniCPM, 2024. https://arxiv.org/abs/2404.06395

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.wsd_schedule(0.1, 10, 80, 10)   # warm up 10, hold 80, cool down 10
      >>> [round(float(schedule(t)), 4) for t in (0, 5, 10, 89, 95, 100)]
      [0.0, 0.05, 0.1, 0.1, 0.05, 0.0]
    """
    fn = "wsd_schedule"
    pk = _value(fn, "peak_value", peak_value)
    w = hparams.check_int(fn, "warmup_steps", warmup_steps, 0)
    s = hparams.check_int(fn, "stable_steps", stable_steps, 0)
    d = hparams.check_int(fn, "decay_steps", decay_steps, 1)
    i0 = _value(fn, "init_value", init_value)
    end = _value(fn, "end_value", end_value)
    if decay_shape not in _WSD_SHAPES:
        raise ValueError(f"{fn}: decay_shape must be one of {_WSD_SHAPES}, got {decay_shape!r}")

    def schedule(step):
        step = _step(step)
        warm = _warm(step, i0, pk, w)
        x = _progress(step, w + s, d)
        if decay_shape == "linear":
            shape = _remaining(step, w + s, d)
        elif decay_shape == "cosine":
            shape = _half_cosine(x)
        else:
            shape = 1.0 - jnp.sqrt(x)
        cool = end + (pk - end) * jnp.maximum(shape, 0.0)
        value = jnp.where(_before(step, w), warm, jnp.where(_before(step, w + s), pk, cool))
        return _nonneg(value)

    return schedule


def inverse_sqrt_schedule(
    peak_value: float, warmup_steps: int = 0, timescale: int | None = None, init_value: float = 0.0
) -> Schedule:
    """Linear warmup, then decay as the inverse square root of the step.

        t < W:  α_t = α₀ + (α_peak − α₀)·t/W
        t ≥ W:  α_t = α_peak·√(τ / (t − W + τ))  =  α_peak / √(1 + (t − W)/τ)

    With τ = W (the default when W > 0) this is α_peak·√(W/t), the Transformer's
    rule (Vaswani et al.) and fairseq's ``inverse_sqrt``; with W = 0 the default
    τ is 1, i.e. α_peak/√(1 + t).

    Args:
      peak_value: α_peak ≥ 0.
      warmup_steps: W ≥ 0.
      timescale: τ > 0 (defaults to W, or 1 when W = 0).
      init_value: α₀ ≥ 0, the warmup's start.

    Returns:
      A schedule (float32), decreasing towards 0 for ever.

    Parity: no optax schedule; Transformer's ``d^−½·min(s^−½, s·W^−1.5)`` with
    s = t + 1 is ``inverse_sqrt_schedule(d^−½·W^−½, W − 1, timescale=W, init_value=d^−½·W^−1.5)``
    for W ≥ 2.

    References:
      Vaswani et al., Attention Is All You Need, 2017. https://arxiv.org/abs/1706.03762

    Examples:
      >>> import gradflow as gf
      >>> schedule = gf.inverse_sqrt_schedule(0.1, warmup_steps=100)   # 0.1·√(100/t) after the warm-up
      >>> [round(float(schedule(t)), 4) for t in (0, 50, 100, 400)]
      [0.0, 0.05, 0.1, 0.05]
    """
    fn = "inverse_sqrt_schedule"
    pk = _value(fn, "peak_value", peak_value)
    w = hparams.check_int(fn, "warmup_steps", warmup_steps, 0)
    if timescale is None:
        tau = max(w, 1)
    else:
        tau = _positive(fn, "timescale", timescale)
    i0 = _value(fn, "init_value", init_value)

    def schedule(step):
        step = _step(step)
        warm = _warm(step, i0, pk, w)
        since = _f32(_after(step, w))
        decay = pk * jax.lax.rsqrt(1.0 + since / _F32(tau))
        return _nonneg(jnp.where(_before(step, w), warm, decay))

    return schedule


# ----------------------------------------------------------------------------
# Looking at a schedule


def plot_schedule(
    schedule: Schedule | Mapping[str, Schedule], num_steps: int, path: str | None = None
) -> str:
    """Plot a schedule's value against the step, and write it to a PNG.

    Args:
      schedule: a schedule, or ``{label: schedule}`` to draw several in one figure.
      num_steps: steps 0 … num_steps − 1 are drawn.
      path: where to write the PNG (a new temporary file when None).

    Returns:
      The path of the PNG.

    matplotlib is imported only here (install the ``examples`` extra).
    """
    hparams.check_int("plot_schedule", "num_steps", num_steps, 1)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plot_schedule needs matplotlib: pip install 'gradflow[examples]'") from e
    curves = dict(schedule) if isinstance(schedule, Mapping) else {"schedule": schedule}
    steps = jnp.arange(num_steps, dtype=jnp.int32)
    several = isinstance(schedule, Mapping)
    fig = Figure(figsize=(9.5 if several else 7, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, fn in curves.items():
        values = np.asarray(jax.jit(jax.vmap(fn))(steps), np.float64)
        ax.plot(np.arange(num_steps), values, label=label, linewidth=1.4)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.grid(True, alpha=0.3)
    if several:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    if path is None:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="schedule-", suffix=".png")
        import os

        os.close(fd)
    fig.savefig(path, format="png")
    return str(path)
