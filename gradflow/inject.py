"""Hyperparameters that live in the optimizer state, so they can change without recompiling."""

from __future__ import annotations

import functools
import hashlib
import inspect
import marshal
import pickle
import types
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import hparams
from gradflow import tree as tree_lib
from gradflow.base import GradientTransformation, extra_args_filter

__all__ = ["InjectHyperparamsState", "inject_hyperparams", "current_hyperparams", "set_hyperparams"]


class InjectHyperparamsState(NamedTuple):
    """State of a transform built by :func:`inject_hyperparams`."""
    stats_name = "inject_hyperparams"

    count: jnp.ndarray  # int32 scalar: updates done; the schedules' step (as in scale_by_schedule)
    hyperparams: dict  # name -> 0-d float array (float32, or float64 with float64 params): the values the next update uses
    inner_state: Any  # the wrapped transform's state


_VAR_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)

# One state type per configuration of an injected factory (the factory and its fixed
# arguments), so that set_hyperparams can check a new value by the factory's own rules.
# The subclass keeps the name InjectHyperparamsState and is a NamedTuple like it. Two
# builds with the same configuration share it, so their states have the same tree: a
# factory is known by its code, closure and defaults (_factory_key), not by the object,
# so a lambda or functools.partial written once and built twice is one configuration.
_STATE_TYPES: dict = {}


def _state_type(key: Any, check: Callable[[dict], None], scheduled: frozenset) -> type:
    """The :class:`InjectHyperparamsState` subclass carrying ``check`` and the scheduled names."""
    if key is not None and key in _STATE_TYPES:
        return _STATE_TYPES[key]
    cls = type(
        "InjectHyperparamsState",
        (InjectHyperparamsState,),
        {"__slots__": (), "__module__": __name__, "_check": staticmethod(check), "_scheduled": scheduled,
         "__reduce__": _reducer(key)},
    )
    if key is not None:
        _STATE_TYPES[key] = cls
    return cls


def _reducer(key: Any) -> Callable:
    """The state type's ``__reduce__``, decided once per type: a state pickles as its configuration's key
    and fields, and is unpickled where the same configuration was built as that configuration's type
    again, elsewhere as the plain :class:`InjectHyperparamsState` (which ``update`` takes as well); with a
    key that does not pickle (a lambda or a local object in it), as the fields alone."""
    try:
        pickle.dumps(key)
    except Exception:
        return lambda self: (InjectHyperparamsState, tuple(self))
    return lambda self: (_unpickled_state, (key, tuple(self)))


def _unpickled_state(key: Any, fields: tuple) -> InjectHyperparamsState:
    return _STATE_TYPES.get(key, InjectHyperparamsState)(*fields)


def _factory_key(factory: Any) -> Any:
    """A hashable stand-in for a factory: a function by its code, closure and defaults; a
    ``functools.partial`` by its function and arguments; any other callable by itself."""
    if isinstance(factory, functools.partial):
        return ("partial", _factory_key(factory.func), _frozen(factory.args), _frozen(factory.keywords))
    code = getattr(factory, "__code__", None)
    if not isinstance(code, types.CodeType):
        return factory
    try:
        cells = tuple(_frozen(c.cell_contents) for c in factory.__closure__ or ())
    except ValueError:  # a cell not filled yet: the function itself
        return factory
    return ("function", factory.__module__, factory.__qualname__, hashlib.sha256(marshal.dumps(code)).hexdigest(),
            cells, _frozen(factory.__defaults__), _frozen(factory.__kwdefaults__))


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a fixed argument: its tree structure and its leaves, arrays by their contents."""
    leaves, treedef = jax.tree.flatten(value)
    as_key = lambda x: (x.shape, str(x.dtype), np.asarray(x).tobytes()) if isinstance(x, (np.ndarray, jax.Array)) else x  # noqa: E731
    return treedef, tuple(as_key(x) for x in leaves)


def _config_key(factory: Any, arguments: dict, numeric: set, scheduled: set, hyperparam_dtype: Any) -> Any:
    """A hashable key for the factory, which names are injected, and its other arguments (None if unhashable).

    Two builds with equal fixed arguments (two equal mask dicts, say) get the same key,
    and so states of the same type.
    """
    try:
        fixed = tuple((k, _frozen(v)) for k, v in arguments.items() if k not in numeric and k not in scheduled)
        key = (_factory_key(factory), hyperparam_dtype, tuple(sorted(numeric)), tuple(sorted(scheduled)), fixed)
        hash(key)
    except TypeError:
        return None
    return key


def _is_float_hyperparam(value: Any, default: Any) -> bool:
    """A float (Python, NumPy or JAX floating scalar), or an int where the factory's default is a float."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, float):
        return True
    if isinstance(value, (int, np.integer)):
        return isinstance(default, float) and not isinstance(default, bool)
    if isinstance(value, (np.ndarray, np.floating, jax.Array)):
        return np.ndim(value) == 0 and jnp.issubdtype(jnp.result_type(value), jnp.floating)
    return False


