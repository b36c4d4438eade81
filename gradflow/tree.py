"""The few pytree helpers the transforms share: norms, a saturating counter, checks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

INT32_MAX = np.iinfo(np.int32).max


def _square_sum(x: jnp.ndarray) -> jnp.ndarray:
    """Σ|x|² of one leaf, accumulated in at least float32."""
    acc = jnp.promote_types(jnp.real(x).dtype, jnp.float32)
    x = x.astype(jnp.promote_types(x.dtype, acc))
    if jnp.iscomplexobj(x):
        return jnp.sum(jnp.real(x) ** 2 + jnp.imag(x) ** 2).astype(acc)
    return jnp.sum(x * x)


def _across(total: jnp.ndarray, axis_name: Any) -> jnp.ndarray:
    """Sum a per-shard partial sum over the ``shard_map`` mesh axes ``axis_name`` (if any)."""
    return total if axis_name is None else jax.lax.psum(total, axis_name)


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
    return jnp.sqrt(_across(sum(_square_sum(x) for x in leaves), axis_name))


def leaf_norm(x: jnp.ndarray, axis_name: Any = None) -> jnp.ndarray:
    """‖x‖₂ of one leaf, accumulated in at least float32 (``axis_name`` as in :func:`global_norm`)."""
    return jnp.sqrt(_across(_square_sum(x), axis_name))


def safe_increment(count: jnp.ndarray) -> jnp.ndarray:
    """``count + 1`` for an int32 step counter, saturating at 2³¹−1 instead of wrapping."""
    return jnp.where(count < INT32_MAX, count + 1, INT32_MAX).astype(jnp.int32)


def zero_count() -> jnp.ndarray:
    """A fresh int32 step counter."""
    return jnp.zeros((), jnp.int32)


def zeros_like(tree: Any, dtype: Any = None) -> Any:
    """Zeros shaped like every leaf of ``tree`` (in ``dtype`` when given).

    Works on ``jax.ShapeDtypeStruct`` leaves too, so ``init`` runs under
    ``jax.eval_shape``.
    """
    return jax.tree.map(lambda p: jnp.zeros(p.shape, dtype or p.dtype), tree)


def full_like(tree: Any, value: float, dtype: Any = None) -> Any:
    """``value`` broadcast to the shape of every leaf of ``tree``."""
    return jax.tree.map(lambda p: jnp.full(p.shape, value, dtype or p.dtype), tree)


def check_same_structure(fn: str, updates: Any, reference: Any, what: str = "params") -> None:
    """Raise ``TypeError`` showing both structures unless the two trees match."""
    a, b = jax.tree.structure(updates), jax.tree.structure(reference)
    if a != b:
        raise TypeError(
            f"{fn}: the updates' tree structure differs from the {what}'.\n"
            f"  updates: {a}\n  {what}: {b}"
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
