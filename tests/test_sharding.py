"""State sharding: single-device checks here, and the 8-device suite in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

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
