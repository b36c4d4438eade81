"""Record a torch.amp.GradScaler run whose float16 gradients overflow, for dynamic_loss_scale's parity test.

Run from the repository root (needs torch):  python -m tests.parity.record_torch_loss_scale
Writes tests/parity/torch_loss_scale.npz, which the test suite reads (so it never imports torch).

The problem: float32 parameters θ, and at step t the gradient of a weighted quadratic,
g_t = c·(θ − θ*)·w_t, with weights w_t that drift and spike. The backward pass of a float16
model is modelled by rounding the scaled gradient S·g_t to float16 (so it overflows to ±inf
above 65504) and back to float32; then ``scaler.step(adam)`` and ``scaler.update()``.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import torch

STEPS = 150
SHAPES = {"b": (4,), "w": (6, 5)}
INIT_SCALE = 2.0**16
GROWTH_FACTOR = 2.0
BACKOFF_FACTOR = 0.5
GROWTH_INTERVAL = 10
LR = 0.01
OUT = pathlib.Path(__file__).with_name("torch_loss_scale.npz")


def weight(t: int) -> float:
    """w_t: a slow drift, with a ×300 spike every 37 steps (the steps that overflow even at a small scale)."""
    w = 1.0 + 4.0 * math.sin(t / 7.0) ** 2
    return w * 300.0 if t % 37 == 5 else w


def problem(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in SHAPES.items():
        out[f"params0/{k}"] = rng.standard_normal(s).astype(np.float32)
        out[f"target/{k}"] = rng.standard_normal(s).astype(np.float32)
        out[f"curvature/{k}"] = rng.uniform(0.1, 2.0, s).astype(np.float32)
    return out


def main() -> None:
    torch.use_deterministic_algorithms(True)
    data = problem()
    names = sorted(SHAPES)
    ps = [torch.tensor(data[f"params0/{k}"], requires_grad=True) for k in names]
    target = [torch.tensor(data[f"target/{k}"]) for k in names]
    curv = [torch.tensor(data[f"curvature/{k}"]) for k in names]
    opt = torch.optim.Adam(ps, lr=LR)
    scaler = torch.amp.GradScaler(
        "cpu", init_scale=INIT_SCALE, growth_factor=GROWTH_FACTOR, backoff_factor=BACKOFF_FACTOR,
        growth_interval=GROWTH_INTERVAL,
    )
    scales, found_inf, traj = [], [], {k: [] for k in names}
    scaler.scale(torch.zeros(()))  # creates the scaler's scale tensor (a real step scales its loss here)
    for t in range(STEPS):
        s = scaler.get_scale()
        scales.append(s)
        with torch.no_grad():
            for p, c, tg in zip(ps, curv, target):
                g = c * (p - tg) * weight(t)
                p.grad = (g * s).to(torch.float16).to(torch.float32)
        finite = all(bool(torch.isfinite(p.grad).all()) for p in ps)
        found_inf.append(not finite)
        scaler.step(opt)
        scaler.update()
        for p, k in zip(ps, names):
            traj[k].append(p.detach().numpy().copy())
    out = dict(data)
    out.update(
        scales=np.array(scales, np.float32),
        final_scale=np.float32(scaler.get_scale()),
        found_inf=np.array(found_inf),
        weights=np.array([weight(t) for t in range(STEPS)], np.float64),
        init_scale=np.float32(INIT_SCALE),
        growth_factor=np.float32(GROWTH_FACTOR),
        backoff_factor=np.float32(BACKOFF_FACTOR),
        growth_interval=np.int32(GROWTH_INTERVAL),
        lr=np.float32(LR),
        torch_version=np.array(torch.__version__),
    )
    for k in names:
        out[f"adam/{k}"] = np.stack(traj[k])
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes); {sum(found_inf)} of {STEPS} steps overflowed")


if __name__ == "__main__":
    main()
