"""NumPy references for the clippers, written from the papers' formulas (never from gradflow's code).

Each sequence reference takes a list of gradient trees (dicts of NumPy arrays)
and returns ``(clipped, info)``: the clipped trees and, per step, a dict with the
pre-clip global ``norm``, whether the step was ``clipped`` and the ``bound``
(the norm the clipped tree must have: global, or per leaf for per-leaf clippers).
All arithmetic is float64.
"""

from __future__ import annotations

import numpy as np

SHAPES = {"w": (8, 4), "b": (4,), "s": ()}

# step -> (leaf or "all", multiplier): the fixed spike sequence used by the tests and the report.
SPIKES = {
    60: ("all", 10.0),
    90: ("w", 50.0),
    120: ("all", 1000.0),
    150: ("b", 100.0),
    180: ("all", 30.0),
    210: ("s", 1.0e4),
    240: ("all", 5.0),
    270: ("w", 1.0e6),
}


def spike_sequence(seed: int = 0, steps: int = 300, shapes: dict = SHAPES, spikes: dict = SPIKES) -> list[dict]:
    """Gaussian gradients with the spikes of ``spikes`` injected (all after step 50)."""
    rng = np.random.default_rng(seed)
    out = []
    names = sorted(shapes)
    for t in range(steps):
        g = {k: rng.standard_normal(shapes[k]) for k in names}
        if t in spikes:
            leaf, mult = spikes[t]
            for k in names if leaf == "all" else [leaf]:
                g[k] = g[k] * mult
        out.append(g)
    return out


def _f64(g: dict) -> dict:
    return {k: np.asarray(v, np.float64) for k, v in g.items()}


def global_norm(g: dict) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2) for v in g.values())))


def clip_value(g: dict, c: float) -> dict:
    """g_i ← clip(g_i, −c, c)."""
    return {k: np.clip(v, -c, c) for k, v in _f64(g).items()}


def clip_global(g: dict, c: float, torch_eps: bool = False) -> tuple[dict, dict]:
    """g ← g·min(1, c/‖g‖) (Pascanu et al.); torch: clip_coef = c/(‖g‖ + 1e-6), clamped to 1."""
    g = _f64(g)
    n = global_norm(g)
    coef = c / (n + 1e-6) if torch_eps else (c / n if n > 0 else np.inf)
    f = min(1.0, coef)
    return {k: v * f for k, v in g.items()}, dict(norm=n, clipped=f < 1.0, bound=c)


def clip_per_leaf(g: dict, c: float) -> tuple[dict, dict]:
    """g_l ← g_l·min(1, c/‖g_l‖) for each leaf l."""
    out, bounds = {}, {}
    for k, v in _f64(g).items():
        n = float(np.sqrt(np.sum(v**2)))
        out[k] = v * (c / n) if n > c else v
        bounds[k] = c if n > c else None
    return out, dict(norm=global_norm(g), clipped=any(b is not None for b in bounds.values()), bound=bounds)


def clip_block_rms(g: dict, tau: float) -> tuple[dict, dict]:
    """g_l ← g_l·min(1, τ/rms(g_l)), rms = √mean(g_l²)."""
    out, bounds = {}, {}
    for k, v in _f64(g).items():
        rms = float(np.sqrt(np.mean(v**2)))
        out[k] = v * (tau / rms) if rms > tau else v
        bounds[k] = tau * np.sqrt(v.size) if rms > tau else None  # the leaf's norm after clipping
    return out, dict(norm=global_norm(g), clipped=any(b is not None for b in bounds.values()), bound=bounds)


def unit_norms(x: np.ndarray, layout: str) -> np.ndarray:
    """Per-unit L2 norms, keepdims. NFNets/optax layout: (in, out) kernels, unit = output column;
    timm layout: (out, in, ...) kernels, unit = output row (all dims but 0)."""
    x = np.asarray(x, np.float64)
    if layout == "torch":
        axes = None if x.ndim <= 1 else tuple(range(1, x.ndim))
    elif np.squeeze(x).ndim <= 1:
        axes = None
    elif x.ndim in (2, 3):
        axes = (0,)
    elif x.ndim == 4:
        axes = (0, 1, 2)
    else:
        raise ValueError(x.shape)
    return np.sqrt(np.sum(x**2, axis=axes, keepdims=True))