def _own_dtype(value: Any) -> Any:
    """The dtype a value asks for: an array's own floating dtype (unless weakly typed), else None."""
    if isinstance(value, (np.ndarray, np.floating)):
        return value.dtype
    if isinstance(value, jax.Array) and not getattr(value, "weak_type", False):
        return value.dtype
    return None


def inject_hyperparams(
    factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """Wrap ``factory`` so its numeric hyperparameters live in the optimizer state.

    ``inject_hyperparams(sgd)(learning_rate=0.1, momentum=0.9)`` builds a
    transform whose state is :class:`InjectHyperparamsState`; its
    ``hyperparams`` dict holds ``learning_rate`` and ``momentum`` as 0-d arrays,
    and each update builds ``factory(**hyperparams)`` from them. So

    - a new value set in the state (:func:`set_hyperparams`) changes the next
      update, without compiling the step again;
    - a schedule given for a hyperparameter is evaluated at the state's count
      (0 for the first update, counted as :func:`~gradflow.scale_by_schedule`
      does), and the state shows its value for the next update;
    - :func:`current_hyperparams` reads them, under ``jit`` too.

    Which arguments are injected: floats (Python, NumPy or JAX floating
    scalars; a Python int where the factory's default is a float) and
    schedules (callables). Bools, ints, ``None``, strings, trees (masks) and the
    names in ``static_args`` stay fixed Python values, as the factory needs them
    to choose its structure.

    Precision: each value is stored as float32 (float64 when the parameters are
    float64, or the dtype of a NumPy/JAX array you pass, or ``hyperparam_dtype``),
    never in the parameters' narrower dtype: with bfloat16 parameters a decay of
    0.999 stays 0.999 (bfloat16 would round it to 1.0) and the arithmetic with it
    happens in float32. In float32 the updates are bitwise identical to the
    un-injected ``factory(...)``'s for gradflow's transforms (which compute with
    a hyperparameter only in the update's dtype). One exception on XLA's CPU
    backend: where a sum of two products follows (momentum after an
    ``eps_in_sqrt`` RMSProp step or an ε = 0 ``decay_inside_norm`` LARS step,
    SPAM's moments after its reset and clip selects), the compiler may fuse the
    other multiply-add when a factor is a constant, and the two differ in the
    last bit.

    Args:
      factory: a function returning a gradient transformation (gradflow's or optax's).
        It is called once here with the given values, so bad hyperparameters are
        refused now, and again at every update (tracing) with 0-d arrays.
      static_args: names of arguments never to inject (e.g. a callable that is
        not a schedule, such as ``mask``).
      hyperparam_dtype: force one dtype for every injected value.

    Returns:
      A function taking the same arguments as ``factory`` (schedules allowed
      for numeric ones) and returning the wrapped transform.

    Parity: ``optax.inject_hyperparams(factory)(...)`` gives the same updates
    to rounding; unlike optax's, values keep float32 with low-precision params,
    and the stored value of a schedule is the one the next update uses.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.inject_hyperparams(gf.sgd)(learning_rate=0.1)
      >>> params = jnp.array([1.0])
      >>> state = gf.set_hyperparams(tx.init(params), learning_rate=0.01)   # no recompilation
      >>> updates, state = tx.update(jnp.array([2.0]), state, params)
      >>> round(float(updates[0]), 4), round(float(gf.current_hyperparams(state)["learning_rate"]), 4)
      (-0.02, 0.01)
    """
    static_names = _check_arguments(factory, static_args, hyperparam_dtype)
    sig = inspect.signature(factory)
    unknown = static_names - set(sig.parameters)
    if unknown:
        raise ValueError(
            f"inject_hyperparams: static_args must name parameters of {getattr(factory, '__name__', factory)!r}, "
            f"got {sorted(unknown)}"
        )
    name = getattr(factory, "__name__", "factory")

    @functools.wraps(factory)
    def wrapped(*args, **kwargs) -> GradientTransformation:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        numeric, scheduled = _injected_arguments(sig, bound, static_names)
        rebuild = _rebuilder(factory, sig, bound)
        # Build once with the numbers as given and each schedule's value at step 0:
        # the factory refuses bad ones now (and would refuse a function where it takes only numbers).
        zero = tree_lib.zero_count()
        rebuild({k: hparams.call_schedule(f, zero, f"inject_hyperparams({name})", k) for k, f in scheduled.items()})
        key = _config_key(factory, bound.arguments, set(numeric), set(scheduled), hyperparam_dtype)
        state_type = _state_type(key, rebuild, frozenset(scheduled))
        return _injected(rebuild, name, numeric, scheduled, state_type, hyperparam_dtype)

    return wrapped


def _check_arguments(factory: Any, static_args: Any, hyperparam_dtype: Any) -> set:
    """The names in ``static_args``; ``ValueError`` for a factory, names or dtype that cannot be used."""
    if not callable(factory):
        raise ValueError(f"inject_hyperparams: factory must be a function returning a transform, got {factory!r}")
    names = (static_args,) if isinstance(static_args, str) else static_args
    if not isinstance(names, Iterable) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"inject_hyperparams: static_args must be a name or names of arguments, got {static_args!r}")
    try:
        floating = hyperparam_dtype is None or jnp.issubdtype(jnp.dtype(hyperparam_dtype), jnp.floating)
    except TypeError:
        floating = False
    if not floating:  # an integer dtype would store 0.9 as 0
        raise ValueError(f"inject_hyperparams: hyperparam_dtype must be a floating dtype, got {hyperparam_dtype!r}")
    return set(names)


