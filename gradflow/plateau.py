"""Loss-driven transforms: they read ``value=loss`` from the update's extra arguments.

- :func:`reduce_on_plateau` shrinks a scale when the loss stops improving
  (PyTorch's ``ReduceLROnPlateau``).
- :func:`restart_on_loss` runs a schedule and restarts it from step 0 when the
  loss falls below a threshold or stops improving (docs/equations.md, eq. (6):
  when the loss reaches a threshold, reset the learning rate and continue).

Both multiply the updates by a scalar they keep in their state (``state.scale``),
so chain them after an optimizer: ``chain(sgd(0.1), reduce_on_plateau())`` and
call ``update(grads, state, params, value=loss)``. All their state is arrays,
so the whole step compiles with ``jax.jit``.

Improvement: a loss v improves on the best loss b when

    v < b − rtol·|b| − atol.

For b > 0 this is PyTorch's rule ``v < b·(1 − rtol)`` (``threshold_mode="rel"``),
and with ``rtol=0`` PyTorch's ``v < b − atol`` (``threshold_mode="abs"``). For a
negative best PyTorch's ``b·(1 − rtol)`` lies *above* b, so it counts a slightly
worse loss as an improvement; gradflow uses |b| so that an improvement is always
a decrease by the tolerance. The two agree whenever the losses are positive, or
change by more than rtol·|b|.

Non-finite losses (NaN, ±inf) never improve and never become the best: they
count as a step without improvement, as NaN does in PyTorch. A run whose loss
turns NaN therefore has its scale reduced (or its schedule restarted) after
``patience`` such steps, and the best loss stays finite.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradflow import hparams
from gradflow import tree as tree_lib
from gradflow.base import GradientTransformation

__all__ = ["ReduceOnPlateauState", "reduce_on_plateau", "RestartOnLossState", "restart_on_loss"]


def _loss(fn: str, extra_args: dict) -> jnp.ndarray:
    if "value" not in extra_args:
        raise TypeError(f"{fn}: update needs the loss as a keyword argument: update(..., value=loss)")
    return hparams.scalar_value(fn, extra_args["value"]).astype(jnp.float32)


def _improves(value: jnp.ndarray, best: jnp.ndarray, rtol: float, atol: float) -> jnp.ndarray:
    """v < b − rtol·|b| − atol for a finite v (b = +inf at the start: any finite v improves)."""
    # b·(1 − rtol·sign b) is b − rtol·|b|, and stays +inf (not NaN) for b = +inf.
    bound = best * (1.0 - rtol * jnp.sign(best)) - atol
    return jnp.isfinite(value) & (value < bound)


def _plateau_step(value, best, plateau_count, cooldown_count, rtol, atol) -> tuple:
    """One evaluation of a loss against the best so far: (new best, evaluations without improvement
    (0 while a cooldown runs), whether a cooldown runs, the cooldown counter after this one)."""
    improved = _improves(value, best, rtol, atol)
    best = jnp.where(improved, value, best)
    bad = jnp.where(improved, 0, tree_lib.safe_increment(plateau_count))
    in_cooldown = cooldown_count > 0
    return best, jnp.where(in_cooldown, 0, bad), in_cooldown, jnp.maximum(cooldown_count - 1, 0)


def _check_tolerances(fn: str, rtol: float, atol: float) -> None:
    hparams.check_range(fn, "rtol", rtol, 0.0, 1.0, high_open=True)
    hparams.check_non_negative(fn, "atol", atol)


class ReduceOnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`."""
    stats_name = "reduce_on_plateau"

    scale: jnp.ndarray  # float32 scalar: the factor applied to the updates now
    best_value: jnp.ndarray  # float32 scalar: the best (averaged) loss so far; +inf at first
    plateau_count: jnp.ndarray  # int32 scalar: evaluations since the last improvement
    cooldown_count: jnp.ndarray  # int32 scalar: evaluations left in the cooldown
    count: jnp.ndarray  # int32 scalar: losses in the current accumulation window
    value_sum: jnp.ndarray  # float32 scalar: sum of the losses in the window


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
    eps: float = 1e-8,
) -> GradientTransformation:
    """Multiply the updates by a scale that shrinks when the loss stops improving.

    Every ``accumulation_size`` updates the mean v of the losses passed as
    ``value=loss`` is evaluated (PyTorch's ``scheduler.step(loss)``)::

        improved = v < b − rtol·|b| − atol            (b: best so far, +inf at first)
        b ← v if improved;  n ← 0 if improved else n + 1
        if in cooldown: cooldown ← cooldown − 1, n ← 0
        if n > patience: s' = max(s·factor, min_scale); s ← s' if s − s' > ε;
                         cooldown ← ``cooldown``, n ← 0

    and u = s·g, with s = 1 at the start. The new scale already applies to the
    update that brought the loss, which corresponds to PyTorch stepping the
    scheduler before the next optimizer step.

    Args:
      factor: in (0, 1), the reduction s ← s·factor.
      patience: evaluations without improvement tolerated; the scale shrinks on
        the (patience + 1)-th, as in PyTorch.
      rtol: relative tolerance in [0, 1) (PyTorch's ``threshold`` in "rel" mode).
      atol: absolute tolerance ≥ 0 (PyTorch's ``threshold`` in "abs" mode, with rtol=0).
      cooldown: evaluations after a reduction during which no new one happens.
      accumulation_size: losses averaged per evaluation (1: every update is one).
      min_scale: the scale never goes below this (PyTorch's ``min_lr / lr``).
      eps: ε ≥ 0: a reduction of the scale by ε or less is not applied
        (PyTorch's ``eps / lr``; PyTorch's default ``eps=1e-8`` at ``lr=0.1`` is ``eps=1e-7``).

    Returns:
      A transform whose state is :class:`ReduceOnPlateauState`; ``state.scale``
      is the current factor. ``update`` needs ``value=loss`` (a scalar).

    Parity:
      ``torch.optim.lr_scheduler.ReduceLROnPlateau(mode="min", factor, patience,
      threshold=rtol, threshold_mode="rel", cooldown, min_lr=min_scale·lr, eps=eps·lr)``
      chained after ``sgd(lr)``: the same learning rates for positive losses (and
      for negative ones that move by more than rtol·|best|); ``threshold_mode="abs"``
      is ``rtol=0, atol=threshold``. Tested against recorded PyTorch runs.
      ``optax.contrib.reduce_on_plateau(patience=p)`` reduces after p evaluations
      without improvement, i.e. gradflow's ``patience=p − 1``.

    Raises:
      ValueError: ``factor`` outside (0, 1), a negative ``patience``/``cooldown``,
        ``accumulation_size < 1``, ``rtol`` outside [0, 1), negative ``atol`` or
        ``min_scale`` or ``eps``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.chain(gf.sgd(1.0), gf.reduce_on_plateau(factor=0.5, patience=1))
      >>> params = jnp.array([0.0])
      >>> state = tx.init(params)
      >>> for loss in [1.0, 0.5, 0.5, 0.5, 0.5]:
      ...     updates, state = tx.update(jnp.array([1.0]), state, params, value=loss)
      ...     print(float(state[1].scale))
      1.0
      1.0
      1.0
      0.5
      0.5
    """
    fn = "reduce_on_plateau"
    hparams.check_range(fn, "factor", factor, 0.0, 1.0, low_open=True, high_open=True)
    patience = hparams.check_int(fn, "patience", patience, 0, counted=True)
    _check_tolerances(fn, rtol, atol)
    cooldown = hparams.check_int(fn, "cooldown", cooldown, 0, counted=True)
    accumulation_size = hparams.check_int(fn, "accumulation_size", accumulation_size, 1, counted=True)
    hparams.check_range(fn, "min_scale", min_scale, 0.0, 1.0)
    hparams.check_non_negative(fn, "eps", eps)

    def init_fn(params):
        del params
        return ReduceOnPlateauState(
            scale=jnp.ones((), jnp.float32),
            best_value=jnp.full((), jnp.inf, jnp.float32),
            plateau_count=tree_lib.zero_count(),
            cooldown_count=tree_lib.zero_count(),
            count=tree_lib.zero_count(),
            value_sum=jnp.zeros((), jnp.float32),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params
        value = _loss(fn, extra_args)
        count = state.count + 1
        total = state.value_sum + value
        ready = count >= accumulation_size
        mean = total / jnp.asarray(accumulation_size, jnp.float32)

        best, bad, _, cool = _plateau_step(mean, state.best_value, state.plateau_count, state.cooldown_count, rtol, atol)
        reduce = bad > patience
        reduced = jnp.maximum(state.scale * jnp.float32(factor), jnp.float32(min_scale))
        scale = jnp.where(reduce & (state.scale - reduced > jnp.float32(eps)), reduced, state.scale)
        cool = jnp.where(reduce, cooldown, cool).astype(jnp.int32)
        bad = jnp.where(reduce, 0, bad).astype(jnp.int32)

        new_state = ReduceOnPlateauState(
            scale=jnp.where(ready, scale, state.scale),
            best_value=jnp.where(ready, best, state.best_value),
            plateau_count=jnp.where(ready, bad, state.plateau_count),
            cooldown_count=jnp.where(ready, cool, state.cooldown_count),
            count=jnp.where(ready, 0, count).astype(jnp.int32),
            value_sum=jnp.where(ready, 0.0, total).astype(jnp.float32),
        )
        return tree_lib.times_scalar(updates, new_state.scale), new_state

    return GradientTransformation(init_fn, update_fn)


class RestartOnLossState(NamedTuple):
    """State of :func:`restart_on_loss`."""
    stats_name = "restart_on_loss"

    count: jnp.ndarray  # int32 scalar: steps since the last restart (the schedule's step)
    scale: jnp.ndarray  # float32 scalar: the schedule's value applied at the last update
    best_value: jnp.ndarray  # float32 scalar: best loss since the last restart; +inf at first
    plateau_count: jnp.ndarray  # int32 scalar: updates since the last improvement
    armed: jnp.ndarray  # bool scalar: a finite loss >= threshold was seen since the last threshold restart
    cooldown_count: jnp.ndarray  # int32 scalar: updates left before a restart may happen again
    restarts: jnp.ndarray  # int32 scalar: restarts so far


def restart_on_loss(
    schedule: Any,
    threshold: float | None = None,
    patience: int | None = None,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
) -> GradientTransformation:
    """Run a schedule, and restart it from step 0 when the loss says so (docs/equations.md, eq. (6)).

    u = S(k)·g, where k counts the updates since the last restart. Before each
    update the loss v (passed as ``value=loss``) is checked; the schedule
    restarts (k ← 0 for this update) when, outside the cooldown,

    - ``threshold``: v falls below the threshold, i.e. v < threshold after a
      finite loss ≥ threshold (a loss that sits exactly at the threshold does not
      restart; after a restart the loss must rise to the threshold again before
      the next threshold restart), or
    - ``patience``: the loss has not improved (v < b − rtol·|b| − atol, as in
      :func:`reduce_on_plateau`) for more than ``patience`` updates.

    A restart resets the best loss to +inf and starts a cooldown of ``cooldown``
    updates (a fall below the threshold during the cooldown is spent without a
    restart). Non-finite losses never improve, never cross the threshold, and
    leave the threshold's arming unchanged.

    Args:
      schedule: a schedule ``step -> value`` (e.g. a cosine decay of a learning
        rate, or of a multiplier for an optimizer chained before).
      threshold: restart when the loss falls below it (None: never).
      patience: restart after more than ``patience`` updates without
        improvement (None: never).
      rtol, atol: improvement tolerances, as in :func:`reduce_on_plateau`.
      cooldown: updates after a restart during which no restart happens.

    Returns:
      A transform whose state is :class:`RestartOnLossState` (``state.scale`` is
      the factor of the last update, ``state.restarts`` the number of restarts).
      ``update`` needs ``value=loss``.

    Parity: no PyTorch or optax counterpart (it is the rule of docs/equations.md, eq. (6)); tested
    against a NumPy version of the rule above on scripted losses.

    Example: ``chain(sgd(1.0), restart_on_loss(cosine_decay_schedule(0.1, 500), patience=50))``
    anneals the learning rate from 0.1 and starts again whenever 50 steps pass
    without improvement.
    """
    fn = "restart_on_loss"
    if not callable(schedule):
        raise ValueError(f"{fn}: schedule must be a schedule (a callable of the step), got {schedule!r}")
    if threshold is None and patience is None:
        raise ValueError(f"{fn}: give threshold, patience or both, got threshold=None, patience=None")
    if threshold is not None:
        hparams.check_finite(fn, "threshold", threshold)
    if patience is not None:
        patience = hparams.check_int(fn, "patience", patience, 0, counted=True)
    _check_tolerances(fn, rtol, atol)
    cooldown = hparams.check_int(fn, "cooldown", cooldown, 0, counted=True)

    def init_fn(params):
        del params
        return RestartOnLossState(
            count=tree_lib.zero_count(),
            scale=jnp.asarray(hparams.call_schedule(schedule, tree_lib.zero_count(), fn, "schedule")).astype(jnp.float32),
            best_value=jnp.full((), jnp.inf, jnp.float32),
            plateau_count=tree_lib.zero_count(),
            armed=jnp.zeros((), jnp.bool_),
            cooldown_count=tree_lib.zero_count(),
            restarts=tree_lib.zero_count(),
        )

    def should_restart(value, armed, bad):
        """(restart, armed): the threshold rule (a fall below it after a finite loss at or above it)
        or the patience rule, before the cooldown is considered."""
        restart = jnp.zeros((), jnp.bool_)
        if threshold is not None:
            finite = jnp.isfinite(value)
            restart = armed & finite & (value < threshold)
            armed = jnp.where(finite, value >= threshold, armed)
        if patience is not None:
            restart = restart | (bad > patience)
        return restart, armed

    def update_fn(updates, state, params=None, **extra_args):
        del params
        value = _loss(fn, extra_args)
        best, bad, in_cooldown, cool = _plateau_step(
            value, state.best_value, state.plateau_count, state.cooldown_count, rtol, atol
        )
        restart, armed = should_restart(value, state.armed, bad)
        restart = restart & ~in_cooldown
        count = jnp.where(restart, 0, state.count).astype(jnp.int32)
        scale = jnp.asarray(hparams.call_schedule(schedule, count, fn, "schedule")).astype(jnp.float32)
        new_state = RestartOnLossState(
            count=tree_lib.safe_increment(count),
            scale=scale,
            best_value=jnp.where(restart, jnp.inf, best).astype(jnp.float32),
            plateau_count=jnp.where(restart, 0, bad).astype(jnp.int32),
            armed=jnp.where(restart, False, armed),
            cooldown_count=jnp.where(restart, cooldown, cool).astype(jnp.int32),
            restarts=jnp.where(restart, tree_lib.safe_increment(state.restarts), state.restarts),
        )
        return tree_lib.times_scalar(updates, scale), new_state

    return GradientTransformation(init_fn, update_fn)
