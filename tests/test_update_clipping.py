"""clip_update_norm: clipping the update's norm against mean + k·σ of the recent unclipped norms."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
from tests import reference_spikes
from tests.reference_clipping import spike_sequence


def _run(tx, grads, dtype=jnp.float32):
    traces = []

    def step(g, s):
        traces.append(1)
        return tx.update(g, s)

    step = jax.jit(step)
    s = tx.init(jax.tree.map(lambda x: jnp.asarray(x, dtype), grads[0]))
    outs, states = [], []
    for g in grads:
        u, s = step(jax.tree.map(lambda x: jnp.asarray(x, dtype), g), s)
        assert all(x.dtype == dtype for x in jax.tree.leaves(u))
        outs.append(jax.tree.map(np.asarray, u))
        states.append(s)
    assert len(traces) == 1
    return outs, states


@pytest.mark.parametrize("window, sigma, min_history", [(128, 3.0, None), (16, 2.0, None), (24, 1.0, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_reference_over_spiky_steps(window, sigma, min_history, dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    dt = jnp.dtype(dtype)
    grads = spike_sequence(seed=1, steps=300)
    tx = gf.clip_update_norm(window, sigma, min_history)
    got, states = _run(tx, grads, dt)
    want, info = reference_spikes.clip_update_norm(grads, window, sigma, min_history)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    n_clipped = 0
    for t, (g, w, i, s) in enumerate(zip(got, want, info, states)):
        assert bool(s.clipped) == i["clipped"], t
        np.testing.assert_allclose(float(s.norm), i["norm"], rtol=rtol)
        if math.isinf(i["bound"]):
            assert math.isinf(float(s.threshold)), t
        else:
            np.testing.assert_allclose(float(s.threshold), i["bound"], rtol=rtol, err_msg=str(t))
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=rtol, atol=1e-30, err_msg=f"step {t}, leaf {k}")
        if i["clipped"]:
            n_clipped += 1
            norm_after = math.sqrt(sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in g.values()))
            np.testing.assert_allclose(norm_after, i["bound"], rtol=rtol)  # cut to the bound exactly
    assert n_clipped >= 4  # the spikes after warm-up were cut
    assert int(states[-1].num_clipped) == n_clipped
    # No clipping while the history is short.
    need = max(2, window // 2) if min_history is None else min_history
    assert not any(bool(s.clipped) for s in states[:need])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_unclipped_steps_are_returned_bit_for_bit(dtype):
    grads = spike_sequence(seed=2, steps=120)
    got, states = _run(gf.clip_update_norm(16), grads, dtype)
    unclipped = 0
    for g, u, s in zip(grads, got, states):
        if not bool(s.clipped):
            unclipped += 1
            for k in g:
                a = np.asarray(jnp.asarray(g[k], dtype))
                np.testing.assert_array_equal(u[k].view(np.uint16 if dtype == jnp.bfloat16 else np.uint32),
                                              a.view(np.uint16 if dtype == jnp.bfloat16 else np.uint32))
    assert 0 < unclipped < len(grads)


def test_history_holds_unclipped_norms_and_skips_non_finite():
    tx = gf.clip_update_norm(window=4, sigma_factor=1.0, min_history=2)
    s = tx.init({"x": jnp.zeros(3)})
    norms = [1.0, 1.2, 50.0]
    for n in norms:
        _, s = tx.update({"x": jnp.asarray([n, 0.0, 0.0])}, s)
    assert bool(s.clipped)
    # The clipped spike entered the history with its unclipped norm.
    np.testing.assert_allclose(np.asarray(s.history[:3]), norms, rtol=1e-6)
    before = s
    u, s = tx.update({"x": jnp.asarray([jnp.nan, 0.0, 0.0])}, s)
    assert int(s.num_recorded) == int(before.num_recorded) == 3
    np.testing.assert_array_equal(np.asarray(s.history), np.asarray(before.history))
    assert bool(jnp.isnan(u["x"][0]))  # non-finite updates propagate (chain apply_if_finite to skip them)
    # The bound after the NaN step is the one the finite history gives.
    _, s2 = tx.update({"x": jnp.asarray([1.0, 0.0, 0.0])}, s)
    h = np.array(norms)
    np.testing.assert_allclose(float(s2.threshold), h.mean() + max(h.std(), 1e-6), rtol=1e-6)


def test_after_an_optimizer_in_a_chain_with_stats():
    params = {"w": jnp.ones((8, 4), jnp.float32), "b": jnp.zeros(4, jnp.float32)}
    tx = gf.chain(gf.adamw(0.01), gf.clip_update_norm(window=8))
    s = tx.init(params)
    step = jax.jit(tx.update)
    rng = np.random.default_rng(0)
    for t in range(30):
        g = {k: jnp.asarray(rng.standard_normal(p.shape) * (1e4 if t == 25 else 1.0), jnp.float32) for k, p in params.items()}
        u, s = step(g, s, params)
        params = gf.apply_updates(params, u)
        st = gf.stats(s)
        assert {"clip_update_norm/norm", "clip_update_norm/threshold", "clip_update_norm/clipped",
                "clip_update_norm/num_clipped", "clip_update_norm/num_recorded"} <= set(st)
        if t == 25:
            # Adam's step on a 10⁴× gradient spike is larger than the recent steps: cut to the bound.
            assert int(st["clip_update_norm/clipped"]) == 1
            np.testing.assert_allclose(float(gf.global_norm(u)), float(st["clip_update_norm/threshold"]), rtol=1e-5)
    chex.assert_tree_all_finite(params)
    assert int(gf.stats(s)["clip_update_norm/num_clipped"]) >= 1


@pytest.mark.parametrize(
    "kwargs, text",
    [
        (dict(window=0), "clip_update_norm: window must be an integer >= 1, got 0"),
        (dict(window=2.5), "clip_update_norm: window must be an integer >= 1, got 2.5"),
        (dict(sigma_factor=-1.0), "clip_update_norm: sigma_factor must be a finite number >= 0, got -1.0"),
        (dict(sigma_factor=math.nan), "clip_update_norm: sigma_factor must not be NaN, got nan"),
        (dict(min_history=0), "clip_update_norm: min_history must be an integer >= 1, got 0"),
        (dict(window=8, min_history=9), "clip_update_norm: min_history must be an integer in [1, window=8], got 9"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, text):
    with pytest.raises(ValueError) as info:
        gf.clip_update_norm(**kwargs)
    assert text in str(info.value), str(info.value)


def test_clipping_starts_once_exactly_min_history_norms_are_kept():
    tx = gf.clip_update_norm(window=4, sigma_factor=1.0, min_history=4)
    s = tx.init(jnp.zeros(1))
    for g in [1.0, 2.0, 1.0, 2.0, 9.0]:  # four norms kept: mean 1.5 + 1·σ 0.5 = 2 bounds the fifth
        u, s = tx.update(jnp.array([g]), s)
    np.testing.assert_allclose(float(u[0]), 2.0, rtol=1e-6)
    assert bool(s.clipped)


def test_default_min_history_needs_two_norms_and_window_one_holds_to_the_last_norm():
    tx = gf.clip_update_norm(window=2, sigma_factor=0.0)  # needs max(2, 2 // 2) = 2 norms
    s = tx.init(jnp.zeros(1))
    for g in [1.0, 5.0]:
        u, s = tx.update(jnp.array([g]), s)
    assert float(u[0]) == 5.0 and not bool(s.clipped)
    tx = gf.clip_update_norm(window=1, sigma_factor=3.0)  # documented: the last norm + k·10⁻⁶
    s = tx.init(jnp.zeros(1))
    for g in [1.0, 5.0]:
        u, s = tx.update(jnp.array([g]), s)
    np.testing.assert_allclose(float(u[0]), 1 + 3e-6, rtol=1e-7)