def _injected_arguments(sig: inspect.Signature, bound: inspect.BoundArguments, static_names: set) -> tuple:
    """(numeric, scheduled): the bound arguments injected as numbers and as schedules."""
    numeric: dict[str, Any] = {}
    scheduled: dict[str, Callable] = {}
    for arg, value in bound.arguments.items():
        param = sig.parameters[arg]
        if param.kind in _VAR_KINDS or arg in static_names:
            continue
        if callable(value) and not isinstance(value, jax.Array):
            scheduled[arg] = value
        elif _is_float_hyperparam(value, param.default):
            numeric[arg] = value
    return numeric, scheduled


def _rebuilder(factory: Callable, sig: inspect.Signature, bound: inspect.BoundArguments) -> Callable[[dict], Any]:
    """``rebuild(values)``: the factory called with the bound arguments, those named in ``values`` replaced."""

    def rebuild(values: dict) -> GradientTransformation:
        arguments = dict(bound.arguments)
        arguments.update(values)
        call = inspect.BoundArguments(sig, arguments)
        return factory(*call.args, **call.kwargs)

    return rebuild


def _injected(
    rebuild: Callable, name: str, numeric: dict, scheduled: dict, state_type: type, hyperparam_dtype: Any
) -> GradientTransformation:
    """The transform that keeps ``numeric`` and ``scheduled``'s values in its state and rebuilds the factory per update."""

    def build(values: dict) -> GradientTransformation:
        try:
            return rebuild(values)
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError) as e:
            raise TypeError(
                f"inject_hyperparams({name}): the factory needs one of {sorted(values)} as a Python number "
                "(it branches on it); list that argument in static_args"
            ) from e

    def dtype_for(value: Any, params: Any) -> Any:
        if hyperparam_dtype is not None:
            return hyperparam_dtype
        return _own_dtype(value) or tree_lib.stat_dtype(params)

    def values_at(count: jnp.ndarray, dtypes: dict) -> dict:
        return {
            k: jnp.asarray(hparams.call_schedule(f, count, f"inject_hyperparams({name})", k)).astype(dtypes[k])
            for k, f in scheduled.items()
        }

    def init_fn(params):
        count = tree_lib.zero_count()
        hp = {k: jnp.asarray(v, dtype_for(v, params)) for k, v in numeric.items()}
        hp.update(values_at(count, {k: dtype_for(None, params) for k in scheduled}))
        return state_type(count=count, hyperparams=hp, inner_state=build(hp).init(params))

    def update_fn(updates, state, params=None, **extra_args):
        stored = state.hyperparams
        hp = {k: jnp.asarray(stored[k]) for k in numeric}
        dtypes = {k: jnp.result_type(stored[k]) for k in scheduled}
        hp.update(values_at(state.count, dtypes))
        inner = build(hp)
        keep = extra_args_filter(inner.update)
        new_updates, inner_state = inner.update(updates, state.inner_state, params, **keep(extra_args))
        # A factory that computes with the float32 value as it is (optax's do: b1·μ) would promote
        # bfloat16 updates and moments to float32; cast back, as gradflow's own transforms do.
        # For those it is a no-op.
        updates = tree_lib.cast_like(new_updates, updates)
        inner_state = tree_lib.cast_like(inner_state, state.inner_state)
        count = tree_lib.safe_increment(state.count)
        new_hp = {k: hp[k] for k in numeric}
        new_hp.update(values_at(count, dtypes))
        return updates, state_type(count=count, hyperparams=new_hp, inner_state=inner_state)

    return GradientTransformation(init_fn, update_fn)


