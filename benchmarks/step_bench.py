"""Optimizer step time: gradflow against optax (and torch.optim when importable), in one run.

For each workload (tree of parameters) and optimizer, times one jit-compiled
step ``(params, state, grads) -> (params, state)`` with the parameter and state
buffers donated, as a real training step does. Reports the median over
``--steps`` timed steps after warm-up, the compile time, the effective memory
bandwidth (bytes the step must move / time), the ratio to optax, and the
ratio to the floor: the bytes moved at the bandwidth of a donated copy pass
over as many float32 as the tree holds, timed in turn with the JAX steps of
the same case (so a machine whose memory bandwidth drifts during the run, as a
shared VM's does, moves the floor with it).

Besides one large leaf and a stacked transformer, the workloads include trees
of many small leaves of varied shapes (300 and 1000), 600 leaves of one shape,
and the parameter tree of a flax transformer with unstacked layers (shapes from
``jax.eval_shape``): there compile time, not step time, is what a user waits
for. ``gradflow-flat`` is gradflow's optimizer wrapped in
``gf.flatten_small``. Steps of the libraries are timed interleaved, so a busy
machine slows them alike; above 600 leaves, one library after another (three
compiled 1000-leaf steps alive at once exhaust Linux's memory maps).

Run:  python benchmarks/step_bench.py            (full; the 1000-leaf case compiles for minutes)
      python benchmarks/step_bench.py --quick    (small sizes, a few minutes)
      python benchmarks/step_bench.py --device gpu   (the same code on a GPU)
Writes a table to stdout and the numbers to benchmarks/results.json (or --out).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradflow as gf

LR = 1e-3


def transformer_shapes(layers: int, d: int, vocab: int) -> list[tuple[int, ...]]:
    """Leaf shapes of a pre-norm transformer: attention, MLP, two layer norms per layer, an embedding."""
    shapes: list[tuple[int, ...]] = [(vocab, d)]
    for _ in range(layers):
        shapes += [(d, 3 * d), (3 * d,), (d, d), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,), (d,), (d,), (d,), (d,)]
    return shapes + [(d,), (d,)]


def small_leaf_shapes(n: int) -> list[tuple[int, ...]]:
    """``n`` small leaves of about 1000 parameters each, mixed shapes."""
    base = [(32, 32), (1000,), (8, 128), (24, 40), (1024,)]
    return [base[i % len(base)] for i in range(n)]


def varied_leaf_shapes(n: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``n`` small leaves of varied shapes (a third vectors of 16–4096, the rest matrices up to 96×96)."""
    rng = np.random.default_rng(seed)
    shapes: list[tuple[int, ...]] = []
    for _ in range(n):
        if rng.random() < 0.3:
            shapes.append((int(rng.integers(16, 4096)),))
        else:
            shapes.append((int(rng.integers(4, 96)), int(rng.integers(4, 96))))
    return shapes


