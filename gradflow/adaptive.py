"""Adaptive building blocks: per-coordinate step sizes from gradient statistics, and trust ratios.

Each block rescales the incoming updates and returns them in the gradient's
dtype. The arithmetic of each leaf runs in at least float32 (so bfloat16
moments are accumulated in float32 and stored back in bfloat16); the state
keeps the parameters' dtype (or ``mu_dtype``) and never changes dtype or
structure across steps. Step-dependent scalars (bias corrections, trust ratios)
are computed once per step, or once per leaf, and multiplied in, so XLA fuses
each block into one pass over every leaf.

Every block works under :func:`~gradflow.inject_hyperparams`, bitwise: Python
numbers (booleans, and numbers such as a weight decay of 0) decide the
structure, array values never cause Python branching, and each numeric
hyperparameter is converted to the leaf's computation dtype before anything
is derived from it (1 − β, bias corrections, ε), so a Python float and the
same value held as a float32 array do the same float32 arithmetic. A
hyperparameter is written as the right operand of a product (``v * β``): XLA
moves constants to the right, so both builds then give the compiler the same
expression, and the same fused multiply-adds.

Notation (docs/equations.md): g the incoming update, t the number of updates done
before this one (0 first), so the k-th update has k = t + 1.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import hparams
from gradflow import tree as tree_lib
from gradflow.base import GradientTransformation

__all__ = [
    "ScaleByRssState",
    "scale_by_rss",
    "ScaleByRmsState",
    "scale_by_rms",
    "ScaleByAdamState",
    "scale_by_adam",
    "ScaleByAmsgradState",
    "scale_by_amsgrad",
    "ScaleByTrustRatioState",
    "scale_by_trust_ratio",
]


def compute_dtype(dtype: Any, *state: Any) -> Any:
    """The dtype a leaf's arithmetic runs in: the gradient's, promoted to at least float32
    and to any wider floating ``state`` leaf's (float64 moments with float32 gradients
    are formed in float64, not stored float32-exact)."""
    cd = jnp.promote_types(dtype, jnp.float32)
    for x in state:
        if x is not None and jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits > jnp.finfo(cd).bits:
            cd = jnp.promote_types(cd, x.dtype)
    return cd


def _bias_correction(decay: Any, k: jnp.ndarray) -> jnp.ndarray:
    """1 − βᵏ for β in [0, 1) and a float step k ≥ 1, in k's dtype.

    β (a number or a 0-d array) is converted to k's dtype first. The result is
    formed as −expm1(k·log1p(−(1 − β))): 1 − β is exact for β ≥ ½, so
    1 − 0.999¹ keeps every digit instead of losing four to cancellation; β = 0
    gives 1. β passes an optimization barrier so that log1p runs in the
    compiled step whether β is a Python constant or an injected array (XLA
    would otherwise fold it at compile time, possibly rounding differently).
    """
    b = jax.lax.optimization_barrier(hparams.as_scalar(decay, k.dtype))
    # At β = 0 the value is 1 but log1p(−1) = −∞ makes the derivative 0·∞ = NaN; there
    # 1 − βᵏ is taken as a power (derivative −k·βᵏ⁻¹, finite), so jax.grad wrt β is finite.
    pos = b > 0
    safe = jnp.where(pos, b, jnp.ones_like(b))
    return jnp.where(pos, -jnp.expm1(k * jnp.log1p(-(1 - safe))), 1 - b**k)


def per_dtype(make: Any) -> Any:
    """``make(dtype)`` memoised per dtype: one set of step scalars per computation dtype, not per leaf."""
    cache: dict = {}

    def get(dtype: Any) -> Any:
        key = jnp.dtype(dtype)
        if key not in cache:
            cache[key] = make(key)
        return cache[key]

    return get


def adam_scalars(
    fn: str, b1: Any, b2: Any, eps: Any, eps_root: Any, bias_correction: bool, count: jnp.ndarray
) -> Any:
    """Per computation dtype: (β₁, β₂, ε, ε_root, 1 − β₁ᵏ, 1 − β₂ᵏ, 1 − β₁ᵏ⁺¹) at step k = ``count``.

    A β that rounds to 1 in that dtype raises ``ValueError`` (named for ``fn``) when
    the update is traced: it passed the build-time check [0, 1) as a Python float.

    Each is formed in that dtype from the hyperparameter converted first, so a
    plain and an injected build do the same arithmetic; the corrections are None
    without bias correction.
    """

    def make(cd: Any) -> tuple:
        for name, beta in (("b1", b1), ("b2", b2)):
            x = hparams.static_number(beta)
            if x is not None and x > 0 and np.asarray(x, cd) == 1:  # 1 − 1e-9 in float32
                raise ValueError(f"{fn}: {name} must be < 1 in the update's dtype {jnp.dtype(cd).name}, got {beta!r}, "
                                 "which rounds to 1 there")
        args = tuple(hparams.as_scalar(x, cd) for x in (b1, b2, eps, eps_root))
        if not bias_correction:
            return args + (None, None, None)
        k = count.astype(cd)
        return args + (_bias_correction(b1, k), _bias_correction(b2, k), _bias_correction(b1, k + 1))

    return per_dtype(make)


def _unzip(tree_of_tuples: Any, like: Any, n: int) -> tuple:
    """Split a tree whose leaves are n-tuples into n trees shaped like ``like``."""
    outer = jax.tree.structure(like)
    if outer.num_leaves == 0:  # nothing to split: n empty trees of the same shape
        return tuple(jax.tree.unflatten(outer, []) for _ in range(n))
    inner = jax.tree.structure((0,) * n)
    return jax.tree.transpose(outer, inner, tree_of_tuples)


def map_leaves(one: Any, updates: Any, states: tuple, n_extra: int = 0) -> tuple:
    """A block's per-leaf rule ``one(g, *s) -> (u, *new_s, *extra)`` over the trees, regrouped by tree.

    Returns ``(updates, new_states, extras)``: the updates in the gradients' dtypes, each new
    state tree cast back to the old one's dtypes, and the ``n_extra`` per-leaf statistics.
    """
    out = _unzip(jax.tree.map(one, updates, *states), updates, 1 + len(states) + n_extra)
    new_states = tuple(tree_lib.cast_like(new, old) for new, old in zip(out[1 : 1 + len(states)], states))
    return tree_lib.cast_like(out[0], updates), new_states, out[1 + len(states) :]


def update_moments(g: jnp.ndarray, m: jnp.ndarray, v: jnp.ndarray, b1: Any, b2: Any, cd: Any) -> tuple:
    """Adam's moment updates in dtype ``cd``: (g, β₁·m + (1 − β₁)·g, β₂·v + (1 − β₂)·|g|²), all in ``cd``."""
    g = g.astype(cd)
    return g, m.astype(cd) * b1 + g * (1 - b1), v.astype(cd) * b2 + tree_lib.abs_sq(g) * (1 - b2)


