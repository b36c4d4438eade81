"""Clipping: static bounds on the gradient, and adaptive clippers that learn their bound.

Every clipper computes its factor as a scalar (per tree, per leaf or per unit)
and multiplies, so XLA fuses the clip into the optimizer's pass over each leaf;
a step that is not clipped is multiplied by exactly 1 and so left bit-for-bit
alone. Every clipper keeps a small state of diagnostics (all scalars): the
global norm ‖g‖ of the incoming updates before clipping, whether the last step
was clipped, and running counts; :func:`gradflow.stats` turns them into a flat
dict for a logger.

Non-finite norms are never recorded into an adaptive clipper's statistics (so one
bad step cannot poison its history); the non-finite update itself propagates as
IEEE arithmetic says. Chain :func:`gradflow.apply_if_finite` to skip such steps.

``axis_name`` (every clipper that takes it): inside ``jax.shard_map``, the mesh
axis (or tuple of axes) that every leaf is split over; the norms' partial sums
are ``psum``-ed across it. Leave ``None`` under ``jax.jit``, where norms over
sharded arrays are global already.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import hparams
from gradflow import tree as tree_lib
from gradflow.base import GradientTransformation

# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------


def _check_ema_factor(fn: str, name: str, value: Any) -> None:
    hparams.check_range(fn, name, value, 0.0, 1.0, low_open=True, high_open=True)


def _count_if(flag: jnp.ndarray, count: jnp.ndarray) -> jnp.ndarray:
    return jnp.where(flag, tree_lib.safe_increment(count), count)


def _bound_factor(norm: jnp.ndarray, bound: jnp.ndarray) -> jnp.ndarray:
    """min(1, bound/norm) as a scalar: exactly 1 when norm ≤ bound (or norm is NaN)."""
    return jnp.where(norm > bound, bound / norm, jnp.ones_like(norm))


def _square_sums(updates: Any, dtype: Any, axis_name: Any = None) -> list:
    return [t.astype(dtype) for t in tree_lib.square_sums(jax.tree.leaves(updates), axis_name)]


def _any_across(flag: jnp.ndarray, axis_name: Any) -> jnp.ndarray:
    """``flag`` or-ed over the ``shard_map`` axes ``axis_name`` (if any)."""
    return flag if axis_name is None else jax.lax.psum(flag.astype(jnp.int32), axis_name) > 0


def _clip_each_leaf(
    fn: str, state_cls: type, bound: hparams.ScalarOrSchedule, axis_name: Any, statistic: Callable
) -> GradientTransformation:
    """A clipper that bounds every leaf on its own: u_l = g_l·min(1, c/s_l).

    ``statistic(sq, n)`` gives s_l from the leaf's sum of squares ``sq`` (``psum``-ed
    over ``axis_name``) and its number of elements ``n`` across all shards.
    """

    def init_fn(params):
        return _diag_init(state_cls, params, num_leaves_clipped=tree_lib.zero_count())

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        dt = state.norm.dtype
        c = jnp.asarray(hparams.value_at(bound, state.count), dt)
        leaves, treedef = jax.tree.flatten(updates)
        sq = _square_sums(updates, dt, axis_name)
        shards = 1 if axis_name is None else jax.lax.psum(1, axis_name)  # leaves split evenly
        stats = [statistic(s, g.size * shards) for s, g in zip(sq, leaves)]
        new = [(g * _bound_factor(st, c)).astype(g.dtype) for g, st in zip(leaves, stats)]
        hits = sum((st > c).astype(jnp.int32) for st in stats) if stats else jnp.zeros((), jnp.int32)
        norm = jnp.sqrt(sum(sq)) if sq else jnp.zeros((), dt)
        return jax.tree.unflatten(treedef, new), _diag_next(
            state, norm, hits > 0, num_leaves_clipped=jnp.asarray(hits, jnp.int32)
        )

    return checked(fn, init_fn, update_fn)


# ---------------------------------------------------------------------------
# static clippers
# ---------------------------------------------------------------------------


class ClipState(NamedTuple):
    """State of :func:`clip` (diagnostics only)."""
    stats_name = "clip"

    count: jnp.ndarray  # int32 scalar: updates seen
    norm: jnp.ndarray  # float scalar: ‖g‖ of the last incoming updates, before clipping
    clipped: jnp.ndarray  # bool scalar: whether the last update had an element clipped
    num_clipped: jnp.ndarray  # int32 scalar: updates with an element clipped so far


class ClipByNormState(NamedTuple):
    """State of :func:`clip_by_norm` (diagnostics only)."""
    stats_name = "clip_by_norm"

    count: jnp.ndarray  # int32 scalar: updates seen
    norm: jnp.ndarray  # float scalar: global ‖g‖ of the last incoming updates, before clipping
    clipped: jnp.ndarray  # bool scalar: whether a leaf of the last update was clipped
    num_clipped: jnp.ndarray  # int32 scalar: updates with a clipped leaf so far
    num_leaves_clipped: jnp.ndarray  # int32 scalar: leaves clipped in the last update


class ClipByGlobalNormState(ClipState):
    """State of :func:`clip_by_global_norm` (diagnostics only): :class:`ClipState`'s fields.

    ``clipped`` says whether the last update was scaled down, ``num_clipped`` counts such updates.
    """
    __slots__ = ()
    stats_name = "clip_by_global_norm"


class ClipByBlockRmsState(ClipByNormState):
    """State of :func:`clip_by_block_rms` (diagnostics only): :class:`ClipByNormState`'s fields."""
    __slots__ = ()
    stats_name = "clip_by_block_rms"


