"""Running a transform on small leaves packed into one flat buffer per dtype.

A model with hundreds of small leaves (biases, norms, small kernels) of many
shapes makes XLA compile and launch one kernel per leaf for every elementwise
pass of the optimizer. :func:`flatten_small` packs those leaves into one 1-D
buffer per dtype, runs the inner transform on the large leaves and the buffers,
and unpacks the updates, so the optimizer's math over all small leaves is one
kernel and its state for them is one buffer per dtype.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import hparams
from gradflow.base import GradientTransformation, extra_args_filter
from gradflow.tree import group_key

__all__ = ["FlattenSmallState", "flatten_small"]


class FlattenSmallState(NamedTuple):
    """State of :func:`flatten_small`."""
    stats_name = "flatten_small"

    # the inner transform's state for the packed tree
    # ``{"large": (leaves larger than max_size, in tree order), "flat": (one 1-D buffer per dtype)}``:
    # each per-parameter buffer holds the large leaves' shapes and dtypes, and one
    # [total size of the small leaves of that dtype] buffer per dtype
    inner_state: Any


def _is_per_leaf(state: Any) -> bool:
    """Whether ``state`` belongs to a transform whose math is per leaf (per-leaf norms,
    trust ratios, per-tensor update clipping, SPAM's per-tensor max |g|)."""
    from gradflow import adaptive, clipping, relative_update, spikes

    if isinstance(state, spikes.ScaleBySpamState):
        return state.max_ema is not None  # adaptive_clip keeps one max |g| per leaf
    return isinstance(state, (
        relative_update.ClipRelativeUpdateState,
        clipping.ClipByNormState,
        clipping.ClipByBlockRmsState,
        clipping.AdaptiveGradClipState,
        clipping.AdagcState,
        adaptive.ScaleByTrustRatioState,
        spikes.ScaleByStableAdamState,
    ))


class _Layout(NamedTuple):
    """Which leaves are packed, and where: derived from shapes and dtypes only."""

    treedef: Any
    large: tuple  # indices of leaves kept as they are
    groups: tuple  # ((dtype, (leaf indices...)), ...) in dtype-name order
    shapes: tuple  # every leaf's shape


def _layout(tree: Any, max_size: int) -> _Layout:
    leaves, treedef = jax.tree.flatten(tree)
    large, groups = [], {}
    for i, x in enumerate(leaves):
        if int(np.prod(x.shape, dtype=np.int64)) <= max_size:
            groups.setdefault(jnp.dtype(x.dtype), []).append(i)
        else:
            large.append(i)
    ordered = tuple((d, tuple(groups[d])) for d in sorted(groups, key=lambda d: d.name))
    return _Layout(treedef, tuple(large), ordered, tuple(tuple(x.shape) for x in leaves))


def _check_unsharded(fn: str, leaves: list, layout: _Layout, max_size: int) -> None:
    """Refuse a small leaf whose sharding is known and is not one full copy per device."""
    for _, idx in layout.groups:
        for i in idx:
            x = leaves[i]
            sharding = getattr(x, "sharding", None)
            known_split = sharding is not None and not isinstance(x, jax.core.Tracer) and not sharding.is_fully_replicated
            if known_split or (isinstance(x, jax.core.Tracer) and group_key(x) is None and _explicit(x)):
                raise ValueError(
                    f"{fn}: leaf {i} of shape {layout.shapes[i]} is sharded over several devices and would be "
                    f"packed with others (max_size={max_size}); pass a smaller max_size so it stays on its own"
                )


def _explicit(x: Any) -> bool:
    try:
        return any(t == jax.sharding.AxisType.Explicit for t in jax.typeof(x).sharding.mesh.axis_types)
    except (AttributeError, TypeError):
        return False


def _pack(leaves: list, layout: _Layout) -> dict:
    flat = []
    for dtype, idx in layout.groups:
        parts = [jnp.ravel(leaves[i]).astype(dtype) for i in idx]
        flat.append(parts[0] if len(parts) == 1 else jnp.concatenate(parts))
    return {"large": tuple(leaves[i] for i in layout.large), "flat": tuple(flat)}


def _unpack(packed: dict, layout: _Layout, like: list) -> list:
    out: list = [None] * len(layout.shapes)
    for i, x in zip(layout.large, packed["large"]):
        out[i] = x.astype(like[i].dtype)  # in the gradient's dtype, as the small leaves are
    for (_, idx), buf in zip(layout.groups, packed["flat"]):
        repeated = _repeated(layout, idx)
        sizes = [int(np.prod(layout.shapes[i], dtype=np.int64)) for i in idx]
        starts = np.cumsum([0] + sizes[:-1]).tolist()
        dynamic = iter(_run_time([o for o, r in zip(starts, repeated) if r], buf))
        for i, r, start, size in zip(idx, repeated, starts, sizes):
            if r:  # one kernel for all leaves of this shape, the start its argument
                part = jax.lax.dynamic_slice(buf, (next(dynamic),), (size,))
            else:  # a shape of its own: a static slice, which runs faster
                part = buf[start : start + size]
            out[i] = part.reshape(layout.shapes[i]).astype(like[i].dtype)
    return out


def _repeated(layout: _Layout, idx: tuple) -> list:
    """Whether each leaf of a dtype group shares its shape with another leaf of the group."""
    counts = Counter(layout.shapes[i] for i in idx)
    return [counts[layout.shapes[i]] > 1 for i in idx]


def _run_time(values: list, buf: jax.Array) -> tuple:
    """``values`` as int32 scalars that XLA's CPU compiler cannot fold into constants.

    Leaves of one shape are then cut out by one compiled kernel that takes the
    start as an argument, not by one kernel per leaf (which on hundreds of leaves
    costs seconds of compile time). Both branches of a conditional on a run-time
    predicate (``b == b`` for the buffer's first element b, false only for NaN)
    return the values, so XLA keeps them as run-time scalars; on a CPU the
    conditional costs nothing. On other platforms (where a conditional makes a
    GPU wait for its host), for a buffer of integers (whose ``b == b`` XLA
    folds) and for an empty one, they stay constants and each leaf is a static slice.
    """
    def constants(*_):
        return tuple(jnp.int32(v) for v in values)

    if not values or buf.size == 0 or not jnp.issubdtype(buf.dtype, jnp.inexact):
        return constants()

    def on_cpu(b):
        return jax.lax.cond(b == b, constants, constants)

    return jax.lax.platform_dependent(buf[0], cpu=on_cpu, default=constants)


def _check_offsets(layout: _Layout) -> None:
    """Refuse a buffer longer than int32 starts reach."""
    for _, idx in layout.groups:
        total = sum(int(np.prod(layout.shapes[i], dtype=np.int64)) for i in idx)
        if total > np.iinfo(np.int32).max:
            raise ValueError(f"flatten_small: the small leaves hold {total} elements, more than int32 offsets reach")


def flatten_small(tx: GradientTransformation, max_size: int = 1 << 16) -> GradientTransformation:
    r"""``tx`` run on the small leaves packed into one flat buffer per dtype.

    Leaves with at most ``max_size`` elements are raveled and concatenated, one
    1-D buffer per dtype (each leaf keeps its dtype: nothing is cast); larger
    leaves are passed as they are. ``tx`` sees the packed tree
    ``{"large": (large leaves...), "flat": (buffers...)}``, and the updates it
    returns are cut back into the original leaves, each in its gradient's dtype:

    .. math::

        u = \operatorname{unpack}\big(\mathrm{tx}(\operatorname{pack}(g))\big)

    For a transform whose math is elementwise (SGD, momentum, Adam, AdamW,
    RMSProp, AdaGrad, AMSGrad, weight decay, schedules) or uses the global norm
    (``clip_by_global_norm``, ``zclip``, ``autoclip``, ``clip``, the guards and
    ``monitor``), the result is the same: elementwise math bit for bit when run
    eagerly and to an ulp or two per step under ``jax.jit`` (XLA's algebraic
    simplifier may rewrite a chain of divisions, (a/b)/c → a/(b·c) or
    a/b → a·(1/b), differently for a packed buffer than for separate leaves),
    global norms up to the order of summation. State for the small leaves is one
    buffer per dtype, so the optimizer's passes over hundreds of small leaves
    compile to a few kernels instead of one per leaf per pass.

    Refused (``ValueError`` at ``init``): gradflow transforms whose math is per
    leaf (``clip_by_norm``, ``clip_by_block_rms``, ``adaptive_grad_clip``,
    ``adagc``, ``scale_by_trust_ratio`` and so ``lars`` and ``lamb``,
    ``clip_relative_update``, ``stable_adamw``, ``spam(adaptive_clip=True)``), which
    would treat a whole buffer as one leaf; chain them outside
    ``flatten_small``. ``protect`` holds the relative update clip's state even
    when ``max_update_ratio=None``, so it is refused too: wrap it around
    instead, ``protect(flatten_small(tx))``. optax's per-leaf transforms (``optax.clip_by_block_rms``,
    ``optax.scale_by_trust_ratio``, ``optax.adaptive_grad_clip``) carry no
    state that shows it and are not detected: do not wrap them. Masks
    (``optax.masked``, ``adamw(mask=...)``) see the packed tree: apply them
    outside. The packing is decided from shapes and dtypes alone, so ``init``
    and ``update`` agree and a saved state loads into ``init``'s structure; the
    updates must have the parameters' dtypes. Small leaves are never sharded
    ones: a small leaf whose sharding splits it over devices is refused (pass a
    smaller ``max_size``); :func:`gradflow.state_sharding` gives the large
    leaves' state their parameters' shardings and replicates the buffers,
    wherever ``flatten_small`` sits in the chain.

    Args:
      tx: the transform to run on the packed tree.
      max_size: leaves with at most this many elements are packed (≥ 0; 0 packs
        only empty leaves).

    Returns:
      A transform whose state is :class:`FlattenSmallState`.

    Parity: with an elementwise ``tx`` the updates and the state's values equal
    ``tx``'s own bit for bit eagerly, and to an ulp or two under jit
    (tests/test_flat.py); ``optax.flatten`` instead
    casts every leaf to one dtype and packs large and sharded leaves too.

    References:
      PyTorch's ``foreach`` optimizers (multi-tensor apply) group tensors for the
      same reason: Paszke et al., PyTorch: An Imperative Style, High-Performance
      Deep Learning Library, 2019, https://arxiv.org/abs/1912.01703
    """
    max_size = hparams.check_int("flatten_small", "max_size", max_size, 0)
    hparams.check_transform("flatten_small", "tx", tx)

    def init_fn(params):
        leaves = jax.tree.leaves(params)
        layout = _layout(params, max_size)
        _check_unsharded("flatten_small", leaves, layout, max_size)
        inner = tx.init(_pack(leaves, layout))
        found = [type(x).__name__ for x in jax.tree.leaves(inner, is_leaf=_is_per_leaf) if _is_per_leaf(x)]
        if found:
            raise ValueError(
                f"flatten_small: tx holds {found[0]}, whose math is per leaf and would treat a packed buffer "
                "as one leaf; chain it outside flatten_small"
            )
        _check_offsets(layout)
        return FlattenSmallState(inner_state=inner)

    extra = extra_args_filter(tx.update)

    def update_fn(updates, state, params=None, **extra_args):
        leaves = jax.tree.leaves(updates)
        layout = _layout(updates, max_size)
        _check_unsharded("flatten_small", leaves, layout, max_size)
        packed_params = None
        if params is not None:
            param_leaves = layout.treedef.flatten_up_to(params)
            _check_dtypes(updates, param_leaves)
            packed_params = _pack(param_leaves, layout)
        new, inner = tx.update(_pack(leaves, layout), state.inner_state, packed_params, **extra(extra_args))
        out = _unpack(new, layout, leaves)
        return jax.tree.unflatten(layout.treedef, out), FlattenSmallState(inner)

    return GradientTransformation(init_fn, update_fn)


def _check_dtypes(updates, param_leaves: list) -> None:
    """Refuse an update leaf whose dtype is not its parameter's: init packed by the parameters' dtypes."""
    for (path, u), p in zip(jax.tree_util.tree_leaves_with_path(updates), param_leaves):
        if hasattr(p, "dtype") and jnp.dtype(u.dtype) != jnp.dtype(p.dtype):
            raise TypeError(
                f"flatten_small: the update at {jax.tree_util.keystr(path) or '<root>'} has dtype {u.dtype} "
                f"but its parameter has dtype {p.dtype}; init packed the leaves by the parameters' dtypes, "
                "so the updates must have them (cast the gradients to their parameters' dtypes first)"
            )


def _pack_abstract(leaves: list, layout: _Layout) -> dict:
    """The packed tree's shapes and dtypes (read by :func:`gradflow.state_sharding`)."""
    flat = tuple(
        jax.ShapeDtypeStruct((sum(int(np.prod(layout.shapes[i], dtype=np.int64)) for i in idx),), dtype)
        for dtype, idx in layout.groups
    )
    large = tuple(jax.ShapeDtypeStruct(leaves[i].shape, leaves[i].dtype) for i in layout.large)
    return {"large": large, "flat": flat}
