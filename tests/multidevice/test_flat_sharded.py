"""flatten_small on 8 simulated CPU devices: sharded leaves stay whole, and are never gathered.

Run only in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(tests/test_sharding.py does that); skipped otherwise.
"""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

import gradflow as gf
from tests.multidevice.test_sharded_state import SPECS, grads_at, host_tree, put, step_fn

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")

MAX_SIZE = 16  # packs only the replicated "small" and "scalar" leaves


def make():
    return gf.flatten_small(gf.chain(gf.clip_by_global_norm(1.0), gf.adam(1e-2)), max_size=MAX_SIZE)


def test_large_leaves_state_shards_like_params_and_buffers_are_replicated():
    tx = make()
    params = put(host_tree(0))
    state = gf.init_sharded(tx, params)
    mu = state.inner_state[1][0].mu
    large = [k for k, (shape, _) in sorted(SPECS.items()) if int(np.prod(shape)) > MAX_SIZE]  # tree order
    assert len(mu["large"]) == len(large)
    for k, buf in zip(large, mu["large"]):
        assert buf.sharding.is_equivalent_to(params[k].sharding, params[k].ndim), k
    assert all(b.sharding.is_fully_replicated for b in mu["flat"])

    step = jax.jit(step_fn(tx), donate_argnums=(0, 1))
    ref_params = jax.device_put(host_tree(0), jax.devices()[0])
    ref_state = tx.init(ref_params)
    ref_step = jax.jit(step_fn(tx))
    for t in range(3):
        params, state = step(params, state, put(grads_at(t)))
        ref_params, ref_state = ref_step(ref_params, ref_state, jax.device_put(grads_at(t), jax.devices()[0]))
    chex.assert_trees_all_close(jax.device_get(params), jax.device_get(ref_params), rtol=2e-6, atol=2e-6)


def test_compiled_step_gathers_no_leaf():
    tx = make()
    params = put(host_tree(0))
    state = gf.init_sharded(tx, params)
    hlo = jax.jit(step_fn(tx), donate_argnums=(0, 1)).lower(params, state, put(grads_at(0))).compile().as_text()
    assert "all-gather" not in hlo
    assert "all-to-all" not in hlo


def test_a_sharded_small_leaf_is_refused():
    tx = gf.flatten_small(gf.adam(1e-2))  # default max_size would pack the sharded kernels
    params = put(host_tree(0))
    with pytest.raises(ValueError, match="flatten_small: leaf .* is sharded over several devices"):
        tx.init(params)
    with pytest.raises(ValueError, match="flatten_small: leaf .* is sharded over several devices"):
        gf.state_sharding(tx, params)