def zero_moments(params: Any, mu_dtype: Any = None, nu_dtype: Any = None) -> dict:
    """A fresh Adam-like state's ``count``, ``mu`` and ``nu``: a zero counter and zero moments like ``params``."""
    return dict(count=tree_lib.zero_count(), mu=tree_lib.signed_zeros_like(params, mu_dtype), nu=tree_lib.zeros_like(params, nu_dtype))


def check_adam_args(fn: str, b1: Any, b2: Any, eps: Any = 0.0, eps_root: Any = 0.0, **flags: Any) -> None:
    """The checks every Adam-like block and optimizer makes: β's in [0, 1), ε's ≥ 0, flags boolean and consistent."""
    hparams.check_decay(fn, "b1", b1)
    hparams.check_decay(fn, "b2", b2)
    hparams.check_non_negative(fn, "eps", eps)
    hparams.check_non_negative(fn, "eps_root", eps_root)
    hparams.check_flags(fn, **flags)
    if flags.get("nesterov") and hparams.static_number(b1) == 0:
        raise ValueError(f"{fn}: nesterov=True needs b1 > 0, got b1={b1!r}")
    if flags.get("max_of_debiased") and not flags.get("bias_correction", True):
        raise ValueError(f"{fn}: max_of_debiased=True needs bias_correction=True, got bias_correction=False")