class AdaptiveGradClipState(NamedTuple):
    """State of :func:`adaptive_grad_clip` (diagnostics only)."""
    stats_name = "adaptive_grad_clip"

    count: jnp.ndarray  # int32 scalar: updates seen
    norm: jnp.ndarray  # float scalar: global ‖g‖ of the last incoming updates, before clipping
    clipped: jnp.ndarray  # bool scalar: whether a unit of the last update was clipped
    num_clipped: jnp.ndarray  # int32 scalar: updates with a clipped unit so far
    num_units_clipped: jnp.ndarray  # int32 scalar: units clipped in the last update


def checked(fn: str, init_fn, update_fn) -> GradientTransformation:
    """The clipper ``fn`` with the shared input checks: float parameters, updates shaped like them."""

    def init(params):
        tree_lib.check_float_leaves(fn, params)
        return init_fn(tree_lib.as_arrays(params))

    def update(updates, state, params=None, **extra_args):
        if state is None:
            # optax's clippers are stateless and take update(g, None); gradflow's keep diagnostics.
            raise TypeError(
                f"{fn}: update got state=None; gradflow's clippers keep diagnostics in their state, "
                f"so pass the state from init: state = tx.init(params), then "
                f"updates, state = tx.update(grads, state)"
            )
        updates = tree_lib.as_arrays(updates)
        if params is not None:
            params = tree_lib.as_arrays(params)
            tree_lib.check_same_shapes(fn, updates, params)
        return update_fn(updates, state, params, **extra_args)

    return GradientTransformation(init, update)


def _diag_init(cls, params, **extra):
    dt = tree_lib.stat_dtype(params)
    return cls(
        count=tree_lib.zero_count(),
        norm=jnp.zeros((), dt),
        clipped=jnp.zeros((), jnp.bool_),
        num_clipped=tree_lib.zero_count(),
        **extra,
    )


def _diag_next(state, norm, clipped, **extra):
    return type(state)(
        count=tree_lib.safe_increment(state.count),
        norm=norm.astype(state.norm.dtype),
        clipped=clipped,
        num_clipped=_count_if(clipped, state.num_clipped),
        **extra,
    )


def clip(max_delta: hparams.ScalarOrSchedule, *, axis_name: Any = None) -> GradientTransformation:
    """Clip every element to [−c, c] (docs/equations.md, eq. (21): "limit the gradient to a range").

    u_i = clip(g_i, −c, c) = max(−c, min(g_i, c)).

    Args:
      max_delta: c > 0, a number or a schedule of the step count.
      axis_name: the ``shard_map`` mesh axis or axes (see the module docstring).

    Returns:
      A :class:`GradientTransformation` whose state is a :class:`ClipState`.

    Parity: ``optax.clip(max_delta)``; ``torch.nn.utils.clip_grad_value_(params, c)``.

    References:
      Mikolov, Statistical Language Models Based on Neural Networks (PhD thesis), 2012.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.clip(1.0)
      >>> updates, state = tx.update(jnp.array([0.5, -3.0]), tx.init(None))
      >>> [float(u) for u in updates], bool(state.clipped)
      ([0.5, -1.0], True)
    """
    hparams.check_positive("clip", "max_delta", max_delta, schedule=True)

    def init_fn(params):
        tree_lib.check_real_leaves("clip", params, "complex gradients have no order to clip them to [-c, c] by", ValueError)
        return _diag_init(ClipState, params)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        c = hparams.value_at(max_delta, state.count)
        leaves = jax.tree.leaves(updates)
        norm = tree_lib.global_norm(updates, axis_name)
        clipped = jnp.any(jnp.array([jnp.any(jnp.abs(g) > c) for g in leaves])) if leaves else jnp.array(False)
        clipped = _any_across(clipped, axis_name)
        updates = jax.tree.map(lambda g: jnp.clip(g, -c, c).astype(g.dtype), updates)
        return updates, _diag_next(state, norm, clipped)

    return checked("clip", init_fn, update_fn)


def clip_by_norm(max_norm: hparams.ScalarOrSchedule, *, axis_name: Any = None) -> GradientTransformation:
    """Clip each leaf to norm c on its own: u_l = g_l·min(1, c/‖g_l‖₂).

    Unlike :func:`clip_by_global_norm`, every leaf (tensor) is bounded separately,
    so one exploding layer is cut without shrinking the others.

    Args:
      max_norm: c > 0, a number or a schedule of the step count.
      axis_name: the ``shard_map`` mesh axis or axes (see the module docstring).

    Returns:
      A :class:`GradientTransformation` whose state is a :class:`ClipByNormState`.

    Parity: applying ``torch.nn.utils.clip_grad_norm_([p], c)`` to each parameter
    separately, without PyTorch's +1e-6 on the norm.

    References:
      Pascanu, Mikolov & Bengio, On the difficulty of training recurrent neural networks,
      2013, https://arxiv.org/abs/1211.5063

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.clip_by_norm(1.0)
      >>> grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.3, 0.4])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> [round(float(u), 4) for u in updates["a"]], [round(float(u), 4) for u in updates["b"]]
      ([0.6, 0.8], [0.3, 0.4])
    """
    hparams.check_positive("clip_by_norm", "max_norm", max_norm, schedule=True)
    return _clip_each_leaf("clip_by_norm", ClipByNormState, max_norm, axis_name, lambda sq, n: jnp.sqrt(sq))


