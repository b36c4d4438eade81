"""Dynamic loss scaling for float16 training, with ``torch.amp.GradScaler``'s semantics.

The user multiplies the loss by :func:`loss_scale` of the optimizer state inside the step,
so that small float16 gradients do not underflow; :func:`dynamic_loss_scale` divides the
gradients by the same scale before the wrapped optimizer sees them, skips any step whose
gradients overflowed (with the wrapped optimizer's state left bit for bit as it was), and
adapts the scale: down at every overflow, up after a run of finite steps.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import hparams
from gradflow import tree as tree_lib
from gradflow.base import GradientTransformation, extra_args_filter
from gradflow.guards import all_finite, guarded_step

__all__ = ["DynamicLossScaleState", "dynamic_loss_scale", "loss_scale"]

_S_MIN = float(np.finfo(np.float32).tiny)  # 2⁻¹²⁶: 1/S stays finite
_F32_MAX = float(np.finfo(np.float32).max)


def _check_float32_open(fn: str, name: str, value: Any, low: float, high: float) -> None:
    """``ValueError`` unless the number, rounded to float32, is still in (low, high) (1 + 1e-9 rounds to 1)."""
    x = hparams.static_number(value)
    if x is None:
        return
    with np.errstate(over="ignore", under="ignore"):
        x32 = float(np.float32(x))
    if not low < x32 < high:
        raise ValueError(f"{fn}: {name} must be in ({low:g}, {high:g}) in float32, got {value!r} (float32 holds {x32!r})")


class DynamicLossScaleState(NamedTuple):
    """State of :func:`dynamic_loss_scale`."""
    stats_name = "dynamic_loss_scale"
    sees_non_finite_steps = True  # a guard around it must not skip its overflows (gradflow.guards)

    scale: jnp.ndarray  # float32 scalar: S, the scale the next step's loss is multiplied by
    growth_tracker: jnp.ndarray  # int32 scalar: finite steps in a row since S last changed (torch's _growth_tracker)
    found_inf: jnp.ndarray  # bool scalar: whether the last step's gradients held a NaN or ±inf (step skipped)
    num_skipped: jnp.ndarray  # int32 scalar: steps skipped so far
    count: jnp.ndarray  # int32 scalar: updates seen
    inner_state: Any  # the wrapped transform's state


def dynamic_loss_scale(
    inner: GradientTransformation,
    init_scale: float = 2.0**16,
    growth_factor: float = 2.0,
    backoff_factor: float = 0.5,
    growth_interval: int = 2000,
) -> GradientTransformation:
    """Unscale the gradients of a loss multiplied by S, skip overflowing steps, and adapt S.

    The step's loss must be multiplied by S = :func:`loss_scale` ``(state)``; the
    gradients g_S it yields are handled as ``torch.amp.GradScaler``'s ``unscale_``,
    ``step`` and ``update`` do, in this order::

      g = g_S·(1/S)  (the reciprocal formed once, in float32);
      if every element of g_S is finite: (u, s) = inner(g, s); n ← n + 1, and when
        n reaches ``growth_interval``: S ← S·growth_factor (kept only if finite), n ← 0;
      else (an overflow): u = 0, s unchanged (bit for bit), S ← max(S·backoff_factor, S_min), n ← 0.

    S_min = 2⁻¹²⁶, float32's smallest normal number: torch lets S fall further, until
    1/S overflows and unscaling a zero gradient gives 0·inf = NaN, which it then
    applies (after about 140 overflows in a row from 2¹⁶). Above S_min the two agree.

    n is torch's growth tracker: it counts finite steps since S last changed and is reset
    by a growth and by an overflow. S is a float32 scalar whatever the parameters' dtype,
    as torch's. Extra arguments (``value=loss``) are handed to ``inner`` unchanged.
    With a guard, put the guard inside: ``dynamic_loss_scale(protect(tx))``; the other
    way round the guard would skip the overflows before S could fall, and
    :func:`~gradflow.protect` and :func:`~gradflow.skip_spikes` refuse it at ``init``.
    One scaler serves the whole model: :func:`loss_scale` refuses a state with several
    side by side (one per parameter group), whose scales would part.

    Args:
      inner: the optimizer to wrap.
      init_scale: S₀ in [S_min, float32's largest number] (torch's default 2¹⁶).
      growth_factor: > 1 in float32, the factor S grows by.
      backoff_factor: in (0, 1) in float32, the factor S shrinks by at an overflow.
      growth_interval: ≥ 1, the number of finite steps in a row before S grows.

    Returns:
      A :class:`~gradflow.GradientTransformation` with :class:`DynamicLossScaleState`
      (``scale``, ``growth_tracker``, ``found_inf`` and ``num_skipped`` appear in
      :func:`gradflow.stats`).

    Example::

      opt = gf.dynamic_loss_scale(gf.adam(1e-3))
      def step(params, state, batch):
          grads = jax.grad(lambda p: loss(p, batch) * gf.loss_scale(state))(params)
          updates, state = opt.update(grads, state, params)
          return gf.apply_updates(params, updates), state

    Parity:
      ``torch.amp.GradScaler(init_scale, growth_factor, backoff_factor, growth_interval)``
      with ``scaler.scale(loss).backward(); scaler.step(opt); scaler.update()``: the same
      scales, skipped steps and parameters (tested against a recorded run with overflows).

    References:
      Micikevicius et al., Mixed Precision Training, ICLR 2018, arXiv:1710.03740.
    """
    fn = "dynamic_loss_scale"
    hparams.check_transform(fn, "inner", inner)
    # S and the factors are float32 scalars: each must hold its meaning there too.
    hparams.check_positive(fn, "init_scale", init_scale)
    hparams.check_range(fn, "growth_factor", growth_factor, 1.0, float("inf"), low_open=True, high_open=True)
    hparams.check_range(fn, "backoff_factor", backoff_factor, 0.0, 1.0, low_open=True, high_open=True)
    hparams.check_range(fn, "init_scale", init_scale, _S_MIN, _F32_MAX)
    _check_float32_open(fn, "growth_factor", growth_factor, 1.0, float("inf"))
    _check_float32_open(fn, "backoff_factor", backoff_factor, 0.0, 1.0)
    hparams.check_int(fn, "growth_interval", growth_interval, 1, counted=True)
    interval = int(growth_interval)
    keep = extra_args_filter(inner.update)

    def init_fn(params):
        tree_lib.check_float_leaves(fn, params)
        return DynamicLossScaleState(
            scale=jnp.asarray(init_scale, jnp.float32),
            growth_tracker=tree_lib.zero_count(),
            found_inf=jnp.zeros((), jnp.bool_),
            num_skipped=tree_lib.zero_count(),
            count=tree_lib.zero_count(),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        updates = tree_lib.as_arrays(updates)
        if params is not None:
            params = tree_lib.as_arrays(params)
            tree_lib.check_same_structure(fn, updates, params)
        inv = 1 / state.scale

        def unscale(g):
            cd = jnp.promote_types(g.dtype, jnp.float32)
            return (g.astype(cd) * inv.astype(cd)).astype(g.dtype)

        finite = all_finite(updates)
        out, inner_state = guarded_step(
            inner, keep, finite, jax.tree.map(unscale, updates), state.inner_state, params, extra_args
        )
        grown_tracker = state.growth_tracker + 1
        grow = finite & (grown_tracker >= interval)
        grown = state.scale * jnp.asarray(growth_factor, jnp.float32)
        scale = jnp.where(
            finite,
            jnp.where(grow & jnp.isfinite(grown), grown, state.scale),
            jnp.maximum(state.scale * jnp.asarray(backoff_factor, jnp.float32), _S_MIN),
        )
        tracker = jnp.where(finite & ~grow, grown_tracker, 0).astype(jnp.int32)
        return out, DynamicLossScaleState(
            scale=scale,
            growth_tracker=tracker,
            found_inf=~finite,
            num_skipped=jnp.where(finite, state.num_skipped, tree_lib.safe_increment(state.num_skipped)),
            count=tree_lib.safe_increment(state.count),
            inner_state=inner_state,
        )

    return GradientTransformation(init_fn, update_fn)


def loss_scale(state: Any) -> jnp.ndarray:
    """The loss scale S held by the :func:`dynamic_loss_scale` in ``state`` (nested in chains too).

    Multiply the step's loss by it before taking gradients. Works under ``jit``.

    Args:
      state: an optimizer state containing one :class:`DynamicLossScaleState`
        (the outermost one is used when one holds another).

    Returns:
      A float32 scalar.

    Raises:
      ValueError: when ``state`` holds no :class:`DynamicLossScaleState`, or several side
        by side (one per parameter group, say): their scales part at the first overflow in
        one group, and one loss scale would leave the other groups' gradients unscaled wrongly.
    """
    found = [
        x for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, DynamicLossScaleState))
        if isinstance(x, DynamicLossScaleState)
    ]
    if not found:
        raise ValueError(
            f"loss_scale: the state holds no DynamicLossScaleState (wrap the optimizer in "
            f"gradflow.dynamic_loss_scale), got {type(state).__name__}"
        )
    if len(found) > 1:
        raise ValueError(
            f"loss_scale: the state holds {len(found)} DynamicLossScaleStates side by side (one per parameter "
            "group?); one loss cannot be scaled by several scales: wrap the whole optimizer in one "
            "gradflow.dynamic_loss_scale"
        )
    return found[0].scale
