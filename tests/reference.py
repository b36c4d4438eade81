"""NumPy references written from the formulas in docs/equations.md (never from gradflow's code).

Each reference takes a list of gradient trees (dicts of NumPy arrays) and the
initial parameters, and returns the list of parameter trees after every step.
All arithmetic is float64.
"""

from __future__ import annotations

import numpy as np


def spiky_gradients(rng: np.random.Generator, shapes: dict, steps: int, spike_every: int = 17, spike: float = 50.0) -> list[dict]:
    """Gaussian gradients with an occasional 50x spike in one leaf (and some all-leaf spikes)."""
    out = []
    names = sorted(shapes)
    for t in range(steps):
        g = {k: rng.standard_normal(shapes[k]) for k in names}
        if t % spike_every == spike_every - 1:
            k = names[(t // spike_every) % len(names)]
            g[k] = g[k] * spike
        if t % (5 * spike_every) == 3:
            g = {k: v * spike for k, v in g.items()}
        out.append(g)
    return out


def sgd(params: dict, grads: list[dict], lr: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False) -> list[dict]:
    """θ ← θ − α·g; with momentum (PyTorch): b₁ = g₁, b_t = μ·b_{t−1} + (1−d)·g_t,
    direction b_t, or g_t + μ·b_t with Nesterov."""
    theta = {k: np.array(v, np.float64) for k, v in params.items()}
    buf: dict = {}
    out = []
    for t, g in enumerate(grads):
        for k in theta:
            d = np.array(g[k], np.float64)
            if momentum != 0.0:
                if t == 0:
                    buf[k] = d.copy()
                else:
                    buf[k] = momentum * buf[k] + (1.0 - dampening) * d
                d = d + momentum * buf[k] if nesterov else buf[k]
            theta[k] = theta[k] - lr * d
        out.append({k: v.copy() for k, v in theta.items()})
    return out


# ---------------------------------------------------------------------------------------------
# Adaptive optimizers. Each follows the formula in docs/equations.md (or the cited paper) literally,
# one leaf at a time, in float64. ``lr`` (and ``weight_decay`` where it appears) may be a number
# or a function of t, the number of updates done before the current one (0 first).
# ---------------------------------------------------------------------------------------------


def _at(value, t: int) -> float:
    return float(value(t)) if callable(value) else float(value)


def _start(params: dict) -> dict:
    return {k: np.array(v, np.float64) for k, v in params.items()}


def _snapshot(theta: dict) -> dict:
    return {k: v.copy() for k, v in theta.items()}


def adagrad(params: dict, grads: list[dict], lr, eps: float = 1e-10, initial_accumulator_value: float = 0.0,
            eps_in_sqrt: bool = False, lr_decay: float = 0.0) -> list[dict]:
    """Document 002 §3.1.3: G ← G + g²; θ ← θ − α/(√G + ε)·g.
    Document 001 §3.2(4) (eps_in_sqrt): θ ← θ − α/√(G + ε)·g.
    Document 002 §4.1 / PyTorch lr_decay: α_t = α/(1 + t·lr_decay)."""
    theta = _start(params)
    G = {k: np.full_like(v, initial_accumulator_value) for k, v in theta.items()}
    out = []
    for t, g in enumerate(grads):
        alpha = _at(lr, t) / (1.0 + t * lr_decay)
        for k in theta:
            gk = np.asarray(g[k], np.float64)
            G[k] = G[k] + gk ** 2
            denom = np.sqrt(G[k] + eps) if eps_in_sqrt else np.sqrt(G[k]) + eps
            theta[k] = theta[k] - alpha / denom * gk
        out.append(_snapshot(theta))
    return out


def rmsprop(params: dict, grads: list[dict], lr, decay: float = 0.9, eps: float = 1e-8, eps_in_sqrt: bool = False,
            centered: bool = False, momentum: float = 0.0, initial_scale: float = 0.0) -> list[dict]:
    """Documents 000 §3.3 / 002 §3.2.3: v ← β·v + (1−β)·g²; θ ← θ − α/(√v + ε)·g.
    Document 001 §3.2(5) read as eps_in_sqrt: θ ← θ − α/√(v + ε)·g.
    Centered (Graves 2013): m ← β·m + (1−β)·g, v − m² under the root.
    Momentum (PyTorch): b ← μ·b + g/(√v + ε), θ ← θ − α·b, b starting at 0."""
    theta = _start(params)
    v = {k: np.full_like(x, initial_scale) for k, x in theta.items()}
    m = {k: np.zeros_like(x) for k, x in theta.items()}
    b = {k: np.zeros_like(x) for k, x in theta.items()}
    out = []
    for t, g in enumerate(grads):
        alpha = _at(lr, t)
        for k in theta:
            gk = np.asarray(g[k], np.float64)
            v[k] = decay * v[k] + (1.0 - decay) * gk ** 2
            var = v[k]
            if centered:
                m[k] = decay * m[k] + (1.0 - decay) * gk
                var = v[k] - m[k] ** 2
            denom = np.sqrt(var + eps) if eps_in_sqrt else np.sqrt(var) + eps
            d = gk / denom
            if momentum:
                b[k] = momentum * b[k] + d
                d = b[k]
            theta[k] = theta[k] - alpha * d
        out.append(_snapshot(theta))
    return out


def adam(params: dict, grads: list[dict], lr, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         bias_correction: bool = True, weight_decay=0.0, nesterov: bool = False) -> list[dict]:
    """Kingma & Ba 2014, Algorithm 1: m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
    m̂ = m/(1−β₁ᵏ), v̂ = v/(1−β₂ᵏ) (k = t+1); θ ← θ − α·m̂/(√v̂ + ε).
    Document 001 §3.2(6) (bias_correction=False): θ ← θ − α·m/(√v + ε).
    Decoupled weight decay (Loshchilov & Hutter): θ ← θ − α·(m̂/(√v̂ + ε) + λθ).
    Nesterov (Dozat 2016, as optax writes NAdam): m̂ = β₁m/(1−β₁ᵏ⁺¹) + (1−β₁)g/(1−β₁ᵏ),
    or β₁m + (1−β₁)g without bias correction."""
    theta = _start(params)
    m = {k: np.zeros_like(x) for k, x in theta.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    out = []
    for t, g in enumerate(grads):
        alpha, lam, step = _at(lr, t), _at(weight_decay, t), t + 1
        for k in theta:
            gk = np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1.0 - b1) * gk
            v[k] = b2 * v[k] + (1.0 - b2) * gk ** 2
            c1, c1_next, c2 = (1.0 - b1 ** step, 1.0 - b1 ** (step + 1), 1.0 - b2 ** step) if bias_correction else (1, 1, 1)
            m_hat = b1 * m[k] / c1_next + (1.0 - b1) * gk / c1 if nesterov else m[k] / c1
            v_hat = v[k] / c2
            theta[k] = theta[k] - alpha * (m_hat / (np.sqrt(v_hat) + eps) + lam * theta[k])
        out.append(_snapshot(theta))
    return out


def amsgrad(params: dict, grads: list[dict], lr, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
            bias_correction: bool = True) -> list[dict]:
    """Reddi et al. 2018, Algorithm 2 (bias_correction=False): v̂ ← max(v̂, v); θ ← θ − α·m/(√v̂ + ε).
    With bias correction (PyTorch's Adam(amsgrad=True)): the maximum of the raw v, then
    θ ← θ − α·(m/(1−β₁ᵏ)) / (√(v̂/(1−β₂ᵏ)) + ε)."""
    theta = _start(params)
    m = {k: np.zeros_like(x) for k, x in theta.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    v_max = {k: np.zeros_like(x) for k, x in theta.items()}
    out = []
    for t, g in enumerate(grads):
        alpha, step = _at(lr, t), t + 1
        for k in theta:
            gk = np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1.0 - b1) * gk
            v[k] = b2 * v[k] + (1.0 - b2) * gk ** 2
            v_max[k] = np.maximum(v_max[k], v[k])
            if bias_correction:
                d = (m[k] / (1.0 - b1 ** step)) / (np.sqrt(v_max[k] / (1.0 - b2 ** step)) + eps)
            else:
                d = m[k] / (np.sqrt(v_max[k]) + eps)
            theta[k] = theta[k] - alpha * d
        out.append(_snapshot(theta))
    return out


def lars(params: dict, grads: list[dict], lr, weight_decay=0.0, trust_coefficient: float = 1e-3,
         eps: float = 0.0, momentum: float = 0.9) -> list[dict]:
    """You, Gitman & Ginsburg 2017, Algorithm 1, per layer (leaf) l:
    λˡ = η·‖wˡ‖/(‖∇Lˡ‖ + β·‖wˡ‖) (plus ε in the denominator; 1 where ‖w‖ or the denominator is 0);
    vˡ ← m·vˡ + γ_t·λˡ·(∇Lˡ + β·wˡ); wˡ ← wˡ − vˡ."""
    theta = _start(params)
    vel = {k: np.zeros_like(x) for k, x in theta.items()}
    out = []
    for t, g in enumerate(grads):
        gamma, beta = _at(lr, t), _at(weight_decay, t)
        for k in theta:
            gk = np.asarray(g[k], np.float64)
            w_norm, g_norm = np.linalg.norm(theta[k]), np.linalg.norm(gk)
            denom = g_norm + beta * w_norm + eps
            local = 1.0 if (w_norm == 0 or denom == 0) else trust_coefficient * w_norm / denom
            vel[k] = momentum * vel[k] + gamma * local * (gk + beta * theta[k])
            theta[k] = theta[k] - vel[k]
        out.append(_snapshot(theta))
    return out


def lamb(params: dict, grads: list[dict], lr, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
         weight_decay=0.0) -> list[dict]:
    """You et al. 2019, Algorithm 2 (φ the identity), per layer (leaf):
    m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; m̂, v̂ debiased; r = m̂/(√v̂ + ε);
    x ← x − η_t·(‖x‖/‖r + λx‖)·(r + λx) (ratio 1 where either norm is 0)."""
    theta = _start(params)
    m = {k: np.zeros_like(x) for k, x in theta.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    out = []
    for t, g in enumerate(grads):
        eta, lam, step = _at(lr, t), _at(weight_decay, t), t + 1
        for k in theta:
            gk = np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1.0 - b1) * gk
            v[k] = b2 * v[k] + (1.0 - b2) * gk ** 2
            r = (m[k] / (1.0 - b1 ** step)) / (np.sqrt(v[k] / (1.0 - b2 ** step)) + eps)
            d = r + lam * theta[k]
            x_norm, d_norm = np.linalg.norm(theta[k]), np.linalg.norm(d)
            ratio = 1.0 if (x_norm == 0 or d_norm == 0) else x_norm / d_norm
            theta[k] = theta[k] - eta * ratio * d
        out.append(_snapshot(theta))
    return out