def _is_inject_state(x: Any) -> bool:
    # gradflow's state, or optax's InjectHyperparamsState / InjectStatefulHyperparamsState.
    return isinstance(x, tuple) and hasattr(x, "hyperparams") and hasattr(x, "inner_state")


def _inject_states(state: Any) -> list:
    leaves = jax.tree.leaves(state, is_leaf=_is_inject_state)
    return [x for x in leaves if _is_inject_state(x)]


def current_hyperparams(state: Any) -> dict[str, jnp.ndarray]:
    """The injected hyperparameters' current values, as ``{name: 0-d array}``.

    ``state`` is the state of an :func:`inject_hyperparams` transform, or any
    state tree holding one (a ``chain``'s tuple, a flax ``TrainState.opt_state``).
    The values are the ones the next update uses. Works under ``jit``.

    Raises:
      ValueError: no injected state in ``state``, or two that share a name.
    """
    found = _inject_states(state)
    if not found:
        raise ValueError("current_hyperparams: the state holds no inject_hyperparams state")
    out: dict[str, jnp.ndarray] = {}
    for s in found:
        for k, v in s.hyperparams.items():
            if k in out:
                raise ValueError(f"current_hyperparams: two injected states both hold {k!r}; pass the one you mean")
            out[k] = v
    return out


