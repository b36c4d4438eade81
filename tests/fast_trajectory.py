"""Run an optimizer over a whole gradient sequence in one compiled ``lax.scan``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf


def scan_trajectory(tx, params: dict, grads: list[dict], dtype=np.float32) -> list[dict]:
    """Like tests.helpers.run_trajectory (parameters after each step, as NumPy), compiled once."""
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    stacked = {k: jnp.asarray(np.stack([np.asarray(g[k]) for g in grads]), dtype) for k in grads[0]}

    def body(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p)
        p = gf.apply_updates(p, u)
        return (p, s), p

    @jax.jit
    def run(params, stacked):
        _, out = jax.lax.scan(body, (params, tx.init(params)), stacked)
        return out

    out = jax.tree.map(np.asarray, run(params, stacked))
    return [{k: v[t] for k, v in out.items()} for t in range(len(grads))]
