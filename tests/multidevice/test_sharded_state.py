"""Sharded optimizer state on 8 simulated CPU devices.

Run only in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(tests/test_sharding.py does that); skipped otherwise.
"""

from __future__ import annotations

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gradflow as gf
from tests import catalog

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")

SPECS = {
    "kernel": ((64, 24), P("d", None)),
    "kernel_t": ((64, 24), P(None, "d")),  # same shape, other sharding: reduced in one group with kernel
    "proj": ((24, 32), P(None, "d")),
    "bias": ((32,), P("d")),
    "small": ((3,), P()),
    "scalar": ((), P()),
}
TRANSFORMS = {**catalog.OPTIMIZERS, **catalog.CLIPPERS, **catalog.GUARDS}


@functools.cache
def mesh() -> Mesh:
    return Mesh(np.array(jax.devices()[:8]), ("d",))


def shardings() -> dict:
    return {k: NamedSharding(mesh(), spec) for k, (_, spec) in SPECS.items()}


def host_tree(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(shape).astype(np.float32) for k, (shape, _) in SPECS.items()}


def put(tree: dict) -> dict:
    return jax.tree.map(jax.device_put, tree, shardings())


def grads_at(t: int) -> dict:
    g = host_tree(100 + t)
    if t == 1:  # a spike, so clippers act
        g = {k: 80.0 * v for k, v in g.items()}
    return g


def per_param_leaves(state, params) -> list:
    """The state's per-parameter buffers: subtrees shaped like params."""
    treedef = jax.tree.structure(params)
    shapes = [x.shape for x in jax.tree.leaves(params)]

    def like(node):
        return jax.tree.structure(node) == treedef and [getattr(x, "shape", None) for x in jax.tree.leaves(node)] == shapes

    found = []
    jax.tree.map(lambda n: found.append(n) if like(n) else None, state, is_leaf=like)
    return found


def assert_state_sharded_like_params(state, params):
    buffers = per_param_leaves(state, params)
    for buf in buffers:
        for k in params:
            want = params[k].sharding
            got = buf[k].sharding
            assert got.is_equivalent_to(want, params[k].ndim), f"{k}: {got} vs {want}"
    for leaf in jax.tree.leaves(state):
        if leaf.ndim == 0:
            assert leaf.sharding.is_fully_replicated
    return len(buffers)


def step_fn(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gf.apply_updates(params, updates), state

    return step


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_state_shards_like_params_and_matches_single_device(name):
    tx = TRANSFORMS[name]()
    params = put(host_tree(0))
    state = gf.init_sharded(tx, params)
    assert_state_sharded_like_params(state, params)

    step = jax.jit(step_fn(tx), donate_argnums=(0, 1))
    ref_params = jax.device_put(host_tree(0), jax.devices()[0])
    ref_state = tx.init(ref_params)
    ref_step = jax.jit(step_fn(tx))
    for t in range(3):
        params, state = step(params, state, put(grads_at(t)))
        ref_params, ref_state = ref_step(ref_params, ref_state, jax.device_put(grads_at(t), jax.devices()[0]))
    assert_state_sharded_like_params(state, params)
    for k in params:
        assert params[k].sharding.is_equivalent_to(shardings()[k], params[k].ndim)
    chex.assert_trees_all_close(jax.device_get(params), jax.device_get(ref_params), rtol=2e-6, atol=2e-6)
    chex.assert_trees_all_close(jax.device_get(state), jax.device_get(ref_state), rtol=2e-6, atol=2e-6)


def test_init_sharded_from_shape_dtype_structs_never_builds_full_state():
    tx = catalog.OPTIMIZERS["sgd_momentum"]()
    abstract = {k: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=shardings()[k]) for k, (shape, _) in SPECS.items()}
    state = gf.init_sharded(tx, abstract)
    (buf,) = per_param_leaves(state, abstract)
    kernel = buf["kernel"]
    assert kernel.sharding.spec == P("d", None)
    assert {s.data.shape for s in kernel.addressable_shards} == {(8, 24)}


def test_global_norm_is_the_true_norm_across_shards():
    tree = host_tree(3)
    want = np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in tree.values()))
    got = jax.jit(gf.global_norm)(put(tree))
    np.testing.assert_allclose(float(got), want, rtol=1e-6)


