"""What ``protect`` costs per step: compile and step time against the standard recipe it wraps.

One run, ``jax.jit`` with the parameter and state buffers donated (as a training step does), on
one 20M-parameter leaf and on 300 small leaves of varied shapes (8…200 × 8…200):

  standard                          optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  protect(standard)                 gf.protect(standard)
  protect(standard, bound off)      gf.protect(standard, max_update_ratio=None)

Run:  python benchmarks/protect_overhead.py     (about 6 minutes on 2 CPU cores; the
      300-leaf compiles dominate)
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradflow as gf


def standard():
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))


def time_step(tx, params, repeats: int = 20) -> tuple[float, float]:
    """(compile seconds, median step seconds) of one jitted, donated protect-style step."""
    params = jax.tree.map(jnp.copy, params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
    state = tx.init(params)
    loss = jnp.float32(1.0)

    def step(p, s, g, value):
        u, s = tx.update(g, s, p, value=value)
        return optax.apply_updates(p, u), s

    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads, loss).compile()
    compile_s = time.perf_counter() - t0
    params, state = compiled(params, state, grads, loss)
    jax.block_until_ready(params)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        params, state = compiled(params, state, grads, loss)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t0)
    return compile_s, float(np.median(times))


def main() -> None:
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
        for name, build in recipes.items():
            compile_s, step_s = time_step(build(), params)
            print(f"| {tree_name} | {name} | {compile_s:.2f} | {step_s * 1e3:.2f} |", flush=True)


if __name__ == "__main__":
    main()
