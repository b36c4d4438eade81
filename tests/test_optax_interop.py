"""gradflow transforms inside optax, and optax transforms inside gradflow."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf
from tests import reference
from tests.helpers import run_trajectory

SHAPES = {"w": (3, 2), "b": (2,)}


def _problem(steps: int = 50):
    rng = np.random.default_rng(7)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    return params, reference.spiky_gradients(rng, SHAPES, steps)


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_equals_optax_sgd(momentum, nesterov):
    params, grads = _problem()
    got = run_trajectory(gf.sgd(0.02, momentum, nesterov), params, grads)
    want = run_trajectory(optax.sgd(0.02, momentum or None, nesterov), params, grads)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)


def test_gradflow_transform_inside_optax_chain():
    params, grads = _problem()
    mixed = optax.chain(gf.trace(0.9), optax.scale(-0.02))
    pure = gf.sgd(0.02, momentum=0.9)
    chex.assert_trees_all_close(run_trajectory(mixed, params, grads), run_trajectory(pure, params, grads), rtol=1e-6)


def test_optax_transform_inside_gradflow_chain_with_extra_args():
    params, grads = _problem()
    mixed = gf.chain(optax.trace(0.9), gf.scale_by_learning_rate(0.02))
    pure = gf.sgd(0.02, momentum=0.9)
    p = jax.tree.map(jnp.asarray, params)
    s_mixed, s_pure = mixed.init(p), pure.init(p)
    for g in grads[:10]:
        g = jax.tree.map(jnp.asarray, g)
        u1, s_mixed = jax.jit(lambda g, s: mixed.update(g, s, p, value=jnp.float32(1.0)))(g, s_mixed)
        u2, s_pure = pure.update(g, s_pure, p)
        chex.assert_trees_all_close(u1, u2, rtol=1e-6)


def test_optax_extra_args_transform_receives_value_through_gradflow_chain():
    seen = []

    def update_fn(updates, state, params=None, **extra_args):
        seen.append(extra_args.get("value"))
        return updates, state

    tx = gf.chain(optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update_fn), gf.scale(1.0))
    p = {"w": jnp.ones(1)}
    tx.update(p, tx.init(p), p, value=5.0)
    assert seen == [5.0]
