"""Optimizer state that shards like the parameters.

Every gradflow ``init`` uses only shapes and dtypes, so it runs under
``jax.eval_shape`` on a tree of ``jax.ShapeDtypeStruct``. :func:`state_sharding`
uses that to give each state leaf a sharding: a per-parameter buffer (momentum,
second moment, …) takes the sharding of its parameter, wherever it sits in the
state (inside ``chain``, ``protect``, ``optax.partition``, ``flatten_small``, …),
and everything else (step counters, norms, statistics, histories) is replicated.
:func:`init_sharded` then builds the state under ``jax.jit`` with those
``out_shardings``, so a large model's state is created already sharded and never
sits on one device.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

from gradflow import flat
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


def _devices(sharding: Sharding) -> list:
    return sorted(d.id for d in sharding.device_set)


def _on_one_device_set(shardings: list, committed: list) -> tuple[list, Sharding]:
    """The parameters' shardings, all on one set of devices, and the replicated sharding over it.

    The devices are those of the NamedSharding with the most devices (else of the first committed
    leaf); an uncommitted array (``jnp.ones(3)``, not ``device_put``) goes there as ``jax.jit``
    moves it: its buffers are replicated over those devices.
    """
    named = [s for s in shardings if isinstance(s, NamedSharding)]
    pinned = [s for s, c in zip(shardings, committed) if c] or shardings
    replicated = replicated_like(max(named, key=lambda s: len(s.device_set)) if named else pinned[0])
    shardings = [s if c else replicated for s, c in zip(shardings, committed)]
    for s in shardings:
        if s.device_set != replicated.device_set:
            raise ValueError(
                "state_sharding: the parameters sit on different device sets, "
                f"{_devices(replicated)} and {_devices(s)}; put them on one mesh"
            )
    return shardings, replicated


def _buffer_parts(node: Any, treedef: Any, shapes: list) -> list | None:
    """``node``'s subtrees at the parameters' leaf positions if ``node`` is a per-parameter buffer
    (the parameters' tree of arrays of their shapes; ``optax.MaskedNode`` may stand for any
    parameter, as in masked states), else None."""
    try:
        parts = treedef.flatten_up_to(node)
    except (TypeError, ValueError):
        return None
    fits = all(
        isinstance(x, optax.MaskedNode) or (hasattr(x, "shape") and tuple(x.shape) == s) for x, s in zip(parts, shapes)
    )
    return parts if fits else None


def _assign(state: Any, grown: Any, params: Any, shardings: list, replicated: Sharding) -> Any:
    """Shardings for ``state`` (shapes) of a transform initialised on ``params`` (shapes, with
    ``shardings`` leaf by leaf). ``grown`` is the state for every dimension one longer, or None:
    only a buffer that grows with the parameters is theirs, so a history whose length happens to
    equal a one-leaf parameter's is not mistaken for one."""
    treedef = jax.tree.structure(params)
    shapes = [tuple(x.shape) for x in jax.tree.leaves(params)]
    grown_shapes = [tuple(d + 1 for d in s) for s in shapes]

    def stop(node: Any) -> bool:
        return isinstance(node, flat.FlattenSmallState) or _buffer_parts(node, treedef, shapes) is not None

    def one(node: Any, node_grown: Any = None) -> Any:
        if isinstance(node, flat.FlattenSmallState):
            return _assign_packed(node, params, shardings, replicated)
        parts = _buffer_parts(node, treedef, shapes)
        if parts is None or (grown is not None and _buffer_parts(node_grown, treedef, grown_shapes) is None):
            return replicated
        return jax.tree.unflatten(treedef, [x if isinstance(x, optax.MaskedNode) else s for x, s in zip(parts, shardings)])

    return jax.tree.map(one, state, is_leaf=stop) if grown is None else jax.tree.map(one, state, grown, is_leaf=stop)


def _assign_packed(node: flat.FlattenSmallState, params: Any, shardings: list, replicated: Sharding) -> Any:
    """A :func:`gradflow.flatten_small` state: its inner state is laid out on the packed tree
    ``{"large": (large leaves...), "flat": (one buffer per dtype)}``. The packing is the one (of
    the few that the leaves' sizes allow) whose tree the inner state's buffers have; the large
    leaves' buffers then shard like their parameters and the flat buffers are replicated. (A
    ``flatten_small`` nested in another may fit two packings, which leave different leaves large:
    the smallest ``max_size`` is tried first, and it is the outer one's.)"""
    leaves = jax.tree.leaves(params)
    for max_size in [-1, *sorted({int(np.prod(x.shape, dtype=np.int64)) for x in leaves})]:
        layout = flat._layout(params, max_size)
        packed = flat._pack_abstract(leaves, layout)
        pd, ps = jax.tree.structure(packed), [tuple(x.shape) for x in jax.tree.leaves(packed)]
        fits = lambda n: _buffer_parts(n, pd, ps) is not None  # noqa: E731
        if any(fits(n) for n in jax.tree.leaves(node.inner_state, is_leaf=fits)):
            break
    else:  # no per-parameter buffer inside: nothing to shard
        return jax.tree.map(lambda _: replicated, node)
    for _, idx in layout.groups:
        for i in idx:
            if not shardings[i].is_fully_replicated:
                raise ValueError(
                    f"flatten_small: leaf {i} of shape {layout.shapes[i]} is sharded over several devices and "
                    "would be packed with others; pass a smaller max_size"
                )
    packed_shardings = {"large": tuple(shardings[i] for i in layout.large), "flat": (replicated,) * len(layout.groups)}
    inner = _assign(node.inner_state, None, packed, jax.tree.leaves(packed_shardings), replicated)
    return flat.FlattenSmallState(inner)