def test_global_norm_inside_shard_map_with_axis_name():
    tree = {"a": host_tree(4)["kernel"], "b": host_tree(5)["bias"]}
    specs = {"a": P("d", None), "b": P("d")}
    want = np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in tree.values()))

    def local(t):
        return gf.global_norm(t, axis_name="d"), gf.global_norm(t)[None]

    f = jax.jit(jax.shard_map(local, mesh=mesh(), in_specs=(specs,), out_specs=(P(), P("d")), check_vma=False))
    with_axis, without = f(tree)
    np.testing.assert_allclose(float(with_axis), want, rtol=1e-6)
    assert not np.allclose(np.asarray(without), want)  # a per-shard norm is not the global one


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_compiled_step_moves_no_full_leaf_between_devices(name):
    tx = TRANSFORMS[name]()
    params = put(host_tree(0))
    state = gf.init_sharded(tx, params)
    hlo = jax.jit(step_fn(tx), donate_argnums=(0, 1)).lower(params, state, put(grads_at(0))).compile().as_text()
    assert "all-gather" not in hlo
    assert "all-to-all" not in hlo
    for shape in re.findall(r"= (\S+) all-reduce(?:-start)?\(", hlo):
        assert re.fullmatch(r"\(?([a-z0-9]+\[\],? ?)+\)?", shape), f"non-scalar all-reduce {shape}"


AXIS_TRANSFORMS = {
    "clip": lambda ax: gf.clip(1.0, axis_name=ax),
    "clip_by_norm": lambda ax: gf.clip_by_norm(5.0, axis_name=ax),
    "clip_by_global_norm": lambda ax: gf.clip_by_global_norm(5.0, axis_name=ax),
    "clip_by_block_rms": lambda ax: gf.clip_by_block_rms(0.5, axis_name=ax),
    "autoclip": lambda ax: gf.autoclip(50.0, axis_name=ax),
    "zclip": lambda ax: gf.zclip(warmup_steps=2, axis_name=ax),
    "adagc": lambda ax: gf.adagc(warmup_steps=2, axis_name=ax),
    "apply_if_finite": lambda ax: gf.apply_if_finite(gf.sgd(0.1), 2, axis_name=ax),
    "skip_spikes": lambda ax: gf.skip_spikes(gf.sgd(0.1), threshold=1.0, window=4, min_samples=2, axis_name=ax),
    "monitor": lambda ax: gf.monitor(gf.sgd(0.1), axis_name=ax),
    "scale_by_trust_ratio": lambda ax: gf.scale_by_trust_ratio(0.5, weight_decay=0.01, axis_name=ax),
    "clip_relative_update": lambda ax: gf.clip_relative_update(0.05, vectors=True, axis_name=ax),
    # skips by a select inside shard_map and by a lax.cond under jit: the two must agree
    "protect": lambda ax: gf.protect(gf.sgd(0.1), watch_loss=False, window=4, min_samples=2, axis_name=ax),
}


@pytest.mark.parametrize("name", sorted(AXIS_TRANSFORMS))
def test_norms_inside_shard_map_with_axis_name_equal_global_ones(name):
    """Every leaf split over "d" inside shard_map; with axis_name="d" the results equal the global run."""
    shapes = {"a": (16, 3), "b": (8,), "c": (24, 2)}
    spec = {k: P("d", *([None] * (len(s) - 1))) for k, s in shapes.items()}
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: (60.0 if t == 3 else 1.0) * rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for t in range(6)]
    grads[4]["b"][3] = np.nan  # one non-finite element, on one shard only

    tx_global, tx_local = AXIS_TRANSFORMS[name](None), AXIS_TRANSFORMS[name]("d")
    state_spec = jax.tree.map(lambda _: P(), tx_local.init(params))
    local_step = jax.jit(jax.shard_map(
        lambda g, s, p: tx_local.update(g, s, p), mesh=mesh(),
        in_specs=(spec, state_spec, spec), out_specs=(spec, state_spec), check_vma=False,
    ))
    global_step = jax.jit(tx_global.update)
    s_local, s_global = tx_local.init(params), tx_global.init(params)
    for g in grads:
        u_local, s_local = local_step(g, s_local, params)
        u_global, s_global = global_step(g, s_global, params)
        chex.assert_trees_all_close(u_local, u_global, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(gf.stats(s_local), gf.stats(s_global), rtol=1e-5, atol=1e-6)
