"""Record PyTorch learning-rate schedulers into tests/parity/torch_schedules.npz.

Run from the repository root:  python tests/parity/record_torch_schedules.py

The test suite reads the .npz and never imports torch. Each entry holds the
learning rate PyTorch uses at steps 0, 1, ..., N-1 (float64); for
ReduceLROnPlateau, the learning rate after each ``scheduler.step(loss)`` for a
scripted loss sequence (also stored). The arguments are kept in the ``spec``
entry (JSON), so the tests build the matching gradflow schedules from them.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch

OUT = pathlib.Path(__file__).parent / "torch_schedules.npz"

SCHEDULES = [
    dict(name="step_lr", kind="StepLR", lr=0.1, steps=100, kwargs=dict(step_size=15, gamma=0.5)),
    dict(name="multistep_lr", kind="MultiStepLR", lr=0.1, steps=100, kwargs=dict(milestones=[20, 45, 80], gamma=0.2)),
    dict(name="exponential_lr", kind="ExponentialLR", lr=0.05, steps=150, kwargs=dict(gamma=0.97)),
    dict(name="polynomial_lr", kind="PolynomialLR", lr=0.1, steps=80, kwargs=dict(total_iters=60, power=2.0)),
    dict(name="polynomial_lr_linear", kind="PolynomialLR", lr=0.3, steps=40, kwargs=dict(total_iters=25, power=1.0)),
    dict(name="cosine_annealing_lr", kind="CosineAnnealingLR", lr=0.1, steps=51, kwargs=dict(T_max=50, eta_min=0.001)),
    dict(name="cosine_warm_restarts_tmult1", kind="CosineAnnealingWarmRestarts", lr=0.1, steps=100,
         kwargs=dict(T_0=20, T_mult=1, eta_min=0.0)),
    dict(name="cosine_warm_restarts_tmult2", kind="CosineAnnealingWarmRestarts", lr=0.1, steps=160,
         kwargs=dict(T_0=10, T_mult=2, eta_min=0.002)),
    dict(name="linear_lr", kind="LinearLR", lr=0.2, steps=60, kwargs=dict(start_factor=0.1, end_factor=1.0, total_iters=40)),
    dict(name="linear_lr_decay", kind="LinearLR", lr=0.2, steps=60, kwargs=dict(start_factor=1.0, end_factor=0.05, total_iters=30)),
    dict(name="onecycle_lr", kind="OneCycleLR", lr=0.1, steps=100,
         kwargs=dict(max_lr=0.5, total_steps=100, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)),
]


def _plateau_losses() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(30)
    falling = 1.0 / (1.0 + 0.3 * t)
    flat = np.full(25, falling[-1]) * (1.0 + 5e-5 * rng.standard_normal(25))  # within rtol: no improvement
    drop = falling[-1] * np.array([0.9, 0.85, 0.85, 0.85, 0.85, 0.85, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8])
    with_nan = np.concatenate([falling, flat, drop])
    with_nan[33] = np.nan
    with_nan[34] = np.nan
    # Negative losses that stall by getting worse (both rules see no improvement) ...
    negative = -np.concatenate([np.linspace(0.5, 3.0, 15), np.full(10, 2.9), np.linspace(3.2, 4.0, 5), np.full(12, 3.8)])
    # ... and that stall exactly flat: PyTorch's b·(1 − threshold) lies above a negative b,
    # so it takes each repeat of the best loss for an improvement and never reduces.
    negative_flat = -np.concatenate([np.linspace(0.5, 3.0, 15), np.full(15, 3.0)])
    abs_mode = np.concatenate([np.linspace(2.0, 1.0, 11), 1.0 - 0.004 * np.arange(1, 15), np.linspace(0.9, 0.5, 5), np.full(10, 0.5)])
    return {"rel_nan": with_nan, "negative": negative, "negative_flat": negative_flat, "abs": abs_mode}


PLATEAU = [
    dict(name="plateau_rel_nan", losses="rel_nan", lr=0.1,
         kwargs=dict(factor=0.5, patience=3, threshold=1e-4, threshold_mode="rel", cooldown=2, min_lr=0.004)),
    dict(name="plateau_rel_negative", losses="negative", lr=0.1,
         kwargs=dict(factor=0.1, patience=2, threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=0.0)),
    dict(name="plateau_rel_negative_flat", losses="negative_flat", lr=0.1,
         kwargs=dict(factor=0.1, patience=2, threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=0.0)),
    dict(name="plateau_abs", losses="abs", lr=0.2,
         kwargs=dict(factor=0.3, patience=1, threshold=0.01, threshold_mode="abs", cooldown=1, min_lr=0.0)),
]


def _make(kind: str, opt, kwargs):
    cls = getattr(torch.optim.lr_scheduler, kind)
    if kind == "OneCycleLR":
        return cls(opt, cycle_momentum=False, **kwargs)
    return cls(opt, **kwargs)


def record() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for case in SCHEDULES:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=case["lr"])
        sched = _make(case["kind"], opt, case["kwargs"])
        lrs = []
        for t in range(case["steps"]):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            if t < case["steps"] - 1:
                sched.step()
        out[case["name"]] = np.asarray(lrs, np.float64)
    losses = _plateau_losses()
    for name, seq in losses.items():
        out[f"losses_{name}"] = seq
    for case in PLATEAU:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=case["lr"])
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", **case["kwargs"])
        lrs = []
        for loss in losses[case["losses"]]:
            opt.step()
            sched.step(float(loss))
            lrs.append(opt.param_groups[0]["lr"])
        out[case["name"]] = np.asarray(lrs, np.float64)
    out["spec"] = np.asarray(json.dumps({"torch": torch.__version__, "schedules": SCHEDULES, "plateau": PLATEAU}))
    return out


if __name__ == "__main__":
    data = record()
    np.savez_compressed(OUT, **data)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, torch {torch.__version__})")
