"""Record torch.optim trajectories for the PyTorch parity tests.

Run from the repository root (needs torch):

    python -m tests.parity.record_torch

It runs each torch.optim optimizer below in float64 on one fixed sequence of
spiky gradients (tests.reference.spiky_gradients, seed 2024) and writes the
parameters after every step to tests/parity/torch_trajectories.npz, which the
test suite reads (so the suite itself never imports torch). The case names are
the keys the tests map to gradflow calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tests import reference

SHAPES = {"w": (2, 2), "b": (2,), "s": ()}
STEPS = 200
SEED = 2024
OUT = Path(__file__).with_name("torch_trajectories.npz")


def _lr_schedule(t: int) -> float:
    """The learning-rate schedule of the scheduled cases (t = updates done, 0 first)."""
    return 0.01 * (1.0 + np.cos(np.pi * min(t, 150) / 150)) / 2 + 1e-4


# name -> (optimizer class, keyword arguments, whether the learning rate follows _lr_schedule)
CASES = {
    "sgd_momentum": (torch.optim.SGD, dict(lr=0.01, momentum=0.9), False),
    "sgd_nesterov": (torch.optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True), False),
    "sgd_dampening": (torch.optim.SGD, dict(lr=0.01, momentum=0.9, dampening=0.3), False),
    "adagrad": (torch.optim.Adagrad, dict(lr=0.1), False),
    "adagrad_lr_decay_initial_accumulator": (
        torch.optim.Adagrad,
        dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-3),
        False,
    ),
    "rmsprop": (torch.optim.RMSprop, dict(lr=0.01, alpha=0.9), False),
    "rmsprop_centered": (torch.optim.RMSprop, dict(lr=0.01, alpha=0.95, centered=True, eps=1e-4), False),
    "rmsprop_momentum": (torch.optim.RMSprop, dict(lr=0.01, alpha=0.99, momentum=0.9), False),
    "rmsprop_centered_momentum": (
        torch.optim.RMSprop,
        dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, eps=1e-6),
        False,
    ),
    "adam": (torch.optim.Adam, dict(lr=0.01), False),
    "adam_scheduled": (torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), True),
    "adamw": (torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1), False),
    "adamw_scheduled": (torch.optim.AdamW, dict(lr=0.01, weight_decay=0.05), True),
    "adam_amsgrad": (torch.optim.Adam, dict(lr=0.01, amsgrad=True), False),
}


def main() -> None:
    rng = np.random.default_rng(SEED)
    params0 = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = reference.spiky_gradients(rng, SHAPES, STEPS)
    arrays = {f"params0/{k}": v for k, v in params0.items()}
    arrays.update({f"grads/{k}": np.stack([g[k] for g in grads]) for k in SHAPES})
    meta = {}
    for name, (cls, kwargs, scheduled) in CASES.items():
        tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params0.items()}
        opt = cls(list(tensors.values()), **kwargs)
        traj = {k: [] for k in SHAPES}
        for t, g in enumerate(grads):
            if scheduled:
                for group in opt.param_groups:
                    group["lr"] = _lr_schedule(t)
            for k, p in tensors.items():
                p.grad = torch.tensor(g[k], dtype=torch.float64)
            opt.step()
            for k, p in tensors.items():
                traj[k].append(p.detach().numpy().copy())
        for k in SHAPES:
            arrays[f"{name}/{k}"] = np.stack(traj[k])
        meta[name] = {"optimizer": cls.__name__, "kwargs": kwargs, "scheduled": scheduled}
    arrays["meta"] = np.array(json.dumps({"torch": torch.__version__, "cases": meta}, default=str))
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT.name}: {len(CASES)} cases, {STEPS} steps, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