def flax_transformer_shapes(layers: int, d: int, heads: int, vocab: int) -> list[tuple[int, ...]]:
    """Leaf shapes of a flax pre-norm transformer with unstacked layers, from ``jax.eval_shape``."""
    import flax.linen as nn

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.LayerNorm()(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=heads)(h, h)
            h = nn.LayerNorm()(x)
            return x + nn.Dense(d)(nn.gelu(nn.Dense(4 * d)(h)))

    class Model(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            x = nn.Embed(vocab, d)(tokens) + self.param("pos", nn.initializers.normal(0.02), (128, d))
            for _ in range(layers):
                x = Block()(x)
            return nn.Dense(vocab)(nn.LayerNorm()(x))

    tokens = jax.ShapeDtypeStruct((1, 128), jnp.int32)
    tree = jax.eval_shape(Model().init, jax.random.PRNGKey(0), tokens)
    return [tuple(x.shape) for x in jax.tree.leaves(tree)]


# Trees of many small leaves take minutes to compile in optax: they run clip+adam only
# (the case the targets name), unless --only asks for others.
MANY_LEAF_OPTIMIZERS = ("clip+adam",)

# A compiled XLA CPU executable holds memory maps in proportion to its kernels:
# about 15 000 for clip+adam on 300 small leaves, some 50 000 on 1000. Three such
# executables alive at once exceed Linux's default vm.max_map_count (65 530) and
# LLVM aborts. Above this many leaves each library is compiled, timed and freed
# in turn instead of interleaved with the others.
MAX_INTERLEAVED_LEAVES = 600


def workloads(quick: bool) -> dict[str, Callable[[], list[tuple[int, ...]]]]:
    if quick:
        return {
            "1 leaf 4M": lambda: [(4_000_000,)],
            "26 leaves 2M": lambda: transformer_shapes(2, 128, 4000),
            "100 varied leaves": lambda: varied_leaf_shapes(100),
            "200 equal leaves": lambda: [(32, 32)] * 200,
        }
    return {
        "1 leaf 50M": lambda: [(50_000_000,)],
        "195 leaves 22M": lambda: transformer_shapes(16, 320, 8000),
        "300 varied leaves": lambda: varied_leaf_shapes(300),
        "600 equal leaves": lambda: [(32, 32)] * 600,
        "flax transformer": lambda: flax_transformer_shapes(12, 256, 8, 8000),
        "1000 varied leaves": lambda: varied_leaf_shapes(1000, seed=1),
    }


# name -> (gradflow factory, optax factory or None, bytes moved per float32 parameter)
OPTIMIZERS: dict[str, tuple[Callable, Callable | None, int]] = {
    "sgd+momentum": (lambda: gf.sgd(LR, momentum=0.9), lambda: optax.sgd(LR, momentum=0.9), 20),
    "adagrad": (lambda: gf.adagrad(LR), lambda: optax.adagrad(LR), 20),
    "rmsprop": (lambda: gf.rmsprop(LR), lambda: optax.rmsprop(LR, eps_in_sqrt=False), 20),
    "adam": (lambda: gf.adam(LR), lambda: optax.adam(LR), 28),
    "adamw": (lambda: gf.adamw(LR, weight_decay=1e-2), lambda: optax.adamw(LR, weight_decay=1e-2), 28),
    "clip+adam": (
        lambda: gf.chain(gf.clip_by_global_norm(1.0), gf.adam(LR)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(LR)),
        32,  # the gradient is read twice: once for its norm, once for the update
    ),
    "zclip+adam": (lambda: gf.chain(gf.zclip(), gf.adam(LR)), None, 32),
}


def make_tree(shapes: list[tuple[int, ...]], seed: int, scale: float = 1.0) -> dict:
    """Standard normal leaves × ``scale``, drawn by NumPy (JAX would compile a kernel per distinct shape)."""
    rng = np.random.default_rng(seed)
    return {f"p{i:04d}": jnp.asarray(scale * rng.standard_normal(s, np.float32)) for i, s in enumerate(shapes)}


def compile_jax(tx, shapes: list[tuple[int, ...]]) -> tuple[Callable[[], None], float]:
    """(a function running one donated jit step of ``tx``, compile seconds)."""
    params = make_tree(shapes, 0)
    grads = make_tree(shapes, 1, scale=1e-3)
    state = jax.jit(tx.init)(params)  # one compile, not one tiny eager kernel per distinct leaf shape

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    compile_s = time.perf_counter() - t0
    box = [params, state]

    def run() -> None:
        box[0], box[1] = compiled(box[0], box[1], grads)
        jax.block_until_ready(box)

    return run, compile_s


def time_interleaved(runs: dict[str, Callable[[], None]], steps: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per step of each runner, the runners' steps taken in turn."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(steps):
        for k, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def time_libraries(
    factories: dict[str, Callable], shapes: list[tuple[int, ...]], steps: int, interleaved: bool
) -> tuple[dict[str, float], dict[str, float], float]:
    """(median seconds per step, compile seconds) of each library's transform on ``shapes``, and the
    median seconds of a copy pass over as many float32 as the tree holds, timed in turn with the steps.

    Interleaved: all compiled first, their steps and the copy taken in turn. Otherwise one library at
    a time, in turn with the copy, each executable freed before the next compiles (see
    MAX_INTERLEAVED_LEAVES); the copy's time is then the median over the libraries.
    """
    copy = copy_runner(sum(int(np.prod(s)) for s in shapes))
    compile_s: dict[str, float] = {}
    if interleaved:
        runs = {}
        for lib, make in factories.items():
            runs[lib], compile_s[lib] = compile_jax(make(), shapes)
        measured = time_interleaved({**runs, "copy": copy}, steps)
        return measured, compile_s, measured.pop("copy")
    measured, copies = {}, []
    for lib, make in factories.items():
        run, compile_s[lib] = compile_jax(make(), shapes)
        t = time_interleaved({lib: run, "copy": copy}, steps)
        copies.append(t.pop("copy"))
        measured.update(t)
        del run
        gc.collect()
        jax.clear_caches()
    return measured, compile_s, statistics.median(copies)


def copy_runner(n: int) -> Callable[[], None]:
    """A function running one donated elementwise pass over ``n`` float32 (read 4 B, write 4 B per element)."""
    box = [jnp.ones((n,), jnp.float32)]
    f = jax.jit(lambda x: x + 1.0, donate_argnums=0).lower(box[0]).compile()

    def run() -> None:
        box[0] = f(box[0])
        box[0].block_until_ready()

    return run


def torch_factories():
    """torch.optim counterparts, or {} without torch."""
    try:
        import torch
    except ImportError:
        return {}, None
    torch.set_num_threads(os.cpu_count() or 1)
    opt = torch.optim
    # name -> (constructor, clip first); RMSprop has no fused kernel
    return {
        "sgd+momentum": (lambda ps, **kw: opt.SGD(ps, lr=LR, momentum=0.9, **kw), False),
        "adagrad": (lambda ps, **kw: opt.Adagrad(ps, lr=LR, **kw), False),
        "rmsprop": (lambda ps, **kw: None if "fused" in kw else opt.RMSprop(ps, lr=LR, alpha=0.9, **kw), False),
        "adam": (lambda ps, **kw: opt.Adam(ps, lr=LR, **kw), False),
        "adamw": (lambda ps, **kw: opt.AdamW(ps, lr=LR, weight_decay=1e-2, **kw), False),
        "clip+adam": (lambda ps, **kw: opt.Adam(ps, lr=LR, **kw), True),
    }, torch


def time_torch(torch, spec, shapes, steps: int, mode: str, device: str, warmup: int = 3) -> float | None:
    """Median seconds of ``optimizer.step()`` (plus ``clip_grad_norm_`` when asked) in torch."""
    dev = "cuda" if device == "gpu" else "cpu"
    if dev == "cuda" and not torch.cuda.is_available():
        return None
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(dev) for s in shapes]
    for p in params:
        p.requires_grad_(True)
        p.grad = 1e-3 * torch.randn(p.shape, generator=gen).to(dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    make, clip = spec
    try:
        optimizer = make(params, **({"fused": True} if mode == "fused" else {"foreach": True}))
    except (RuntimeError, TypeError, ValueError):
        return None  # this torch build has no such kernel on the CPU
    if optimizer is None:
        return None

    def step():
        if clip:
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        optimizer.step()

    with torch.no_grad():
        for _ in range(warmup):
            step()
        sync()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads and few steps")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default 15, quick 10)")
    parser.add_argument("--only", default=None, help="comma-separated optimizer names to run")
    parser.add_argument("--workloads", default=None, help="comma-separated workload names to run")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="the JAX platform to run on")
    parser.add_argument("--no-torch", action="store_true", help="skip torch.optim even when importable")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")), help="where to write JSON")
    parser.add_argument("--markdown", metavar="JSON", default=None,
                        help="print the rows of an earlier run's JSON as a markdown table (no timing)")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(json.loads(Path(args.markdown).read_text())["rows"]))
        return {}
    jax.config.update("jax_platforms", "cuda" if args.device == "gpu" else "cpu")
    steps = args.steps or (10 if args.quick else 15)
    names = args.only.split(",") if args.only else list(OPTIMIZERS)
    torch_opts, torch = ({}, None) if args.no_torch else torch_factories()

    loads = workloads(args.quick)
    if args.workloads:
        loads = {k: loads[k] for k in args.workloads.split(",")}
    shapes_of = {k: make() for k, make in loads.items()}
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")

    rows = []
    argv_used = sys.argv[1:] if argv is None else argv
    result = {
        "command": shlex.join(["python", "benchmarks/step_bench.py", *argv_used]),
        "jax": jax.__version__, "optax": optax.__version__, "torch": getattr(torch, "__version__", None),
        "platform": jax.devices()[0].platform, "device": str(jax.devices()[0].device_kind),
        "machine": platform.machine(), "timed_steps": steps, "rows": rows,
    }
    for load, shapes in shapes_of.items():
        n = sum(int(np.prod(s)) for s in shapes)
        many = len(shapes) >= 150 and n / len(shapes) < 1e5
        for name in names if args.only or not many else [m for m in names if m in MANY_LEAF_OPTIMIZERS]:
            gf_factory, optax_factory, bytes_per = OPTIMIZERS[name]
            factories = {"gradflow": gf_factory, "gradflow-flat": lambda f=gf_factory: gf.flatten_small(f())}
            if optax_factory is not None:
                factories["optax"] = optax_factory
            interleaved = len(shapes) <= MAX_INTERLEAVED_LEAVES
            measured, compile_s, copy_t = time_libraries(factories, shapes, steps, interleaved)
            bw = 8 * n / copy_t  # bytes per second of the copy, timed in turn with the steps
            floor = bytes_per * n / bw
            for mode in ("foreach", "fused"):
                if name in torch_opts:
                    t = time_torch(torch, torch_opts[name], shapes, steps, mode, args.device)
                    if t is not None:
                        measured[f"torch-{mode}"] = t
            optax_t = measured.get("optax")
            for lib, t in measured.items():
                c = compile_s.get(lib)
                rows.append({
                    "workload": load, "params": n, "leaves": len(shapes), "optimizer": name, "library": lib,
                    "median_ms": 1e3 * t, "compile_s": c, "GBps": bytes_per * n / t / 1e9,
                    "ratio_to_optax": t / optax_t if optax_t else None,
                    "compile_ratio_to_optax": c / compile_s["optax"] if c is not None and "optax" in compile_s else None,
                    "ratio_to_floor": t / floor, "floor_fraction": floor / t, "copy_GBps": bw / 1e9,
                    "interleaved": lib in compile_s and interleaved,
                })
            r = rows[-len(measured):]
            print_rows(r, header=not rows[: -len(measured)])
            Path(args.out).write_text(json.dumps(result, indent=1))  # after every case: a long run keeps its rows
    print(f"wrote {args.out}")
    return result


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def markdown_table(rows: list[dict]) -> str:
    """The README's table of ``rows`` (one results file's ``rows``)."""
    lines = [
        "| workload | leaves | optimizer | library | step ms | step / optax | compile s | compile / optax | floor fraction |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['leaves']} | {r['optimizer']} | {r['library']} | {r['median_ms']:.2f} | "
            f"{fmt(r['ratio_to_optax'], '.2f')} | {fmt(r['compile_s'], '.1f')} | "
            f"{fmt(r['compile_ratio_to_optax'], '.2f')} | {r['floor_fraction']:.2f} |"
        )
    return "\n".join(lines)


def print_rows(rows: list[dict], header: bool) -> None:
    if header:
        print(
            f"{'workload':<19} {'optimizer':<13} {'library':<14} {'step ms':>9} {'compile s':>9} {'GB/s':>7} "
            f"{'step/optax':>10} {'compile/optax':>13} {'floor frac':>10}"
        )
    for r in rows:
        print(
            f"{r['workload']:<19} {r['optimizer']:<13} {r['library']:<14} {r['median_ms']:9.2f} "
            f"{fmt(r['compile_s'], '9.2f'):>9} {r['GBps']:7.2f} {fmt(r['ratio_to_optax'], '10.2f'):>10} "
            f"{fmt(r['compile_ratio_to_optax'], '13.2f'):>13} {r['floor_fraction']:10.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
