"""Adam variants built against loss spikes: bounded steps, update clipping, spike-aware clipping.

Each optimizer is a visible chain of one building block (``scale_by_*``, defined here)
and the usual decoupled weight decay and learning-rate pieces, as ``adamw`` is. The
blocks follow :mod:`gradflow.adaptive`'s conventions and reuse its helpers: the
arithmetic of each leaf runs in at least float32, the state keeps the parameters'
dtype (or ``mu_dtype`` / ``nu_dtype``), step-dependent scalars are formed once per
computation dtype, and each numeric hyperparameter is converted to that dtype before
anything is derived from it, so the optimizers give the same bits under
:func:`~gradflow.inject_hyperparams`.

Notation: g the incoming update, k = t + 1 the number of this update (1 first).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradflow import hparams
from gradflow import tree as tree_lib
from gradflow.adaptive import _abs_sq, _adam_scalars, _compute_dtype, _unzip
from gradflow.base import GradientTransformation, chain
from gradflow.scaling import add_decayed_weights, check_learning_rate, scale_by_learning_rate


def _cast_like(new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)


def _check_adam_like(fn: str, b1: Any, b2: Any) -> None:
    hparams.check_decay(fn, "b1", b1)
    hparams.check_decay(fn, "b2", b2)


# --------------------------------------------------------------------------------------------
# Adam-atan2
# --------------------------------------------------------------------------------------------


class ScaleByAdamAtan2State(NamedTuple):
    """State of :func:`scale_by_adam_atan2`."""

    count: jnp.ndarray  # int32 scalar: updates done so far
    mu: Any  # like params, in mu_dtype when given: m, the moving average of g
    nu: Any  # like params, in nu_dtype when given: v, the moving average of g²


def _check_real_leaves(fn: str, params: Any) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            raise TypeError(
                f"{fn}: params leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {leaf.dtype}; "
                "atan2 needs real leaves"
            )


def scale_by_adam_atan2(
    b1: float = 0.9,
    b2: float = 0.99,
    a: float = 1.27,
    b: float = 1.0,
    *,
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
      b2: β₂ in [0, 1).
      a: the output scale a > 0.
      b: the scale b > 0 of the denominator.
      mu_dtype: dtype of m (default: the parameter's dtype).
      nu_dtype: dtype of v (default: the parameter's dtype).

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
    _check_adam_like(fn, b1, b2)
    hparams.check_positive(fn, "a", a)
    hparams.check_positive(fn, "b", b)

    def init_fn(params):
        _check_real_leaves(fn, params)
        return ScaleByAdamAtan2State(
            count=tree_lib.zero_count(),
            mu=tree_lib.zeros_like(params, mu_dtype),
            nu=tree_lib.zeros_like(params, nu_dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree_lib.check_same_structure(fn, updates, state.nu, "second moment")
        count = tree_lib.safe_increment(state.count)
        scalars = _adam_scalars(b1, b2, 0.0, 0.0, True, count)

        def one(g, m, v):
            cd = _compute_dtype(g.dtype)
            beta1, beta2, _, _, c1, c2, _ = scalars(cd)
            a_, b_ = hparams.as_scalar(a, cd), hparams.as_scalar(b, cd)
            gc = g.astype(cd)
            m = m.astype(cd) * beta1 + gc * (1 - beta1)
            v = v.astype(cd) * beta2 + gc * gc * (1 - beta2)
            u = jnp.arctan2(m / c1, jnp.sqrt(v / c2) * b_) * a_
            return u.astype(g.dtype), m, v

        new_u, new_m, new_v = _unzip(jax.tree.map(one, updates, state.mu, state.nu), updates, 3)
        return new_u, ScaleByAdamAtan2State(count=count, mu=_cast_like(new_m, state.mu), nu=_cast_like(new_v, state.nu))

    return GradientTransformation(init_fn, update_fn)


def adam_atan2(
    learning_rate: hparams.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    a: float = 1.27,
    b: float = 1.0,
    weight_decay: hparams.ScalarOrSchedule = 0.0,
    mask: Any = None,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Adam-atan2: Adam with ``m̂/(√v̂ + ε)`` replaced by ``a·atan2(m̂, b·√v̂)`` — ε-free, bounded steps.

    θ ← θ − α_t·(a·atan2(m̂, b·√v̂) + λ_t·θ), with Adam's bias-corrected m̂ and v̂
    (see :func:`scale_by_adam_atan2`). Each coordinate moves by at most
    α_t·(a·π/2 + λ_t·|θ|) per step, however large the gradient spike.

    Args:
      learning_rate: α ≥ 0, or a schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1) (the paper's and the reference code's 0.99).
      a: a > 0; 1.27 (the reference code's default) makes the step's scale match
        Adam's for typical m̂/√v̂.
      b: b > 0 (the reference code's 1).
      weight_decay: λ ≥ 0, or a schedule; decoupled and scaled by α_t as in AdamW.
      mask: tree of bools like the params (or ``params -> tree``); ``False`` leaves are not decayed.
      mu_dtype: dtype of the first moment.
      nu_dtype: dtype of the second moment.

    Returns:
      ``chain(scale_by_adam_atan2(...), add_decayed_weights(λ, mask), scale_by_learning_rate(α))``;
      ``update`` needs ``params`` (for the decay).

    Parity:
      ``adam_atan2_pytorch.AdamAtan2(lr, betas=(b1, b2), a=a, b=b)`` (weight_decay = 0):
      ``adam_atan2(lr, b1, b2, a, b)``. That code decays by θ ← θ·(1 − (α_t/α₀)·λ), a decay
      not multiplied by the learning rate; gradflow's λ is AdamW's, multiplied by α_t
      (``weight_decay=λ_code/α₀`` gives the code's decay with a constant learning rate α₀).

    References:
      Everett et al., Scaling Exponents Across Parameterizations and Optimizers, 2024,
      arXiv:2407.05872.
    """
    fn = "adam_atan2"
    check_learning_rate(fn, learning_rate)
    _check_adam_like(fn, b1, b2)
    hparams.check_positive(fn, "a", a)
    hparams.check_positive(fn, "b", b)
    hparams.check_non_negative(fn, "weight_decay", weight_decay)
    return chain(
        scale_by_adam_atan2(b1, b2, a, b, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# --------------------------------------------------------------------------------------------
# StableAdamW: AdamW with per-tensor update clipping
# --------------------------------------------------------------------------------------------


class ScaleByStableAdamState(NamedTuple):
    """State of :func:`scale_by_stable_adam`."""

    count: jnp.ndarray  # int32 scalar: updates done so far
    mu: Any  # like params, in mu_dtype when given: m, the moving average of g
    nu: Any  # like params, in nu_dtype when given: v, the moving average of g²
    max_rms: jnp.ndarray  # float scalar (float32, float64 with float64 params): the largest per-tensor RMS of the last step
    num_leaves_clipped: jnp.ndarray  # int32 scalar: tensors whose step was shrunk at the last update
    num_clipped: jnp.ndarray  # int32 scalar: updates with at least one shrunk tensor so far


def _stat_dtype(params: Any) -> Any:
    dtypes = [jnp.finfo(p.dtype).dtype for p in jax.tree.leaves(params) if jnp.issubdtype(p.dtype, jnp.inexact)]
    return jnp.result_type(jnp.float32, *dtypes) if dtypes else jnp.dtype(jnp.float32)


def scale_by_stable_adam(
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-6,
    clip_threshold: float = 1.0,
    *,
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
      b2: β₂ in [0, 1).
      eps: ε > 0, added to √v̂ and squared as the floor of v̂ inside the RMS.
      clip_threshold: d > 0, the RMS above which a tensor's step is shrunk.
      mu_dtype: dtype of m (default: the parameter's dtype).
      nu_dtype: dtype of v (default: the parameter's dtype).

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
    _check_adam_like(fn, b1, b2)
    hparams.check_positive(fn, "eps", eps)
    hparams.check_positive(fn, "clip_threshold", clip_threshold)

    def init_fn(params):
        dt = _stat_dtype(params)
        return ScaleByStableAdamState(
            count=tree_lib.zero_count(),
            mu=tree_lib.zeros_like(params, mu_dtype),
            nu=tree_lib.zeros_like(params, nu_dtype),
            max_rms=jnp.zeros((), dt),
            num_leaves_clipped=tree_lib.zero_count(),
            num_clipped=tree_lib.zero_count(),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree_lib.check_same_structure(fn, updates, state.nu, "second moment")
        count = tree_lib.safe_increment(state.count)
        scalars = _adam_scalars(b1, b2, eps, 0.0, True, count)
        sd = state.max_rms.dtype

        def one(g, m, v):
            cd = _compute_dtype(g.dtype)
            beta1, beta2, e, _, c1, c2, _ = scalars(cd)
            rd = jnp.finfo(cd).dtype  # the real dtype of the RMS (cd itself for real leaves)
            d, e_r = hparams.as_scalar(clip_threshold, rd), hparams.as_scalar(eps, rd)
            gc = g.astype(cd)
            g2 = _abs_sq(gc)
            m = m.astype(cd) * beta1 + gc * (1 - beta1)
            v = v.astype(cd) * beta2 + g2 * (1 - beta2)
            v_hat = v / c2
            if g.size:
                rms = jnp.sqrt(jnp.mean(g2 / jnp.maximum(jnp.real(v_hat), e_r * e_r)))
            else:  # an empty tensor has nothing to clip
                rms = jnp.zeros((), rd)
            shrink = rms > d
            factor = jnp.where(shrink, d / rms, jnp.ones((), rd))
            u = (m / c1) / (jnp.sqrt(v_hat) + e) * factor
            return u.astype(g.dtype), m, v, rms.astype(sd), shrink

        out = jax.tree.map(one, updates, state.mu, state.nu)
        new_u, new_m, new_v, rms, shrink = _unzip(out, updates, 5)
        rms_leaves, shrink_leaves = jax.tree.leaves(rms), jax.tree.leaves(shrink)
        max_rms = jnp.max(jnp.stack(rms_leaves)) if rms_leaves else jnp.zeros((), sd)
        n_shrunk = jnp.sum(jnp.stack(shrink_leaves), dtype=jnp.int32) if shrink_leaves else tree_lib.zero_count()
        return new_u, ScaleByStableAdamState(
            count=count,
            mu=_cast_like(new_m, state.mu),
            nu=_cast_like(new_v, state.nu),
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
    weight_decay: hparams.ScalarOrSchedule = 1e-2,
    mask: Any = None,
    *,
    clip_threshold: float = 1.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """StableAdamW: AdamW whose learning rate is cut per tensor when the update would spike.

    Per tensor, with RMS = √mean(g²/max(v̂, ε²)) (see :func:`scale_by_stable_adam`):

      η_t = α_t / max(1, RMS/d);   θ ← θ − η_t·m̂/(√v̂ + ε) − α_t·λ_t·θ.

    The weight decay uses the unclipped α_t, as the authors' reference code does; the
    update clipping takes the place of gradient clipping.

    Args:
      learning_rate: α ≥ 0, or a schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1) (the reference code's 0.99).
      eps: ε > 0. The reference code's default is 1e-8; gradflow takes 1e-6, the value
        other StableAdamW implementations use.
      weight_decay: λ ≥ 0, or a schedule (the reference code's default is CLIP's 0.2).
      mask: tree of bools like the params (or ``params -> tree``); ``False`` leaves are not decayed.
      clip_threshold: d > 0 (the reference code's ``clip_thresh``, default 1).
      mu_dtype: dtype of the first moment.
      nu_dtype: dtype of the second moment.

    Returns:
      ``chain(scale_by_stable_adam(...), add_decayed_weights(λ, mask), scale_by_learning_rate(α))``.

    Parity:
      the authors' ``StableAdamWUnfused(params, lr, weight_decay, betas=(b1, b2), eps)``:
      ``stable_adamw(lr, b1, b2, eps, weight_decay)``, up to rounding (NumPy reference test).
      With a d that no tensor's RMS reaches it is ``adamw(lr, b1, b2, eps, weight_decay)``.

    References:
      Wortsman, Dettmers, Zettlemoyer, Morcos, Farhadi & Schmidt, Stable and low-precision
      training for large-scale vision-language models, 2023, arXiv:2304.13013.
    """
    fn = "stable_adamw"
    check_learning_rate(fn, learning_rate)
    _check_adam_like(fn, b1, b2)
    hparams.check_positive(fn, "eps", eps)
    hparams.check_positive(fn, "clip_threshold", clip_threshold)
    hparams.check_non_negative(fn, "weight_decay", weight_decay)
    return chain(
        scale_by_stable_adam(b1, b2, eps, clip_threshold, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
