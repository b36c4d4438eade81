"""The core type: a gradient transformation is a pure ``(init, update)`` pair.

Every optimizer, clipping rule and schedule-driven scaling in gradflow is a
:class:`GradientTransformation`. They compose with :func:`chain`, compile with
``jax.jit``, and interoperate with optax in both directions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gradflow import hparams
from gradflow import tree as tree_lib

__all__ = ["GradientTransformation", "EmptyState", "chain", "identity", "stateless", "apply_updates"]

Params = Any
Updates = Any
State = Any


# gradflow's transform type *is* optax's: every gradflow transform passes
# ``isinstance(tx, optax.GradientTransformation)``, and ``optax.chain``,
# ``optax.MultiSteps``, ``optax.masked``, ``optax.partition`` and ``nnx.Optimizer``
# hand it the extra keyword arguments (``value=loss``) with no wrapping (flax's
# ``TrainState.apply_gradients`` takes it too, but passes no extra arguments on).
GradientTransformation = optax.GradientTransformationExtraArgs
"""A pure pair ``(init, update)``: optax's ``GradientTransformationExtraArgs``.

  init: ``init(params) -> state``; uses only the shapes and dtypes of ``params``
    (so it runs under ``jax.eval_shape``).
  update: ``update(updates, state, params=None, **extra_args) -> (updates, state)``.
    Each transform reads the extra keyword arguments it knows (for example
    ``value=loss``) and ignores the others.
"""

EmptyState = optax.EmptyState
"""The state of a stateless transform (optax's ``EmptyState``)."""


def extra_args_filter(update: Callable) -> Callable[[dict], dict]:
    """Which extra keyword arguments ``update`` can take (decided once, at build time).

    gradflow's own transforms (and optax's ``GradientTransformationExtraArgs``)
    take ``**extra_args``; a plain optax transform takes none. Named keyword
    parameters beyond ``(updates, state, params)`` are passed by name.
    """
    try:
        sig = inspect.signature(update)
    except (TypeError, ValueError):
        return lambda extra: {}
    params = list(sig.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return lambda extra: extra
    named = {
        p.name
        for p in params[3:]
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return lambda extra: {k: v for k, v in extra.items() if k in named}


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` in order: u ← T_n(… T_2(T_1(g)) …).

    The state is a tuple with one entry per member. Extra keyword arguments
    given to ``update`` (``value=loss``, …) reach every member that can take
    them; an optax transform without extra-args support gets none, so optax
    transforms can be chained freely.

    Args:
      *transforms: gradflow or optax gradient transformations.

    Returns:
      A :class:`GradientTransformation`.
    """
    for i, t in enumerate(transforms):
        hparams.check_transform("chain", f"transforms[{i}]", t)
    inits = tuple(t.init for t in transforms)
    updates_fns = tuple(t.update for t in transforms)
    filters = tuple(extra_args_filter(u) for u in updates_fns)

    def init_fn(params):
        tree_lib.check_float_leaves("chain", params)
        params = tree_lib.as_arrays(params)
        return tuple(init(params) for init in inits)

    def update_fn(updates, state, params=None, **extra_args):
        updates = tree_lib.as_arrays(updates)
        if params is not None:
            params = tree_lib.as_arrays(params)
            tree_lib.check_same_shapes("chain", updates, params)
        if len(state) != len(updates_fns):
            raise TypeError(
                f"chain: state has {len(state)} entries but the chain has {len(updates_fns)} transforms"
            )
        new_state = []
        for fn, keep, s in zip(updates_fns, filters, state):
            updates, s = fn(updates, s, params, **keep(extra_args))
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init_fn, update_fn)


def identity() -> GradientTransformation:
    """u ← g: returns the updates unchanged, with an :class:`EmptyState`."""
    return stateless(lambda updates, params: updates)


def stateless(fn: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """A transform from a function ``fn(updates, params) -> updates`` with no state."""

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        return fn(updates, params), state

    return GradientTransformation(init_fn, update_fn)


def apply_updates(params: Params, updates: Updates) -> Params:
    """θ ← θ + u, leaf by leaf, keeping each parameter's dtype.

    The sum is formed in the promoted dtype and cast back to the parameter's
    dtype, so bfloat16 parameters stay bfloat16.

    Raises:
      TypeError: if the two trees differ in structure.
    """
    tree_lib.check_same_shapes("apply_updates", updates, params)
    return jax.tree.map(
        lambda p, u: jnp.asarray(p + u).astype(jnp.result_type(p)), params, updates
    )
