"""What ``protect`` costs per step: compile and step time against the standard recipe it wraps.

One run of a ``jax.jit`` step that computes its gradients (one cheap kernel per leaf) and donates
the parameters and state, as a training step does, the recipes' steps taken in turn, on
one 20M-parameter leaf and on 300 small leaves of varied shapes (8…200 × 8…200):

  standard                          optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  protect(standard)                 gf.protect(standard)
  protect(standard, bound off)      gf.protect(standard, max_update_ratio=None)

Run:  python benchmarks/protect_overhead.py     (about 6 minutes on 2 CPU cores; the
      300-leaf compiles dominate)
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradflow as gf


def standard():
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))


def compile_step(tx, params) -> tuple:
    """(compile seconds, compiled step, its arguments) of one jitted training-like step.

    The step computes its gradients (``x·c``, one kernel per leaf, materialised as a backward
    pass materialises its outputs) and the parameters and state are donated, as in a training
    step. (Gradients passed in as arguments would be measured unfairly: an argument's buffer
    is read-only, so protect's skip would copy every small gradient into the ``lax.cond``.)
    """
    params = jax.tree.map(jnp.copy, params)
    state = tx.init(params)
    x = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

    def step(p, s, x, c, value):
        g = jax.lax.optimization_barrier(jax.tree.map(lambda a: a * c, x))
        u, s = tx.update(g, s, p, value=value)
        return optax.apply_updates(p, u), s

    args = (params, state, x, jnp.float32(1.0), jnp.float32(1.0))
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*args).compile()
    return time.perf_counter() - t0, compiled, args


def time_steps(compiled: dict, repeats: int = 20) -> dict:
    """Median step seconds of each compiled step, taking the steps in turn (a busy machine slows all alike).

    Each entry of ``compiled`` is (step, its arguments); the parameters and state are donated, so
    every step's outputs replace them there.
    """
    times: dict = {name: [] for name in compiled}
    for _ in range(repeats + 1):  # the first round warms up
        for name, (fn, args) in compiled.items():
            t0 = time.perf_counter()
            params, state = jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
            compiled[name] = (fn, (params, state, *args[2:]))
    return {name: float(np.median(t[1:])) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)  # no options; --help says what it runs
    rng = np.random.default_rng(0)
    trees = {
        "one 20M leaf": {"w": jnp.ones((20_000_000,), jnp.float32)},
        "300 varied leaves": {
            f"p{i}": jnp.ones((int(rng.integers(8, 200)), int(rng.integers(8, 200))), jnp.float32) for i in range(300)
        },
    }
    recipes = {
        "standard": standard,
        "protect(standard)": lambda: gf.protect(standard()),
        "protect(standard, bound off)": lambda: gf.protect(standard(), max_update_ratio=None),
    }
    print(f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].platform}")
    print("| tree | recipe | compile (s) | step (ms) |\n|---|---|---|---|")
    for tree_name, params in trees.items():
        compile_s, compiled = {}, {}
        for name, build in recipes.items():
            compile_s[name], fn, args = compile_step(build(), params)
            compiled[name] = (fn, args)
        step_s = time_steps(compiled)
        for name in recipes:
            print(f"| {tree_name} | {name} | {compile_s[name]:.2f} | {step_s[name] * 1e3:.2f} |", flush=True)
        del compiled


if __name__ == "__main__":
    main()
