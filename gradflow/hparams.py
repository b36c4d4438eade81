"""Hyperparameters: checking them when a transform is built, and reading them at a step.

A hyperparameter is a Python number or a schedule, a function ``step -> value``.
Numbers are checked when the transform is built; a bad one raises ``ValueError``
naming the function, the argument and the value, e.g.
``adam: b1 must be in [0, 1), got 1.5``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import tree as tree_lib

Schedule = Callable[[Any], Any]
ScalarOrSchedule = Union[float, int, Schedule]


def _schedule_name(schedule: Any) -> str:
    return getattr(schedule, "__qualname__", None) or getattr(schedule, "__name__", None) or repr(schedule)


def _takes_one_argument(f: Callable) -> bool:
    try:
        inspect.signature(f).bind(0)
    except TypeError:
        return False
    except ValueError:  # no signature to read (some builtins): let the call decide
        pass
    return True


def call_schedule(schedule: Schedule, count: Any, fn: str | None = None, name: str | None = None) -> Any:
    """``schedule(count)``, refusing a value that is not a scalar.

    A schedule maps a step to one number. One that returns an array (a value per
    parameter, a stray batch axis) would broadcast silently against the updates,
    so it raises ``ValueError`` when the update is traced, naming the schedule,
    and the function and argument it was given for when known.
    """
    where = f"{fn}: {name or 'schedule'}" if fn else (name or "schedule")
    if not _takes_one_argument(schedule):  # a function of no argument, or of two
        raise TypeError(f"{where}: the schedule {_schedule_name(schedule)} must take one argument, the step")
    value = schedule(count)
    shape = jnp.shape(value)
    if shape != jnp.shape(count):
        raise ValueError(
            f"{where}: the schedule {_schedule_name(schedule)} returned an array of shape {shape} at a step of "
            f"shape {jnp.shape(count)}; a schedule must return one number per step"
        )
    return value


def value_at(hparam: ScalarOrSchedule, count: Any, fn: str | None = None, name: str | None = None) -> Any:
    """The hyperparameter's value at step ``count``: ``hparam(count)`` or ``hparam``.

    A schedule's value must be a scalar (see :func:`call_schedule`); ``fn`` and
    ``name`` (the function and argument it was given for) go into the error.
    """
    return call_schedule(hparam, count, fn, name) if callable(hparam) else hparam


def _number(fn: str, name: str, value: Any, schedule: bool = False) -> float | None:
    """``value`` as a float, or None for a schedule or a traced value; rejects NaN and non-numbers.

    A function is taken as a schedule only where ``schedule`` says the argument
    is read at each step (learning rates, weight decay, clipping bounds); where
    it is not, it would fail at the first update, so it is refused here. A
    tracer (a hyperparameter that :func:`gradflow.inject_hyperparams` keeps in
    the optimizer state) has no value to check while the update is traced; its
    value was checked when the transform was built.
    """
    if isinstance(value, jax.core.Tracer):
        return None
    if callable(value) and not isinstance(value, jax.Array):
        if schedule:
            return None
        raise ValueError(
            f"{fn}: {name} must be a number (a schedule is taken here only through "
            f"gradflow.inject_hyperparams), got {value!r}"
        )
    if isinstance(value, (bool, np.bool_)) or (hasattr(value, "dtype") and jnp.dtype(value.dtype) == jnp.bool_):
        # sgd(0.1, True) means nesterov, not momentum=1.0: a boolean is not a number here.
        raise ValueError(f"{fn}: {name} must be a number or a schedule, got {value!r}")
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError  # float("0.1") would accept a string
        value = float(value)  # Python and NumPy numbers, 0-d jax arrays
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: {name} must be a number or a schedule, got {value!r}") from None
    except OverflowError:  # an int beyond float64's range (10**400)
        raise ValueError(f"{fn}: {name} must be a number within float64's range, got {value!r}") from None
    if math.isnan(value):
        raise ValueError(f"{fn}: {name} must not be NaN, got {value!r}")
    return value


def static_number(value: Any) -> float | None:
    """``value`` as a float when it is a Python or NumPy number, else None.

    Transforms decide their structure (whether to keep a momentum buffer, say)
    only from numbers known when they are built; a JAX array, concrete or
    traced, or a schedule gives None, so the structure does not depend on a
    value that may change from step to step.
    """
    if callable(value) or isinstance(value, (jax.Array, jax.core.Tracer)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_range(
    fn: str,
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    schedule: bool = False,
) -> None:
    """Raise ``ValueError`` unless ``value`` lies in the interval; schedules (where allowed) pass unchecked."""
    x = _number(fn, name, value, schedule)
    if x is None:
        return
    below = x <= low if low_open else x < low
    above = x >= high if high_open else x > high
    if below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{fn}: {name} must be in {interval}, got {value!r}")


def check_non_negative(fn: str, name: str, value: Any, *, schedule: bool = False) -> None:
    """Raise ``ValueError`` if ``value`` is a number that is negative, infinite or NaN."""
    x = _number(fn, name, value, schedule)
    if x is not None and not (0.0 <= x < math.inf):
        raise ValueError(f"{fn}: {name} must be a finite number >= 0, got {value!r}")


def check_positive(fn: str, name: str, value: Any, *, schedule: bool = False) -> None:
    """Raise ``ValueError`` if ``value`` is a number that is not > 0 and finite."""
    x = _number(fn, name, value, schedule)
    if x is not None and not (0.0 < x < math.inf):
        raise ValueError(f"{fn}: {name} must be a finite number > 0, got {value!r}")


def check_finite(fn: str, name: str, value: Any, *, schedule: bool = False) -> None:
    """Raise ``ValueError`` if ``value`` is a number that is infinite or NaN."""
    x = _number(fn, name, value, schedule)
    if x is not None and not math.isfinite(x):
        raise ValueError(f"{fn}: {name} must be finite, got {value!r}")


def check_decay(fn: str, name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is in [0, 1) (EMA factors such as b1, b2)."""
    check_range(fn, name, value, 0.0, 1.0, high_open=True)


