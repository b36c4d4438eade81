"""State sharding: single-device checks here, and the 8-device suite in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, Sharding
from jax.sharding import PartitionSpec as P

import gradflow as gf

ROOT = Path(__file__).resolve().parent.parent


def test_state_sharding_on_one_device_is_that_device():
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    tx = gf.sgd(0.1, momentum=0.9)
    sh = gf.state_sharding(tx, params)
    assert jax.tree.structure(sh) == jax.tree.structure(jax.eval_shape(tx.init, params))
    state = gf.init_sharded(tx, params)
    assert jax.tree.map(lambda x: x.shape, state) == jax.tree.map(lambda x: x.shape, tx.init(params))


def test_state_sharding_rejects_mismatched_sharding_tree():
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    with pytest.raises(TypeError, match="params_sharding's tree structure"):
        gf.state_sharding(gf.sgd(0.1, momentum=0.9), params, {"w": params["w"].sharding})


def test_eight_device_suite_in_subprocess():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", GRADFLOW_MULTIDEVICE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(ROOT / "tests" / "multidevice")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize(
    "make",
    [
        lambda: gf.chain(gf.autoclip(history_size=128), gf.adam(0.1)),
        lambda: gf.skip_spikes(gf.adam(0.1), window=128),
    ],
)
def test_history_of_a_parameters_length_is_not_sharded_like_it(make):
    # Issue 13, item 11: a (128,) history for a one-leaf (128,) params tree is not a per-parameter buffer.
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(jax.devices()[:1], ("x",))
    sharded = NamedSharding(mesh, PartitionSpec("x"))
    params = jax.ShapeDtypeStruct((128,), jnp.float32, sharding=sharded)
    tx = make()
    shardings = gf.state_sharding(tx, params)
    state = jax.eval_shape(tx.init, jax.ShapeDtypeStruct((128,), jnp.float32))
    flat_state = jax.tree_util.tree_leaves_with_path(state)
    flat_sh = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    specs = {jax.tree_util.keystr(p): s.spec for (p, _), s in zip(flat_state, flat_sh)}
    history = [k for k in specs if "history" in k]
    moments = [k for k in specs if k.endswith((".mu", ".nu"))]
    assert history and moments, specs
    assert all(specs[k] == PartitionSpec() for k in history), specs
    assert all(specs[k] == PartitionSpec("x") for k in moments), specs


# ---------------------------------------------------------------------------------------------
# Where the per-parameter buffers sit: inside flatten_small wherever it is, and inside optax's
# masked states (optax.partition, multi_transform, masked), whose moment trees hold MaskedNode.

FLATTEN_SMALL_ANYWHERE = {
    "outermost": lambda: gf.flatten_small(gf.adam(1e-3), max_size=16),
    "in_protect": lambda: gf.protect(gf.flatten_small(gf.adam(1e-3), max_size=16), watch_loss=False),
    "first_in_chain": lambda: gf.chain(gf.flatten_small(gf.adam(1e-3), max_size=16), gf.scale(1.0)),
    "last_in_chain": lambda: gf.chain(gf.clip_by_global_norm(1.0), gf.flatten_small(gf.adam(1e-3), max_size=16)),
    "in_optax_chain": lambda: optax.chain(gf.flatten_small(gf.adam(1e-3), max_size=16)),
    "twice": lambda: gf.flatten_small(gf.flatten_small(gf.adam(1e-3), max_size=16), max_size=0),
}
LABELS = {"kernel": "adam", "bias": "sgd"}
MASKED = {
    "partition": lambda: optax.partition({"adam": gf.adamw(1e-3), "sgd": gf.sgd(1e-3, momentum=0.9)}, LABELS),
    "multi_transform": lambda: optax.multi_transform({"adam": gf.adam(1e-3), "sgd": gf.sgd(1e-3, momentum=0.9)}, LABELS),
    "masked": lambda: optax.masked(gf.adamw(1e-3), {"kernel": True, "bias": False}),
    "masked_in_protect": lambda: gf.protect(optax.masked(gf.adam(1e-3), {"kernel": True, "bias": False}), watch_loss=False),
}


def specs_by_path(shardings) -> dict:
    flat = jax.tree_util.tree_leaves_with_path(shardings, is_leaf=lambda x: isinstance(x, Sharding))
    return {jax.tree_util.keystr(p): s.spec for p, s in flat}


def param_of(path, params, large=()) -> str | None:
    """The parameter a state leaf at ``path`` is a buffer of: its last dict key, or its place in a
    flatten_small packed tree's ``large`` leaves; None for a leaf that belongs to no parameter."""
    keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
    if "large" in keys:
        return large[keys[len(keys) - 1 - keys[::-1].index("large") + 1]]
    return keys[-1] if keys and keys[-1] in params else None


@pytest.mark.parametrize("name", sorted(FLATTEN_SMALL_ANYWHERE))
def test_flatten_small_anywhere_shards_the_large_leaves_state(name):
    mesh = Mesh(jax.devices()[:1], ("x",))
    params = {
        "bias": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=NamedSharding(mesh, P())),
        "kernel": jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=NamedSharding(mesh, P("x", None))),
        "kernel_t": jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=NamedSharding(mesh, P(None, "x"))),
    }
    tx = FLATTEN_SMALL_ANYWHERE[name]()
    shardings = gf.state_sharding(tx, params)
    assert jax.tree.structure(shardings) == jax.tree.structure(jax.eval_shape(tx.init, params))
    specs = specs_by_path(shardings)
    state = jax.eval_shape(tx.init, params)
    large = [k for k, x in sorted(params.items()) if x.size > 16]
    per_param = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        k = param_of(path, params, large)
        want = params[k].sharding.spec if k and leaf.shape == params[k].shape else P()
        per_param += want != P()
        assert specs[jax.tree_util.keystr(path)] == want, (jax.tree_util.keystr(path), specs)
    assert per_param == 4, specs  # mu and nu of both kernels


@pytest.mark.parametrize("name", sorted(MASKED))
def test_moments_holding_masked_nodes_shard_like_their_parameters(name):
    mesh = Mesh(jax.devices()[:1], ("x",))
    params = {
        "kernel": jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=NamedSharding(mesh, P("x", None))),
        "bias": jax.ShapeDtypeStruct((32,), jnp.float32, sharding=NamedSharding(mesh, P("x"))),
    }
    tx = MASKED[name]()
    shardings = gf.state_sharding(tx, params)
    state = jax.eval_shape(tx.init, params)
    assert jax.tree.structure(shardings) == jax.tree.structure(state)
    specs = specs_by_path(shardings)
    moments = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        k = param_of(path, params)
        want = params[k].sharding.spec if k and leaf.shape == params[k].shape else P()
        moments += want != P()
        assert specs[jax.tree_util.keystr(path)] == want, (jax.tree_util.keystr(path), specs)
    assert moments >= 2, specs
    real = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype), params)
    assert jax.tree.structure(gf.init_sharded(tx, real)) == jax.tree.structure(tx.init(real))