def clip_by_global_norm(
    max_norm: hparams.ScalarOrSchedule, *, pytorch_eps: bool = False, axis_name: Any = None
) -> GradientTransformation:
    """Scale the whole tree so that its global norm is at most c.

    u = g·min(1, c/‖g‖₂), with ‖g‖₂ taken over every element of every leaf
    (Pascanu et al. 2013). With ``pytorch_eps=True``: u = g·min(1, c/(‖g‖₂ + 10⁻⁶)),
    which is what ``torch.nn.utils.clip_grad_norm_`` computes (it then scales
    slightly even when ‖g‖ is just below c).

    Args:
      max_norm: c > 0, a number or a schedule of the step count.
      pytorch_eps: add PyTorch's 10⁻⁶ to the norm in the factor.
      axis_name: the ``shard_map`` mesh axis or axes (see the module docstring).

    Returns:
      A :class:`GradientTransformation` whose state is a
      :class:`ClipByGlobalNormState`; a step that is not clipped is left exactly
      unchanged.

    Parity: ``optax.clip_by_global_norm(c)`` (default flags; optax divides by the
    norm then multiplies by c, which agrees to a float32 ulp);
    ``torch.nn.utils.clip_grad_norm_(params, c)``: ``pytorch_eps=True``. Both are
    tested (recorded torch trajectories with ``torch.optim.SGD(momentum=0.9)``).

    References:
      Pascanu, Mikolov & Bengio, On the difficulty of training recurrent neural networks,
      2013, https://arxiv.org/abs/1211.5063

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.clip_by_global_norm(1.0)
      >>> grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.3, 0.4])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> round(float(state.norm), 4), round(float(gf.global_norm(updates)), 4)   # √(25 + 0.25), then 1
      (5.0249, 1.0)
      >>> [round(float(u), 4) for u in updates["b"]]   # every leaf shrinks by the same factor
      [0.0597, 0.0796]
    """
    hparams.check_positive("clip_by_global_norm", "max_norm", max_norm, schedule=True)
    hparams.check_flags("clip_by_global_norm", pytorch_eps=pytorch_eps)

    def init_fn(params):
        return _diag_init(ClipByGlobalNormState, params)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        dt = state.norm.dtype
        c = jnp.asarray(hparams.value_at(max_norm, state.count), dt)
        norm = tree_lib.global_norm(updates, axis_name).astype(dt)
        if pytorch_eps:
            coef = c / (norm + jnp.asarray(1e-6, dt))
            factor = jnp.minimum(coef, jnp.ones_like(coef))
            clipped = coef < 1
        else:
            factor = _bound_factor(norm, c)
            clipped = norm > c
        return tree_lib.times_scalar(updates, factor, in_leaf_dtype=False), _diag_next(state, norm, clipped)

    return checked("clip_by_global_norm", init_fn, update_fn)


def clip_by_block_rms(threshold: hparams.ScalarOrSchedule, *, axis_name: Any = None) -> GradientTransformation:
    """Clip each leaf ("block") to root-mean-square τ: u_l = g_l·min(1, τ/rms(g_l)).

    rms(g_l) = √(mean_i g_{l,i}²) over the elements of leaf l.

    Args:
      threshold: τ > 0, a number or a schedule of the step count.
      axis_name: the ``shard_map`` mesh axis or axes (see the module docstring).

    Returns:
      A :class:`GradientTransformation` whose state is a :class:`ClipByBlockRmsState`.

    Parity: ``optax.clip_by_block_rms(threshold)`` (optax divides by
    max(1, rms/τ); the two agree to float32 rounding).

    References:
      Shazeer & Stern, Adafactor: Adaptive Learning Rates with Sublinear Memory Cost,
      2018, https://arxiv.org/abs/1804.04235 (update clipping by block RMS).

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.clip_by_block_rms(1.0)
      >>> grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.3, 0.4])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> [round(float(u), 4) for u in updates["a"]]   # rms(a) = √12.5 is cut to 1; b is under the bound
      [0.8485, 1.1314]
    """
    hparams.check_positive("clip_by_block_rms", "threshold", threshold, schedule=True)
    return _clip_each_leaf(
        "clip_by_block_rms", ClipByBlockRmsState, threshold, axis_name, lambda sq, n: jnp.sqrt(sq / max(n, 1))
    )


def _unit_axes(shape: tuple, axis: Any, pytorch_layout: bool) -> Any:
    """The axes a unit-wise norm reduces over (None: the whole leaf is one unit)."""
    ndim = len(shape)
    if axis is not None:
        if any(not -ndim <= a < ndim for a in (axis if isinstance(axis, tuple) else (axis,))):
            raise ValueError(f"adaptive_grad_clip: axis {axis!r} is out of range for a leaf of shape {shape}")
        return axis
    if pytorch_layout:
        return None if ndim <= 1 else tuple(range(1, ndim))
    if sum(1 for d in shape if d != 1) <= 1:  # squeezed scalars and vectors: one unit
        return None
    if ndim in (2, 3):
        return (0,)
    if ndim == 4:
        return (0, 1, 2)
    return tuple(range(ndim - 1))


def _axes(fn: str, axis: Any) -> Any:
    """``axis`` as None, an int or a tuple of ints; ``ValueError`` for anything else."""
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    if axis is not None and not all(isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_)) for a in axes):
        raise ValueError(f"{fn}: axis must be None, an int or a tuple of ints, got {axis!r}")
    return tuple(int(a) for a in axes) if isinstance(axis, (tuple, list)) else axis


def unitwise_norm(x: jnp.ndarray, axis: Any = None, pytorch_layout: bool = False) -> jnp.ndarray:
    """‖x‖₂ of each unit of ``x`` (shape broadcastable to ``x``), accumulated in ≥ float32.

    The units follow :func:`adaptive_grad_clip`'s axis convention.
    """
    sq = tree_lib.wide_abs_sq(x)
    return jnp.sqrt(jnp.sum(sq, axis=_unit_axes(x.shape, axis, pytorch_layout), keepdims=True))


