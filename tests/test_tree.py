"""gradflow.tree's reductions: exact sums, and small leaves reduced together."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf
from gradflow import tree as tree_lib


def mixed_leaves(seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (70, 3), (5,), (40,), (2, 3, 5), (), (0,), (1000,), (tree_lib.SMALL + 7,)]
    leaves = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    leaves.append(jnp.asarray(rng.standard_normal((6, 6)), jnp.bfloat16))
    leaves.append(jnp.asarray(rng.standard_normal((4,)) + 1j * rng.standard_normal((4,)), jnp.complex64))
    return leaves


def reference_square_sum(x) -> float:
    return float(np.sum(np.abs(np.asarray(x).astype(np.complex128)) ** 2))


def varied_leaves(n: int) -> list:
    return [jnp.full((3 + i % 7, 2 + i % 5) if i % 3 else (10 + i,), 0.5, jnp.float32) for i in range(n)]


@pytest.mark.parametrize("jit", [False, True])
def test_square_sums_equal_numpy_per_leaf(jit):
    leaves = mixed_leaves()
    f = jax.jit(tree_lib.square_sums) if jit else tree_lib.square_sums
    got = f(leaves)
    assert len(got) == len(leaves)
    for i, (g, x) in enumerate(zip(got, leaves)):
        np.testing.assert_allclose(float(g), reference_square_sum(x), rtol=2e-6, err_msg=f"leaf {i}")
        assert g.dtype == jnp.float32


@pytest.mark.parametrize("jit", [False, True])
def test_global_norm_equals_numpy(jit):
    leaves = mixed_leaves(1)
    want = np.sqrt(sum(reference_square_sum(x) for x in leaves))
    got = (jax.jit(gf.global_norm) if jit else gf.global_norm)(leaves)
    np.testing.assert_allclose(float(got), want, rtol=2e-6)
    assert got.dtype == jnp.float32


def test_global_norm_takes_python_numbers_as_optax_does():
    tree = {"w": jnp.array([3.0]), "scale": 4.0, "n": 0}
    assert float(gf.global_norm(tree)) == float(optax.tree.norm(tree)) == 5.0


def test_global_norm_of_float64_leaves_accumulates_in_float64():
    with jax.enable_x64(True):
        leaves = [jnp.full((5,), 1e-3, jnp.float64), jnp.full((3, 2), 2.0, jnp.float64)]
        got = gf.global_norm(leaves)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(float(got), np.sqrt(5e-6 + 24.0), rtol=1e-14)


def count_reduces(fn, leaves) -> int:
    return jax.jit(fn).lower(leaves).as_text().count("stablehlo.reduce(")


def test_global_norm_reduces_small_leaves_once():
    leaves = varied_leaves(60) + [jnp.ones((tree_lib.SMALL + 1,))]
    # one reduce for the 60 small leaves, one for the large leaf, one adding the two
    assert count_reduces(gf.global_norm, leaves) == 3


def test_square_sums_reduce_small_leaves_once_per_size():
    # 20 leaves of 1024 elements and 10 of 128 (two shapes) are stacked, one reduce per size;
    # the five leaves whose sizes no other shares are reduced on their own
    same = [jnp.full((32, 32), 0.5)] * 20 + [jnp.ones((16, 8)), jnp.ones((8, 16))] * 5
    lone = [jnp.ones((n,)) for n in (3, 5, 7, 11, 13)]
    leaves = same + lone
    assert count_reduces(tree_lib.square_sums, leaves) == 2 + 5
    got = [float(t) for t in tree_lib.square_sums(leaves)]
    assert got == [float(np.sum(np.square(np.asarray(x)))) for x in leaves]


def test_empty_tree_has_norm_zero():
    assert float(gf.global_norm({})) == 0.0
    assert tree_lib.square_sums([]) == []
