"""state_sharding's device rules on 8 simulated CPU devices that a mutation audit found unpinned.

Run only in a subprocess with 8 devices (tests/test_sharding.py does that).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import SingleDeviceSharding

import gradflow as gf

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")


def test_uncommitted_leaf_follows_the_first_committed_single_device_leaf():
    # No NamedSharding: the devices are those of the first committed leaf, not of the first leaf.
    params = {"a": jnp.ones(3), "b": jax.device_put(jnp.ones(4), jax.devices()[3])}
    assert not params["a"].committed and params["a"].sharding.device_set != {jax.devices()[3]}
    sh = gf.state_sharding(gf.adam(1e-3), params)
    on3 = SingleDeviceSharding(jax.devices()[3])
    assert sh[0].mu["a"] == on3 and sh[0].mu["b"] == on3 and sh[0].count == on3
    state = gf.init_sharded(gf.adam(1e-3), params)
    assert all(x.sharding.device_set == {jax.devices()[3]} for x in jax.tree.leaves(state))
