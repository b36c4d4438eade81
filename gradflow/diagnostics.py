"""Diagnostics you can log from inside ``jit``: :func:`monitor` and :func:`stats`."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow import hparams
from gradflow import tree as tree_lib
from gradflow.base import GradientTransformation, extra_args_filter, identity
from gradflow.inject import InjectHyperparamsState

__all__ = ["MonitorState", "monitor", "stats"]


class MonitorState(NamedTuple):
    """State of :func:`monitor`."""
    stats_name = "monitor"

    inner_state: Any  # the wrapped transform's state
    count: jnp.ndarray  # int32 scalar: updates seen
    grad_norm: jnp.ndarray  # float scalar: ‖g‖ of the gradients that reached the monitor
    update_norm: jnp.ndarray  # float scalar: ‖u‖ of the updates it returned
    param_norm: jnp.ndarray  # float scalar: ‖θ‖ of the params passed to update (NaN when none)
    learning_rate: Any  # float scalar: α of the last step, or None when unknown


def _find_learning_rate(state: Any, before: Any = None) -> Any:
    """The ``learning_rate`` of the first ``inject_hyperparams``-style state in ``state``, or None.

    optax's injected state holds the value its last update used; gradflow's holds
    the value its *next* update uses, so for gradflow's the value is read from
    ``before`` (the state the update started from) when it is given.
    """
    found = []

    def visit(node):
        if found:
            return
        hp = getattr(node, "hyperparams", None)
        if isinstance(hp, dict) and "learning_rate" in hp:
            found.append(node)
            return
        if isinstance(node, (tuple, list)):
            for child in node:
                visit(child)
        elif isinstance(node, dict):
            for child in node.values():
                visit(child)

    visit(state)
    if not found:
        return None
    if before is not None and isinstance(found[0], InjectHyperparamsState):
        return _find_learning_rate(before)
    return found[0].hyperparams["learning_rate"]


def monitor(
    inner: GradientTransformation | None = None,
    learning_rate: hparams.ScalarOrSchedule | None = None,
    *,
    axis_name: Any = None,
) -> GradientTransformation:
    """Record the gradient norm, update norm, parameter norm and learning rate of each step.

    ``monitor(tx)`` wraps a whole optimizer: it sees the raw gradients g going
    in and the final updates u coming out, and records ‖g‖₂, ‖u‖₂ and ‖θ‖₂ (of
    the ``params`` given to ``update``, before the step). Updates and the inner
    state pass through untouched. ``monitor()`` with no ``inner`` is an identity
    to put at the end of a chain; there it sees only the final updates (so
    ``grad_norm`` equals ``update_norm``).

    The learning rate recorded is α_t = ``learning_rate`` at the monitor's step
    count t (0 first, the convention of :func:`gradflow.scale_by_schedule`) when
    ``learning_rate`` is given (pass the same number or schedule the optimizer
    uses); otherwise the ``learning_rate`` the step used, read from an
    ``inject_hyperparams`` state (gradflow's or optax's) inside ``inner``; otherwise nothing (the field is None). ‖u‖/(α‖g‖) is
    then the effective step multiplier of the optimizer.

    Args:
      inner: the optimizer to watch (optional).
      learning_rate: the optimizer's learning rate or schedule (optional).
      axis_name: inside ``jax.shard_map``, the mesh axis (or tuple of axes) that every
        leaf is split over; the norms' partial sums are ``psum``-ed across it. Leave
        ``None`` under ``jax.jit``, where norms over sharded arrays are global already.

    Returns:
      A :class:`GradientTransformation` whose state is a :class:`MonitorState`;
      ``gradflow.stats(state)`` gives ``monitor/grad_norm`` etc.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.monitor(gf.sgd(0.1), learning_rate=0.1)
      >>> params = jnp.zeros(2)
      >>> updates, state = tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)
      >>> logs = gf.stats(state)
      >>> round(float(logs["monitor/grad_norm"]), 4), round(float(logs["monitor/update_norm"]), 4)
      (5.0, 0.5)
    """
    if learning_rate is not None:
        hparams.check_non_negative("monitor", "learning_rate", learning_rate, schedule=True)
    inner = identity() if inner is None else inner
    hparams.check_transform("monitor", "inner", inner)
    keep = extra_args_filter(inner.update)

    def lr_at(count, inner_state, dt, before=None):
        if learning_rate is not None:
            return jnp.asarray(hparams.value_at(learning_rate, count), dt)
        found = _find_learning_rate(inner_state, before)
        return None if found is None else jnp.asarray(found).astype(dt)

    def init_fn(params):
        dt = tree_lib.stat_dtype(params)
        inner_state = inner.init(params)
        lr = lr_at(tree_lib.zero_count(), inner_state, dt)
        return MonitorState(
            inner_state, tree_lib.zero_count(), jnp.zeros((), dt), jnp.zeros((), dt), jnp.zeros((), dt), lr
        )

    def update_fn(updates, state, params=None, **extra_args):
        updates = tree_lib.as_arrays(updates)
        params = None if params is None else tree_lib.as_arrays(params)
        dt = state.grad_norm.dtype
        grad_norm = tree_lib.global_norm(updates, axis_name).astype(dt)
        new_updates, inner_state = inner.update(updates, state.inner_state, params, **keep(extra_args))
        param_norm = (
            jnp.asarray(jnp.nan, dt) if params is None else tree_lib.global_norm(params, axis_name).astype(dt)
        )
        lr = lr_at(state.count, inner_state, dt, before=state.inner_state)
        return new_updates, MonitorState(
            inner_state=inner_state,
            count=tree_lib.safe_increment(state.count),
            grad_norm=grad_norm,
            update_norm=tree_lib.global_norm(new_updates, axis_name).astype(dt),
            param_norm=param_norm,
            learning_rate=lr,
        )

    return GradientTransformation(init_fn, update_fn)


def _snake(name: str) -> str:
    """A foreign (optax) state's class name in snake case without ``State``; gradflow's states name themselves."""
    if name.endswith("State") and name != "State":
        name = name[: -len("State")]
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return name.lower()


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def stats(state: Any) -> dict[str, jnp.ndarray]:
    """Every 0-d numeric leaf of an optimizer state, as a flat ``{name: scalar}`` dict.

    Works on any state — gradflow's or optax's, nested through chains and
    wrappers — and under ``jit`` (it only reads the state's structure). Names are
    ``/``-joined: a NamedTuple contributes its class's ``stats_name`` (gradflow's states;
    others their class name in snake case without ``State``), then its field
    name when the field holds an array or a dict (``clip_by_global_norm/norm``,
    ``zclip/num_clipped``, ``inject_hyperparams/hyperparams/learning_rate``);
    fields holding other states (``inner_state``) and plain tuples of states
    (chains) add nothing (a field shaped like tuple parameters names itself,
    ``adagc/gamma/0``), dict keys add themselves, and a box around one ``value``
    (``flax.nnx.Optimizer`` wraps each array of its state in one) adds nothing, so the
    names are those of the plain state. When two leaves would get the same name
    (say, two ``trace`` blocks), the positions in the enclosing tuples are added
    to each of them (``0/trace/count``, ``2/trace/count``), so names are unique and
    stable from step to step. Arrays with more than one element (moments,
    histories) are left out; booleans become int32 (0/1).

    Args:
      state: any optimizer state.

    Returns:
      A dict of 0-d arrays, in the order of the state's leaves.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.chain(gf.clip_by_global_norm(1.0), gf.sgd(0.1))
      >>> params = jnp.zeros(2)
      >>> updates, state = tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)
      >>> logs = gf.stats(state)
      >>> sorted(logs)
      ['clip_by_global_norm/clipped', 'clip_by_global_norm/count', 'clip_by_global_norm/norm', 'clip_by_global_norm/num_clipped']
      >>> float(logs["clip_by_global_norm/norm"]), int(logs["clip_by_global_norm/num_clipped"])
      (5.0, 1)
    """
    entries: list[tuple[tuple, tuple, Any]] = []  # (short path, long path, leaf)
    _walk(state, (), (), entries)
    return _named(entries)


def _scalar(x: Any) -> Any:
    """``x`` as a 0-d numeric array (booleans as int32), or None when it is no scalar statistic."""
    if not hasattr(x, "dtype"):
        if not isinstance(x, (bool, int, float)):
            return None
        x = jnp.asarray(x)
    if jnp.ndim(x) != 0:
        return None
    dt = jnp.result_type(x)
    if dt == jnp.bool_:
        return jnp.asarray(x, jnp.int32)
    return x if jnp.issubdtype(dt, jnp.number) else None


def _sorted_keys(node: dict) -> list:
    """``node``'s keys as JAX orders a dict's children: sorted (insertion order where they do not sort)."""
    try:
        return sorted(node)
    except TypeError:
        return list(node)


def _walk(node: Any, path_s: tuple, path_l: tuple, entries: list) -> None:
    """Append (short path, long path, scalar) for every scalar below ``node``.

    The short path has the names only; the long one also the positions in tuples.
    """
    if node is None:
        return
    if _is_namedtuple(node):
        name = getattr(type(node), "stats_name", None) or _snake(type(node).__name__)
        ps, pl = path_s + (name,), path_l + (name,)
        for field in node._fields:
            child = getattr(node, field)
            if _is_namedtuple(child) or child is None or (isinstance(child, (tuple, list)) and _holds_states(child)):
                _walk(child, ps, pl, entries)
            else:
                _walk(child, ps + (field,), pl + (field,), entries)
    elif isinstance(node, (tuple, list)):
        for i, child in enumerate(node):
            _walk(child, path_s, path_l + (str(i),), entries)
    elif isinstance(node, dict):
        # In JAX's order (sorted keys), which jit keeps: insertion order changes when a state passes through jit.
        for k in _sorted_keys(node):
            _walk(node[k], path_s + (str(k),), path_l + (str(k),), entries)
    else:
        children, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
        if len(children) == 1 and children[0][0] == ():
            x = _scalar(node)
            if x is not None:
                entries.append((path_s, path_l, x))
            return
        if len(children) == 1 and children[0][0] == (jax.tree_util.GetAttrKey("value"),):
            _walk(children[0][1], path_s, path_l, entries)  # a box around one value (flax.nnx's Variable): no name
            return
        for kp, child in children:
            k = jax.tree_util.keystr(kp, simple=True, separator="/")
            _walk(child, path_s + (k,), path_l + (k,), entries)


def _holds_states(node: Any) -> bool:
    """Whether a tuple or list holds states (a chain's), not only arrays (a tree shaped like tuple params)."""
    return any(_is_namedtuple(x) for x in jax.tree.leaves(node, is_leaf=_is_namedtuple))


def _named(entries: list) -> dict[str, jnp.ndarray]:
    """``{key: scalar}``: the short path where it is unique, else the long one (``#i`` added if still taken)."""
    short_counts: dict[tuple, int] = {}
    for short, _, _ in entries:
        short_counts[short] = short_counts.get(short, 0) + 1
    out: dict[str, jnp.ndarray] = {}
    for short, long, x in entries:
        key = "/".join(short if short_counts[short] == 1 else long)
        if key in out:  # only if two different paths spell the same string
            i = 1
            while f"{key}#{i}" in out:
                i += 1
            key = f"{key}#{i}"
        out[key] = x
    return out
