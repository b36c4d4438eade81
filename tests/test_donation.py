"""State straight from ``init`` can be donated: no two leaves share a buffer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
from tests import catalog

EXTRA = {
    "inject_adam": lambda: gf.inject_hyperparams(gf.sgd)(learning_rate=0.1, momentum=0.9),
    "reduce_on_plateau": lambda: gf.chain(gf.sgd(0.1), gf.reduce_on_plateau()),
    "restart_on_loss": lambda: gf.chain(gf.sgd(0.1), gf.restart_on_loss(gf.linear_schedule(1.0, 0.1, 10), threshold=0.5)),
    "scale_by_schedule": lambda: gf.scale_by_schedule(gf.cosine_decay_schedule(1.0, 10)),
}
TRANSFORMS = {**catalog.OPTIMIZERS, **catalog.CLIPPERS, **catalog.GUARDS, **EXTRA}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_fresh_state_has_distinct_buffers_and_can_be_donated(name):
    tx = TRANSFORMS[name]()
    params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
    state = tx.init(params)
    pointers = [leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(state)]
    assert len(pointers) == len(set(pointers)), "two state leaves share one buffer"

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params, value=jnp.float32(1.0))
        return gf.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    grads = {"w": jnp.full((4, 3), 0.5), "b": jnp.full(3, -0.5)}
    for _ in range(2):
        params, state = step(params, state, grads)
    assert np.all(np.isfinite(np.asarray(params["w"])))