def check_int(fn: str, name: str, value: Any, low: int, *, counted: bool = False) -> Any:
    """``value`` as an ``int``; ``ValueError`` unless it is an integer ≥ ``low``.

    Integral floats (``5.0``) count as integers; booleans do not. With ``counted``
    (a number of steps compared with an int32 step counter) it must also be at
    most 2³¹ − 1, where the counters stop. A traced value (a hyperparameter
    injected with :func:`gradflow.inject_hyperparams`) was checked when the
    transform was built and is returned unchanged.
    """
    if isinstance(value, jax.core.Tracer):
        return value
    try:
        ok = not isinstance(value, (bool, np.bool_, str, bytes)) and int(value) == value and int(value) >= low
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{fn}: {name} must be an integer >= {low}, got {value!r}")
    if abs(int(value)) > float(np.finfo(np.float64).max):  # 10**400 steps: the arithmetic on it would overflow
        raise ValueError(f"{fn}: {name} must be a number within float64's range, got {value!r}")
    if counted and int(value) > tree_lib.INT32_MAX:
        raise ValueError(
            f"{fn}: {name} must be at most 2**31 - 1 = {tree_lib.INT32_MAX} (an int32 step counter counts it), "
            f"got {value!r}"
        )
    return int(value)


def check_dtypes(fn: str, **dtypes: Any) -> None:
    """Raise ``ValueError`` naming the first of ``dtypes`` that is neither None nor a floating or complex dtype.

    A state kept in an integer or boolean dtype would silently round every moment
    to 0 (or True) and never train.
    """
    for name, value in dtypes.items():
        if value is None:
            continue
        try:
            ok = jnp.issubdtype(jnp.dtype(value), jnp.inexact)
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"{fn}: {name} must be None or a floating-point (or complex) dtype, got {value!r}")


def check_transform(fn: str, name: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is a gradient transformation (gradflow's or optax's: an init and an update)."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise TypeError(f"{fn}: {name} must be a gradient transformation (with init and update), got {value!r}")


def check_flags(fn: str, **flags: Any) -> None:
    """Raise ``ValueError`` naming the first of ``flags`` that is not a Python or NumPy boolean."""
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{fn}: {name} must be True or False, got {value!r}")


def as_scalar(value: Any, dtype: Any) -> jnp.ndarray:
    """``value`` as a 0-d array of ``dtype`` (so multiplying keeps the update's dtype)."""
    return jnp.asarray(value, dtype=dtype)


def scalar_value(fn: str, value: Any) -> jnp.ndarray:
    """``value=`` (a loss) as a 0-d array; ``TypeError`` naming ``fn`` for any other shape."""
    value = jnp.asarray(value)
    if value.shape != ():
        raise TypeError(f"{fn}: value must be a scalar loss, got shape {value.shape}")
    return value