def adaptive_grad_clip(
    clipping: hparams.ScalarOrSchedule,
    eps: float = 1e-3,
    *,
    axis: Any = None,
    pytorch_layout: bool = False,
) -> GradientTransformation:
    """Adaptive gradient clipping (AGC), unit-wise: bound ‖G_i‖ relative to ‖W_i‖.

    For each unit i of each leaf, with ‖W_i‖* = max(‖W_i‖₂, ε):

      u_i = G_i                                    if ‖G_i‖₂ < λ·‖W_i‖*,
      u_i = λ·‖W_i‖*/max(‖G_i‖₂, 10⁻⁶) · G_i        otherwise.

    Units (the axis convention). By default gradflow follows the NFNets/haiku/optax
    layout, where a dense kernel is (in, out) and a unit is one output column:
    a leaf with at most one non-trivial dimension is a single unit; rank 2 and
    rank 3 leaves reduce over axis 0 (dense kernels and multi-head dense kernels),
    rank 4 (HWIO convolution kernels) over (0, 1, 2); higher ranks over all axes but
    the last. With ``pytorch_layout=True`` it follows PyTorch/timm, where a kernel
    is (out, in, …): rank ≤ 1 leaves are one unit, higher ranks reduce over all
    dims but dim 0. ``axis`` overrides both.

    Unit norms are per row or column of a leaf, so under ``jax.jit`` with sharded
    leaves they are exact (XLA reduces across shards). Inside ``jax.shard_map``,
    keep the reduced axes unsplit (shard the unit axis only); AGC takes no
    ``axis_name``, because a unit norm is not a sum over one mesh axis in general.

    Args:
      clipping: λ > 0, the largest allowed ratio ‖G_i‖/‖W_i‖* (number or schedule).
      eps: ε ≥ 0, the floor on parameter norms (so zero-initialised parameters can move).
      axis: explicit reduction axes for every leaf (optional).
      pytorch_layout: use timm's unit convention instead of optax's.

    Returns:
      A :class:`GradientTransformation` (needs ``params`` in ``update``) whose state
      is an :class:`AdaptiveGradClipState`.

    Parity: ``optax.adaptive_grad_clip(clipping, eps)``: defaults (tested);
    ``timm.utils.adaptive_clip_grad(params, clip_factor=λ, eps=ε)``: ``pytorch_layout=True``.

    References:
      Brock, De, Smith & Simonyan, High-Performance Large-Scale Image Recognition Without
      Normalization, 2021, https://arxiv.org/abs/2102.06171

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.adaptive_grad_clip(0.1)
      >>> params, grads = jnp.array([3.0, 4.0]), jnp.array([6.0, 8.0])
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> [round(float(u), 4) for u in updates]   # ‖g‖ = 10 is cut to 0.1·‖θ‖ = 0.5
      [0.3, 0.4]
    """
    hparams.check_positive("adaptive_grad_clip", "clipping", clipping, schedule=True)
    hparams.check_non_negative("adaptive_grad_clip", "eps", eps)
    hparams.check_flags("adaptive_grad_clip", pytorch_layout=pytorch_layout)
    axis = _axes("adaptive_grad_clip", axis)

    def init_fn(params):
        return _diag_init(AdaptiveGradClipState, params, num_units_clipped=tree_lib.zero_count())

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        tree_lib.check_params_given("adaptive_grad_clip", updates, params)
        dt = state.norm.dtype
        lam = hparams.value_at(clipping, state.count)
        g_leaves, treedef = jax.tree.flatten(updates)
        p_leaves = jax.tree.leaves(params)
        new, hits, sq = [], [], []
        for g, p in zip(g_leaves, p_leaves):
            g_norm = unitwise_norm(g, axis, pytorch_layout)
            p_norm = unitwise_norm(p, axis, pytorch_layout)
            max_norm = lam * jnp.maximum(p_norm, eps)
            trigger = g_norm < max_norm
            factor = jnp.where(trigger, jnp.ones_like(g_norm), max_norm / jnp.maximum(g_norm, 1e-6))
            new.append((g * factor).astype(g.dtype))
            hits.append(jnp.sum(~trigger).astype(jnp.int32))
            sq.append(jnp.sum(jnp.square(g_norm)).astype(dt))
        n_hits = sum(hits) if hits else jnp.zeros((), jnp.int32)
        norm = jnp.sqrt(sum(sq)) if sq else jnp.zeros((), dt)
        return jax.tree.unflatten(treedef, new), _diag_next(
            state, norm, n_hits > 0, num_units_clipped=jnp.asarray(n_hits, jnp.int32)
        )

    return checked("adaptive_grad_clip", init_fn, update_fn)


# ---------------------------------------------------------------------------
# adaptive, stateful clippers
# ---------------------------------------------------------------------------


def linear_percentile(values: jnp.ndarray, n: jnp.ndarray, q: float) -> jnp.ndarray:
    """The q-th percentile (q in (0, 100]) of the first ``n`` entries of ``values``.

    NumPy's default ("linear") definition: sort the n valid values into
    s_0 ≤ … ≤ s_{n−1}, let h = (q/100)·(n − 1), and return
    s_⌊h⌋ + (h − ⌊h⌋)·(s_⌊h⌋+1 − s_⌊h⌋). Entries past ``n`` are ignored; ``n ≥ 1``.
    """
    size = values.shape[0]
    idx = jnp.arange(size)
    s = jnp.sort(jnp.where(idx < n, values, jnp.inf))
    h = (jnp.asarray(q, values.dtype) / 100) * (n - 1).astype(values.dtype)
    lo = jnp.clip(jnp.floor(h).astype(jnp.int32), 0, size - 1)
    hi = jnp.clip(jnp.minimum(lo + 1, n - 1), 0, size - 1)
    frac = h - lo.astype(values.dtype)
    a, b = s[lo], s[hi]
    return jnp.where(hi > lo, a + (b - a) * frac, a)