def agc(g: dict, p: dict, lam: float, eps: float = 1e-3, layout: str = "jax") -> dict:
    """Brock et al. 2021, Eq. (3): G_i ← λ‖W_i‖*/‖G_i‖·G_i if ‖G_i‖/‖W_i‖* > λ, ‖W_i‖* = max(‖W_i‖, ε)."""
    out = {}
    for k, v in _f64(g).items():
        gn = unit_norms(v, layout)
        wn = np.maximum(unit_norms(p[k], layout), eps)
        ratio = gn / wn
        out[k] = np.where(ratio > lam, lam * wn / np.maximum(gn, 1e-6) * v, v)
    return out


def autoclip(grads: list[dict], percentile: float, history_size: int | None = None) -> tuple[list, list]:
    """Seetharaman et al. 2020: append ‖g_t‖ to the history, clip to np.percentile(history, p)."""
    history: list[float] = []
    out, info = [], []
    for g in grads:
        n = global_norm(g)
        history.append(n)
        window = history if history_size is None else history[-history_size:]
        c = float(np.percentile(window, percentile))
        f = c / n if n > c else 1.0
        out.append({k: v * f for k, v in _f64(g).items()})
        info.append(dict(norm=n, clipped=n > c, bound=c))
    return out, info


def zclip(grads: list[dict], alpha: float = 0.97, z_thr: float = 2.5, warmup: int = 25, eps: float = 1e-6) -> tuple[list, list]:
    """Kumar et al. 2025 (ZClip, z-score mode, adaptive scaling).

    Warm-up: collect the first `warmup` norms unclipped; μ = their mean, σ² = their
    population variance. Then z = (n − μ)/(σ + ε); if z > z_thr clip to
    c = μ + (z_thr²/z)·σ; update μ ← αμ + (1−α)x, σ² ← ασ² + (1−α)(x − μ)² with x
    the clipped norm (c or n) and the updated μ.
    """
    buf: list[float] = []
    mu = var = None
    out, info = [], []
    for g in grads:
        n = global_norm(g)
        g = _f64(g)
        if mu is None:
            buf.append(n)
            if len(buf) == warmup:
                mu = float(np.mean(buf))
                var = float(np.mean((np.array(buf) - mu) ** 2))
            out.append(g)
            info.append(dict(norm=n, clipped=False, bound=None))
            continue
        sigma = np.sqrt(var)
        z = (n - mu) / (sigma + eps)
        if z > z_thr:
            c = mu + (z_thr**2 / z) * sigma
            out.append({k: v * (c / n) for k, v in g.items()})
            info.append(dict(norm=n, clipped=True, bound=c))
            x = c
        else:
            out.append(g)
            info.append(dict(norm=n, clipped=False, bound=None))
            x = n
        mu = alpha * mu + (1 - alpha) * x
        var = alpha * var + (1 - alpha) * (x - mu) ** 2
    return out, info


def adagc(grads: list[dict], lambda_abs: float = 1.0, lambda_rel: float = 1.05, beta: float = 0.98, warmup: int = 100) -> tuple[list, list]:
    """Wang et al. 2025 (AdaGC, Algorithm 1).

    t < T_start: h_t = min(1, λ_abs/‖g_t‖) for all tensors; γ_i = min(γ_i, ‖ĝ_{t,i}‖)
    over the non-zero norms (γ_i = ‖ĝ_{1,i}‖ at the first step, and while γ_i is 0). Afterwards h_{t,i} = min(1, λ_rel·γ_i/‖g_{t,i}‖);
    ĝ_{t,i} = h_{t,i}·g_{t,i}; γ_i ← β·γ_i + (1−β)·‖ĝ_{t,i}‖.
    """
    gamma: dict = {}
    out, info = [], []
    for t, g in enumerate(grads):
        g = _f64(g)
        n = global_norm(g)
        new, bounds = {}, {}
        if t < warmup:
            h = min(1.0, lambda_abs / n)
            for k, v in g.items():
                new[k] = v * h
                gn = float(np.sqrt(np.sum(new[k] ** 2)))
                if t == 0 or gamma[k] == 0:
                    gamma[k] = gn
                elif gn > 0:  # a zero norm (no gradient for this tensor this step) is skipped
                    gamma[k] = min(gamma[k], gn)
                bounds[k] = float(np.sqrt(np.sum(v**2))) * h if h < 1 else None
        else:
            for k, v in g.items():
                ln = float(np.sqrt(np.sum(v**2)))
                bound = lambda_rel * gamma[k]
                h = min(1.0, bound / ln) if ln > 0 else 1.0
                new[k] = v * h
                bounds[k] = bound if h < 1 else None
                gamma[k] = beta * gamma[k] + (1 - beta) * float(np.sqrt(np.sum(new[k] ** 2)))
        out.append(new)
        info.append(dict(norm=n, clipped=any(b is not None for b in bounds.values()), bound=bounds, gamma=dict(gamma)))
    return out, info
