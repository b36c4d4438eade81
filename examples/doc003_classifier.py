"""Document 003 §4: a 10→5→3 ReLU classifier trained with SGD (lr 0.01, momentum 0.9) for 10 epochs.

The document's PyTorch code leaves the model's data loader undefined; here it is
600 points x ~ N(0, 1)^10 labelled by a fixed random linear teacher (3 classes),
shuffled into mini-batches of 32 each epoch, with cross-entropy loss and
``gf.sgd(0.01, momentum=0.9)`` (PyTorch's momentum form, as the document uses).
Layers start with PyTorch's ``nn.Linear`` initialisation. The document also puts
a ReLU on the output logits; that only removes negative logits, so it is off by
default and ``--relu-output`` restores it.

Run:  python examples/doc003_classifier.py
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


def make_data(key: jax.Array, n: int = 600) -> tuple[jax.Array, jax.Array]:
    kx, kt = jax.random.split(key)
    x = jax.random.normal(kx, (n, 10))
    teacher = jax.random.normal(kt, (10, 3))
    return x, jnp.argmax(x @ teacher, axis=-1)


def forward(params: list[dict], x: jax.Array, relu_output: bool) -> jax.Array:
    x = jax.nn.relu(x @ params[0]["w"] + params[0]["b"])
    x = x @ params[1]["w"] + params[1]["b"]
    return jax.nn.relu(x) if relu_output else x


def loss_fn(params, x, y, relu_output):
    logp = jax.nn.log_softmax(forward(params, x, relu_output))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="epochs (default 10, the document's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and shuffling (default 0)")
    parser.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default 32)")
    parser.add_argument("--relu-output", action="store_true", help="apply ReLU to the logits, as the document does")
    args = parser.parse_args(argv)

    k_data, k1, k2, k_shuffle = jax.random.split(jax.random.PRNGKey(args.seed), 4)
    x, y = make_data(k_data)
    params = [init_linear(k1, 10, 5), init_linear(k2, 5, 3)]
    tx = gf.sgd(learning_rate=0.01, momentum=0.9)
    opt_state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb, args.relu_output)
        updates, opt_state = tx.update(grads, opt_state, params)
        return gf.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def evaluate(params):
        logits = forward(params, x, args.relu_output)
        return loss_fn(params, x, y, args.relu_output), jnp.mean(jnp.argmax(logits, -1) == y)

    n_batches = len(x) // args.batch_size
    loss0, acc0 = evaluate(params)
    print(f"before training  loss {float(loss0):.4f}  accuracy {100 * float(acc0):.1f}%")
    history = []
    for epoch in range(args.steps):
        order = jax.random.permutation(jax.random.fold_in(k_shuffle, epoch), len(x))
        for i in range(n_batches):
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            params, opt_state, _ = train_step(params, opt_state, x[idx], y[idx])
        loss, acc = (float(v) for v in evaluate(params))
        history.append(loss)
        print(f"epoch {epoch:2d}  loss {loss:.4f}  accuracy {100 * acc:.1f}%")
    return {"initial_loss": float(loss0), "losses": history, "accuracy": acc}


if __name__ == "__main__":
    main()
