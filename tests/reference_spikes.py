"""NumPy references for the Adam variants built against loss spikes, update-norm clipping and
dynamic loss scaling, written from the papers' formulas and their reference code's rules
(never from gradflow's code). All arithmetic is float64.

Each optimizer reference takes the initial parameters (a dict of arrays) and a list of gradient
dicts and returns the parameters after every step.
"""

from __future__ import annotations

import math

import numpy as np


def _f64(tree: dict) -> dict:
    return {k: np.array(v, np.float64) for k, v in tree.items()}


def _rate(lr, t):
    """α_t: ``lr(t)`` for a schedule (t = updates done before this one), else ``lr``."""
    return float(lr(t)) if callable(lr) else lr


def adam_atan2(params, grads, lr, b1=0.9, b2=0.99, a=1.27, b=1.0, weight_decay=0.0):
    """Everett et al. 2024: m̂, v̂ as in Adam (k = t + 1);  θ ← θ − α_t·(a·atan2(m̂, b·√v̂) + λ·θ).

    ``weight_decay`` may be a dict of per-leaf λ (a mask)."""
    theta = _f64(params)
    m = {k: np.zeros_like(v) for k, v in theta.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    out = []
    for t, g in enumerate(grads):
        k_, a_t = t + 1, _rate(lr, t)
        for k in theta:
            gk = np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk * gk
            m_hat = m[k] / (1 - b1**k_)
            v_hat = v[k] / (1 - b2**k_)
            u = a * np.arctan2(m_hat, b * np.sqrt(v_hat))
            wd = weight_decay[k] if isinstance(weight_decay, dict) else weight_decay
            theta[k] = theta[k] - a_t * (u + wd * theta[k])
        out.append({k: x.copy() for k, x in theta.items()})
    return out


def stable_adamw(params, grads, lr, b1=0.9, b2=0.99, eps=1e-6, weight_decay=0.0, clip_threshold=1.0):
    """Wortsman et al. 2023, Algorithm 2 and its reference code, per tensor:

    m̂, v̂ the bias-corrected moments (v̂ including this step's g);
    RMS = √mean(g² / max(v̂, ε²));  η_t = α / max(1, RMS/d);
    θ ← θ − η_t·m̂/(√v̂ + ε) − α·λ·θ   (the decay uses the unclipped α, as the code does).
    Returns (trajectory, per-step list of {leaf: RMS}).
    """
    theta = _f64(params)
    m = {k: np.zeros_like(v) for k, v in theta.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    out, rms_out = [], []
    for t, g in enumerate(grads):
        k_, a_t = t + 1, _rate(lr, t)
        rms_step = {}
        for k in theta:
            gk = np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk * gk
            m_hat = m[k] / (1 - b1**k_)
            v_hat = v[k] / (1 - b2**k_)
            rms = math.sqrt(float(np.mean(gk * gk / np.maximum(v_hat, eps * eps))))
            rms_step[k] = rms
            eta = a_t / max(1.0, rms / clip_threshold)
            theta[k] = theta[k] - eta * m_hat / (np.sqrt(v_hat) + eps) - a_t * weight_decay * theta[k]
        out.append({k: x.copy() for k, x in theta.items()})
        rms_out.append(rms_step)
    return out, rms_out


def spam_warmup_scale(c, warmup_steps):
    """SPAM's code: after a reset, the step is multiplied by 1 − 0.99·(1 + cos(π·c/(W + 1)))/2 for
    the c-th step since the reset (c = 0 at the reset step), and by 1 once c ≥ W."""
    if c is None or c >= warmup_steps:
        return 1.0
    return 1.0 - 0.99 * (1.0 + math.cos(math.pi * c / (warmup_steps + 1))) / 2.0


def spam(
    params,
    grads,
    lr,
    b1=0.9,
    b2=0.999,
    eps=1e-6,
    weight_decay=0.0,
    threshold=5000.0,
    reset_interval=500,
    warmup_steps=150,
    clip_start=20,
    adaptive=False,
    gamma=0.999,
):
    """SPAM (Huang et al. 2025) as its reference code runs it, step k = 1, 2, …:

    1. if k is a multiple of ΔT: m ← 0, v ← 0 (the step counter of the bias corrections is not reset);
    2. spike-aware clipping against the previous v, from step N = ``clip_start`` on and, when ΔT > 0,
       only where k mod ΔT ≥ N: where g² > θ·v and v > 0, g ← sign(g)·√(θ·v) (the code clips
       where v = 0 too, setting g to 0 there);
    3. m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²;
    4. θ ← θ − α·s_k·√(1−β₂ᵏ)/(1−β₁ᵏ)·m/(√v + ε) − α·λ·θ, with s_k the cosine warm-up factor
       of :func:`spam_warmup_scale` at c = k − (last reset step), 1 before the first reset.

    ``adaptive=True`` replaces step 2 by Stable-SPAM's AdaClip (Huang et al. 2025b), per tensor:
    M = max|g|, m_max ← γ·m_max + (1−γ)·M, m̂_max = m_max/(1 − γʲ), where |g| > m̂_max: g ← g·m̂_max/M;
    j is Stable-SPAM's step counter, which its code sets back to 1 at every reset, after that step's clip.
    Returns (trajectory, per-step count of clipped elements).
    """
    theta = _f64(params)
    m = {k: np.zeros_like(x) for k, x in theta.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    m_max = {k: 0.0 for k in theta}
    j = 0  # Stable-SPAM's counter
    last_reset = None
    out, clipped = [], []
    for t, g in enumerate(grads):
        k_, a_t = t + 1, _rate(lr, t)
        reset = reset_interval > 0 and k_ % reset_interval == 0
        if reset and k_ > 1:  # the code's warm-up counter starts at W + 1, so step 1 has no warm-up
            last_reset = k_
        j += 1
        n_clip = 0
        for k in theta:
            gk = np.array(g[k], np.float64)
            if reset:
                m[k] = np.zeros_like(m[k])
                v[k] = np.zeros_like(v[k])
            if adaptive:
                big = float(np.max(np.abs(gk))) if gk.size else 0.0
                m_max[k] = gamma * m_max[k] + (1 - gamma) * big
                bound = m_max[k] / (1 - gamma**j)
                mask = np.abs(gk) > bound
                if mask.any():
                    gk[mask] = gk[mask] / big * bound
                n_clip += int(mask.sum())
            elif threshold != 0 and k_ >= clip_start and (reset_interval == 0 or k_ % reset_interval >= clip_start):
                mask = (gk * gk > threshold * v[k]) & (v[k] > 0)
                gk[mask] = np.sign(gk[mask]) * np.sqrt(threshold * v[k][mask])
                n_clip += int(mask.sum())
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk * gk
            c = None if last_reset is None else k_ - last_reset
            s = spam_warmup_scale(c, warmup_steps)
            step = math.sqrt(1 - b2**k_) / (1 - b1**k_)
            theta[k] = theta[k] - a_t * s * step * m[k] / (np.sqrt(v[k]) + eps) - a_t * weight_decay * theta[k]
        if reset:
            j = 1
        out.append({k: x.copy() for k, x in theta.items()})
        clipped.append(n_clip)
    return out, clipped


def clip_update_norm(updates, window=128, sigma_factor=3.0, min_history=None, floor=1e-6):
    """Levanter's update-norm clipping: with H the last ``window`` unclipped global norms,
    once |H| ≥ max(2, window // 2): c = mean(H) + k·max(std(H), 10⁻⁶) (population std),
    u ← u·c/n where n = ‖u‖ > c. Every finite norm enters H unclipped.
    Returns (clipped updates, per-step info dicts with norm, bound, clipped)."""
    min_history = max(2, window // 2) if min_history is None else min_history
    hist: list[float] = []
    out, info = [], []
    for u in updates:
        u = _f64(u)
        n = math.sqrt(sum(float(np.sum(x * x)) for x in u.values()))
        if len(hist) >= min_history:
            h = np.array(hist)
            bound = float(h.mean()) + sigma_factor * max(float(h.std()), floor)
        else:
            bound = math.inf
        clip = n > bound
        out.append({k: x * (bound / n) if clip else x for k, x in u.items()})
        info.append(dict(norm=n, bound=bound, clipped=clip))
        if math.isfinite(n):
            hist.append(n)
            hist = hist[-window:]
    return out, info


def grad_scaler(scaled_grads_finite, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
    """torch.amp.GradScaler.update's rule, given per step whether the scaled gradients were all finite:
    non-finite: skip the step, scale ← scale·backoff, tracker ← 0;
    finite: tracker ← tracker + 1; at tracker = growth_interval: scale ← scale·growth (if finite), tracker ← 0.
    Returns the scale used at every step (before its update) and the one after the last."""
    scale, tracker = init_scale, 0
    scales = []
    for finite in scaled_grads_finite:
        scales.append(scale)
        if not finite:
            scale *= backoff_factor
            tracker = 0
        else:
            tracker += 1
            if tracker == growth_interval:
                grown = scale * growth_factor
                if math.isfinite(grown):
                    scale = grown
                tracker = 0
    return scales, scale


def adam_relative_clip(params, grads, lr, max_ratio, min_weight_rms, b1=0.9, b2=0.999, eps=1e-8, hold=False,
                       vectors=True):
    """Adam's step u (Kingma & Ba, bias-corrected), then per tensor, with RMS(x) = √(mean x²):
    b = ρ·max(RMS(θ), s);  u ← u·b/RMS(u) where RMS(u) > b;  θ ← θ + u.
    With ``hold``, each matrix (ndim ≥ 2) keeps the smallest factor so far instead:
    f ← min(f, b/RMS(u)) (f = 1 at first);  u ← f·u where f < 1; vectors are cut each step alone.
    Without ``vectors``, vectors and scalars are not bounded at all.

    Returns the parameters after every step and, per step, the leaves whose step was cut."""
    theta = _f64(params)
    m = {k: np.zeros_like(v) for k, v in theta.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    f = {k: 1.0 for k in theta}
    out, cut = [], []
    for t, g in enumerate(grads):
        k_, step_cut = t + 1, []
        for k in theta:
            gk = np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk * gk
            u = -lr * (m[k] / (1 - b1**k_)) / (np.sqrt(v[k] / (1 - b2**k_)) + eps)
            bound = max_ratio * max(math.sqrt(np.mean(theta[k] ** 2)), min_weight_rms)
            rms_u = math.sqrt(np.mean(u**2))
            factor = bound / rms_u if rms_u > bound and (vectors or theta[k].ndim >= 2) else 1.0
            if hold and theta[k].ndim >= 2:
                f[k] = factor = min(f[k], factor)
            if factor < 1.0:
                u = u * factor
                step_cut.append(k)
            theta[k] = theta[k] + u
        out.append({k: x.copy() for k, x in theta.items()})
        cut.append(step_cut)
    return out, cut
