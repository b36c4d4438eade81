"""The few pytree helpers the transforms share: norms, a saturating counter, checks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType

__all__ = ["global_norm", "safe_increment"]

INT32_MAX = np.iinfo(np.int32).max


# Leaves up to SMALL elements are reduced together: XLA compiles one kernel per distinct
# reduction, and a tree of many small leaves of different shapes spends most of its
# compile time there (1000 varied leaves: 24 s reducing each leaf, under 1 s reducing them
# together; the XLA of jax 0.10.2 splits a reduce of a concatenation back into one reduce
# per operand, so there the norm of 300 varied leaves compiled in 3.7 s against optax's
# 3.5 s, and still stepped in 1.2 ms against 2.1 ms). For the global norm the small
# leaves' squares are raveled, concatenated per accumulation dtype and summed once. For
# per-leaf sums, small leaves of one size are stacked and reduced row by row; a leaf whose
# size no other leaf shares is reduced on its own (zero-padding leaves of different sizes
# into one stack cost more than it saved: clip_relative_update on 300 varied leaves
# stepped in 26 ms that way, 4 ms per leaf). Larger leaves keep one reduce each, fused
# into their producers: copying them would cost more memory traffic than it saves (the
# threshold is measured by benchmarks/step_bench.py's cases). Leaves sharded over a mesh
# with automatic axes are never concatenated: their shardings are unknown while tracing,
# and a concatenation of differently sharded operands would make XLA gather them. Neither
# are leaves with a non-replicated explicit sharding.
SMALL = 1 << 16


def group_key(x: Any) -> Any:
    """The key small leaves are concatenated by, or None when ``x`` must be reduced on its own.

    The key is the accumulation dtype of ``x``'s squares; leaves with equal keys
    can be raveled and concatenated without moving data between devices.
    """
    acc = jnp.promote_types(np.real(np.zeros((), x.dtype)).dtype, jnp.float32)
    try:
        sharding = jax.typeof(x).sharding
        mesh = sharding.mesh
    except (AttributeError, TypeError):
        return acc
    if not mesh.axis_names or all(t == AxisType.Manual for t in mesh.axis_types):
        return acc  # one device, or per-shard values inside shard_map
    if all(t == AxisType.Explicit for t in mesh.axis_types) and all(p is None for p in sharding.spec):
        return acc  # replicated over an explicit mesh
    return None


def abs_sq(x: jnp.ndarray) -> jnp.ndarray:
    """|x|² elementwise in x's dtype: x·x for real leaves, Re(x·x̄) for complex ones."""
    return x * x if not jnp.iscomplexobj(x) else jnp.real(x * jnp.conj(x))


def wide_abs_sq(x: jnp.ndarray) -> jnp.ndarray:
    """|x|² elementwise, in at least float32 (float64 for float64 leaves), real for complex x."""
    acc = jnp.promote_types(jnp.real(x).dtype, jnp.float32)
    return abs_sq(x.astype(jnp.promote_types(x.dtype, acc))).astype(acc)


def _square_sum(x: jnp.ndarray) -> jnp.ndarray:
    """Σ|x|² of one leaf, accumulated in at least float32."""
    return jnp.sum(wide_abs_sq(x))


def _small_groups(leaves: list) -> tuple[list, dict]:
    """(indices of leaves reduced on their own, {key: indices of small leaves reduced together})."""
    alone: list = []
    groups: dict = {}
    for i, x in enumerate(leaves):
        key = group_key(x) if 0 < x.size <= SMALL else None
        if key is None:
            alone.append(i)
        else:
            groups.setdefault(key, []).append(i)
    return alone, groups


def _across(total: jnp.ndarray, axis_name: Any) -> jnp.ndarray:
    """Sum a per-shard partial sum over the ``shard_map`` mesh axes ``axis_name`` (if any)."""
    return total if axis_name is None else jax.lax.psum(total, axis_name)


