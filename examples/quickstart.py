"""Linear regression y = 3x + 2 + 0.5·noise (documents 001 and 004) trained with gradflow's SGD.

Run:  python examples/quickstart.py
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import gradflow as gf


def make_data(key: jax.Array, n: int = 100) -> tuple[jax.Array, jax.Array]:
    """The documents' data set: x ~ U(0, 1)·2, y = 3x + 2 + 0.5·N(0, 1)."""
    kx, kn = jax.random.split(key)
    x = 2.0 * jax.random.uniform(kx, (n, 1))
    y = 3.0 * x + 2.0 + 0.5 * jax.random.normal(kn, (n, 1))
    return x, y


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    pred = x @ params["w"] + params["b"]
    return jnp.mean((pred - y) ** 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="gradient steps (default 1000)")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)

    x, y = make_data(jax.random.PRNGKey(args.seed))
    params = {"w": jnp.zeros((1, 1)), "b": jnp.zeros((1,))}
    tx = gf.sgd(args.lr)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gf.apply_updates(params, updates), state, loss

    report_every = max(1, args.steps // 10)
    for i in range(args.steps):
        params, state, loss = step(params, state)
        if i % report_every == 0 or i == args.steps - 1:
            print(f"step {i:5d}  loss {float(loss):.4f}")
    w, b = float(params["w"][0, 0]), float(params["b"][0])
    print(f"learned w = {w:.3f} (true 3), b = {b:.3f} (true 2)")
    return {"w": w, "b": b, "loss": float(loss)}


if __name__ == "__main__":
    main()
