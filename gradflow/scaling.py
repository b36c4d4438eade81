"""Scaling blocks: constant and scheduled step sizes, momentum, weight decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow import hparams
from gradflow import tree as tree_lib
from gradflow.base import GradientTransformation, chain, stateless

__all__ = [
    "scale",
    "ScaleByScheduleState",
    "scale_by_schedule",
    "scale_by_learning_rate",
    "TraceState",
    "trace",
    "AddDecayedWeightsState",
    "add_decayed_weights",
]


def scale(step_size: float) -> GradientTransformation:
    """u ← s·g for a constant scalar s.

    Args:
      step_size: the factor s (any finite number; negative flips the direction).
    """
    hparams.check_finite("scale", "step_size", step_size)
    return stateless(lambda updates, params: tree_lib.times_scalar(updates, step_size))


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`."""
    stats_name = "scale_by_schedule"

    count: jnp.ndarray  # int32 scalar: updates done so far (saturates at 2**31 - 1)


def scale_by_schedule(step_size_fn: Callable[[Any], Any]) -> GradientTransformation:
    """u ← s(t)·g, where s is a schedule and t the number of updates done (0 first).

    Parity: optax.scale_by_schedule (same count convention: the first update
    uses s(0)).
    """
    if not callable(step_size_fn):
        raise ValueError(f"scale_by_schedule: step_size_fn must be callable, got {step_size_fn!r}")

    init_fn = tree_lib.count_init(ScaleByScheduleState)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        updates = tree_lib.times_scalar(updates, hparams.call_schedule(step_size_fn, state.count, "scale_by_schedule", "step_size_fn"))
        return updates, ScaleByScheduleState(count=tree_lib.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


def check_learning_rate(fn: str, learning_rate: hparams.ScalarOrSchedule) -> None:
    """Refuse a learning rate that is negative, infinite or NaN (schedules pass)."""
    hparams.check_non_negative(fn, "learning_rate", learning_rate, schedule=True)


def scale_by_learning_rate(
    learning_rate: hparams.ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """u ← −α_t·g (or +α_t·g with ``flip_sign=False``): gradient descent's step.

    Args:
      learning_rate: α, a number ≥ 0 or a schedule ``step -> α_t``.
      flip_sign: descend (the default) by returning −α·g.
    """
    check_learning_rate("scale_by_learning_rate", learning_rate)
    hparams.check_flags("scale_by_learning_rate", flip_sign=flip_sign)
    sign = -1.0 if flip_sign else 1.0
    if callable(learning_rate):
        return scale_by_schedule(
            lambda count: sign * hparams.call_schedule(learning_rate, count, "scale_by_learning_rate", "learning_rate")
        )
    return scale(sign * learning_rate)


def check_momentum(fn: str, momentum: Any, nesterov: Any, dampening: Any, *, name: str = "momentum") -> None:
    """PyTorch's momentum rules: μ and d in [0, 1], and Nesterov only with μ > 0 and d = 0.

    Only numbers are judged against each other (an injected array was checked
    as a number when the transform was built).
    """
    hparams.check_range(fn, name, momentum, 0.0, 1.0)
    hparams.check_range(fn, "dampening", dampening, 0.0, 1.0)
    hparams.check_flags(fn, nesterov=nesterov)
    mu_num, d_num = hparams.static_number(momentum), hparams.static_number(dampening)
    if nesterov and ((mu_num is not None and mu_num <= 0) or (d_num is not None and d_num != 0)):
        raise ValueError(
            f"{fn}: nesterov=True needs {name} > 0 and dampening == 0, got {name}={momentum!r}, dampening={dampening!r}"
        )


class TraceState(NamedTuple):
    """State of :func:`trace`."""
    stats_name = "trace"

    count: jnp.ndarray  # int32 scalar: updates done so far
    trace: Any  # like params (or accumulator_dtype): the momentum buffer b


def trace(
    decay: float,
    nesterov: bool = False,
    dampening: float = 0.0,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    """Heavy-ball momentum in PyTorch's form.

    b₁ = g₁;  b_t = μ·b_{t−1} + (1 − d)·g_t  for t > 1;
    u = b_t, or u = g_t + μ·b_t with ``nesterov=True``.

    The first step stores the gradient undamped, exactly as ``torch.optim.SGD``
    does, and with μ = 0 d is ignored (u = g), as there. With d = 0 this is
    b ← μ·b + g from b = 0, i.e. optax.trace.

    Args:
      decay: the momentum μ in [0, 1].
      nesterov: use Nesterov's look-ahead u = g + μ·b.
      dampening: PyTorch's dampening d in [0, 1].
      accumulator_dtype: dtype of b (defaults to the parameter's dtype; for a complex
        parameter a real dtype means the complex one of its precision).

    Parity: ``torch.optim.SGD(momentum=μ, dampening=d, nesterov=...)``;
    ``optax.trace(decay=μ, nesterov=...)`` when d = 0.
    """
    check_momentum("trace", decay, nesterov, dampening, name="decay")
    hparams.check_dtypes("trace", accumulator_dtype=accumulator_dtype)
    d_num, mu_num = hparams.static_number(dampening), hparams.static_number(decay)
    # PyTorch keeps no buffer when μ = 0, so d never applies then: u = g.
    damped = (d_num is None or d_num != 0.0) and (mu_num is None or mu_num != 0.0)

    def init_fn(params):
        return TraceState(count=tree_lib.zero_count(), trace=tree_lib.signed_zeros_like(params, accumulator_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree_lib.check_same_shapes("trace", updates, state.trace, "momentum buffer")
        # b starts at zero, so the first step's μ·b vanishes; only g's factor differs.
        # 1 − d is formed in the gradient's dtype, from d in that dtype.
        undamped = state.count == 0
        if mu_num is None:  # an injected μ may be 0 at run time
            undamped = undamped | (hparams.as_scalar(decay, jnp.float32) == 0)

        def damp(g):
            if not damped:
                return g
            return g * jnp.where(undamped, 1, 1 - hparams.as_scalar(dampening, g.dtype))

        new_trace = jax.tree.map(lambda g, b: (b * decay + damp(g)).astype(b.dtype), updates, state.trace)
        direction = (lambda g, b: g + b * decay) if nesterov else (lambda g, b: b)
        new_updates = jax.tree.map(lambda g, b: direction(g, b).astype(g.dtype), updates, new_trace)
        return new_updates, TraceState(count=tree_lib.safe_increment(state.count), trace=new_trace)

    return GradientTransformation(init_fn, update_fn)


class AddDecayedWeightsState(NamedTuple):
    """State of :func:`add_decayed_weights` (a counter, used when λ is a schedule)."""
    stats_name = "add_decayed_weights"

    count: jnp.ndarray  # int32 scalar: updates done so far


def _resolve_mask(mask: Any, params: Any) -> Any:
    return mask(params) if callable(mask) else mask


def add_decayed_weights(
    weight_decay: hparams.ScalarOrSchedule = 0.0, mask: Any = None
) -> GradientTransformation:
    """u ← g + λ_t·θ (L2 / decoupled weight decay, depending on where it is chained).

    Args:
      weight_decay: λ ≥ 0, or a schedule of the step.
      mask: optional tree of Python bools shaped like the params, or a prefix of
        them (``{"enc": False, "head": True}``), or a function ``params -> tree``;
        leaves marked ``False`` are left undecayed.

    Parity: ``optax.add_decayed_weights``. Chained before ``scale_by_learning_rate``
    after an adaptive block it gives AdamW's decoupled decay −α·λ·θ.
    """
    hparams.check_non_negative("add_decayed_weights", "weight_decay", weight_decay, schedule=True)

    init_fn = tree_lib.count_init(AddDecayedWeightsState)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        tree_lib.check_params_given("add_decayed_weights", updates, params)
        wd = hparams.value_at(weight_decay, state.count, "add_decayed_weights", "weight_decay")
        decay = lambda g, p: (g + p * hparams.as_scalar(wd, p.dtype)).astype(g.dtype)  # noqa: E731
        if mask is None:
            new = jax.tree.map(decay, updates, params)
        else:
            # The mask leads, as a prefix of the updates (as optax.masked reads it): a flag
            # covers a whole subtree, and optax's MaskedNode placeholders pass through.
            m = _resolve_mask(mask, params)
            new = jax.tree.map(lambda on, g, p: jax.tree.map(decay, g, p) if on else g, m, updates, params)
        return new, AddDecayedWeightsState(count=tree_lib.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


def decoupled(
    fn: str,
    direction: GradientTransformation,
    learning_rate: hparams.ScalarOrSchedule,
    weight_decay: hparams.ScalarOrSchedule,
    mask: Any,
    *rescale: GradientTransformation,
) -> GradientTransformation:
    """AdamW's assembly, ``chain(direction, add_decayed_weights(λ, mask), *rescale, scale_by_learning_rate(α))``,
    for every optimizer built like it (``rescale``: LAMB's trust ratio); checks α and λ under ``fn``'s name."""
    check_learning_rate(fn, learning_rate)
    hparams.check_non_negative(fn, "weight_decay", weight_decay, schedule=True)
    return chain(direction, add_decayed_weights(weight_decay, mask), *rescale, scale_by_learning_rate(learning_rate))