def square_sums(leaves: list, axis_name: Any = None) -> list:
    """[Σ|x|² for x in leaves], each accumulated in at least float32.

    Small leaves (see ``SMALL``) of one accumulation dtype and one size are raveled,
    stacked and reduced by one reduce per size; every other leaf by its own reduce.
    Sharded leaves are never stacked with others. ``axis_name`` as in
    :func:`global_norm` (one ``psum`` of the stacked sums).
    """
    out: list = [None] * len(leaves)
    alone, groups = _small_groups(leaves)
    for idx in groups.values():
        by_size: dict = {}
        for i in idx:
            by_size.setdefault(leaves[i].size, []).append(i)
        for chunk in by_size.values():
            if len(chunk) == 1:
                alone.append(chunk[0])
                continue
            sums = jnp.sum(jnp.stack([wide_abs_sq(leaves[i]).ravel() for i in chunk]), axis=1)
            for j, i in enumerate(chunk):
                out[i] = sums[j]
    for i in alone:
        out[i] = _square_sum(leaves[i])
    if axis_name is not None and out:
        dtype = jnp.result_type(*out)
        summed = jax.lax.psum(jnp.stack([t.astype(dtype) for t in out]), axis_name)
        out = [summed[i].astype(t.dtype) for i, t in enumerate(out)]
    return out


def _partial_sums(leaves: list) -> list:
    """Partial sums whose total is Σ_leaves Σ|x|²: one per large leaf, one per dtype of small leaves."""
    alone, groups = _small_groups(leaves)
    sums = [_square_sum(leaves[i]) for i in alone]
    for idx in groups.values():
        parts = [wide_abs_sq(leaves[i]).ravel() for i in idx]
        sums.append(jnp.sum(parts[0] if len(parts) == 1 else jnp.concatenate(parts)))
    return sums


def global_norm(tree: Any, axis_name: Any = None) -> jnp.ndarray:
    """‖g‖₂ over every element of every leaf: √(Σ_leaves Σ_i |g_i|²).

    Accumulates in at least float32 (float64 when the leaves are float64) and
    returns a scalar. An empty tree has norm 0. Small leaves of one dtype are
    concatenated and reduced once (never sharded ones), so the sum's order, and
    its last bits, may differ from a leaf-by-leaf sum.

    Under ``jax.jit`` with sharded inputs the sums are global already (XLA
    inserts the all-reduce). Inside ``shard_map``, where each call sees only its
    shard, pass the mesh axis (or tuple of axes) the leaves are split over as
    ``axis_name``: the partial sums are then ``psum``-ed across it. Python numbers
    are 0-d leaves, as in ``optax.global_norm``.
    """
    leaves = jax.tree.leaves(as_arrays(tree))
    if not leaves:
        return jnp.zeros((), jnp.float32)
    sums = _partial_sums(leaves)
    dtype = jnp.result_type(*sums)
    total = sums[0] if len(sums) == 1 else jnp.sum(jnp.stack([t.astype(dtype) for t in sums]))
    return jnp.sqrt(_across(total, axis_name))


def times_scalar(updates: Any, factor: Any, *, in_leaf_dtype: bool = True) -> Any:
    """Each leaf times the scalar ``factor``, in the leaf's dtype: the factor rounded to it first
    (``in_leaf_dtype``, a step size, as optax scales), or the product formed in the wider dtype and
    rounded once (a float32 clipping factor on bfloat16 leaves)."""
    if in_leaf_dtype:
        return jax.tree.map(lambda g: g * jnp.asarray(factor, g.dtype), updates)
    return jax.tree.map(lambda g: (g * factor).astype(g.dtype), updates)


def stat_dtype(params: Any) -> Any:
    """dtype of scalar statistics: float32, or float64 when a parameter is float64 (or complex128).

    It is the dtype :func:`global_norm` returns for such a tree. Works on
    ``jax.ShapeDtypeStruct`` leaves and Python numbers.
    """
    dtypes = []
    for p in jax.tree.leaves(params):
        dt = jnp.dtype(_leaf_dtype(p))
        if jnp.issubdtype(dt, jnp.inexact):
            dtypes.append(jnp.finfo(dt).dtype)
    return jnp.result_type(jnp.float32, *dtypes) if dtypes else jnp.dtype(jnp.float32)


