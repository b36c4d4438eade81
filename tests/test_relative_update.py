"""clip_relative_update: each tensor's step bounded by a fraction of the tensor's RMS."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf
from tests import reference, reference_spikes

PARAMS = {"w": np.random.default_rng(0).standard_normal((6, 5)) * 0.05, "b": np.zeros(5), "s": np.ones(5)}


def _grads(steps=150):
    return reference.spiky_gradients(np.random.default_rng(1), {k: v.shape for k, v in PARAMS.items()}, steps)


@pytest.mark.parametrize("lr, rho, floor", [(0.05, 0.1, 0.01), (0.003, 0.05, 0.02), (1.0, 0.2, 1e-4)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hold, vectors", [(True, False), (True, True), (False, True)])
def test_adam_then_clip_matches_reference_over_spiky_steps(lr, rho, floor, dtype, hold, vectors, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    dt = jnp.dtype(dtype)
    grads = _grads()
    want, cut = reference_spikes.adam_relative_clip(PARAMS, grads, lr, rho, floor, hold=hold, vectors=vectors)
    tx = gf.chain(gf.adam(lr), gf.clip_relative_update(rho, floor, hold=hold, vectors=vectors))
    traces = []

    def step(p, s, g):
        traces.append(1)
        u, s = tx.update(g, s, p)
        return gf.apply_updates(p, u), s

    step = jax.jit(step)
    p = {k: jnp.asarray(v, dt) for k, v in PARAMS.items()}
    s = tx.init(p)
    rtol = 2e-4 if dtype == "float32" else 1e-10
    n_cut = 0
    for t, g in enumerate(grads):
        p, s = step(p, s, {k: jnp.asarray(v, dt) for k, v in g.items()})
        clip_state = s[1]
        assert int(clip_state.num_leaves_clipped) == len(cut[t]), t
        n_cut += bool(cut[t])
        for k in p:
            scale = float(np.max(np.abs(want[t][k]))) + 1e-3  # float32 error grows with the leaf's magnitude
            np.testing.assert_allclose(np.asarray(p[k], np.float64), want[t][k], rtol=rtol, atol=rtol * scale,
                                       err_msg=f"step {t}, leaf {k}")
    assert int(clip_state.num_clipped) == n_cut and (0 < n_cut < len(grads) or hold or lr == 1.0)
    assert len(traces) == 1


def test_a_step_below_the_bound_is_untouched_bit_for_bit():
    params = {"w": jnp.full((3, 3), 2.0), "b": jnp.zeros(3)}
    g = {"w": jnp.full((3, 3), 0.1), "b": jnp.asarray([1e-3, -1e-3, 5e-4])}  # ratios 0.05 and < ρ·s
    u, state = gf.clip_relative_update(0.1, 0.01, vectors=True).update(g, gf.clip_relative_update().init(params), params)
    for k in g:
        assert np.asarray(u[k]).tobytes() == np.asarray(g[k]).tobytes()
    assert not bool(state.clipped) and int(state.num_leaves_clipped) == 0
    rms_b = float(np.sqrt(np.mean(np.square(np.asarray(g["b"], np.float64)))))
    np.testing.assert_allclose(float(state.max_ratio), max(0.05, rms_b / 0.01), rtol=1e-6)


def test_a_big_step_is_cut_to_the_bound_keeping_its_direction():
    params = {"w": jnp.full((4,), 0.5), "b": jnp.zeros(2)}
    g = {"w": jnp.asarray([3.0, -1.0, 2.0, 0.0]), "b": jnp.asarray([4.0, -3.0])}
    tx = gf.clip_relative_update(0.1, 0.01, vectors=True)
    u, state = tx.update(g, tx.init(params), params)
    rms = lambda x: float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64)))))  # noqa: E731
    np.testing.assert_allclose(rms(u["w"]), 0.1 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(rms(u["b"]), 0.1 * 0.01, rtol=1e-6)
    for k in g:
        np.testing.assert_allclose(np.asarray(u[k]) / rms(u[k]), np.asarray(g[k]) / rms(g[k]), rtol=1e-6)
    assert bool(state.clipped) and int(state.num_leaves_clipped) == 2 and int(state.num_clipped) == 1


def test_by_default_only_matrices_are_bounded_and_vectors_pass_bit_for_bit():
    params = {"w": jnp.full((2, 3), 0.5), "b": jnp.zeros(3), "s": jnp.ones(())}
    g = {"w": jnp.full((2, 3), 1.0), "b": jnp.asarray([4.0, -3.0, 1.0]), "s": jnp.asarray(5.0)}
    tx = gf.clip_relative_update(0.1, 0.01)
    u, state = tx.update(g, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(u["w"]), 0.05, rtol=1e-6)  # the matrix: cut to ρ·RMS(w)
    for k in ("b", "s"):
        assert np.asarray(u[k]).tobytes() == np.asarray(g[k]).tobytes(), k
    assert int(state.num_leaves_clipped) == 1
    np.testing.assert_allclose(float(state.max_ratio), 2.0, rtol=1e-6)  # over the matrices only: 1/0.5
    np.testing.assert_allclose(np.asarray(state.factor), [1.0, 1.0, 0.05], rtol=1e-6)  # tree order: b, s, w
    only_vectors = {"b": jnp.zeros(3)}
    u, state = tx.update({"b": jnp.ones(3)}, tx.init(only_vectors), only_vectors)
    assert np.asarray(u["b"]).tobytes() == np.asarray(jnp.ones(3)).tobytes() and int(state.count) == 1


def test_a_held_cut_keeps_scaling_a_matrix_until_a_larger_cut_and_a_vector_is_cut_alone():
    params = {"w": jnp.full((2, 2), 2.0), "b": jnp.full((4,), 2.0)}
    tx, loose = gf.clip_relative_update(0.1, 0.01, vectors=True), gf.clip_relative_update(0.1, 0.01, hold=False, vectors=True)
    state, loose_state = tx.init(params), loose.init(params)
    factors = []
    for step in [1.0, 0.1, 0.1, 2.0, 0.1]:  # ratios 0.5, 0.05, 0.05, 1, 0.05 against ρ = 0.1
        g = {"w": jnp.full((2, 2), step), "b": jnp.full((4,), step)}
        u, state = tx.update(g, state, params)
        v, loose_state = loose.update(g, loose_state, params)
        factors.append(float(u["w"][0, 0]) / step)
        np.testing.assert_allclose(float(u["b"][0]), min(step, 0.2), rtol=1e-6)  # a vector: each step cut alone
        for k in g:
            np.testing.assert_allclose(float(v[k].ravel()[0]), min(step, 0.2), rtol=1e-6)  # without hold: every leaf
    np.testing.assert_allclose(factors, [0.2, 0.2, 0.2, 0.1, 0.1], rtol=1e-6)
    assert int(state.num_clipped) == 5 and int(loose_state.num_clipped) == 2
    np.testing.assert_allclose(np.asarray(state.factor), [1.0, 0.1], rtol=1e-6)  # leaves in tree order: b, w


def test_bfloat16_updates_keep_their_dtype_and_stats_are_named():
    params = {"w": jnp.ones(8, jnp.bfloat16)}
    tx = optax.chain(optax.adam(1.0), gf.clip_relative_update(vectors=True))
    u, state = tx.update({"w": jnp.ones(8, jnp.bfloat16)}, tx.init(params), params)
    assert u["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(u["w"], np.float32), -0.1, rtol=1e-2)
    names = gf.stats(state)
    assert {"clip_relative_update/num_clipped", "clip_relative_update/max_ratio"} <= set(names)


def test_an_empty_matrix_is_left_alone_and_the_statistic_stays_finite():
    params = {"w": jnp.ones((4, 4)), "e": jnp.ones((0, 3))}
    tx = gf.clip_relative_update(max_ratio=0.1)
    grads = {"w": jnp.full((4, 4), 0.001), "e": jnp.ones((0, 3))}
    u, state = jax.jit(tx.update)(grads, tx.init(params), params)
    np.testing.assert_allclose(float(gf.stats(state)["clip_relative_update/max_ratio"]), 0.001, rtol=1e-6)
    assert u["e"].shape == (0, 3) and not bool(state.clipped)


def test_needs_params_and_checks_its_arguments():
    tx = gf.clip_relative_update()
    with pytest.raises(ValueError, match=r"clip_relative_update: update needs params"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
    with pytest.raises(ValueError, match=r"clip_relative_update: max_ratio .*got 0"):
        gf.clip_relative_update(0.0)
    with pytest.raises(ValueError, match=r"clip_relative_update: min_weight_rms .*got -1"):
        gf.clip_relative_update(0.1, -1.0)
    with pytest.raises(ValueError, match=r"clip_relative_update: min_weight_rms must be a finite number > 0, got 0.0"):
        gf.clip_relative_update(0.1, 0.0)
    with pytest.raises(ValueError, match=r"protect: min_weight_rms must be a finite number > 0, got 0"):
        gf.protect(gf.adam(0.1), min_weight_rms=0)
    with pytest.raises(ValueError, match=r"protect: max_update_ratio .*got -0.5"):
        gf.protect(gf.adam(0.1), max_update_ratio=-0.5)
    with pytest.raises(ValueError, match=r"clip_relative_update: hold must be True or False, got 1"):
        gf.clip_relative_update(hold=1)
    with pytest.raises(ValueError, match=r"clip_relative_update: vectors must be True or False, got 'yes'"):
        gf.clip_relative_update(vectors="yes")
    with pytest.raises(ValueError, match=r"protect: clip_vector_updates must be True or False, got 0"):
        gf.protect(gf.adam(0.1), clip_vector_updates=0)
    with pytest.raises(ValueError, match=r"protect: hold_update_cut must be True or False, got 'no'"):
        gf.protect(gf.adam(0.1), hold_update_cut="no")
    with pytest.raises(ValueError, match=r"protect: hold_update_cut must be True or False, got 'no'"):
        gf.protect(gf.adam(0.1), max_update_ratio=None, hold_update_cut="no")  # checked even with the clip off
    with pytest.raises(TypeError, match=r"state=None"):
        tx.update({"w": jnp.ones(2)}, None, {"w": jnp.ones(2)})


def test_flatten_small_refuses_it():
    with pytest.raises(ValueError, match="per leaf"):
        gf.flatten_small(gf.chain(gf.adam(0.1), gf.clip_relative_update())).init({"w": jnp.ones(3)})


# --------------------------------------------------------------------------- each constant, bound and counter of the rule, one at a time


def test_max_ratio_is_the_largest_over_the_bounded_leaves_and_count_counts_updates():
    params = {"a": jnp.ones((2, 2)), "z": jnp.ones((2, 2))}
    tx = gf.clip_relative_update(0.1)
    state = tx.init(params)
    for t in (1, 2):
        _, state = tx.update({"a": jnp.full((2, 2), 0.01), "z": jnp.full((2, 2), 0.05)}, state, params)
        np.testing.assert_allclose(float(state.max_ratio), 0.05, rtol=1e-6)  # RMS(u)/max(RMS(w), s): 0.01 and 0.05
        assert int(state.count) == t and not bool(state.clipped)


def test_a_zero_matrix_is_bounded_by_the_default_floor():
    # RMS(w) = 0 < s = 0.01: b = ρ·s = 10⁻³ per element, whatever the matrix's shape
    params = {"w": jnp.zeros((3, 4))}
    u, state = gf.clip_relative_update().update({"w": jnp.ones((3, 4))}, gf.clip_relative_update().init(params), params)
    np.testing.assert_allclose(np.asarray(u["w"]), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(state.max_ratio), 1.0 / 0.01, rtol=1e-6)


def test_a_leaf_whose_shape_differs_from_its_parameter_is_refused():
    tx = gf.clip_relative_update(vectors=True)
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="clip_relative_update"):
        tx.update({"w": jnp.ones((3, 1))}, tx.init(params), params)
    # protect's update clip bounds the inner step against params too (a (3, 1) step would broadcast)
    guarded = gf.protect(optax.sgd(1.0), watch_loss=False, clip_vector_updates=True)  # optax checks no shapes
    with pytest.raises(ValueError, match="protect"):
        guarded.update({"w": jnp.ones((3, 1))}, guarded.init(params), params)
