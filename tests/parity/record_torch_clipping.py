"""Record torch.optim trajectories with torch.nn.utils.clip_grad_norm_ on a spiky gradient sequence.

Run from the repository root (needs torch):  python -m tests.parity.record_torch_clipping
Writes tests/parity/torch_clipping.npz, which the test suite reads (so it never imports torch).
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from tests.reference_clipping import SHAPES, spike_sequence

STEPS = 150
MAX_NORM = 5.0
SPIKES = {5: ("all", 20.0), 17: ("w", 50.0), 40: ("all", 1000.0), 77: ("b", 100.0), 120: ("all", 3.0)}
OUT = pathlib.Path(__file__).with_name("torch_clipping.npz")


def record(make_optimizer, params0: dict, grads: list[dict]) -> dict:
    names = sorted(params0)
    ps = [torch.tensor(params0[k], dtype=torch.float32, requires_grad=True) for k in names]
    opt = make_optimizer(ps)
    traj = {k: [] for k in names}
    norms = []
    for g in grads:
        for p, k in zip(ps, names):
            p.grad = torch.tensor(g[k], dtype=torch.float32)
        norms.append(float(torch.nn.utils.clip_grad_norm_(ps, MAX_NORM)))
        opt.step()
        for p, k in zip(ps, names):
            traj[k].append(p.detach().numpy().copy())
    return {k: np.stack(v) for k, v in traj.items()} | {"norm": np.array(norms, np.float32)}


def main() -> None:
    torch.use_deterministic_algorithms(True)
    grads = [{k: v.astype(np.float32) for k, v in g.items()} for g in spike_sequence(seed=3, steps=STEPS, spikes=SPIKES)]
    rng = np.random.default_rng(4)
    params0 = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    sgd = record(lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9), params0, grads)
    adam = record(lambda ps: torch.optim.Adam(ps, lr=0.01), params0, grads)
    out = {"max_norm": np.float32(MAX_NORM), "torch_version": np.array(torch.__version__)}
    for k in sorted(SHAPES):
        out[f"params0/{k}"] = params0[k]
        out[f"grads/{k}"] = np.stack([g[k] for g in grads])
        out[f"sgd/{k}"] = sgd[k]
        out[f"adam/{k}"] = adam[k]
    out["sgd/norm"], out["adam/norm"] = sgd["norm"], adam["norm"]
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