# --------------------------------------------------------------------------------------------
# AdaGrad
# --------------------------------------------------------------------------------------------


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`."""
    stats_name = "scale_by_rss"

    sum_of_squares: Any  # like params (shapes and dtypes): G, the running sum of g²


def scale_by_rss(
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    eps_in_sqrt: bool = False,
) -> GradientTransformation:
    """Divide by the root of the sum of all squared gradients so far (AdaGrad).

    G ← G + g²;  u = g / (√G + ε)  (default),  or  u = g / √(G + ε)  (``eps_in_sqrt=True``).
    G starts at ``initial_accumulator_value``. Where G = 0 (so g = 0 too) the
    update is 0 instead of 0/0.

    Args:
      initial_accumulator_value: G₀ ≥ 0.
      eps: ε ≥ 0.
      eps_in_sqrt: put ε inside the root (docs/equations.md, eq. (11); optax) instead of
        outside it (docs/equations.md, eq. (10); PyTorch).

    Returns:
      A :class:`~gradflow.GradientTransformation` with :class:`ScaleByRssState`.

    Parity:
      ``torch.optim.Adagrad``'s accumulator and denominator: ``scale_by_rss(
      initial_accumulator_value, eps)``. ``optax.scale_by_rss(a, e)``:
      ``scale_by_rss(a, e, eps_in_sqrt=True)``.

    References:
      Duchi, Hazan & Singer, Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization, JMLR 2011.
    """
    fn = "scale_by_rss"
    hparams.check_non_negative(fn, "initial_accumulator_value", initial_accumulator_value)
    hparams.check_non_negative(fn, "eps", eps)
    hparams.check_flags(fn, eps_in_sqrt=eps_in_sqrt)

    def init_fn(params):
        return ScaleByRssState(sum_of_squares=tree_lib.full_like(params, initial_accumulator_value))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree_lib.check_same_shapes(fn, updates, state.sum_of_squares, "accumulator")

        def one(g, s):
            cd = compute_dtype(g.dtype, s)
            gc = g.astype(cd)
            e = hparams.as_scalar(eps, cd)
            s = s.astype(cd) + tree_lib.abs_sq(gc)
            denom = jnp.sqrt(s + e) if eps_in_sqrt else jnp.sqrt(s) + e
            # G = 0 only where every g so far was 0: divide by 1 there (the select sits
            # in the denominator, so the step's factor multiplies a plain quotient).
            return gc / jnp.where(s > 0, denom, jnp.ones_like(denom)), s

        new_u, (new_s,), _ = map_leaves(one, updates, (state.sum_of_squares,))
        return new_u, ScaleByRssState(sum_of_squares=new_s)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# RMSProp
# --------------------------------------------------------------------------------------------


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`."""
    stats_name = "scale_by_rms"

    count: jnp.ndarray  # int32 scalar: updates done so far (used by bias_correction)
    nu: Any  # like params: v, the moving average of g²
    mu: Any  # like params when centered=True (the moving average of g), else None


def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    *,
    eps_in_sqrt: bool = False,
    centered: bool = False,
    initial_scale: float = 0.0,
    bias_correction: bool = False,
) -> GradientTransformation:
    """Divide by the root of a moving average of squared gradients (RMSProp).

    v ← β·v + (1 − β)·g²;  u = g / (√v + ε)  (default),  or  g / √(v + ε)  (``eps_in_sqrt=True``).

    Centered (Graves 2013): also m ← β·m + (1 − β)·g and v is replaced by
    v − m² under the root (clamped at 0, so rounding cannot make it negative).
    With ``bias_correction`` v and m are divided by 1 − βᵏ, k = t + 1.
    v starts at ``initial_scale``, m at 0.

    Args:
      decay: β in [0, 1) (PyTorch's ``alpha``).
      eps: ε ≥ 0.
      eps_in_sqrt: ε inside the root (docs/equations.md, eq. (15); optax's default) instead of
        outside (docs/equations.md, eq. (14); PyTorch).
      centered: divide by the root of the variance estimate v − m².
      initial_scale: v₀ ≥ 0.
      bias_correction: debias v (and m) by 1 − βᵏ.

    Returns:
      A :class:`~gradflow.GradientTransformation` with :class:`ScaleByRmsState`.

    Parity:
      ``torch.optim.RMSprop(alpha=β, eps=ε, centered=c)``'s scaling: ``scale_by_rms(β, ε,
      centered=c)``. ``optax.scale_by_rms(β, ε, initial_scale, eps_in_sqrt, bias_correction)``
      and ``optax.scale_by_stddev`` (centered): the same arguments, with ``centered``.

    References:
      Tieleman & Hinton, Lecture 6.5 — RMSProp, COURSERA: Neural Networks for Machine Learning, 2012.
      Graves, Generating Sequences With Recurrent Neural Networks, 2013, arXiv:1308.0850.
    """
    fn = "scale_by_rms"
    hparams.check_decay(fn, "decay", decay)
    hparams.check_non_negative(fn, "eps", eps)
    hparams.check_non_negative(fn, "initial_scale", initial_scale)
    hparams.check_flags(fn, eps_in_sqrt=eps_in_sqrt, centered=centered, bias_correction=bias_correction)

    def init_fn(params):
        return ScaleByRmsState(
            count=tree_lib.zero_count(),
            nu=tree_lib.full_like(params, initial_scale),
            mu=tree_lib.zeros_like(params) if centered else None,
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree_lib.check_same_shapes(fn, updates, state.nu, "second moment")
        count = tree_lib.safe_increment(state.count)
        # Per computation dtype: β, 1 − β and (with bias correction) 1 − βᵏ, all formed in that dtype.
        scalars = per_dtype(
            lambda cd: (
                hparams.as_scalar(decay, cd),
                hparams.as_scalar(eps, cd),
                _bias_correction(decay, count.astype(cd)) if bias_correction else None,
            )
        )

        def one(g, v, m=None):
            cd = compute_dtype(g.dtype, v, m)
            b, e, c = scalars(cd)
            gc = g.astype(cd)
            v = v.astype(cd) * b + tree_lib.abs_sq(gc) * (1 - b)
            v_hat = v / c if bias_correction else v
            if centered:
                m = m.astype(cd) * b + gc * (1 - b)
                m_hat = m / c if bias_correction else m
                v_hat = jnp.maximum(jnp.real(v_hat - tree_lib.abs_sq(m_hat)), 0.0)
            denom = jnp.sqrt(v_hat + e) if eps_in_sqrt else jnp.sqrt(v_hat) + e
            return (gc / denom, v, m) if centered else (gc / denom, v)

        new_u, (new_v, *new_m), _ = map_leaves(one, updates, (state.nu, state.mu) if centered else (state.nu,))
        return new_u, ScaleByRmsState(count=count, nu=new_v, mu=new_m[0] if centered else None)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Adam
# --------------------------------------------------------------------------------------------


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`."""
    stats_name = "scale_by_adam"

    count: jnp.ndarray  # int32 scalar: updates done so far
    mu: Any  # like params, in mu_dtype when given: m, the moving average of g
    nu: Any  # like params: v, the moving average of g²


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    eps_root: float = 0.0,
    bias_correction: bool = True,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Adam's direction: a moving average of g over the root of a moving average of g².

    m ← β₁·m + (1 − β₁)·g;  v ← β₂·v + (1 − β₂)·g²;
    m̂ = m/(1 − β₁ᵏ), v̂ = v/(1 − β₂ᵏ) with k = t + 1 (m̂ = m, v̂ = v without bias correction);
    u = m̂ / (√(v̂ + ε_root) + ε).

    With ``nesterov`` (NAdam as optax writes it) m̂ is replaced by
    β₁·m/(1 − β₁ᵏ⁺¹) + (1 − β₁)·g/(1 − β₁ᵏ).

    Args:
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0, outside the root.
      eps_root: ε_root ≥ 0, inside the root.
      bias_correction: divide the moments by 1 − βᵏ (Kingma & Ba); False gives
        the Adam of docs/equations.md, eq. (16).
      nesterov: Dozat's Nesterov-accelerated Adam (NAdam as optax writes it); needs β₁ > 0.
      mu_dtype: dtype of m (default: the parameter's dtype; for a complex parameter
        a real dtype means the complex one of its precision).
      nu_dtype: dtype of v (default: the parameter's dtype). With float16
        parameters, v = (1 − β₂)·g² underflows to 0 for small gradients and the
        update m/(√0 + ε) overflows float16: pass ``nu_dtype=jnp.float32``.

    Returns:
      A :class:`~gradflow.GradientTransformation` with :class:`ScaleByAdamState`.

    Parity:
      ``optax.scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=...)``: the same arguments.

    References:
      Kingma & Ba, Adam: A Method for Stochastic Optimization, 2014, arXiv:1412.6980.
      Dozat, Incorporating Nesterov Momentum into Adam, ICLR workshop 2016.
    """
    fn = "scale_by_adam"
    check_adam_args(fn, b1, b2, eps, eps_root, bias_correction=bias_correction, nesterov=nesterov)
    hparams.check_dtypes(fn, mu_dtype=mu_dtype, nu_dtype=nu_dtype)

    def init_fn(params):
        return ScaleByAdamState(**zero_moments(params, mu_dtype, nu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree_lib.check_same_shapes(fn, updates, state.nu, "second moment")
        count = tree_lib.safe_increment(state.count)

        scalars = adam_scalars(fn, b1, b2, eps, eps_root, bias_correction, count)

        def one(g, m, v):
            cd = compute_dtype(g.dtype, m, v)
            beta1, beta2, e, e_root, c1, c2, c1_next = scalars(cd)
            gc, m, v = update_moments(g, m, v, beta1, beta2, cd)
            if nesterov and bias_correction:
                m_hat = m * beta1 / c1_next + gc * (1 - beta1) / c1
            elif nesterov:
                m_hat = m * beta1 + gc * (1 - beta1)
            else:
                m_hat = m / c1 if bias_correction else m
            v_hat = v / c2 if bias_correction else v
            return m_hat / (jnp.sqrt(v_hat + e_root) + e), m, v

        new_u, (new_m, new_v), _ = map_leaves(one, updates, (state.mu, state.nu))
        return new_u, ScaleByAdamState(count=count, mu=new_m, nu=new_v)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# AMSGrad
# --------------------------------------------------------------------------------------------


class ScaleByAmsgradState(NamedTuple):
    """State of :func:`scale_by_amsgrad`."""
    stats_name = "scale_by_amsgrad"

    count: jnp.ndarray  # int32 scalar: updates done so far
    mu: Any  # like params, in mu_dtype when given: m
    nu: Any  # like params, in nu_dtype when given: v, the moving average of g²
    nu_max: Any  # like params: the running maximum of v (of v̂ with max_of_debiased=True)


def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    eps_root: float = 0.0,
    bias_correction: bool = True,
    max_of_debiased: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """AMSGrad's direction: Adam with the running maximum of the second moment.

    m ← β₁·m + (1 − β₁)·g;  v ← β₂·v + (1 − β₂)·g²;  v_max ← max(v_max, v);
    with bias correction (PyTorch's form): u = m̂ / (√(v_max/(1 − β₂ᵏ) + ε_root) + ε),
    m̂ = m/(1 − β₁ᵏ), k = t + 1;
    without (Reddi et al., Algorithm 2): u = m / (√(v_max + ε_root) + ε).

    ``max_of_debiased=True`` (with bias correction) takes the maximum of the
    debiased v̂ = v/(1 − β₂ᵏ) instead: v_max ← max(v_max, v̂); u = m̂/(√(v_max + ε_root) + ε).

    Args:
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0.
      bias_correction: debias m, and v (after the maximum, unless ``max_of_debiased``).
      eps_root: ε_root ≥ 0, inside the root.
      mu_dtype, nu_dtype: as in :func:`scale_by_adam`.
      max_of_debiased: keep the maximum of the debiased second moment (optax's default; needs
        ``bias_correction``).

    Returns:
      A :class:`~gradflow.GradientTransformation` with :class:`ScaleByAmsgradState`.

    Parity:
      ``torch.optim.Adam(amsgrad=True)``: the defaults. ``optax.scale_by_amsgrad()``:
      ``max_of_debiased=True``; ``optax.scale_by_amsgrad(bias_correction_mu=False,
      bias_correction_nu=False)``: ``bias_correction=False``.

    References:
      Reddi, Kale & Kumar, On the Convergence of Adam and Beyond, ICLR 2018, arXiv:1904.09237.
    """
    fn = "scale_by_amsgrad"
    check_adam_args(fn, b1, b2, eps, eps_root, bias_correction=bias_correction, max_of_debiased=max_of_debiased)
    hparams.check_dtypes(fn, mu_dtype=mu_dtype, nu_dtype=nu_dtype)

    def init_fn(params):
        return ScaleByAmsgradState(**zero_moments(params, mu_dtype, nu_dtype), nu_max=tree_lib.zeros_like(params, nu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree_lib.check_same_shapes(fn, updates, state.nu, "second moment")
        count = tree_lib.safe_increment(state.count)

        scalars = adam_scalars(fn, b1, b2, eps, eps_root, bias_correction, count)

        def one(g, m, v, v_max):
            cd = compute_dtype(g.dtype, m, v, v_max)
            beta1, beta2, e, e_root, c1, c2, _ = scalars(cd)
            _, m, v = update_moments(g, m, v, beta1, beta2, cd)
            if max_of_debiased:
                v_max = jnp.maximum(v_max.astype(cd), v / c2)
                v_hat = v_max
            else:
                v_max = jnp.maximum(v_max.astype(cd), v)
                v_hat = v_max / c2 if bias_correction else v_max
            m_hat = m / c1 if bias_correction else m
            return m_hat / (jnp.sqrt(v_hat + e_root) + e), m, v, v_max

        new_u, (new_m, new_v, new_vmax), _ = map_leaves(one, updates, (state.mu, state.nu, state.nu_max))
        return new_u, ScaleByAmsgradState(count=count, mu=new_m, nu=new_v, nu_max=new_vmax)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Trust ratio (LARS, LAMB)
# --------------------------------------------------------------------------------------------


class ScaleByTrustRatioState(NamedTuple):
    """State of :func:`scale_by_trust_ratio` (a counter, read when λ is a schedule)."""
    stats_name = "scale_by_trust_ratio"

    count: jnp.ndarray  # int32 scalar: updates done so far


def scale_by_trust_ratio(
    trust_coefficient: float = 1.0,
    eps: float = 0.0,
    *,
    weight_decay: hparams.ScalarOrSchedule = 0.0,
    axis_name: Any = None,
) -> GradientTransformation:
    """Scale each leaf by its trust ratio, a scalar from the leaf's norms (LARS, LAMB).

    Per leaf (layer), with θ the leaf's parameters and u its incoming update::

      r = η·‖θ‖ / (‖u‖ + λ·‖θ‖ + ε);   u ← r·(u + λ·θ).

    With λ = 0 (the default) this is u ← η‖θ‖/(‖u‖ + ε)·u, the trust ratio of
    optax and of LAMB; with λ > 0 it is You et al.'s LARS local rate, whose
    denominator is ‖g‖ + λ‖θ‖ rather than ‖g + λθ‖.

    Where ‖θ‖ = 0 or ‖u‖ + λ‖θ‖ = 0 (nothing to measure the step against, or
    nothing to scale) the ratio is 1, as in optax and You et al.'s
    implementations, so freshly zero-initialised leaves (biases) still move.
    Norms are accumulated in at least float32; the ratio is one scalar per
    leaf, multiplied in.

    Args:
      trust_coefficient: η ≥ 0.
      eps: ε ≥ 0 in the denominator.
      weight_decay: λ ≥ 0, a number or a schedule of the step. A Python 0 drops
        the λ terms; an injected or scheduled λ keeps them (they vanish at λ = 0).
      axis_name: the mesh axis (or tuple of axes) for the norms ‖θ‖ and ‖u‖.
        Inside shard_map, pass the mesh axis name the leaves are split over, so
        each norm is summed across the shards; under plain ``jit`` leave it None.

    Returns:
      A :class:`~gradflow.GradientTransformation` with :class:`ScaleByTrustRatioState`;
      ``update`` needs ``params``.

    Parity:
      ``optax.scale_by_trust_ratio(trust_coefficient=η, eps=ε)``: ``weight_decay=0``.

    References:
      You, Gitman & Ginsburg, Large Batch Training of Convolutional Networks, 2017, arXiv:1708.03888.
      You et al., Large Batch Optimization for Deep Learning: Training BERT in 76 minutes, 2019,
      arXiv:1904.00962.
    """
    fn = "scale_by_trust_ratio"
    hparams.check_non_negative(fn, "trust_coefficient", trust_coefficient)
    hparams.check_non_negative(fn, "eps", eps)
    hparams.check_non_negative(fn, "weight_decay", weight_decay, schedule=True)
    wd_num = hparams.static_number(weight_decay)
    uses_decay = wd_num is None or wd_num != 0  # numbers decide the structure; arrays never do

    init_fn = tree_lib.count_init(ScaleByTrustRatioState)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        tree_lib.check_params_given(fn, updates, params)
        wd = hparams.value_at(weight_decay, state.count) if uses_decay else 0.0

        u_leaves, treedef = jax.tree.flatten(updates)
        p_leaves = treedef.flatten_up_to(params)
        p_norms = [jnp.sqrt(t) for t in tree_lib.square_sums(p_leaves, axis_name)]
        u_norms = [jnp.sqrt(t) for t in tree_lib.square_sums(u_leaves, axis_name)]

        def one(u, p, p_norm, u_norm):
            nd = p_norm.dtype
            eta, e = hparams.as_scalar(trust_coefficient, nd), hparams.as_scalar(eps, nd)
            wd_s = hparams.as_scalar(wd, nd)
            denom = u_norm + p_norm * wd_s + e if uses_decay else u_norm + e
            safe = (p_norm == 0) | (denom == 0)
            ratio = jnp.where(safe, jnp.ones((), nd), p_norm * eta / jnp.where(safe, 1.0, denom))
            cd = compute_dtype(u.dtype)
            d = u.astype(cd)
            if uses_decay:
                d = d + p.astype(cd) * wd_s.astype(cd)
            return (ratio.astype(cd) * d).astype(u.dtype)

        new = jax.tree.unflatten(treedef, [one(*args) for args in zip(u_leaves, p_leaves, p_norms, u_norms)])
        return new, ScaleByTrustRatioState(count=tree_lib.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)