class AutoclipState(NamedTuple):
    """State of :func:`autoclip`."""
    stats_name = "autoclip"

    count: jnp.ndarray  # int32 scalar: updates seen
    norm: jnp.ndarray  # float scalar: ‖g‖ of the last incoming updates, before clipping
    threshold: jnp.ndarray  # float scalar: the clip bound of the last step (p-th percentile)
    clipped: jnp.ndarray  # bool scalar: whether the last update was scaled down
    num_clipped: jnp.ndarray  # int32 scalar: updates scaled down so far
    num_recorded: jnp.ndarray  # int32 scalar: finite norms recorded so far (past 2³¹−1 it cycles below it)
    history: jnp.ndarray  # (history_size,) float: ring buffer of the last finite norms


def autoclip(
    percentile: float = 10.0, history_size: int = 1000, *, axis_name: Any = None
) -> GradientTransformation:
    """AutoClip: clip the global norm to the p-th percentile of the norms seen so far.

    At each step the finite norm n_t = ‖g_t‖₂ is appended to the history H (the last
    ``history_size`` finite norms, kept in a fixed-size ring buffer), then

      c_t = percentile_p(H)  (NumPy's linear interpolation, over the filled part of
      the buffer, which includes n_t — as in the paper's code),
      u = g·min(1, c_t/n_t).

    The paper keeps every norm since the start; the bounded buffer is gradflow's
    choice (memory and cost stay fixed); with ``history_size`` ≥ the number of
    steps the two are identical. The paper's code clips with
    ``torch.nn.utils.clip_grad_norm_``, i.e. with +10⁻⁶ on the norm; gradflow uses
    the exact factor.

    Args:
      percentile: p in (0, 100]; the paper recommends 10.
      history_size: the number of recent norms kept (≥ 1).
      axis_name: the ``shard_map`` mesh axis or axes (see the module docstring).

    Returns:
      A :class:`GradientTransformation` whose state is an :class:`AutoclipState`.

    Parity: the paper's algorithm with an unbounded history, when ``history_size`` ≥
    the number of steps (tested against a NumPy reference using ``np.percentile``).

    References:
      Seetharaman, Wichern, Pardo & Le Roux, AutoClip: Adaptive Gradient Clipping for
      Source Separation Networks, 2020, https://arxiv.org/abs/2007.14469

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.autoclip(percentile=50.0)
      >>> state = tx.init(jnp.zeros(1))
      >>> for g in [1.0, 2.0, 3.0, 4.0, 40.0]:
      ...     updates, state = tx.update(jnp.array([g]), state)
      >>> round(float(updates[0]), 4)   # 40 is cut to the median of the norms seen, 1, 2, 3, 4, 40
      3.0
    """
    hparams.check_range("autoclip", "percentile", percentile, 0.0, 100.0, low_open=True)
    hparams.check_int("autoclip", "history_size", history_size, 1, counted=True)
    size = int(history_size)
    q = float(percentile)

    def init_fn(params):
        dt = tree_lib.stat_dtype(params)
        return _diag_init(
            AutoclipState, params, threshold=jnp.zeros((), dt), num_recorded=tree_lib.zero_count(),
            history=jnp.zeros((size,), dt),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        dt = state.norm.dtype
        norm = tree_lib.global_norm(updates, axis_name).astype(dt)
        finite = jnp.isfinite(norm)
        history = tree_lib.ring_write(state.history, state.num_recorded, norm, finite)
        num_recorded = jnp.where(finite, tree_lib.ring_increment(state.num_recorded, size), state.num_recorded)
        filled = jnp.minimum(num_recorded, size)
        threshold = jnp.where(
            filled > 0, linear_percentile(history, filled, q), jnp.asarray(jnp.inf, dt)
        )
        clipped = norm > threshold
        updates = tree_lib.times_scalar(updates, _bound_factor(norm, threshold), in_leaf_dtype=False)
        return updates, _diag_next(state, norm, clipped, threshold=threshold, num_recorded=num_recorded, history=history)

    return checked("autoclip", init_fn, update_fn)


class ZclipState(NamedTuple):
    """State of :func:`zclip`."""
    stats_name = "zclip"

    count: jnp.ndarray  # int32 scalar: updates seen
    norm: jnp.ndarray  # float scalar: ‖g‖ of the last incoming updates, before clipping
    z: jnp.ndarray  # float scalar: z-score of the last norm (0 during warm-up)
    clipped: jnp.ndarray  # bool scalar: whether the last update was scaled down
    num_clipped: jnp.ndarray  # int32 scalar: updates scaled down so far
    mean: jnp.ndarray  # float scalar: EMA mean μ of the (clipped) norms
    var: jnp.ndarray  # float scalar: EMA variance σ² of the (clipped) norms
    num_recorded: jnp.ndarray  # int32 scalar: finite norms seen (warm-up ends at warmup_steps)
    warmup_norms: jnp.ndarray  # (warmup_steps,) float: the norms collected during warm-up


def zclip(
    alpha: float = 0.97,
    z_threshold: float = 2.5,
    warmup_steps: int = 25,
    eps: float = 1e-6,
    *,
    axis_name: Any = None,
) -> GradientTransformation:
    """ZClip: clip the global norm when its z-score against EMA statistics is too high.

    Warm-up: the first ``warmup_steps`` finite norms pass unclipped and are
    collected; then μ = mean of them and σ² = their (population) variance.
    Afterwards, with n_t = ‖g_t‖₂ and σ = √σ²:

      z_t = (n_t − μ)/(σ + ε);
      if z_t > z_thr: c_t = μ + (z_thr²/z_t)·σ, u = g·c_t/n_t, and x_t = c_t;
      else: u = g, x_t = n_t;
      μ ← α·μ + (1 − α)·x_t;  σ² ← α·σ² + (1 − α)·(x_t − μ)²  (with the new μ).

    The EMAs are updated with the clipped norm (the paper's "adaptive scaling"
    mode, its recommended one). The factor is exact (c_t/n_t); the reference code
    clips with +10⁻⁶ on the norm.

    Args:
      alpha: EMA factor α in (0, 1).
      z_threshold: z_thr > 0.
      warmup_steps: number of norms collected before clipping starts (≥ 1).
      eps: ε ≥ 0 added to σ in the z-score.
      axis_name: the ``shard_map`` mesh axis or axes (see the module docstring).

    Returns:
      A :class:`GradientTransformation` whose state is a :class:`ZclipState`.

    Parity: the reference implementation (``ZClip(alpha, z_thresh, max_grad_norm=None,
    mode="zscore", clip_option="adaptive_scaling", clip_factor=1.0)``) up to its
    +10⁻⁶ on the norm; tested against a NumPy reference from the paper's equations.

    References:
      Kumar, Owen, Chowdhury & Güra, ZClip: Adaptive Spike Mitigation for LLM
      Pre-Training, 2025, https://arxiv.org/abs/2504.02507

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.zclip(warmup_steps=4)
      >>> state = tx.init(jnp.zeros(1))
      >>> for g in [1.0, 1.2, 0.8, 1.0, 10.0]:
      ...     updates, state = tx.update(jnp.array([g]), state)
      >>> # μ = 1, σ = 0.1414 from the warm-up; z = 63.6 > 2.5, so c = μ + (2.5²/z)·σ
      >>> round(float(updates[0]), 4), bool(state.clipped)
      (1.0139, True)
    """
    _check_ema_factor("zclip", "alpha", alpha)
    hparams.check_positive("zclip", "z_threshold", z_threshold)
    hparams.check_int("zclip", "warmup_steps", warmup_steps, 1, counted=True)
    hparams.check_non_negative("zclip", "eps", eps)
    w = int(warmup_steps)

    def init_fn(params):
        dt = tree_lib.stat_dtype(params)
        zero = lambda: jnp.zeros((), dt)  # noqa: E731  (a fresh buffer per field, so state can be donated)
        return _diag_init(
            ZclipState, params, z=zero(), mean=zero(), var=zero(), num_recorded=tree_lib.zero_count(),
            warmup_norms=jnp.zeros((w,), dt),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        dt = state.norm.dtype
        norm = tree_lib.global_norm(updates, axis_name).astype(dt)
        finite = jnp.isfinite(norm)
        warm = state.num_recorded < w
        buf, done, init_mean, init_var = _zclip_warmup(state, norm, warm & finite, w)
        z, spike, bound, ema_mean, ema_var = _zclip_ema(state, norm, warm, alpha, z_threshold, eps)
        tracked = (~warm) & finite
        mean = jnp.where(done, init_mean, jnp.where(tracked, ema_mean, state.mean))
        var = jnp.where(done, init_var, jnp.where(tracked, ema_var, state.var))
        factor = jnp.where(spike, bound / norm, jnp.ones_like(norm))
        return tree_lib.times_scalar(updates, factor, in_leaf_dtype=False), _diag_next(
            state, norm, spike, z=jnp.where(warm, jnp.zeros_like(z), z), mean=mean, var=var,
            num_recorded=_count_if(finite, state.num_recorded), warmup_norms=buf,
        )

    return checked("zclip", init_fn, update_fn)


def _zclip_warmup(state: ZclipState, norm: jnp.ndarray, collect: jnp.ndarray, w: int) -> tuple:
    """Warm-up: collect the norm; (buffer, whether it just filled, its mean, its variance)."""
    pos = jnp.minimum(state.num_recorded, w - 1)
    buf = state.warmup_norms.at[pos].set(jnp.where(collect, norm, state.warmup_norms[pos]))
    done = collect & (state.num_recorded + 1 == w)
    init_mean = jnp.mean(buf)
    return buf, done, init_mean, jnp.mean(jnp.square(buf - init_mean))


def _zclip_ema(state: ZclipState, norm: jnp.ndarray, warm: jnp.ndarray, alpha, z_threshold, eps) -> tuple:
    """After warm-up: (z-score, spike, clip bound, EMA mean and variance updated with the clipped norm)."""
    dt = state.norm.dtype
    a, zt = jnp.asarray(alpha, dt), jnp.asarray(z_threshold, dt)
    std = jnp.sqrt(state.var)
    z = (norm - state.mean) / (std + jnp.asarray(eps, dt))
    spike = (~warm) & (z > zt)
    bound = state.mean + (zt * zt / z) * std
    x = jnp.where(spike, bound, norm)
    ema_mean = a * state.mean + (1 - a) * x
    return z, spike, bound, ema_mean, a * state.var + (1 - a) * jnp.square(x - ema_mean)


class ClipUpdateNormState(NamedTuple):
    """State of :func:`clip_update_norm`."""
    stats_name = "clip_update_norm"

    count: jnp.ndarray  # int32 scalar: updates seen
    norm: jnp.ndarray  # float scalar: ‖u‖ of the last incoming update, before clipping
    threshold: jnp.ndarray  # float scalar: the bound of the last step (inf while the history is short)
    clipped: jnp.ndarray  # bool scalar: whether the last update was scaled down
    num_clipped: jnp.ndarray  # int32 scalar: updates scaled down so far
    num_recorded: jnp.ndarray  # int32 scalar: finite norms recorded so far (saturates)
    history: jnp.ndarray  # (window,) float: ring buffer of the last finite, unclipped norms


def clip_update_norm(
    window: int = 128,
    sigma_factor: float = 3.0,
    min_history: int | None = None,
    *,
    axis_name: Any = None,
) -> GradientTransformation:
    """Clip the update's global norm against the mean + k·σ of the recent unclipped update norms.

    Placed *after* the optimizer (``chain(adamw(...), clip_update_norm())``), it watches
    the norm of the step itself, whose spikes precede loss spikes in large runs. With
    n_t = ‖u_t‖₂ and H the last ``window`` finite norms before this step (unclipped):

      if |H| ≥ m:  c_t = mean(H) + k·max(std(H), 10⁻⁶)  (population std),  else c_t = ∞;
      u ← u·c_t/n_t  where n_t > c_t  (u unchanged, bit for bit, otherwise);
      then n_t joins H unclipped (so clipping cannot drag the bound down with it).

    Args:
      window: the number of recent norms kept (≥ 1); Levanter's ``rolling_interval_length``.
      sigma_factor: k ≥ 0, the number of standard deviations above the mean allowed.
      min_history: m, the norms needed before clipping starts, in [1, window];
        default max(2, window // 2), as Levanter, capped at ``window`` (so with
        ``window=1`` each update is held to the last one's norm + k·10⁻⁶, where
        Levanter, needing 2 norms it never keeps, would never clip).
      axis_name: the ``shard_map`` mesh axis or axes (see the module docstring).

    Returns:
      A :class:`GradientTransformation` whose state is a :class:`ClipUpdateNormState`
      (``norm``, ``threshold``, ``clipped``, ``num_clipped`` appear in :func:`gradflow.stats`).

    Parity: Levanter's ``clip_update_by_historical_norm(rolling_interval_length,
    sigma_factor)`` (defaults 128 and 3), with two differences: gradflow multiplies by
    the exact c_t/n_t (Levanter divides by max(n_t, 10⁻⁶)), and a non-finite norm is not
    written into the history (Levanter records every norm, so one NaN step would disable
    its clipping for ``window`` steps). Tested against a NumPy reference of the rule.

    References:
      Levanter (Stanford CRFM), ``levanter.optim.clip_update_norm``,
      https://github.com/stanford-crfm/levanter

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.clip_update_norm(window=4, sigma_factor=1.0, min_history=4)
      >>> state = tx.init(jnp.zeros(1))
      >>> for u in [1.0, 2.0, 1.0, 2.0, 9.0]:
      ...     updates, state = tx.update(jnp.array([u]), state)
      >>> round(float(updates[0]), 4)   # mean 1.5 + 1·std 0.5 of the last four norms
      2.0
    """
    fn = "clip_update_norm"
    hparams.check_int(fn, "window", window, 1, counted=True)
    hparams.check_non_negative(fn, "sigma_factor", sigma_factor)
    size = int(window)
    if min_history is None:
        need = max(2, size // 2)
    else:
        hparams.check_int(fn, "min_history", min_history, 1)
        if int(min_history) > size:
            raise ValueError(f"{fn}: min_history must be an integer in [1, window={size}], got {min_history!r}")
        need = int(min_history)
    need = min(need, size)

    def init_fn(params):
        dt = tree_lib.stat_dtype(params)
        return _diag_init(
            ClipUpdateNormState, params, threshold=jnp.asarray(jnp.inf, dt), num_recorded=tree_lib.zero_count(),
            history=jnp.zeros((size,), dt),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        dt = state.norm.dtype
        norm = tree_lib.global_norm(updates, axis_name).astype(dt)
        filled = jnp.minimum(state.num_recorded, size)
        mean, std = tree_lib.window_mean_std(state.history, filled)
        std = jnp.maximum(std, jnp.asarray(1e-6, dt))
        bound = mean + hparams.as_scalar(sigma_factor, dt) * std
        threshold = jnp.where(filled >= need, bound, jnp.asarray(jnp.inf, dt))
        clipped = norm > threshold
        finite = jnp.isfinite(norm)
        history = tree_lib.ring_write(state.history, state.num_recorded, norm, finite)
        updates = tree_lib.times_scalar(updates, _bound_factor(norm, threshold), in_leaf_dtype=False)
        return updates, _diag_next(
            state, norm, clipped, threshold=threshold, num_recorded=_count_if(finite, state.num_recorded), history=history
        )

    return checked(fn, init_fn, update_fn)


class AdagcState(NamedTuple):
    """State of :func:`adagc`."""
    stats_name = "adagc"

    count: jnp.ndarray  # int32 scalar: updates seen
    norm: jnp.ndarray  # float scalar: global ‖g‖ of the last incoming updates, before clipping
    clipped: jnp.ndarray  # bool scalar: whether a leaf of the last update was scaled down
    num_clipped: jnp.ndarray  # int32 scalar: updates with a clipped leaf so far
    num_leaves_clipped: jnp.ndarray  # int32 scalar: leaves scaled down in the last update
    num_recorded: jnp.ndarray  # int32 scalar: steps with a finite norm (warm-up counts these)
    gamma: Any  # like params, one float scalar per leaf: γ_i, the EMA of leaf i's clipped norm


def adagc(
    lambda_abs: float = 1.0,
    lambda_rel: float = 1.05,
    beta: float = 0.98,
    warmup_steps: int = 100,
    *,
    axis_name: Any = None,
) -> GradientTransformation:
    """AdaGC: per-leaf (per-tensor) clipping against an EMA of each leaf's clipped norm.

    Warm-up (the first ``warmup_steps`` steps with a finite norm): global clipping,

      h_t = min(1, λ_abs/‖g_t‖₂);  ĝ_{t,i} = h_t·g_{t,i};
      γ_i = ‖ĝ_{t,i}‖ at the first step, then γ_i ← min(γ_i, ‖ĝ_{t,i}‖), where a
      zero norm is skipped (it replaces γ_i only while γ_i is still 0).

    Afterwards, per leaf i:

      h_{t,i} = min(1, λ_rel·γ_i/‖g_{t,i}‖₂);  ĝ_{t,i} = h_{t,i}·g_{t,i};
      γ_i ← β·γ_i + (1 − β)·‖ĝ_{t,i}‖.

    Defaults are the paper's (λ_abs = 1.0, λ_rel = 1.05, β = 0.98, 100 warm-up
    steps). λ_abs is meant to sit near the typical gradient norm (the paper's
    models have ‖g‖ ≲ 1): when norms are well above it, every warm-up step is
    clipped, γ_i starts small, and afterwards every step is clipped while γ_i
    grows by at most a factor β + (1 − β)·λ_rel per step (0.1% with the defaults).
    As in the paper, a leaf whose gradient is zero throughout warm-up gets γ_i = 0
    and stays at zero afterwards.

    Args:
      lambda_abs: λ_abs > 0, the global clip bound during warm-up.
      lambda_rel: λ_rel > 0, the allowed ratio of ‖g_i‖ to its history γ_i.
      beta: EMA factor β in (0, 1).
      warmup_steps: steps of global clipping before per-leaf clipping starts (≥ 1).
      axis_name: the ``shard_map`` mesh axis or axes (see the module docstring).

    Returns:
      A :class:`GradientTransformation` whose state is an :class:`AdagcState`.

    Parity: tested against a NumPy reference written from the paper's Algorithm 1;
    the optimizer of the paper is ``chain(adagc(), adamw(...))``.

    References:
      Wang, Li, Chen, Zeng, Yang, Yu, Ma & Shen, AdaGC: Improving Training Stability
      for Large Language Model Pretraining, 2025, https://arxiv.org/abs/2502.11034

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.adagc(warmup_steps=2)
      >>> state = tx.init(jnp.zeros(1))
      >>> for g in [0.5, 0.4, 5.0]:
      ...     updates, state = tx.update(jnp.array([g]), state)
      >>> round(float(updates[0]), 4)   # γ = min(0.5, 0.4) after warm-up; 5 is cut to 1.05·γ
      0.42
    """
    hparams.check_positive("adagc", "lambda_abs", lambda_abs)
    hparams.check_positive("adagc", "lambda_rel", lambda_rel)
    _check_ema_factor("adagc", "beta", beta)
    hparams.check_int("adagc", "warmup_steps", warmup_steps, 1, counted=True)
    w = int(warmup_steps)

    def init_fn(params):
        dt = tree_lib.stat_dtype(params)
        gamma = jax.tree.map(lambda p: jnp.zeros((), dt), params)
        count = tree_lib.zero_count
        return _diag_init(AdagcState, params, num_leaves_clipped=count(), num_recorded=count(), gamma=gamma)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        dt = state.norm.dtype
        leaves, treedef = jax.tree.flatten(updates)
        tree_lib.check_same_structure("adagc", updates, state.gamma, "per-leaf thresholds")
        gammas = treedef.flatten_up_to(state.gamma)
        sq = _square_sums(updates, dt, axis_name)
        norms = [jnp.sqrt(s) for s in sq]
        norm = jnp.sqrt(sum(sq)) if sq else jnp.zeros((), dt)
        finite = jnp.isfinite(norm)
        warm = state.num_recorded < w
        first = state.num_recorded == 0
        h_abs = _bound_factor(norm, jnp.asarray(lambda_abs, dt))
        new, new_gammas, hits = [], [], []
        for g, n, gam in zip(leaves, norms, gammas):
            bound = lambda_rel * gam
            h = jnp.where(warm, h_abs, _bound_factor(n, bound))
            clipped_norm = h * n
            # γ_i is the minimum of the leaf's non-zero clipped norms in warm-up: a single
            # zero gradient (an expert that got no tokens) must not pin it at 0 for ever.
            seen = (~first) & (gam > 0)
            warm_gamma = jnp.where(
                seen, jnp.where(clipped_norm > 0, jnp.minimum(gam, clipped_norm), gam), clipped_norm
            )
            ema_gamma = beta * gam + (1 - beta) * clipped_norm
            new_gamma = jnp.where(warm, warm_gamma, ema_gamma)
            new.append((g * h).astype(g.dtype))
            new_gammas.append(jnp.where(finite, new_gamma, gam).astype(dt))
            hits.append((jnp.where(warm, (norm > lambda_abs) & (n > 0), n > bound)).astype(jnp.int32))  # a zero leaf is not cut
        n_hits = jnp.asarray(sum(hits) if hits else 0, jnp.int32)
        return jax.tree.unflatten(treedef, new), _diag_next(
            state, norm, n_hits > 0,
            num_leaves_clipped=n_hits,
            num_recorded=_count_if(finite, state.num_recorded),
            gamma=jax.tree.unflatten(treedef, new_gammas),
        )

    return checked("adagc", init_fn, update_fn)


__all__ = [
    "AdagcState",
    "AdaptiveGradClipState",
    "AutoclipState",
    "ClipByBlockRmsState",
    "ClipByGlobalNormState",
    "ClipByNormState",
    "ClipState",
    "ClipUpdateNormState",
    "ZclipState",
    "adagc",
    "adaptive_grad_clip",
    "autoclip",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_update_norm",
    "zclip",
]
