"""Checkpoints of sharded state on 8 simulated CPU devices (run in a subprocess by tests/test_sharding.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gradflow as gf
from gradflow.checkpoint import load_state, save_state

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")


def test_load_state_puts_leaves_with_the_templates_shardings(tmp_path):
    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    kernel = jax.device_put(jnp.arange(64.0 * 32).reshape(64, 32), NamedSharding(mesh, P("data", "model")))
    params = {"kernel": kernel, "bias": jax.device_put(jnp.ones(32), NamedSharding(mesh, P("model")))}
    tx = gf.adam(1e-3)
    state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), gf.init_sharded(tx, params), params)[1]
    save_state(tmp_path / "s", state)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, gf.state_sharding(tx, params)
    )
    for name, like in {"the state": state, "ShapeDtypeStructs": abstract}.items():
        back = load_state(tmp_path / "s", like)
        for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(back), jax.tree.leaves(state)):
            where = f"like={name}, leaf {jax.tree_util.keystr(path)}"
            assert got.sharding.is_equivalent_to(want.sharding, want.ndim), f"{where}: {got.sharding}"
            assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), where
        assert back[0].mu["kernel"].addressable_shards[0].data.shape == (32, 8)