def safe_increment(count: jnp.ndarray) -> jnp.ndarray:
    """``count + 1`` for an int32 step counter, saturating at 2³¹−1 instead of wrapping."""
    return jnp.where(count < INT32_MAX, count + 1, INT32_MAX).astype(jnp.int32)


def ring_increment(count: jnp.ndarray, size: int) -> jnp.ndarray:
    """``count + 1`` for the write counter of a ring buffer of ``size`` slots (int32).

    The slot written is ``count % size``. A saturating counter would stop at 2³¹−1
    and write one slot for ever; this one steps back from 2³¹−1 to 2³¹−``size``,
    which is the same slot as 2³¹ would be, so the buffer keeps cycling and
    ``min(count, size)`` (the filled part) stays ``size``.
    """
    back = INT32_MAX - int(size) + 1  # ≡ 2³¹ (mod size)
    return jnp.where(count < INT32_MAX, count + 1, back).astype(jnp.int32)


def ring_write(history: jnp.ndarray, count: jnp.ndarray, value: jnp.ndarray, keep: jnp.ndarray) -> jnp.ndarray:
    """The ring buffer ``history`` with ``value`` written into slot ``count % size`` where ``keep``."""
    pos = count % history.shape[0]
    return history.at[pos].set(jnp.where(keep, value, history[pos]))


def window_mean_std(history: jnp.ndarray, filled: jnp.ndarray, ddof: int = 0) -> tuple:
    """(mean, standard deviation) of the first ``filled`` entries; the variance divides by max(filled − ddof, 1)."""
    dt = history.dtype
    valid = jnp.arange(history.shape[0]) < filled
    mean = jnp.sum(jnp.where(valid, history, 0)) / jnp.maximum(filled, 1).astype(dt)
    dev = jnp.where(valid, history - mean, 0)
    return mean, jnp.sqrt(jnp.sum(dev * dev) / jnp.maximum(filled - ddof, 1).astype(dt))


_MAD_TO_SIGMA = 1.4826  # σ = 1.4826·MAD for normally distributed values


