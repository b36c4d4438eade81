"""The few pytree helpers the transforms share: norms, a saturating counter, checks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType

INT32_MAX = np.iinfo(np.int32).max


# Leaves up to this many elements have their sums of squares formed together, by one
# variadic reduce per (shape, dtype) group of up to _GROUP leaves. XLA compiles one
# reduce kernel per reduce op, so a tree of 2000 small leaves compiles about 5x faster
# this way (and runs faster); large leaves keep one reduce each, which vectorises better.
# Leaves sharded over a mesh with automatic axes are never grouped: their shardings are
# unknown while tracing, and one reduce over differently sharded operands would make
# XLA gather them.
_SMALL = 1 << 14
_GROUP = 64


def _group_key(x: Any) -> Any:
    """The key small leaves are grouped by, or None when ``x`` must be reduced on its own."""
    try:
        sharding = jax.typeof(x).sharding
        mesh = sharding.mesh
    except (AttributeError, TypeError):
        return (x.shape, jnp.dtype(x.dtype))
    if not mesh.axis_names or all(t == AxisType.Manual for t in mesh.axis_types):
        return (x.shape, jnp.dtype(x.dtype))  # one device, or per-shard values inside shard_map
    if all(t == AxisType.Explicit for t in mesh.axis_types):
        return (x.shape, jnp.dtype(x.dtype), sharding.spec)
    return None


def _abs_sq(x: jnp.ndarray) -> jnp.ndarray:
    """|x|² elementwise, in at least float32 (float64 for float64 leaves), real for complex x."""
    acc = jnp.promote_types(jnp.real(x).dtype, jnp.float32)
    x = x.astype(jnp.promote_types(x.dtype, acc))
    if jnp.iscomplexobj(x):
        return (jnp.real(x) ** 2 + jnp.imag(x) ** 2).astype(acc)
    return x * x


def _square_sum(x: jnp.ndarray) -> jnp.ndarray:
    """Σ|x|² of one leaf, accumulated in at least float32."""
    return jnp.sum(_abs_sq(x))


def _grouped_sums(squares: list) -> list:
    """Σ over all axes of each array in ``squares`` (same shape and dtype), as one variadic reduce."""
    if len(squares) == 1:
        return [jnp.sum(squares[0])]
    zeros = tuple(jnp.zeros((), x.dtype) for x in squares)
    add = lambda a, b: tuple(p + q for p, q in zip(a, b))  # noqa: E731
    return list(jax.lax.reduce(tuple(squares), zeros, add, tuple(range(squares[0].ndim))))


def _across(total: jnp.ndarray, axis_name: Any) -> jnp.ndarray:
    """Sum a per-shard partial sum over the ``shard_map`` mesh axes ``axis_name`` (if any)."""
    return total if axis_name is None else jax.lax.psum(total, axis_name)


def square_sums(leaves: list, axis_name: Any = None) -> list:
    """[Σ|x|² for x in leaves], each accumulated in at least float32.

    Small leaves of one shape and dtype are reduced together (see ``_SMALL``):
    no leaf is copied or concatenated, so shardings are kept. ``axis_name`` as in
    :func:`global_norm` (one ``psum`` of the stacked sums).
    """
    out: list = [None] * len(leaves)
    groups: dict = {}
    for i, x in enumerate(leaves):
        key = _group_key(x) if x.size <= _SMALL else None
        if key is None:
            out[i] = _square_sum(x)
        else:
            groups.setdefault(key, []).append(i)
    for idx in groups.values():
        for start in range(0, len(idx), _GROUP):
            chunk = idx[start : start + _GROUP]
            for i, total in zip(chunk, _grouped_sums([_abs_sq(leaves[i]) for i in chunk])):
                out[i] = total
    if axis_name is not None and out:
        dtype = jnp.result_type(*out)
        summed = jax.lax.psum(jnp.stack([t.astype(dtype) for t in out]), axis_name)
        out = [summed[i].astype(t.dtype) for i, t in enumerate(out)]
    return out


def global_norm(tree: Any, axis_name: Any = None) -> jnp.ndarray:
    """‖g‖₂ over every element of every leaf: √(Σ_leaves Σ_i |g_i|²).

    Accumulates in at least float32 (float64 when the leaves are float64) and
    returns a scalar. An empty tree has norm 0.

    Under ``jax.jit`` with sharded inputs the sums are global already (XLA
    inserts the all-reduce). Inside ``shard_map``, where each call sees only its
    shard, pass the mesh axis (or tuple of axes) the leaves are split over as
    ``axis_name``: the partial sums are then ``psum``-ed across it.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    sums = square_sums(leaves)
    dtype = jnp.result_type(*sums)
    return jnp.sqrt(_across(jnp.sum(jnp.stack([t.astype(dtype) for t in sums])), axis_name))


def leaf_norm(x: jnp.ndarray, axis_name: Any = None) -> jnp.ndarray:
    """‖x‖₂ of one leaf, accumulated in at least float32 (``axis_name`` as in :func:`global_norm`)."""
    return jnp.sqrt(_across(_square_sum(x), axis_name))


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


def zero_count() -> jnp.ndarray:
    """A fresh int32 step counter."""
    return jnp.zeros((), jnp.int32)


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


def check_float_leaves(fn: str, tree: Any, what: str = "params") -> None:
    """Raise ``TypeError`` naming the first leaf of ``tree`` that is not floating or complex."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating)):
            raise TypeError(
                f"{fn}: {what} leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}; "
                "optimizers need floating-point (or complex) leaves"
            )
