"""Document 004 §4.1: a 10→5→1 ReLU network on x ~ N(0, 1)^(100×10), y ~ N(0, 1), MSE, SGD lr 0.01.

The document's PyTorch loop in JAX + gradflow: 1000 full-batch epochs of
``gf.sgd(0.01)``, printing the loss every 100 epochs, with PyTorch's
``nn.Linear`` initialisation. The targets are pure noise, so the loss can only
fall from its start towards what 5 hidden units can memorise of 100 points.

Run:  python examples/doc004_network.py
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf


def init_linear(key: jax.Array, fan_in: int, fan_out: int) -> dict:
    """PyTorch's ``nn.Linear``: weight and bias ~ U(±1/√fan_in)."""
    bound = 1.0 / np.sqrt(fan_in)
    kw, kb = jax.random.split(key)
    return {
        "w": jax.random.uniform(kw, (fan_in, fan_out), minval=-bound, maxval=bound),
        "b": jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound),
    }


def loss_fn(params: list[dict], x: jax.Array, y: jax.Array) -> jax.Array:
    h = jax.nn.relu(x @ params[0]["w"] + params[0]["b"])
    return jnp.mean((h @ params[1]["w"] + params[1]["b"] - y) ** 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="full-batch epochs (default 1000, the document's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the initialisation (default 0)")
    args = parser.parse_args(argv)

    kx, ky, k1, k2 = jax.random.split(jax.random.PRNGKey(args.seed), 4)
    x = jax.random.normal(kx, (100, 10))
    y = jax.random.normal(ky, (100, 1))
    params = [init_linear(k1, 10, 5), init_linear(k2, 5, 1)]
    tx = gf.sgd(learning_rate=0.01)
    opt_state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return gf.apply_updates(params, updates), opt_state, loss

    losses = []
    for epoch in range(args.steps):
        params, opt_state, loss = train_step(params, opt_state, x, y)
        losses.append(loss)
        if epoch % 100 == 0:
            print(f"Epoch: {epoch}, Loss: {float(loss):.6f}")
    losses = [float(v) for v in losses]
    final = float(loss_fn(params, x, y))
    print(f"final loss {final:.6f} (started at {losses[0]:.6f})")
    return {"losses": losses, "final_loss": final}


if __name__ == "__main__":
    main()
