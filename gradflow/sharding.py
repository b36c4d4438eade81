"""Optimizer state that shards like the parameters.

Every gradflow ``init`` uses only shapes and dtypes, so it runs under
``jax.eval_shape`` on a tree of ``jax.ShapeDtypeStruct``. :func:`state_sharding`
uses that to give each state leaf a sharding: a per-parameter buffer (momentum,
second moment, …) takes the sharding of its parameter, and everything else
(step counters, norms, statistics, histories) is replicated. :func:`init_sharded`
then builds the state under ``jax.jit`` with those ``out_shardings``, so a large
model's state is created already sharded and never sits on one device.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

from gradflow.base import GradientTransformation

__all__ = ["state_sharding", "init_sharded"]


def replicated_like(sharding: Sharding) -> Sharding:
    """A sharding that places a full copy on every device of ``sharding``."""
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec())
    if isinstance(sharding, SingleDeviceSharding):
        return sharding
    raise TypeError(
        f"state_sharding: parameter shardings must be NamedSharding or SingleDeviceSharding, got {type(sharding).__name__}"
    )


def _shardings_of(params: Any) -> Any:
    def one(x):
        s = getattr(x, "sharding", None)
        if s is None:
            raise TypeError(
                "state_sharding: pass params_sharding, or params whose leaves carry a .sharding "
                f"(jax.Array or jax.ShapeDtypeStruct(..., sharding=...)); got a leaf {x!r}"
            )
        return s

    return jax.tree.map(one, params)


def state_sharding(tx: GradientTransformation, params: Any, params_sharding: Any = None) -> Any:
    """The shardings of ``tx.init(params)``'s leaves, from the parameters' shardings.

    A subtree of the state that has the parameters' tree structure and leaf
    shapes (a per-parameter buffer) gets the parameters' shardings leaf by
    leaf; every other leaf (counters, scalar statistics, histories) is
    replicated over the same devices.

    Args:
      tx: any gradflow (or optax) transform.
      params: the parameters, as arrays or ``jax.ShapeDtypeStruct`` (only shapes
        and dtypes are read; nothing is allocated).
      params_sharding: a tree of shardings matching ``params``; defaults to the
        leaves' own ``.sharding``.

    Returns:
      A tree of shardings with the structure of ``tx.init(params)``, ready for
      ``jax.jit(..., out_shardings=...)``.
    """
    if params_sharding is None:
        params_sharding = _shardings_of(params)
    treedef = jax.tree.structure(params)
    if jax.tree.structure(params_sharding) != treedef:
        raise TypeError(
            "state_sharding: params_sharding's tree structure differs from the params'.\n"
            f"  params_sharding: {jax.tree.structure(params_sharding)}\n  params: {treedef}"
        )
    shapes = [tuple(x.shape) for x in jax.tree.leaves(params)]
    param_shardings = jax.tree.leaves(params_sharding)
    if not param_shardings:
        return jax.tree.map(lambda _: None, jax.eval_shape(tx.init, params))
    packed_sharding = getattr(tx.init, "packed_sharding", None)
    if packed_sharding is not None:  # gradflow.flatten_small: the state is built on packed leaves
        return packed_sharding(params_sharding, params)
    replicated = replicated_like(param_shardings[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    state_shapes = jax.eval_shape(tx.init, abstract)
    # A buffer is per-parameter when its shapes follow the parameters': init again with
    # every dimension one longer, and only such buffers change with them. A history
    # whose length happens to equal a one-leaf parameter's is not mistaken for one.
    grown = jax.tree.map(lambda x: jax.ShapeDtypeStruct(tuple(d + 1 for d in x.shape), x.dtype), params)
    grown_shapes = [tuple(d + 1 for d in s) for s in shapes]
    try:
        state_grown = jax.eval_shape(tx.init, grown)
        if jax.tree.structure(state_grown) != jax.tree.structure(state_shapes):
            state_grown = None
    except Exception:  # a transform that needs these exact shapes: judge by shape alone
        state_grown = None

    def shapes_of(node: Any) -> list | None:
        leaves = jax.tree.leaves(node)
        return [tuple(x.shape) for x in leaves] if all(hasattr(x, "shape") for x in leaves) else None

    def params_like(node: Any) -> bool:
        return jax.tree.structure(node) == treedef and shapes_of(node) == shapes

    def assign(node: Any, node_grown: Any = None) -> Any:
        if params_like(node) and (state_grown is None or shapes_of(node_grown) == grown_shapes):
            return jax.tree.unflatten(treedef, param_shardings)
        return replicated

    if state_grown is None:
        return jax.tree.map(assign, state_shapes, is_leaf=params_like)
    return jax.tree.map(assign, state_shapes, state_grown, is_leaf=params_like)


def init_sharded(tx: GradientTransformation, params: Any, params_sharding: Any = None) -> Any:
    """``tx.init(params)`` created directly with :func:`state_sharding`'s shardings.

    ``init`` reads only shapes and dtypes, so it runs under ``jax.jit`` with no
    inputs and ``out_shardings=state_sharding(...)``: each device allocates only
    its own shard, and ``params`` may be ``jax.ShapeDtypeStruct`` leaves.
    """
    shardings = state_sharding(tx, params, params_sharding)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    return jax.jit(lambda: tx.init(abstract), out_shardings=shardings)()
