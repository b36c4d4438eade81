"""Document 001 §4: linear regression y = 3x + 2 + 0.5·noise, fitted with Adam (lr 0.01, 1000 steps).

The document's TensorFlow code, in JAX + gradflow: 100 points x ~ N(0, 1) drawn with
NumPy's seed 1, one dense layer (Keras' Glorot-uniform kernel, zero bias), mean
squared error, ``adam(0.01)`` for 1000 full-batch steps. It prints the learned
slope (≈ 3) and intercept (≈ 2).

Run:  python examples/doc001_linear_regression.py
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf


def make_data(seed: int, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The document's data: ``np.random.seed(seed)``, X ~ N(0, 1), y = 3X + 2 + 0.5·N(0, 1)."""
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 1).astype(np.float32)
    y = (3 * x + 2 + rng.randn(n, 1) * 0.5).astype(np.float32)
    return x, y


def init_dense(key: jax.Array) -> dict:
    """Keras ``Dense(1)`` on one input: kernel ~ U(±√(6/(1+1))), bias 0."""
    limit = np.sqrt(6.0 / 2.0)
    return {"w": jax.random.uniform(key, (1, 1), minval=-limit, maxval=limit), "b": jnp.zeros((1,))}


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="full-batch Adam steps (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the data and the initial weights (default 1, the document's)")
    args = parser.parse_args(argv)

    x, y = make_data(args.seed)
    params = init_dense(jax.random.PRNGKey(args.seed))
    tx = gf.adam(learning_rate=0.01)
    opt_state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return gf.apply_updates(params, updates), opt_state, loss

    report_every = max(1, args.steps // 5)
    for step in range(args.steps):
        params, opt_state, loss = train_step(params, opt_state, x, y)
        if step % report_every == 0:
            print(f"step {step:4d}  loss {float(loss):.4f}")
    final_loss = float(loss_fn(params, x, y))
    slope, intercept = float(params["w"][0, 0]), float(params["b"][0])
    ols_slope, ols_intercept = np.polyfit(x[:, 0], y[:, 0], 1)
    print(f"Loss: {final_loss:.4f}")
    print(f"learned slope {slope:.4f} (true 3, least squares {ols_slope:.4f})")
    print(f"learned intercept {intercept:.4f} (true 2, least squares {ols_intercept:.4f})")
    return {"slope": slope, "intercept": intercept, "loss": final_loss}


if __name__ == "__main__":
    main()
