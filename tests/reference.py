"""NumPy references written from the formulas in EQUATIONS.md (never from gradflow's code).

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
