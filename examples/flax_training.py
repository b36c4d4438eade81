"""Training a flax model with a gradflow optimizer, through ``flax.nnx.Optimizer``.

A gradflow transform is a plain ``(init, update)`` pair, so ``nnx.Optimizer``
takes it where it would take an optax one; extra keyword arguments given to
``optimizer.update`` (here ``value=loss``, which the spike guard reads) reach
every member of the chain. The step is a ``jax.jit`` over the split model and
optimizer state with that state's buffers donated (``donate_argnums``), so
parameters and moments are updated in place.

The model: a 64→128→128→10 MLP on scikit-learn's bundled digits.

Run:  python examples/flax_training.py
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import gradflow as gf


class MLP(nnx.Module):
    def __init__(self, sizes: list[int], rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(m, n, rngs=rngs) for m, n in zip(sizes[:-1], sizes[1:])])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def loss_fn(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(model(x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def load_digits_split(seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x = (digits.data[order] / 16.0).astype(np.float32)
    y = digits.target[order].astype(np.int32)
    n_test = len(y) // 5
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and batches (default 0)")
    parser.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64)")
    args = parser.parse_args(argv)

    x_train, y_train, x_test, y_test = load_digits_split(args.seed)
    model = MLP([64, 128, 128, 10], rngs=nnx.Rngs(args.seed))
    schedule = gf.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=3e-3, warmup_steps=max(1, args.steps // 10), decay_steps=args.steps
    )
    tx = gf.skip_spikes(gf.chain(gf.clip_by_global_norm(1.0), gf.adam(schedule)))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    graphdef, state = nnx.split((model, optimizer))

    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_step(state, x, y):
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        optimizer.update(model, grads, value=loss)
        return nnx.state((model, optimizer)), loss

    @jax.jit
    def accuracy(state, x, y):
        model, _ = nnx.merge(graphdef, state)
        return jnp.mean(jnp.argmax(model(x), -1) == y)

    rng = np.random.default_rng(args.seed)
    report_every = max(1, args.steps // 5)
    for step in range(args.steps):
        idx = rng.integers(0, len(x_train), args.batch_size)
        state, loss = train_step(state, x_train[idx], y_train[idx])
        if step % report_every == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {float(loss):.4f}")
    test_accuracy = float(accuracy(state, x_test, y_test))
    print(f"test accuracy {100 * test_accuracy:.1f}% on {len(y_test)} held-out digits")
    _, optimizer = nnx.merge(graphdef, state)
    stats = gf.stats(optimizer.opt_state)  # inside nnx each leaf sits in a Variable: keys end in /value
    clipped = int(next(v for k, v in stats.items() if "clip_by_global_norm/num_clipped" in k))
    skipped = int(next(v for k, v in stats.items() if k.startswith("skip_spikes/num_skipped")))
    print(f"gradient clipped on {clipped} steps, spikes skipped on {skipped} steps")
    return {"loss": float(loss), "test_accuracy": test_accuracy, "clipped": clipped, "skipped": skipped}


if __name__ == "__main__":
    main()
