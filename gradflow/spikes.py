"""Adam variants built against loss spikes: bounded steps, update clipping, spike-aware clipping.

Each optimizer is a visible chain of one building block (``scale_by_*``, defined here)
and the usual decoupled weight decay and learning-rate pieces, as ``adamw`` is. The
blocks follow :mod:`gradflow.adaptive`'s conventions and reuse its helpers: the
arithmetic of each leaf runs in at least float32, the state keeps the parameters'
dtype (or ``mu_dtype`` / ``nu_dtype``), step-dependent scalars are formed once per
computation dtype, and each numeric hyperparameter is converted to that dtype before
anything is derived from it, so ``adam_atan2`` and ``stable_adamw`` give the same bits
under :func:`~gradflow.inject_hyperparams` (``spam`` the same numbers to rounding).

Notation: g the incoming update, k = t + 1 the number of this update (1 first).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow import hparams
from gradflow import tree as tree_lib
from gradflow.adaptive import (
    adam_scalars,
    check_adam_args,
    compute_dtype,
    map_leaves,
    per_dtype,
    update_moments,
    zero_moments,
)
from gradflow.base import GradientTransformation
from gradflow.scaling import decoupled

__all__ = [
    "ScaleByAdamAtan2State",
    "scale_by_adam_atan2",
    "adam_atan2",
    "ScaleByStableAdamState",
    "scale_by_stable_adam",
    "stable_adamw",
    "ScaleBySpamState",
    "scale_by_spam",
    "spam",
]

# --------------------------------------------------------------------------------------------
# Adam-atan2
# --------------------------------------------------------------------------------------------


class ScaleByAdamAtan2State(NamedTuple):
    """State of :func:`scale_by_adam_atan2`."""
    stats_name = "scale_by_adam_atan2"

    count: jnp.ndarray  # int32 scalar: updates done so far
    mu: Any  # like params, in mu_dtype when given: m, the moving average of g
    nu: Any  # like params, in nu_dtype when given: v, the moving average of g²


def scale_by_adam_atan2(
    b1: float = 0.9,
    b2: float = 0.99,
    *,
    a: float = 1.27,
    b: float = 1.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Adam-atan2's direction: ``a·atan2(m̂, b·√v̂)``, with no ε and bounded by a·π/2 per coordinate.

    m ← β₁·m + (1 − β₁)·g;  v ← β₂·v + (1 − β₂)·g²;
    m̂ = m/(1 − β₁ᵏ), v̂ = v/(1 − β₂ᵏ);   u = a·atan2(m̂, b·√v̂).

    For |m̂| ≪ b·√v̂ this is (a/b)·m̂/√v̂, Adam's direction; where v̂ = 0 (so m̂ = 0)
    it is atan2(0, 0) = 0, so no ε is needed, and a spike can move no coordinate
    by more than a·π/2 (times the learning rate).

    Args:
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1) (the paper's and the reference code's 0.99).
      a: the output scale a > 0; 1.27 (the reference code's default) makes the step's scale
        match Adam's for typical m̂/√v̂.
      b: the scale b > 0 of the denominator (the reference code's 1).
      mu_dtype, nu_dtype: the dtypes of m and v (default: the parameter's), as in :func:`~gradflow.adaptive.scale_by_adam`.

    Returns:
      A :class:`~gradflow.GradientTransformation` with :class:`ScaleByAdamAtan2State`.
      Complex parameters raise ``TypeError`` at ``init`` (atan2 has no complex form).

    Parity:
      ``adam_atan2_pytorch.AdamAtan2(lr, betas=(b1, b2), a=a, b=b)``'s direction.

    References:
      Everett et al., Scaling Exponents Across Parameterizations and Optimizers, 2024,
      arXiv:2407.05872.
    """
    fn = "scale_by_adam_atan2"
    _check_betas_and_positive(fn, b1, b2, a=a, b=b)
    hparams.check_dtypes(fn, mu_dtype=mu_dtype, nu_dtype=nu_dtype)

    def init_fn(params):
        tree_lib.check_real_leaves(fn, params, "atan2 needs real leaves")
        return ScaleByAdamAtan2State(**zero_moments(params, mu_dtype, nu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree_lib.check_same_shapes(fn, updates, state.nu, "second moment")
        count = tree_lib.safe_increment(state.count)
        scalars = adam_scalars(fn, b1, b2, 0.0, 0.0, True, count)

        def one(g, m, v):
            cd = compute_dtype(g.dtype, m, v)
            beta1, beta2, _, _, c1, c2, _ = scalars(cd)
            a_, b_ = hparams.as_scalar(a, cd), hparams.as_scalar(b, cd)
            _, m, v = update_moments(g, m, v, beta1, beta2, cd)
            return jnp.arctan2(m / c1, jnp.sqrt(v / c2) * b_) * a_, m, v

        new_u, (new_m, new_v), _ = map_leaves(one, updates, (state.mu, state.nu))
        return new_u, ScaleByAdamAtan2State(count=count, mu=new_m, nu=new_v)

    return GradientTransformation(init_fn, update_fn)


def _check_betas_and_positive(fn: str, b1: Any, b2: Any, **positive: Any) -> None:
    """β₁, β₂ in [0, 1), then each of ``positive`` a finite number > 0, in the order given."""
    check_adam_args(fn, b1, b2)
    for name, value in positive.items():
        hparams.check_positive(fn, name, value)


def adam_atan2(
    learning_rate: hparams.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    *,
    a: float = 1.27,
    b: float = 1.0,
    weight_decay: hparams.ScalarOrSchedule = 0.0,
    mask: Any = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Adam-atan2: Adam with ``m̂/(√v̂ + ε)`` replaced by ``a·atan2(m̂, b·√v̂)`` — ε-free, bounded steps.

    θ ← θ − α_t·(a·atan2(m̂, b·√v̂) + λ_t·θ), with Adam's bias-corrected m̂ and v̂
    (see :func:`scale_by_adam_atan2`). Each coordinate moves by at most
    α_t·(a·π/2 + λ_t·|θ|) per step, however large the gradient spike.

    Args:
      learning_rate, weight_decay, mask: as in :func:`~gradflow.adamw` (λ decoupled and scaled by α_t).
      b1, b2, a, b, mu_dtype, nu_dtype: as in :func:`scale_by_adam_atan2`.

    Returns:
      ``chain(scale_by_adam_atan2(...), add_decayed_weights(λ, mask), scale_by_learning_rate(α))``;
      ``update`` needs ``params`` (for the decay).

    Parity:
      ``adam_atan2_pytorch.AdamAtan2(lr, betas=(b1, b2), weight_decay=λ, a=a, b=b)``:
      ``adam_atan2(lr, b1, b2, weight_decay=λ, a=a, b=b)``; both decay AdamW's way,
      θ ← θ·(1 − α·λ) (the code's default ``decoupled_wd=False``; with
      ``decoupled_wd=True`` it divides λ by the initial rate α₀, which is
      ``weight_decay=λ/α₀`` here). Tested against a NumPy reference of the rule.

    References:
      Everett et al., Scaling Exponents Across Parameterizations and Optimizers, 2024,
      arXiv:2407.05872.
    """
    fn = "adam_atan2"
    _check_betas_and_positive(fn, b1, b2, a=a, b=b)
    hparams.check_dtypes(fn, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    direction = scale_by_adam_atan2(b1, b2, a=a, b=b, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    return decoupled(fn, direction, learning_rate, weight_decay, mask)


# --------------------------------------------------------------------------------------------
# StableAdamW: AdamW with per-tensor update clipping
# --------------------------------------------------------------------------------------------


class ScaleByStableAdamState(NamedTuple):
    """State of :func:`scale_by_stable_adam`."""
    stats_name = "scale_by_stable_adam"

    count: jnp.ndarray  # int32 scalar: updates done so far
    mu: Any  # like params, in mu_dtype when given: m, the moving average of g
    nu: Any  # like params, in nu_dtype when given: v, the moving average of g²
    max_rms: jnp.ndarray  # float scalar (float32, float64 with float64 params): the largest per-tensor RMS of the last step
    num_leaves_clipped: jnp.ndarray  # int32 scalar: tensors whose step was shrunk at the last update
    num_clipped: jnp.ndarray  # int32 scalar: updates with at least one shrunk tensor so far


def scale_by_stable_adam(
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-6,
    *,
    clip_threshold: float = 1.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Adam's direction, each tensor's step shrunk when g² is large against v̂ (StableAdamW's update clipping).

    Per tensor (leaf) of n elements, with Adam's bias-corrected m̂ and v̂ (v̂ including this g):

      RMS = √( (1/n)·Σᵢ gᵢ² / max(v̂ᵢ, ε²) );   f = 1 / max(1, RMS/d);
      u = f·m̂/(√v̂ + ε).

    RMS ≈ 1 when g is what v̂ predicts; a spike in one tensor (g² ≫ v̂) makes RMS
    large and shrinks that tensor's whole step by f, the per-tensor learning-rate
    factor η_t/η of Wortsman et al. (Adafactor's update clipping moved into AdamW).
    f is one scalar per leaf, so a step that is not clipped is multiplied by exactly 1.

    The reference code keeps the bias-corrected moments directly, m̂ ← β̂₁m̂ + (1 − β̂₁)g
    with β̂ = β(1 − βᵏ⁻¹)/(1 − βᵏ); that is the same m̂ and v̂ as m/(1 − β₁ᵏ) and
    v/(1 − β₂ᵏ) here, up to rounding.

    Args:
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1) (the reference code's 0.99).
      eps: ε > 0, added to √v̂ and squared as the floor of v̂ inside the RMS. The reference
        code's default is 1e-8; gradflow takes 1e-6, the value other StableAdamW implementations use.
      clip_threshold: d > 0, the RMS above which a tensor's step is shrunk (the reference code's
        ``clip_thresh``, default 1).
      mu_dtype, nu_dtype: the dtypes of m and v (default: the parameter's), as in :func:`~gradflow.adaptive.scale_by_adam`.

    Returns:
      A :class:`~gradflow.GradientTransformation` with :class:`ScaleByStableAdamState`
      (``max_rms``, ``num_leaves_clipped`` and ``num_clipped`` appear in :func:`gradflow.stats`).

    Parity:
      the authors' ``StableAdamWUnfused(lr, weight_decay, betas, eps, clip_thresh=d)``'s
      direction, up to rounding (tested against a NumPy reference of its rule).

    References:
      Wortsman, Dettmers, Zettlemoyer, Morcos, Farhadi & Schmidt, Stable and low-precision
      training for large-scale vision-language models, 2023, arXiv:2304.13013.
    """
    fn = "scale_by_stable_adam"
    _check_betas_and_positive(fn, b1, b2, eps=eps, clip_threshold=clip_threshold)
    hparams.check_dtypes(fn, mu_dtype=mu_dtype, nu_dtype=nu_dtype)

    def init_fn(params):
        dt = tree_lib.stat_dtype(params)
        return ScaleByStableAdamState(
            **zero_moments(params, mu_dtype, nu_dtype),
            max_rms=jnp.zeros((), dt),
            num_leaves_clipped=tree_lib.zero_count(),
            num_clipped=tree_lib.zero_count(),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree_lib.check_same_shapes(fn, updates, state.nu, "second moment")
        count = tree_lib.safe_increment(state.count)
        scalars = adam_scalars(fn, b1, b2, eps, 0.0, True, count)
        sd = state.max_rms.dtype

        def one(g, m, v):
            cd = compute_dtype(g.dtype, m, v)
            beta1, beta2, e, _, c1, c2, _ = scalars(cd)
            rd = jnp.finfo(cd).dtype  # the real dtype of the RMS (cd itself for real leaves)
            d, e_r = hparams.as_scalar(clip_threshold, rd), hparams.as_scalar(eps, rd)
            gc, m, v = update_moments(g, m, v, beta1, beta2, cd)
            g2 = tree_lib.abs_sq(gc)
            v_hat = v / c2
            if g.size:
                rms = jnp.sqrt(jnp.mean(g2 / jnp.maximum(jnp.real(v_hat), e_r * e_r)))
            else:  # an empty tensor has nothing to clip
                rms = jnp.zeros((), rd)
            shrink = rms > d
            factor = jnp.where(shrink, d / rms, jnp.ones((), rd))
            # A quotient last, so a decay added after it (u + λ·θ) fuses one way only.
            return (m / c1 * factor) / (jnp.sqrt(v_hat) + e), m, v, rms.astype(sd), shrink

        new_u, (new_m, new_v), (rms, shrink) = map_leaves(one, updates, (state.mu, state.nu), n_extra=2)
        rms_leaves, shrink_leaves = jax.tree.leaves(rms), jax.tree.leaves(shrink)
        max_rms = jnp.max(jnp.stack(rms_leaves)) if rms_leaves else jnp.zeros((), sd)
        n_shrunk = jnp.sum(jnp.stack(shrink_leaves), dtype=jnp.int32) if shrink_leaves else tree_lib.zero_count()
        return new_u, ScaleByStableAdamState(
            count=count,
            mu=new_m,
            nu=new_v,
            max_rms=max_rms,
            num_leaves_clipped=n_shrunk,
            num_clipped=jnp.where(n_shrunk > 0, tree_lib.safe_increment(state.num_clipped), state.num_clipped),
        )

    return GradientTransformation(init_fn, update_fn)


def stable_adamw(
    learning_rate: hparams.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-6,
    *,
    weight_decay: hparams.ScalarOrSchedule = 1e-2,
    mask: Any = None,
    clip_threshold: float = 1.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """StableAdamW: AdamW whose learning rate is cut per tensor when the update would spike.

    Per tensor, with RMS = √mean(g²/max(v̂, ε²)) (see :func:`scale_by_stable_adam`):

      η_t = α_t / max(1, RMS/d);   θ ← θ − η_t·m̂/(√v̂ + ε) − α_t·λ_t·θ.

    The weight decay uses the unclipped α_t, as the authors' reference code does
    (``theta.mul_(1 - lr * weight_decay)`` before the clipped step; the ports in
    ``torch-optimi`` and ``pytorch-optimizer`` decay by the clipped η_t instead); the
    update clipping takes the place of gradient clipping.

    Args:
      learning_rate, weight_decay, mask: as in :func:`~gradflow.adamw` (the reference code's default λ is CLIP's 0.2).
      b1, b2, eps, clip_threshold, mu_dtype, nu_dtype: as in :func:`scale_by_stable_adam`.

    Returns:
      ``chain(scale_by_stable_adam(...), add_decayed_weights(λ, mask), scale_by_learning_rate(α))``.

    Parity:
      the authors' ``StableAdamWUnfused(params, lr, weight_decay, betas=(b1, b2), eps)``:
      ``stable_adamw(lr, b1, b2, eps, weight_decay=weight_decay)``, up to rounding (NumPy reference test).
      With a d that no tensor's RMS reaches it is ``adamw(lr, b1, b2, eps, weight_decay=weight_decay)``.

    References:
      Wortsman, Dettmers, Zettlemoyer, Morcos, Farhadi & Schmidt, Stable and low-precision
      training for large-scale vision-language models, 2023, arXiv:2304.13013.
    """
    fn = "stable_adamw"
    _check_betas_and_positive(fn, b1, b2, eps=eps, clip_threshold=clip_threshold)
    hparams.check_dtypes(fn, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    direction = scale_by_stable_adam(b1, b2, eps, clip_threshold=clip_threshold, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    return decoupled(fn, direction, learning_rate, weight_decay, mask)


# --------------------------------------------------------------------------------------------
# SPAM: spike-aware clipping and periodic momentum reset
# --------------------------------------------------------------------------------------------


def _check_spam_args(
    fn: str, b1, b2, eps, threshold, reset_interval, warmup_steps, clip_start, adaptive_clip, max_decay
) -> None:
    check_adam_args(fn, b1, b2, eps, adaptive_clip=adaptive_clip)
    hparams.check_non_negative(fn, "threshold", threshold)
    for name, value in (("reset_interval", reset_interval), ("warmup_steps", warmup_steps), ("clip_start", clip_start)):
        hparams.check_int(fn, name, value, 0, counted=True)
    hparams.check_decay(fn, "max_decay", max_decay)


class ScaleBySpamState(NamedTuple):
    """State of :func:`scale_by_spam`."""
    stats_name = "scale_by_spam"

    count: jnp.ndarray  # int32 scalar: updates done so far (the bias corrections' k; never reset)
    mu: Any  # like params, in mu_dtype when given: m, the moving average of (clipped) g
    nu: Any  # like params, in nu_dtype when given: v, the moving average of (clipped) g²
    max_ema: Any  # with adaptive_clip: one 0-d float per leaf, the EMA of max|g|; else None
    warmup_scale: jnp.ndarray  # float scalar (float32, float64 with float64 params): s_k of the last update
    num_clipped: jnp.ndarray  # int32 scalar: elements clipped at the last update
    total_clipped: jnp.ndarray  # int32 scalar: elements clipped so far (saturates)


def scale_by_spam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    *,
    threshold: float = 5000.0,
    reset_interval: int = 500,
    warmup_steps: int = 150,
    clip_start: int = 20,
    adaptive_clip: bool = False,
    max_decay: float = 0.999,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """SPAM's direction: Adam with spike-aware clipping, periodic moment resets and a warm-up after each.

    At update k = 1, 2, … (the rule of the authors' code), per element:

    1. reset: when k is a multiple of ΔT, m ← 0 and v ← 0 (k itself, which the bias
       corrections use, is not reset);
    2. spike-aware clipping against the *previous* v: where g² > θ·v, g ← sign(g)·√(θ·v);
       only from k ≥ N on and, with resets, where k mod ΔT ≥ N, and only where v > 0
       (the authors' code also clips where v = 0, which sets g to 0 there and keeps v at 0:
       with N = 0, with N = 1 and no resets, or for a coordinate whose gradients were all 0
       until clipping began, it stops those coordinates until the next reset, or for good
       without resets; where v > 0 the two agree);
    3. m ← β₁·m + (1 − β₁)·g,  v ← β₂·v + (1 − β₂)·g²;
    4. u = s_k·√(1 − β₂ᵏ)/(1 − β₁ᵏ)·m/(√v + ε), where the warm-up factor is
       s_k = 1 − 0.99·(1 + cos(π·c/(W + 1)))/2 for the c-th update since the last reset
       (c = 0 at the reset: s = 0.01) while c < W, and 1 otherwise (and before the first reset).

    ``adaptive_clip=True`` replaces step 2 by Stable-SPAM's adaptive clipping (AdaClip), per
    tensor, from the first update on: M = max|g|, m_max ← γ·m_max + (1 − γ)·M,
    m̂_max = m_max/(1 − γʲ), and where |g| > m̂_max, g ← g·m̂_max/M. j is Stable-SPAM's step
    counter, which its code sets back to 1 after each reset (j = k − R + 1 for the last reset
    R < k, else k), so its bound is loose again just after a reset. A step whose M is not
    finite leaves m_max as it was (an inf M would keep the bound at inf for good). Only the threshold is
    taken from Stable-SPAM: its AdaGN (normalising each tensor's gradient by moving averages
    of its norm), its β₁ schedule over the whole run (``total_T``) and its own Adam (bias
    corrections restarted at each reset, no warm-up after it) are not included; the moments,
    resets and warm-up stay SPAM's.

    Args:
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0, added to √v (not bias-corrected, as in the code).
      threshold: θ ≥ 0 of the spike-aware clipping; 0 turns it off.
      reset_interval: ΔT ≥ 0 (the code's ``DeltaT``), updates between moment resets; 0 never
        resets (an extension: the code needs ΔT > 0).
      warmup_steps: W ≥ 0, the length of the cosine warm-up after each reset.
      clip_start: N ≥ 0 (the code's ``grad_accu_steps``), see step 2.
      adaptive_clip: use Stable-SPAM's adaptive threshold instead of θ·v.
      max_decay: γ in [0, 1), the EMA factor of the per-tensor max |g| (Stable-SPAM's ``gamma3``).
      mu_dtype, nu_dtype: the dtypes of m and v (default: the parameter's), as in :func:`~gradflow.adaptive.scale_by_adam`.

    Returns:
      A :class:`~gradflow.GradientTransformation` with :class:`ScaleBySpamState`
      (``warmup_scale``, ``num_clipped`` and ``total_clipped`` appear in :func:`gradflow.stats`).

    Parity:
      ``SPAM.AdamW(lr, betas, eps, weight_decay=0, warmup_steps=W, threshold=θ, DeltaT=ΔT,
      grad_accu_steps=N)``'s step (without ``density``), up to rounding: tested against a NumPy
      reference of the code's rule over runs with resets, warm-ups and clipped spikes.

    References:
      Huang et al., SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training,
      ICLR 2025, arXiv:2501.06842.
      Huang et al., Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam, 2025,
      arXiv:2502.17055.
    """
    fn = "scale_by_spam"
    _check_spam_args(fn, b1, b2, eps, threshold, reset_interval, warmup_steps, clip_start, adaptive_clip, max_decay)
    hparams.check_dtypes(fn, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    clip_by_v = not adaptive_clip and hparams.static_number(threshold) != 0  # a Python 0 drops it

    def init_fn(params):
        dt = tree_lib.stat_dtype(params)
        return ScaleBySpamState(
            **zero_moments(params, mu_dtype, nu_dtype),
            max_ema=jax.tree.map(lambda p: jnp.zeros((), dt), params) if adaptive_clip else None,
            warmup_scale=jnp.ones((), dt),
            num_clipped=tree_lib.zero_count(),
            total_clipped=tree_lib.zero_count(),
        )

    def clip(gc, v, big_ema, clip_on, adaptive, rd):
        """Step 2: g clipped (by Stable-SPAM's bound, or against θ·v), the clip mask and the new max EMA."""
        if adaptive_clip:
            gamma, corr = adaptive(rd)
            big = jnp.max(jnp.abs(gc), initial=0.0).astype(rd)
            # a non-finite max|g| leaves the EMA as it was: once inf, it would never clip again
            big_ema = jnp.where(jnp.isfinite(big), big_ema.astype(rd) * gamma + big * (1 - gamma), big_ema.astype(rd))
            bound = big_ema / corr
            mask = jnp.abs(gc) > bound
            return jnp.where(mask, gc * (bound / jnp.where(big > 0, big, 1)), gc), mask, big_ema
        if clip_by_v:
            theta = hparams.as_scalar(threshold, rd)
            limit = jnp.real(v) * theta
            # θ·v = 0 clips nothing: an injected θ = 0, or a v = 0 that has seen no gradient to measure a spike by.
            mask = clip_on & (limit > 0) & (tree_lib.abs_sq(gc) > limit)
            return jnp.where(mask, jnp.sign(gc) * jnp.sqrt(limit), gc), mask, big_ema
        return gc, None, big_ema

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree_lib.check_same_shapes(fn, updates, state.nu, "second moment")
        count = tree_lib.safe_increment(state.count)
        sd = state.warmup_scale.dtype
        reset, scale, clip_on, j = _spam_phase(count, reset_interval, warmup_steps, clip_start, sd)
        scalars = adam_scalars(fn, b1, b2, eps, 0.0, True, count)
        adaptive = _per_dtype_bias(max_decay, j) if adaptive_clip else None

        def one(g, m, v, big_ema=None):
            cd = compute_dtype(g.dtype, m, v)
            beta1, beta2, e, _, c1, c2, _ = scalars(cd)
            zero = jnp.zeros((), cd)
            m = jnp.where(reset, zero, m.astype(cd))
            v = jnp.where(reset, zero, v.astype(cd))
            gc, mask, big_ema = clip(g.astype(cd), v, big_ema, clip_on, adaptive, jnp.finfo(cd).dtype)
            _, m, v = update_moments(gc, m, v, beta1, beta2, cd)
            u = m / (jnp.sqrt(v) + e) * ((jnp.sqrt(c2) / c1) * scale.astype(cd))
            n = tree_lib.zero_count() if mask is None else jnp.sum(mask, dtype=jnp.int32)
            return (u, m, v, big_ema, n) if adaptive_clip else (u, m, v, n)

        states = (state.mu, state.nu, state.max_ema) if adaptive_clip else (state.mu, state.nu)
        new_u, (new_m, new_v, *new_max), (n,) = map_leaves(one, updates, states, n_extra=1)
        counts = jax.tree.leaves(n)
        n_clipped = jnp.sum(jnp.stack(counts), dtype=jnp.int32) if counts else tree_lib.zero_count()
        full = state.total_clipped > tree_lib.INT32_MAX - n_clipped
        total = jnp.where(full, tree_lib.INT32_MAX, state.total_clipped + n_clipped).astype(jnp.int32)
        return new_u, ScaleBySpamState(
            count=count,
            mu=new_m,
            nu=new_v,
            max_ema=new_max[0] if adaptive_clip else None,
            warmup_scale=scale,
            num_clipped=n_clipped,
            total_clipped=total,
        )

    return GradientTransformation(init_fn, update_fn)


def _spam_phase(count, reset_interval, warmup_steps, clip_start, sd) -> tuple:
    """Update k's place in SPAM's reset cycle: (reset: zero the moments now, scale: the warm-up
    factor s_k in ``sd``, clip_on: spike-aware clipping applies, j: Stable-SPAM's step counter)."""
    dT = jnp.asarray(reset_interval, jnp.int32)
    has_reset = dT > 0
    period = jnp.maximum(dT, 1)
    reset = has_reset & (count % period == 0)
    last = (count // period) * period  # the last multiple of ΔT up to k
    c = count - last
    w = jnp.asarray(warmup_steps, jnp.int32)
    # The code's warm-up counter starts past W, so a reset at k = 1 (ΔT = 1) has no warm-up.
    warming = has_reset & (last >= period) & (last > 1) & (c < w)
    cosine = (1 + jnp.cos(jnp.pi * c.astype(sd) / (w + 1).astype(sd))) / 2
    scale = jnp.where(warming, 1 - jnp.asarray(0.99, sd) * cosine, jnp.ones((), sd))
    clip_on = (count >= clip_start) & (~has_reset | (count % period >= clip_start))
    prev = ((count - 1) // period) * period  # Stable-SPAM's counter restarts after each reset
    j = jnp.where(has_reset & (prev >= period), count - prev + 1, count)
    return reset, scale, clip_on, j


def _per_dtype_bias(decay: Any, j: jnp.ndarray) -> Any:
    """Per real dtype: (γ, 1 − γʲ), both formed in that dtype.

    1 − γʲ is formed as written (not as :func:`adaptive._bias_correction` does), so that at
    j = 1 it is the same number as the EMA's 1 − γ and the bound is exactly max|g|.
    """

    def make(rd: Any) -> tuple:
        gamma = hparams.as_scalar(decay, rd)
        return gamma, 1 - gamma ** j.astype(rd)

    return per_dtype(make)


def spam(
    learning_rate: hparams.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    *,
    weight_decay: hparams.ScalarOrSchedule = 0.0,
    mask: Any = None,
    threshold: float = 5000.0,
    reset_interval: int = 500,
    warmup_steps: int = 150,
    clip_start: int = 20,
    adaptive_clip: bool = False,
    max_decay: float = 0.999,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """SPAM: Adam that clips gradient spikes against v, resets its moments every ΔT steps and warms up after.

    θ ← θ − α_t·(u_k + λ_t·θ), with SPAM's direction u_k (see :func:`scale_by_spam`):
    spike-aware clipping g ← sign(g)·√(θ_c·v) where g² > θ_c·v, moments reset every ΔT
    updates and a cosine warm-up of the step over W updates after each reset.
    ``adaptive_clip=True`` takes the clipping threshold from Stable-SPAM instead (an EMA of
    each tensor's max |g|); the rest of Stable-SPAM is not included.

    Args:
      learning_rate, weight_decay, mask: as in :func:`~gradflow.adamw` (the decay is not warmed up).
      b1, b2, eps, threshold, reset_interval, warmup_steps, clip_start, adaptive_clip, max_decay, mu_dtype, nu_dtype:
        as in :func:`scale_by_spam` (whose θ is θ_c here; the defaults are the code's).

    Returns:
      ``chain(scale_by_spam(...), add_decayed_weights(λ, mask), scale_by_learning_rate(α))``.

    Parity:
      ``SPAM.AdamW(lr, betas, eps, weight_decay=0, warmup_steps, threshold, DeltaT,
      grad_accu_steps)``: ``spam(lr, b1, b2, eps, threshold=..., reset_interval=DeltaT,
      warmup_steps=..., clip_start=grad_accu_steps)``, up to rounding. With λ > 0 the code
      decays the parameters *after* its step, θ ← (θ − Δ)(1 − α·λ); gradflow decays θ
      before it, as AdamW does (the two differ by α·λ·Δ).
      Under :func:`~gradflow.inject_hyperparams` the updates agree with the plain build's to
      rounding, not always bit for bit: around the reset and clipping selects XLA's CPU backend
      may fuse a multiply-add differently when a factor is a compile-time constant.

    References:
      Huang et al., SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training,
      ICLR 2025, arXiv:2501.06842.
      Huang et al., Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam, 2025,
      arXiv:2502.17055.
    """
    fn = "spam"
    _check_spam_args(fn, b1, b2, eps, threshold, reset_interval, warmup_steps, clip_start, adaptive_clip, max_decay)
    hparams.check_dtypes(fn, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    direction = scale_by_spam(
        b1, b2, eps, threshold=threshold, reset_interval=reset_interval, warmup_steps=warmup_steps,
        clip_start=clip_start, adaptive_clip=adaptive_clip, max_decay=max_decay, mu_dtype=mu_dtype, nu_dtype=nu_dtype,
    )
    return decoupled(fn, direction, learning_rate, weight_decay, mask)
