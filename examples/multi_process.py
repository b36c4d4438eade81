"""Two processes, one model: data-parallel training on JAX's own distributed runtime.

With no arguments this launches two worker processes on this machine, joined by
``jax.distributed.initialize`` (coordinator on 127.0.0.1, CPU collectives over
gloo), plus a single-process reference run. Each worker holds half of every
global batch; the gradient mean is an all-reduce across the processes; the
optimizer is a gradflow chain (global-norm clipping + Adam) applied to
replicated parameters. At the end both workers must hold identical parameters,
equal to the single-process run to float32 rounding.

Run:  python examples/multi_process.py [--steps 50]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

GLOBAL_BATCH = 64
SIZES = (8, 32, 1)


def make_data(seed: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic regression batches: y = sin(x·w*) + noise, one batch per step."""
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal((SIZES[0], 1))
    x = rng.standard_normal((steps, GLOBAL_BATCH, SIZES[0])).astype(np.float32)
    y = (np.sin(x @ w_true) + 0.1 * rng.standard_normal((steps, GLOBAL_BATCH, 1))).astype(np.float32)
    return x, y


def init_params(seed: int) -> dict:
    rng = np.random.default_rng(seed + 1)
    return {
        "w1": (rng.standard_normal(SIZES[:2]) / np.sqrt(SIZES[0])).astype(np.float32),
        "b1": np.zeros(SIZES[1], np.float32),
        "w2": (rng.standard_normal(SIZES[1:]) / np.sqrt(SIZES[1])).astype(np.float32),
        "b2": np.zeros(SIZES[2], np.float32),
    }


def train(steps: int, seed: int, process_id: int, num_processes: int) -> dict:
    """Train on a mesh of every device of every process; return this process's copy of the params."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import gradflow as gf

    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    per_process = GLOBAL_BATCH // num_processes
    rows = slice(process_id * per_process, (process_id + 1) * per_process)

    def loss_fn(params, x, y):
        h = jnp.tanh(x @ params["w1"] + params["b1"])
        return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)

    tx = gf.chain(gf.clip_by_global_norm(1.0), gf.adam(1e-2))

    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gf.apply_updates(params, updates), state, loss

    host_params = init_params(seed)
    params = {
        k: jax.make_array_from_callback(v.shape, replicated, lambda idx, v=v: v[idx]) for k, v in host_params.items()
    }
    state = gf.init_sharded(tx, params)
    step = jax.jit(step, donate_argnums=(0, 1))
    xs, ys = make_data(seed, steps)
    loss = None
    for t in range(steps):
        x = jax.make_array_from_process_local_data(batch_sharding, xs[t, rows])
        y = jax.make_array_from_process_local_data(batch_sharding, ys[t, rows])
        params, state, loss = step(params, state, x, y)
    out = {k: np.asarray(v.addressable_data(0)) for k, v in params.items()}
    out["loss"] = np.asarray(loss.addressable_data(0))
    return out


def worker(args: argparse.Namespace) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=120,
    )
    result = train(args.steps, args.seed, args.process_id, args.num_processes)
    np.savez(Path(args.out) / f"process{args.process_id}.npz", **result)
    jax.distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace) -> dict:
    out = Path(args.out or tempfile.mkdtemp(prefix="gradflow-mp-"))
    out.mkdir(parents=True, exist_ok=True)
    coordinator = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--process-id", str(i), "--num-processes", "2", "--coordinator", coordinator,
             "--steps", str(args.steps), "--seed", str(args.seed), "--out", str(out)],
            env=env,
        )
        for i in range(2)
    ]
    codes = [p.wait(timeout=600) for p in procs]
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    single = train(args.steps, args.seed, 0, 1)
    runs = [dict(np.load(out / f"process{i}.npz")) for i in range(2)]
    identical = all(np.array_equal(runs[0][k], runs[1][k]) for k in single)
    max_diff = max(float(np.max(np.abs(runs[0][k] - single[k]))) for k in single if k != "loss")
    max_rel = max(
        float(np.max(np.abs(runs[0][k] - single[k]) / (np.abs(single[k]) + 1e-6))) for k in single if k != "loss"
    )
    summary = {
        "steps": args.steps,
        "final_loss": float(runs[0]["loss"]),
        "identical_across_processes": identical,
        "max_abs_diff_vs_single_process": max_diff,
        "max_rel_diff_vs_single_process": max_rel,
    }
    print(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="training steps (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="data and initialisation seed (default 0)")
    parser.add_argument("--out", default=None, help="folder for the workers' results (default: a temporary folder)")
    parser.add_argument("--process-id", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.process_id is None:
        launch(args)
    else:
        worker(args)


if __name__ == "__main__":
    main()
