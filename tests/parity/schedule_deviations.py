"""Print the largest deviation of each schedule from optax and from the recorded PyTorch runs.

Run from the repository root:  python -m tests.parity.schedule_deviations
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradflow as gf
from tests.test_schedules import OPTAX_CASES, PARITY, _gradflow_for


def main() -> None:
    steps = jnp.arange(0, 3500, dtype=jnp.int32)
    print("vs optax (steps 0..3499): max |diff|, max |diff| / max|value|")
    for name, args, kwargs in OPTAX_CASES:
        got = np.asarray(jax.vmap(getattr(gf, name)(*args, **kwargs))(steps), np.float64)
        theirs = getattr(optax, name)(*args, **kwargs)
        want = np.asarray(jax.vmap(lambda t: jnp.asarray(theirs(t), jnp.float32))(steps), np.float64)
        d = np.max(np.abs(got - want))
        print(f"  {name:36s} {d:.2e}  {d / np.max(np.abs(want)):.2e}")
    data = np.load(PARITY)
    spec = json.loads(str(data["spec"]))
    print(f"vs PyTorch {spec['torch']} (recorded): max |diff|, max |diff| / max|value|")
    for case in spec["schedules"]:
        want = data[case["name"]]
        sched = _gradflow_for(case["kind"], case["lr"], case["kwargs"])
        got = np.asarray(jax.vmap(sched)(jnp.arange(len(want))), np.float64)
        d = np.abs(got - want)
        print(f"  {case['name']:36s} {d.max():.2e}  {d.max() / np.max(np.abs(want)):.2e}")
    for case in spec["plateau"]:
        if case["name"].endswith("_flat"):
            continue
        from tests.test_plateau import _run

        kw, lr = case["kwargs"], case["lr"]
        rel = kw["threshold_mode"] == "rel"
        tx = gf.reduce_on_plateau(kw["factor"], kw["patience"], kw["threshold"] if rel else 0.0,
                                  0.0 if rel else kw["threshold"], kw["cooldown"], 1, kw["min_lr"] / lr)
        _, states = _run(tx, data[f"losses_{case['losses']}"])
        want = data[case["name"]]
        d = np.abs(states.scale * lr - want)
        print(f"  {case['name']:36s} {d.max():.2e}  {d.max() / np.max(want):.2e}")


if __name__ == "__main__":
    main()