def _is_real_scalar(value: Any) -> bool:
    """A real number: a Python or NumPy int or float, or a 0-d integer or floating array (traced too)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if hasattr(value, "dtype"):
        dtype = jnp.dtype(value.dtype)
        return np.ndim(value) == 0 and (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating))
    if isinstance(value, int):
        return abs(value) <= int(np.finfo(np.float64).max)  # 10**400 has no float value
    return isinstance(value, float)


def _check_integer_slots(state: Any, values: dict) -> None:
    """Refuse a value that an integer slot would round or overflow (optax keeps an int it was given as an int)."""
    for k, v in values.items():
        dtype = jnp.result_type(state.hyperparams[k])
        if jnp.issubdtype(dtype, jnp.inexact) or isinstance(v, jax.core.Tracer):
            continue
        try:
            held = float(np.asarray(v, dtype)) == float(v)
        except OverflowError:  # 2**40 in an int32 slot
            held = False
        if not held:
            raise ValueError(
                f"set_hyperparams: {k} is stored as {dtype}, which would round {v!r}; "
                "build the transform with a float to set it to fractions"
            )


def set_hyperparams(state: Any, **values: Any) -> Any:
    """A copy of ``state`` whose injected hyperparameters take ``values`` from the next update on.

    Each value is cast to the dtype already stored, so the state's structure
    and dtypes do not change and a jitted step does not compile again. A name
    that several injected states hold (the parts of an ``optax.partition``,
    say) is set in each of them.

    Each value is checked here, as the stored dtype holds it, by the rules (and
    with the messages) the factory applies when it is built:
    ``set_hyperparams(state, b2=1.0)`` (or ``b2=1 - 1e-9``, 1.0 in float32) on an
    injected ``adam`` raises ``ValueError`` (``adam: b2 must be in [0, 1), got
    1.0``) instead of giving NaN updates under ``jit``. A value traced inside
    ``jit`` cannot be checked and is stored as it is.

    Raises:
      ValueError: a name that no injected state holds; a value that is not a
        real scalar number (an array would become a per-coordinate
        hyperparameter; a string, ``None`` or a complex number is not a number);
        a hyperparameter given as a schedule, in gradflow's state or optax's
        (the schedule sets it at every update, so a set value would be ignored);
        a fraction for a hyperparameter optax stores as an integer; a value the
        factory refuses.
    """
    found = _inject_states(state)
    names = {k for s in found for k in s.hyperparams}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"set_hyperparams: no injected hyperparameter named {sorted(unknown)}; have {sorted(names)}")
    for k, v in values.items():
        if not _is_real_scalar(v):
            raise ValueError(f"set_hyperparams: {k} must be a scalar number, got {v!r}")
    for s in found:
        mine = {k: v for k, v in values.items() if k in s.hyperparams}
        _check_integer_slots(s, mine)
        # gradflow's states name their schedules in their type, optax's in hyperparams_states
        by_schedule = getattr(type(s), "_scheduled", None) or set(getattr(s, "hyperparams_states", None) or ())
        scheduled = sorted(set(mine) & by_schedule)
        if scheduled:
            raise ValueError(
                f"set_hyperparams: {scheduled} follow a schedule, which sets them at every update; "
                "build the transform with a number to set them"
            )
        check = getattr(type(s), "_check", None)
        if check is not None and mine:
            current = {k: v for k, v in s.hyperparams.items() if not isinstance(v, jax.core.Tracer)}
            current = {k: float(v) if np.ndim(v) == 0 else v for k, v in current.items()}
            # judged as stored: b2 = 1 − 1e-9 is 1.0 in float32
            with np.errstate(over="ignore"):  # 1e39 is inf in float32, and refused as inf
                current.update({k: v if isinstance(v, jax.core.Tracer) else float(np.asarray(v, jnp.result_type(s.hyperparams[k])))
                                for k, v in mine.items()})
            try:
                check(current)
            except ValueError as e:
                raise ValueError(f"set_hyperparams: {e}") from None

    def replace(x):
        if not _is_inject_state(x):
            return x
        hp = dict(x.hyperparams)
        for k, v in values.items():
            if k in hp:
                hp[k] = jnp.asarray(v, jnp.result_type(hp[k]))
        return x._replace(hyperparams=hp)

    return jax.tree.map(replace, state, is_leaf=_is_inject_state)