def state_sharding(tx: GradientTransformation, params: Any, params_sharding: Any = None) -> Any:
    """The shardings of ``tx.init(params)``'s leaves, from the parameters' shardings.

    A per-parameter buffer, a subtree of the state with the parameters' tree
    structure and leaf shapes, gets the parameters' shardings leaf by leaf,
    wherever it sits in the state. In optax's masked states (``optax.partition``,
    ``multi_transform``, ``masked``) an ``optax.MaskedNode`` stands in for each
    masked-out parameter and keeps no sharding. Inside a
    :func:`gradflow.flatten_small` state, wherever that transform sits, the large
    leaves' buffers shard like their parameters and the packed buffers are
    replicated (except inside an optax mask, where ``flatten_small`` packs a
    masked tree this function does not see: its state is then replicated, whole
    on every device). Every other leaf (counters, scalar statistics, histories) is
    replicated over the parameters' devices: those of the ``NamedSharding`` with
    the most devices. An uncommitted array (made with no ``device_put``) is moved
    there, as ``jax.jit`` moves it, so its buffers are replicated too.

    Args:
      tx: any gradflow (or optax) transform.
      params: the parameters, as arrays or ``jax.ShapeDtypeStruct`` (only shapes
        and dtypes are read; nothing is allocated).
      params_sharding: a tree of shardings matching ``params``; defaults to the
        leaves' own ``.sharding``.

    Returns:
      A tree of shardings with the structure of ``tx.init(params)``, ready for
      ``jax.jit(..., out_shardings=...)``.

    Raises:
      TypeError: ``params_sharding``'s tree differs from ``params``'.
      ValueError: the parameters sit on different sets of devices, or a
        ``flatten_small`` would pack a leaf that is split over devices.

    Example:
      >>> import jax, jax.numpy as jnp, gradflow as gf
      >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      >>> mesh = Mesh(jax.devices()[:1], ("x",))
      >>> params = {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=NamedSharding(mesh, P("x")))}
      >>> adam_state = gf.state_sharding(gf.adam(1e-3), params)[0]
      >>> adam_state.mu["w"].spec, adam_state.count.spec
      (P('x',), P())
    """
    explicit = params_sharding is not None
    if params_sharding is None:
        params_sharding = _shardings_of(params)
    treedef = jax.tree.structure(params)
    if jax.tree.structure(params_sharding) != treedef:
        raise TypeError(
            "state_sharding: params_sharding's tree structure differs from the params'.\n"
            f"  params_sharding: {jax.tree.structure(params_sharding)}\n  params: {treedef}"
        )
    if not jax.tree.leaves(params_sharding):
        return jax.tree.map(lambda _: None, jax.eval_shape(tx.init, params))
    committed = [explicit or getattr(x, "committed", True) for x in jax.tree.leaves(params)]
    shardings, replicated = _on_one_device_set(jax.tree.leaves(params_sharding), committed)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    state = jax.eval_shape(tx.init, abstract)
    grown = jax.tree.map(lambda x: jax.ShapeDtypeStruct(tuple(d + 1 for d in x.shape), x.dtype), params)
    try:
        state_grown = jax.eval_shape(tx.init, grown)
        if jax.tree.structure(state_grown) != jax.tree.structure(state):
            state_grown = None
    except Exception:  # a transform that needs these exact shapes: judge by shape alone
        state_grown = None
    return _assign(state, state_grown, abstract, shardings, replicated)


def init_sharded(tx: GradientTransformation, params: Any, params_sharding: Any = None) -> Any:
    """``tx.init(params)`` created directly with :func:`state_sharding`'s shardings.

    ``init`` reads only shapes and dtypes, so it runs under ``jax.jit`` with no
    inputs and ``out_shardings=state_sharding(...)``: each device allocates only
    its own shard, and ``params`` may be ``jax.ShapeDtypeStruct`` leaves.
    """
    shardings = state_sharding(tx, params, params_sharding)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    return jax.jit(lambda: tx.init(abstract), out_shardings=shardings)()
