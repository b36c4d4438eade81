"""Data-parallel + parameter-sharded (FSDP-style) training with a gradflow chain.

Every device of a 1-D mesh holds 1/N of each batch and 1/N of every large
parameter and of its optimizer state (Adam's two moments). The optimizer is
``chain(clip_by_global_norm(1.0), adam(3e-3))``: the clipping norm is the true
norm across shards (one scalar all-reduce), and the state is created already
sharded with ``gradflow.init_sharded``. Parameter and state buffers are donated.

With one CPU device visible, the script asks XLA for 8 simulated host devices,
so it runs anywhere:  python examples/data_parallel.py [--steps 200]
"""

from __future__ import annotations

import argparse
import functools
import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

import gradflow as gf  # noqa: E402

SIZES = (32, 256, 256, 10)


def param_spec(shape: tuple, n: int) -> P:
    """Shard a leaf's first axis over the mesh when it divides evenly; replicate it otherwise."""
    return P("fsdp", *([None] * (len(shape) - 1))) if shape and shape[0] % n == 0 and shape[0] >= n else P()


def init_params(key: jax.Array) -> dict:
    params = {}
    for i, (m, n) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        key, sub = jax.random.split(key)
        params[f"w{i}"] = jax.random.normal(sub, (m, n)) * np.sqrt(2.0 / m)
        params[f"b{i}"] = jnp.zeros((n,))
    return params


def loss_fn(params: dict, x: jax.Array, labels: jax.Array) -> jax.Array:
    h = x
    layers = len(SIZES) - 1
    for i in range(layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < layers - 1:
            h = jax.nn.relu(h)
    logp = jax.nn.log_softmax(h)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def make_batch(rng: np.random.Generator, batch: int, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, SIZES[-1], batch)
    x = centers[labels] + rng.standard_normal((batch, SIZES[0]))
    return x.astype(np.float32), labels.astype(np.int32)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    parser.add_argument("--batch", type=int, default=256, help="global batch size, divisible by the device count")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)

    devices = jax.devices()
    n = len(devices)
    mesh = Mesh(np.array(devices), ("fsdp",))
    params = init_params(jax.random.PRNGKey(args.seed))
    param_sharding = {k: NamedSharding(mesh, param_spec(v.shape, n)) for k, v in params.items()}
    params = jax.device_put(params, param_sharding)
    batch_sharding = NamedSharding(mesh, P("fsdp"))

    tx = gf.chain(gf.clip_by_global_norm(1.0), gf.adam(3e-3))
    state_sharding = gf.state_sharding(tx, params)
    opt_state = gf.init_sharded(tx, params)

    @functools.partial(
        jax.jit,
        in_shardings=(param_sharding, state_sharding, batch_sharding, batch_sharding),
        out_shardings=(param_sharding, state_sharding, NamedSharding(mesh, P())),
        donate_argnums=(0, 1),
    )
    def train_step(params, opt_state, x, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return gf.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(args.seed)
    centers = 0.35 * rng.standard_normal((SIZES[-1], SIZES[0]))
    losses = []
    for t in range(args.steps):
        x, labels = make_batch(rng, args.batch, centers)
        params, opt_state, loss = train_step(params, opt_state, jax.device_put(x, batch_sharding), jax.device_put(labels, batch_sharding))
        losses.append(float(loss))
        if t % max(1, args.steps // 5) == 0 or t == args.steps - 1:
            print(f"step {t:4d}  loss {losses[-1]:.4f}")

    w0 = params["w0"]
    adam_mu = opt_state[1][0].mu["w0"]  # chain(clip, adam): adam's chain, its scale_by_adam state
    print(f"{n} devices; w0 {w0.shape} sharded as {w0.sharding.spec}, one shard {w0.addressable_shards[0].data.shape}")
    print(f"Adam's first moment of w0 sharded as {adam_mu.sharding.spec}, one shard {adam_mu.addressable_shards[0].data.shape}")
    return {"devices": n, "first_loss": losses[0], "final_loss": losses[-1]}


if __name__ == "__main__":
    main()