def _median(values: jnp.ndarray, n: jnp.ndarray) -> jnp.ndarray:
    """Median of the first ``n`` (≥ 1) entries of ``values`` (the mean of the two middle ones when n is even)."""
    valid = jnp.arange(values.shape[0]) < n
    s = jnp.sort(jnp.where(valid, values, jnp.inf))
    return (s[(n - 1) // 2] + s[n // 2]) / 2


def robust_location_scale(values: jnp.ndarray, n: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(median, 1.4826·MAD) of the first ``n`` entries of ``values`` (n ≥ 1).

    The median absolute deviation needs no more than a handful of samples and is
    not moved by the outliers it is meant to find (its breakdown point is 50%).
    """
    med = _median(values, n)
    mad = _median(jnp.abs(values - med), n)
    return med, _MAD_TO_SIGMA * mad


def zero_count() -> jnp.ndarray:
    """A fresh int32 step counter."""
    return jnp.zeros((), jnp.int32)


def count_init(state_cls: Any) -> Any:
    """The ``init`` of a transform whose state is only a step counter: ``params -> state_cls(count=0)``."""
    return lambda params: state_cls(count=zero_count())


def _leaf_dtype(x: Any) -> Any:
    return x.dtype if hasattr(x, "dtype") else jnp.result_type(x)


def as_arrays(tree: Any) -> Any:
    """``tree`` with its Python-number leaves (``{"a": 1.0}``) as 0-d arrays, the others unchanged."""
    if all(hasattr(x, "shape") for x in jax.tree.leaves(tree)):
        return tree
    return jax.tree.map(lambda x: x if hasattr(x, "shape") else jnp.asarray(x), tree)


def zeros_like(tree: Any, dtype: Any = None) -> Any:
    """Zeros shaped like every leaf of ``tree`` (in ``dtype`` when given).

    Works on ``jax.ShapeDtypeStruct`` leaves too, so ``init`` runs under
    ``jax.eval_shape``, and on Python-number leaves (0-d).
    """
    return jax.tree.map(lambda p: jnp.zeros(leaf_shape(p), dtype or _leaf_dtype(p)), tree)


def signed_zeros_like(tree: Any, dtype: Any = None) -> Any:
    """:func:`zeros_like` for a moment that holds the gradient's sign (momentum, Adam's m):
    a complex leaf keeps a complex moment of ``dtype``'s precision (float32 → complex64),
    where a real one would drop the imaginary part."""

    def zeros(p):
        d = dtype or _leaf_dtype(p)
        if jnp.issubdtype(_leaf_dtype(p), jnp.complexfloating) and not jnp.issubdtype(d, jnp.complexfloating):
            d = jnp.result_type(d, jnp.complex64)
        return jnp.zeros(leaf_shape(p), d)

    return jax.tree.map(zeros, tree)


def in_dtype_of(new: Any, old: Any) -> Any:
    """The array ``new`` in ``old``'s dtype (a typed PRNG key, which has no ``astype``, as it is)."""
    dtype = jnp.result_type(old)
    return new if jax.dtypes.issubdtype(dtype, jax.dtypes.extended) else new.astype(dtype)


def cast_like(new: Any, old: Any) -> Any:
    """Each array leaf of ``new`` in the dtype of ``old``'s leaf at the same place (other leaves as they are)."""
    return jax.tree.map(lambda n, o: in_dtype_of(n, o) if hasattr(n, "astype") and hasattr(o, "dtype") else n, new, old)


def full_like(tree: Any, value: float, dtype: Any = None) -> Any:
    """``value`` broadcast to the shape of every leaf of ``tree``."""
    return jax.tree.map(lambda p: jnp.full(leaf_shape(p), value, dtype or _leaf_dtype(p)), tree)


def check_same_structure(fn: str, updates: Any, reference: Any, what: str = "params") -> None:
    """Raise ``TypeError`` showing both structures unless the two trees match."""
    a, b = jax.tree.structure(updates), jax.tree.structure(reference)
    if a != b:
        raise TypeError(
            f"{fn}: the updates' tree structure differs from the {what}'.\n"
            f"  updates: {a}\n  {what}: {b}"
        )


def leaf_shape(x: Any) -> tuple:
    """The shape of a leaf: an array's (or ``jax.ShapeDtypeStruct``'s) ``shape``, () for a Python number."""
    return tuple(x.shape) if hasattr(x, "shape") else tuple(jnp.shape(x))


def check_same_shapes(fn: str, updates: Any, reference: Any, what: str = "params") -> None:
    """Raise unless ``updates`` and ``reference`` have the same tree and the same leaf shapes.

    A tree that differs raises ``TypeError`` (as :func:`check_same_structure`); a
    leaf whose shape differs raises ``ValueError`` naming the leaf and both shapes
    (a ``(3, 1)`` gradient for a ``(3,)`` parameter would otherwise broadcast).
    Shapes are static, so under ``jax.jit`` this runs once, when the step is traced,
    and costs nothing at run time.
    """
    check_same_structure(fn, updates, reference, what)
    refs = jax.tree.leaves(reference)
    for (path, u), r in zip(jax.tree_util.tree_leaves_with_path(updates), refs):
        a, b = leaf_shape(u), leaf_shape(r)
        if a != b:
            raise ValueError(
                f"{fn}: updates leaf {jax.tree_util.keystr(path) or '<root>'} has shape {a} "
                f"but the {what}' leaf has shape {b}"
            )


def check_params_given(fn: str, updates: Any, params: Any) -> None:
    """Raise ``ValueError`` when ``update`` got no ``params``, else check them as :func:`check_same_shapes`."""
    if params is None:
        raise ValueError(f"{fn}: update needs params (pass params=...)")
    check_same_shapes(fn, updates, params)


def check_real_leaves(fn: str, params: Any, why: str, error: type = TypeError) -> None:
    """Raise ``error`` naming the first complex leaf of ``params``; ``why`` says what needs real ones."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            raise error(f"{fn}: params leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {leaf.dtype}; {why}")


def check_float_leaves(fn: str, tree: Any, what: str = "params") -> None:
    """Raise ``TypeError`` naming the first leaf of ``tree`` that is not floating or complex."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating)):
            raise TypeError(
                f"{fn}: {what} leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}; "
                "optimizers need floating-point (or complex) leaves"
            )
