"""state_sharding's rules and flatten_small's checks, on one device, that a mutation audit found unpinned."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import Mesh, NamedSharding, Sharding
from jax.sharding import PartitionSpec as P

import gradflow as gf
from gradflow.base import GradientTransformation


def mesh_1() -> Mesh:
    return Mesh(jax.devices()[:1], ("x",))


def test_explicit_params_sharding_applies_to_uncommitted_arrays():
    # An explicit params_sharding is taken as given, even for arrays made with no device_put.
    mesh = mesh_1()
    params = {"w": jnp.ones((8, 4))}
    assert not params["w"].committed
    sh = gf.state_sharding(gf.adam(1e-3), params, {"w": NamedSharding(mesh, P("x"))})
    assert sh[0].mu["w"].spec == P("x") and sh[0].nu["w"].spec == P("x")
    assert sh[0].count.spec == P()


def test_flatten_small_buffers_are_replicated_when_the_first_leaf_is_sharded():
    mesh = mesh_1()
    params = {
        "a_kernel": jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=NamedSharding(mesh, P("x", None))),
        "bias": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=NamedSharding(mesh, P())),
    }
    sh = gf.state_sharding(gf.flatten_small(gf.adam(1e-3), max_size=16), params)
    inner = sh.inner_state[0]
    assert inner.mu["large"][0].spec == P("x", None)
    assert inner.mu["flat"][0].spec == P() and inner.nu["flat"][0].spec == P()


@pytest.mark.parametrize("max_size", [0, 1])
def test_flatten_small_packing_nothing_still_shards_the_large_leaves(max_size):
    # max_size below every leaf's size: nothing is packed, every leaf is large.
    mesh = mesh_1()
    params = {
        "bias": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=NamedSharding(mesh, P())),
        "kernel": jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=NamedSharding(mesh, P("x", None))),
    }
    sh = gf.state_sharding(gf.flatten_small(gf.adam(1e-3), max_size=max_size), params)
    inner = sh.inner_state[0]
    assert inner.mu["flat"] == () and inner.mu["large"][1].spec == P("x", None)
    assert inner.nu["large"][1].spec == P("x", None) and inner.mu["large"][0].spec == P()


def test_flatten_small_with_no_per_parameter_buffer_gives_shardings():
    # autoclip keeps a history, no per-parameter buffer: every leaf is replicated, and is a Sharding.
    mesh = mesh_1()
    params = {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=NamedSharding(mesh, P("x")))}
    tx = gf.flatten_small(gf.autoclip(history_size=4), max_size=16)
    sh = gf.state_sharding(tx, params)
    state = jax.eval_shape(tx.init, jax.ShapeDtypeStruct((8, 4), jnp.float32))
    leaves = jax.tree.leaves(sh, is_leaf=lambda x: isinstance(x, Sharding))
    assert len(leaves) == len(jax.tree.leaves(state)) > 0
    assert all(isinstance(s, Sharding) and s.is_fully_replicated for s in leaves), leaves
    real = {"w": jnp.ones((8, 4))}
    assert jax.tree.structure(gf.init_sharded(tx, real)) == jax.tree.structure(tx.init(real))


def _shape_dependent():
    """A transform whose state holds an extra buffer only for leaves of more than 40 elements."""
    def init(params):
        big = {k: jnp.zeros(v.shape) for k, v in params.items() if v.size > 40}
        return {"mu": jax.tree.map(jnp.zeros_like, params), "big": big}

    return GradientTransformation(init, lambda u, s, p=None: (u, s))


def test_a_state_whose_structure_depends_on_shapes_is_judged_by_shape():
    mesh = mesh_1()
    params = {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=NamedSharding(mesh, P("x")))}
    sh = gf.state_sharding(_shape_dependent(), params)  # grown (9, 5) has 45 > 40 elements
    assert sh["mu"]["w"].spec == P("x") and sh["big"] == {}


def test_offsets_past_int32_are_refused_at_exactly_two_to_the_31():
    tx = gf.flatten_small(gf.sgd(0.1), max_size=1 << 32)
    ok = {"a": jax.ShapeDtypeStruct((2**31 - 1,), jnp.float32)}
    jax.eval_shape(tx.init, ok)
    bad = {"a": jax.ShapeDtypeStruct((2**31,), jnp.float32)}
    with pytest.raises(ValueError, match="more than int32 offsets reach"):
        jax.eval_shape(tx.init, bad)


def test_nested_flatten_small_picks_the_outer_packing_not_the_inner_one():
    # The outer state holds buffers on two packings: sgd's trace on the outer one (kernels large) and
    # the inner flatten_small's adam buffers on a packing of everything; the outer one is the real one.
    mesh = mesh_1()
    params = {
        "bias": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=NamedSharding(mesh, P())),
        "kernel": jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=NamedSharding(mesh, P("x", None))),
        "kernel_t": jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=NamedSharding(mesh, P(None, "x"))),
    }
    tx = gf.flatten_small(gf.chain(gf.flatten_small(gf.adam(1e-3), max_size=2048), gf.sgd(1e-3, momentum=0.9)), max_size=3)
    sh = gf.state_sharding(tx, params)
    assert jax.tree.structure(sh) == jax.tree.structure(jax.eval_shape(tx.init, params))
    trace = sh.inner_state[1][0].trace
    assert [s.spec for s in trace["large"]] == [P("x", None), P(None, "x")], trace
    assert trace["flat"][0].spec == P(), trace
