"""Rules of gradflow.tree and gradflow.flat that the other tests leave open (mutation audit)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import gradflow as gf
from gradflow import tree as tree_lib


def test_square_sums_of_equal_size_leaves_keep_each_leaf_its_own_sum():
    # leaves of one size are stacked and reduced row by row: each row's sum goes back to its leaf
    rng = np.random.default_rng(0)
    leaves = [jnp.asarray(rng.standard_normal((4, 5)) * (i + 1), jnp.float32) for i in range(4)]
    leaves.append(jnp.asarray(rng.standard_normal((20,)) * 7, jnp.float32))  # same size, other shape
    for f in (tree_lib.square_sums, jax.jit(tree_lib.square_sums)):
        got = [float(t) for t in f(leaves)]
        want = [float(np.sum(np.square(np.asarray(x, np.float64)))) for x in leaves]
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_global_norm_with_axis_name_sums_over_the_named_axis():
    # with axis_name the partial sums are psum-ed: under vmap the norm is that of all rows together
    rng = np.random.default_rng(1)
    tree = {"a": jnp.asarray(rng.standard_normal((3, 5)), jnp.float32),
            "b": jnp.asarray(rng.standard_normal((3, 2, 2)), jnp.float32)}
    got = jax.vmap(lambda t: gf.global_norm(t, axis_name="i"), axis_name="i")(tree)
    want = np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in tree.values()))
    np.testing.assert_allclose(np.asarray(got), np.full(3, want), rtol=1e-6)
    alone = jax.vmap(gf.global_norm)(tree)  # without it each row has its own norm
    np.testing.assert_allclose(
        np.asarray(alone),
        np.sqrt(np.sum(np.square(np.asarray(tree["a"], np.float64)), 1)
                + np.sum(np.square(np.asarray(tree["b"], np.float64)), (1, 2))), rtol=1e-6)


def test_square_sums_with_axis_name_sum_each_leaf_over_the_named_axis():
    rng = np.random.default_rng(2)
    leaves = [jnp.asarray(rng.standard_normal((3, 4)) * (i + 1), jnp.float32) for i in range(3)]
    leaves.append(jnp.asarray(rng.standard_normal((3, 9)), jnp.float32))
    got = jax.vmap(lambda ls: tree_lib.square_sums(ls, axis_name="i"), axis_name="i")(leaves)
    for g, x in zip(got, leaves):
        want = np.sum(np.square(np.asarray(x, np.float64)))
        np.testing.assert_allclose(np.asarray(g), np.full(3, want), rtol=1e-6)


def test_global_norm_of_an_empty_tree_is_a_float32_zero():
    # stat_dtype's docstring: the dtype global_norm returns for such a tree (float32 when no leaf is float64)
    got = gf.global_norm({})
    assert got.dtype == jnp.float32 == tree_lib.stat_dtype({})
    assert float(got) == 0.0


def test_stat_dtype_is_float32_for_low_precision_and_integer_trees():
    assert tree_lib.stat_dtype({"a": jnp.zeros(2, jnp.bfloat16)}) == jnp.float32
    assert tree_lib.stat_dtype({"b": jax.ShapeDtypeStruct((2,), jnp.float16), "x": 1.0}) == jnp.float32
    assert tree_lib.stat_dtype({"n": jnp.zeros(2, jnp.int32)}) == jnp.float32
    assert tree_lib.stat_dtype({}) == jnp.float32


def test_stat_dtype_of_complex128_is_float64_as_global_norm_returns():
    with jax.enable_x64(True):
        tree = {"z": jnp.ones(3, jnp.complex128), "w": jnp.ones(2, jnp.float32)}
        assert tree_lib.stat_dtype(tree) == jnp.float64 == gf.global_norm(tree).dtype
        spec = {"z": jax.ShapeDtypeStruct((3,), jnp.complex64)}
        assert tree_lib.stat_dtype(spec) == jnp.float32


def _bf16(x):
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16)


def test_times_scalar_rounds_the_factor_to_the_leaf_dtype_first_or_the_product_once():
    g = jnp.asarray(np.linspace(1.0, 2.0, 64), jnp.bfloat16)
    factor = jnp.float32(0.7071)
    gn = np.asarray(g).astype(np.float32)
    first = (gn * np.float32(_bf16(factor))).astype(ml_dtypes.bfloat16)  # factor rounded, then the product
    once = (gn * np.float32(factor)).astype(ml_dtypes.bfloat16)  # the product in float32, rounded once
    assert not np.array_equal(first, once)  # the two rules differ on these values
    a = tree_lib.times_scalar({"g": g}, factor)["g"]
    b = tree_lib.times_scalar({"g": g}, factor, in_leaf_dtype=False)["g"]
    assert a.dtype == b.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(a), first)
    np.testing.assert_array_equal(np.asarray(b), once)


def test_cast_like_gives_each_array_leaf_the_dtype_of_its_counterpart():
    new = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2, jnp.float32), "n": 3}
    old = {"a": jnp.zeros(2, jnp.bfloat16), "b": jax.ShapeDtypeStruct((2,), jnp.float16), "n": 1.0}
    got = tree_lib.cast_like(new, old)
    assert got["a"].dtype == jnp.bfloat16 and got["b"].dtype == jnp.float16 and got["n"] == 3


def test_zeros_and_full_like_take_the_given_dtype_and_value():
    tree = {"a": jnp.ones((2, 3), jnp.bfloat16), "s": jax.ShapeDtypeStruct((4,), jnp.float16), "x": 2.0}
    z = tree_lib.zeros_like(tree, jnp.float32)
    assert {k: (v.shape, v.dtype) for k, v in z.items()} == {
        "a": ((2, 3), jnp.float32), "s": ((4,), jnp.float32), "x": ((), jnp.float32)}
    assert tree_lib.zeros_like(tree)["a"].dtype == jnp.bfloat16
    f = tree_lib.full_like(tree, 0.25)
    np.testing.assert_array_equal(np.asarray(f["a"], np.float32), np.full((2, 3), 0.25, np.float32))
    assert f["s"].dtype == jnp.float16 and float(f["x"]) == 0.25


def test_signed_zeros_like_keeps_a_complex_moment_for_a_complex_leaf():
    tree = {"z": jnp.ones(3, jnp.complex64), "r": jnp.ones(3, jnp.bfloat16)}
    got = tree_lib.signed_zeros_like(tree, jnp.float32)
    assert got["z"].dtype == jnp.complex64 and got["r"].dtype == jnp.float32
    assert tree_lib.signed_zeros_like(tree)["z"].dtype == jnp.complex64


def test_check_same_shapes_refuses_a_leaf_of_another_shape_and_another_tree():
    tree_lib.check_same_shapes("f", {"a": jnp.ones(3)}, {"a": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"f: updates leaf \['a'\] has shape \(3, 1\)"):
        tree_lib.check_same_shapes("f", {"a": jnp.ones((3, 1))}, {"a": jnp.zeros(3)})
    with pytest.raises(TypeError, match="tree structure differs"):
        tree_lib.check_same_shapes("f", {"a": jnp.ones(3)}, {"b": jnp.zeros(3)})


def test_check_float_leaves_refuses_integer_leaves_and_takes_complex_ones():
    tree_lib.check_float_leaves("f", {"a": jnp.ones(2, jnp.bfloat16), "z": jnp.ones(2, jnp.complex64), "x": 1.0})
    with pytest.raises(TypeError, match="has dtype int32"):
        tree_lib.check_float_leaves("f", {"n": jnp.ones(2, jnp.int32)})


def test_safe_increment_saturates_and_stays_int32():
    m = np.iinfo(np.int32).max
    for c, want in [(0, 1), (m - 1, m), (m, m)]:
        got = tree_lib.safe_increment(jnp.int32(c))
        assert got.dtype == jnp.int32 and int(got) == want


def _compiled_update(params):
    tx = gf.flatten_small(gf.identity())
    return jax.jit(tx.update).lower(params, tx.init(params)).compile().as_text()


def test_flatten_small_cuts_two_leaves_of_one_shape_with_a_run_time_start_on_cpu():
    # "one kernel for all leaves of this shape": already two leaves share it
    assert jax.default_backend() == "cpu"
    hlo = _compiled_update({"a": jnp.zeros((4, 4)), "b": jnp.zeros((4, 4)), "c": jnp.zeros(7)})
    assert "conditional(" in hlo and "dynamic-slice(" in hlo


def test_flatten_small_cuts_leaves_of_distinct_shapes_by_static_slices():
    # "a shape of its own: a static slice": no run-time starts when no shape repeats
    hlo = _compiled_update({"a": jnp.zeros((4, 4)), "b": jnp.zeros(5), "c": jnp.zeros((2, 3))})
    assert "dynamic-slice(" not in hlo and "conditional(" not in hlo


def test_global_norm_of_large_and_small_float64_leaves_stays_float64():
    # the partial sums (one per large leaf, one per dtype of small leaves) add in float64
    with jax.enable_x64(True):
        leaves = [jnp.full((tree_lib.SMALL + 1,), 1e-9, jnp.float64), jnp.full((3,), 1.0 + 1e-12, jnp.float64)]
        got = gf.global_norm(leaves)
        assert got.dtype == jnp.float64
        want = np.sqrt((tree_lib.SMALL + 1) * 1e-18 + 3 * (1.0 + 1e-12) ** 2)
        np.testing.assert_allclose(float(got), want, rtol=1e-14)
