"""Print the largest deviation of every parity case (equations, PyTorch, optax).

Run from the repository root:  python -m tests.parity.max_deviations

The deviation of a case is max over 200 steps, leaves and elements of
|θ_gradflow − θ_other| / max(1, |θ_other|), the quantity the tests bound with
rtol = atol (1e-12 / 1e-5 against the equations in float64 / float32, 1e-10
against PyTorch and optax in float64, 1e-5 against optax in float32).
"""

from __future__ import annotations

import jax
import numpy as np


def _dev(got: list[dict], want: list[dict]) -> float:
    return max(
        float(np.max(np.abs(np.asarray(g[k], np.float64) - w[k]) / np.maximum(1.0, np.abs(w[k]))))
        for g, w in zip(got, want)
        for k in w
    )


def main() -> None:
    from tests import test_adaptive as ta
    from tests import test_optimizers_parity as tp
    from tests.fast_trajectory import scan_trajectory

    rows = []
    for x64 in (True, False):
        jax.config.update("jax_enable_x64", x64)
        dtype = np.float64 if x64 else np.float32
        for name, (make, ref) in sorted(ta.EQUATION_CASES.items()):
            params, grads = ta._problem(11 if x64 else 12)
            if not x64:
                params = {k: np.float32(v).astype(np.float64) for k, v in params.items()}
                grads = [{k: np.float32(v).astype(np.float64) for k, v in g.items()} for g in grads]
            rows.append((f"equation {'f64' if x64 else 'f32'}", name, _dev(scan_trajectory(make(), params, grads, dtype), ref(params, grads))))
        if x64:
            params, grads, trajectories, _ = tp._load_recording()
            for name, make in sorted(tp.TORCH_EQUIVALENTS.items()):
                rows.append(("torch f64", name, _dev(scan_trajectory(make(), params, grads, dtype), trajectories[name])))
        for name, (ours, theirs) in sorted(tp.OPTAX_EQUIVALENTS.items()):
            params, grads = tp._problem(21 if x64 else 22)
            want = scan_trajectory(theirs(), params, grads, dtype)
            want = [{k: np.asarray(v, np.float64) for k, v in w.items()} for w in want]
            rows.append((f"optax {'f64' if x64 else 'f32'}", name, _dev(scan_trajectory(ours(), params, grads, dtype), want)))
    jax.config.update("jax_enable_x64", False)
    width = max(len(n) for _, n, _ in rows)
    for against, name, dev in rows:
        print(f"{against:13s} {name:{width}s} {dev:.2e}")


if __name__ == "__main__":
    main()
