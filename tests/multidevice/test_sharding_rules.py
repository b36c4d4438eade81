"""state_sharding's rules on 8 simulated CPU devices: buffers inside flatten_small and optax
masks shard like their parameters, uncommitted leaves, parameters on two device sets.

Run only in a subprocess with 8 devices (tests/test_sharding.py does that).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gradflow as gf
from tests.test_sharding import FLATTEN_SMALL_ANYWHERE, MASKED, param_of

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")


def mesh_2x4() -> Mesh:
    return Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))


def assert_shards_like(state, params, large=()) -> int:
    """Each state leaf that is a parameter's buffer has that parameter's sharding and per-device shard
    shape; every other leaf is one full copy on each of the 8 devices. Returns the number of buffers."""
    devices = set(jax.devices()[:8])
    buffers = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        where = jax.tree_util.keystr(path)
        assert leaf.sharding.device_set == devices, (where, leaf.sharding)
        k = param_of(path, params, large)
        if k and leaf.shape == params[k].shape and not params[k].sharding.is_fully_replicated:
            buffers += 1
            assert leaf.sharding.is_equivalent_to(params[k].sharding, leaf.ndim), (where, leaf.sharding)
            assert leaf.addressable_shards[0].data.shape == params[k].addressable_shards[0].data.shape, where
        else:
            assert leaf.sharding.is_fully_replicated, (where, leaf.sharding)
    return buffers


def assert_step_gathers_nothing(tx, params, state):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gf.apply_updates(params, updates), state

    grads = jax.tree.map(lambda x: x * 0.5, params)
    hlo = jax.jit(step, donate_argnums=(1,)).lower(params, state, grads).compile().as_text()
    assert "all-gather" not in hlo and "all-to-all" not in hlo
    new_params, new_state = jax.jit(step)(params, state, grads)
    return assert_shards_like(new_state, params, sorted(k for k in params if params[k].size > 16))


@pytest.mark.parametrize("name", sorted(FLATTEN_SMALL_ANYWHERE))
def test_flatten_small_anywhere_on_eight_devices(name):
    mesh = mesh_2x4()
    params = {
        "bias": jax.device_put(jnp.ones(3), NamedSharding(mesh, P())),
        "kernel": jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, P("data", "model"))),
        "kernel_t": jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, P("model", "data"))),
    }
    tx = FLATTEN_SMALL_ANYWHERE[name]()
    state = gf.init_sharded(tx, params)
    assert assert_shards_like(state, params, ["kernel", "kernel_t"]) == 4
    assert assert_step_gathers_nothing(tx, params, state) == 4


@pytest.mark.parametrize("name", sorted(MASKED))
def test_masked_states_on_eight_devices(name):
    mesh = mesh_2x4()
    params = {
        "kernel": jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, P("data", "model"))),
        "bias": jax.device_put(jnp.ones(32), NamedSharding(mesh, P("model"))),
    }
    tx = MASKED[name]()
    state = gf.init_sharded(tx, params)
    assert assert_shards_like(state, params) >= 2
    assert assert_step_gathers_nothing(tx, params, state) >= 2


def test_an_uncommitted_leaf_follows_the_mesh_on_eight_devices():
    mesh = mesh_2x4()
    kernel = NamedSharding(mesh, P("data", "model"))
    params = {"bias": jnp.ones(3), "kernel": jax.device_put(jnp.ones((64, 32)), kernel)}  # bias: uncommitted
    assert not params["bias"].committed
    tx = gf.adam(1e-3)
    shardings = gf.state_sharding(tx, params)
    assert shardings[0].count == NamedSharding(mesh, P())
    assert shardings[0].mu["kernel"] == kernel
    assert shardings[0].mu["bias"] == NamedSharding(mesh, P())  # moved onto the mesh, as jax.jit moves it
    state = gf.init_sharded(tx, params)
    assert state[0].mu["kernel"].addressable_shards[0].data.shape == (32, 8)
    assert all(x.sharding.device_set == set(jax.devices()[:8]) for x in jax.tree.leaves(state))


@pytest.mark.parametrize(
    "other, devices",
    [
        (lambda: jax.device_put(jnp.ones(3), jax.devices()[7]), "[7]"),  # committed to one device
        (lambda: jax.device_put(jnp.ones(4), NamedSharding(Mesh(np.array(jax.devices()[4:8]), ("y",)), P("y"))),
         "[4, 5, 6, 7]"),
    ],
)
def test_parameters_on_different_device_sets_are_refused_on_eight_devices(other, devices):
    mesh = Mesh(np.array(jax.devices()[:4]), ("x",))
    params = {"kernel": jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, P("x"))), "other": other()}
    with pytest.raises(ValueError, match="state_sharding: .*different device sets") as err:
        gf.state_sharding(gf.adam(1e-3), params)
    assert "[0, 1, 2, 3]" in str(err.value) and devices in str(err.value), str(err.value)
