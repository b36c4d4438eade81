"""Document 002 §4: one scalar θ, prediction θ·x with a fresh x ~ N(0, 1) each step, MSE against 1.0.

The document trains it for 1000 steps with three of PyTorch's optimizers; here each
is gradflow's equivalent, fed the same θ₀ and the same x sequence:

  Adagrad(lr=0.01, lr_decay=0.01)  →  gf.adagrad(0.01, lr_decay=0.01)
  RMSprop (the document's ``alpha=0.01, beta=0.9`` mixes up PyTorch's names; read as
           learning rate 0.01 and decay 0.9)  →  gf.rmsprop(0.01, decay=0.9, eps=1e-8)
  Adam(lr=0.01, betas=(0.9, 0.999), eps=1e-8)  →  gf.adam(0.01, b1=0.9, b2=0.999, eps=1e-8)

The expected loss is E[(θx − 1)²] = θ² + 1, so every optimizer should drive θ
towards 0 and the loss towards 1 (the noise floor); Adagrad with lr_decay moves
the slowest, as its step α/(1 + t·lr_decay)/√G shrinks twice over.

Run:  python examples/doc002_scalar_theta.py
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp

import gradflow as gf


def loss_fn(theta: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.mean((theta * x - 1.0) ** 2)


def optimizers() -> dict[str, gf.GradientTransformation]:
    return {
        "Adagrad(lr 0.01, lr_decay 0.01)": gf.adagrad(0.01, lr_decay=0.01),
        "RMSprop(lr 0.01, decay 0.9)": gf.rmsprop(0.01, decay=0.9, eps=1e-8),
        "Adam(lr 0.01)": gf.adam(0.01, b1=0.9, b2=0.999, eps=1e-8),
    }


def train(tx: gf.GradientTransformation, theta0: jax.Array, xs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """All steps in one ``lax.scan``; returns the final θ and the loss of every step."""

    @functools.partial(jax.jit, donate_argnums=(0,))
    def run(theta, xs):
        def step(carry, x):
            theta, state = carry
            loss, grad = jax.value_and_grad(loss_fn)(theta, x)
            updates, state = tx.update(grad, state, theta)
            return (gf.apply_updates(theta, updates), state), loss

        (theta, _), losses = jax.lax.scan(step, (theta, tx.init(theta)), xs)
        return theta, losses

    return run(theta0, xs)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps per optimizer (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of θ₀ and of the x sequence (default 0)")
    args = parser.parse_args(argv)

    k_theta, k_x = jax.random.split(jax.random.PRNGKey(args.seed))
    theta0 = jax.random.normal(k_theta, (1,))
    xs = jax.random.normal(k_x, (args.steps, 1))
    tail = max(1, args.steps // 10)
    print(f"θ₀ = {float(theta0[0]):+.4f}; expected loss θ² + 1 is smallest (1.0) at θ = 0")
    out = {}
    for name, tx in optimizers().items():
        theta, losses = train(tx, jnp.array(theta0), xs)
        theta = float(theta[0])
        mean_loss = float(jnp.mean(losses[-tail:]))
        print(f"{name:32s} θ = {theta:+.4f}   θ² + 1 = {theta**2 + 1:.4f}   mean loss of the last {tail} steps {mean_loss:.4f}")
        out[name] = {"theta": theta, "expected_loss": theta**2 + 1, "mean_loss": mean_loss}
    return {"theta0": float(theta0[0]), "results": out}


if __name__ == "__main__":
    main()
