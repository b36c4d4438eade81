"""dynamic_loss_scale and loss_scale: torch.amp.GradScaler's semantics, replayed against a recorded run."""

from __future__ import annotations

import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
from tests import reference_spikes

RECORDING = pathlib.Path(__file__).parent / "parity" / "torch_loss_scale.npz"


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def test_replays_recorded_grad_scaler_run():
    rec = np.load(RECORDING)
    names = sorted(k.split("/")[1] for k in rec.files if k.startswith("params0/"))
    params = {k: jnp.asarray(rec[f"params0/{k}"]) for k in names}
    target = {k: jnp.asarray(rec[f"target/{k}"]) for k in names}
    curv = {k: jnp.asarray(rec[f"curvature/{k}"]) for k in names}
    tx = gf.dynamic_loss_scale(
        gf.adam(float(rec["lr"])), float(rec["init_scale"]), float(rec["growth_factor"]),
        float(rec["backoff_factor"]), int(rec["growth_interval"]),
    )
    traces = []

    def step(p, s, w):
        traces.append(1)
        scale = gf.loss_scale(s)
        # The float16 backward: the scaled gradient rounded to float16 (±inf above 65504).
        g = {k: (curv[k] * (p[k] - target[k]) * w * scale).astype(jnp.float16).astype(jnp.float32) for k in p}
        u, s = tx.update(g, s, p)
        return gf.apply_updates(p, u), s, scale

    step = jax.jit(step)
    s = tx.init(params)
    p = params
    scales, found = [], []
    for t, w in enumerate(rec["weights"]):
        p, s, scale = step(p, s, jnp.float32(w))
        scales.append(float(scale))
        found.append(bool(s.found_inf))
        for k in names:
            np.testing.assert_allclose(np.asarray(p[k]), rec[f"adam/{k}"][t], rtol=1e-5, atol=1e-6, err_msg=f"{k} step {t}")
    assert len(traces) == 1
    np.testing.assert_array_equal(np.array(scales, np.float32), rec["scales"])
    assert found == list(rec["found_inf"])
    assert float(s.scale) == float(rec["final_scale"])
    # The run exercises backoffs and growths.
    assert 5 <= sum(found) < len(found) and len(set(scales)) >= 4
    assert int(s.num_skipped) == sum(found)


def test_scale_sequence_matches_reference_rule():
    rng = np.random.default_rng(0)
    finite = [bool(x) for x in rng.random(300) > 0.08]  # a few percent overflowing steps
    finite[100:140] = [True] * 40  # long enough runs to grow
    tx = gf.dynamic_loss_scale(gf.sgd(0.1), init_scale=2.0**10, growth_factor=4.0, backoff_factor=0.25, growth_interval=7)
    p = {"x": jnp.zeros(3)}
    s = tx.init(p)
    step = jax.jit(tx.update)
    got = []
    for ok in finite:
        got.append(float(gf.loss_scale(s)))
        g = {"x": jnp.asarray([1.0, 2.0, 3.0] if ok else [1.0, jnp.inf, 3.0])}
        _, s = step(g, s, p)
    want, last = reference_spikes.grad_scaler(finite, 2.0**10, 4.0, 0.25, 7)
    assert got == want and float(s.scale) == last
    assert len(set(got)) > 3


def test_growth_that_would_overflow_keeps_the_scale():
    tx = gf.dynamic_loss_scale(gf.sgd(0.1), init_scale=3e38, growth_factor=2.0, growth_interval=1)
    s = tx.init({"x": jnp.zeros(())})
    _, s = tx.update({"x": jnp.float32(1.0)}, s)
    assert float(s.scale) == float(np.float32(3e38)) and int(s.growth_tracker) == 0


def test_scale_stops_at_float32s_smallest_normal_number():
    # 2¹⁶·0.5ᵏ reaches 0 after about 170 overflows; then a healthy zero gradient would be
    # unscaled as 0·(1/0) = NaN and applied. S stops at 2⁻¹²⁶, where 1/S is finite.
    tx = gf.dynamic_loss_scale(gf.sgd(0.1))
    p = {"x": jnp.zeros(2)}
    s = tx.init(p)
    step = jax.jit(tx.update)
    for _ in range(200):
        _, s = step({"x": jnp.asarray([jnp.inf, 1.0])}, s, p)
    assert float(s.scale) == float(np.finfo(np.float32).tiny) and int(s.num_skipped) == 200
    u, s = step({"x": jnp.zeros(2)}, s, p)
    assert np.all(np.asarray(u["x"]) == 0) and not bool(s.found_inf)


def test_python_float_leaves_eagerly():
    for tx in [gf.dynamic_loss_scale(gf.sgd(0.1)), gf.protect(gf.sgd(0.1), watch_loss=False)]:
        u, _ = tx.update({"a": 0.5}, tx.init({"a": 1.0}), {"a": 1.0})
        assert np.isfinite(float(u["a"]))


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
def test_overflow_skips_with_inner_state_untouched(bad):
    params = {"w": jnp.ones((4,), jnp.float32), "b": jnp.zeros((2,), jnp.float32)}
    tx = gf.dynamic_loss_scale(gf.adamw(0.01, weight_decay=0.1), init_scale=8.0, growth_interval=3)
    s = tx.init(params)
    for _ in range(2):
        _, s = tx.update({"w": jnp.full((4,), 8.0), "b": jnp.full((2,), -4.0)}, s, params)
    assert int(s.growth_tracker) == 2
    before = s
    u, s = jax.jit(tx.update)({"w": jnp.full((4,), 8.0).at[1].set(bad), "b": jnp.full((2,), -4.0)}, s, params)
    assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(u))
    assert _bits(s.inner_state) == _bits(before.inner_state)
    assert float(s.scale) == 4.0 and int(s.growth_tracker) == 0 and bool(s.found_inf) and int(s.num_skipped) == 1
    # A finite step then unscales by the new scale: the inner optimizer sees g/S.
    g = {"w": jnp.full((4,), 8.0), "b": jnp.full((2,), -4.0)}
    u, s2 = tx.update(g, s, params)
    want, _ = gf.adamw(0.01, weight_decay=0.1).update({"w": jnp.full((4,), 2.0), "b": jnp.full((2,), -1.0)}, s.inner_state, params)
    chex.assert_trees_all_equal(u, want)
    assert not bool(s2.found_inf)


def test_loss_scale_nested_in_a_chain_and_under_jit_with_stats():
    params = {"w": jnp.ones((3,), jnp.float32)}
    tx = gf.chain(gf.clip_by_global_norm(1.0), gf.dynamic_loss_scale(gf.adam(0.1), init_scale=2.0**5))
    s = tx.init(params)
    assert float(jax.jit(gf.loss_scale)(s)) == 32.0
    wrapped = gf.inject_hyperparams(gf.sgd)(0.1)
    outer = gf.dynamic_loss_scale(wrapped, init_scale=4.0)
    assert float(gf.loss_scale(outer.init(params))) == 4.0
    st = gf.stats(s)
    for key in ("dynamic_loss_scale/scale", "dynamic_loss_scale/growth_tracker", "dynamic_loss_scale/found_inf",
                "dynamic_loss_scale/num_skipped"):
        assert key in st, key
    with pytest.raises(ValueError, match="loss_scale: the state holds no DynamicLossScaleState"):
        gf.loss_scale(gf.adam(0.1).init(params))


def test_float16_training_end_to_end():
    # A float16 model: the loss is scaled by loss_scale(state) inside the step, as a user writes it.
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((64, 8)), jnp.float16)
    y = (x.astype(jnp.float32) @ jnp.asarray(rng.standard_normal(8), jnp.float32)).astype(jnp.float16)
    params = {"w": jnp.zeros((8,), jnp.float16)}
    tx = gf.dynamic_loss_scale(gf.adam(1e-2, nu_dtype=jnp.float32), init_scale=2.0**24, growth_interval=20)

    def loss(p):
        return jnp.mean((x @ p["w"] - y).astype(jnp.float32) ** 2)

    @jax.jit
    def step(p, s):
        grads = jax.grad(lambda q: (loss(q) * gf.loss_scale(s)).astype(jnp.float16))(p)
        u, s = tx.update(grads, s, p)
        return gf.apply_updates(p, u), s

    s = tx.init(params)
    first = float(loss(params))
    for _ in range(200):
        params, s = step(params, s)
    assert params["w"].dtype == jnp.float16 and s.scale.dtype == jnp.float32
    chex.assert_tree_all_finite(params)
    assert int(s.num_skipped) >= 1  # 2²⁴ overflows float16 at first: backed off
    assert float(loss(params)) < 0.1 * first


def test_float64_params_keep_a_float32_scale(x64):
    params = {"w": jnp.ones((3,), jnp.float64)}
    tx = gf.dynamic_loss_scale(gf.sgd(0.1), init_scale=2.0)
    s = tx.init(params)
    u, s2 = jax.jit(tx.update)({"w": jnp.full((3,), 4.0, jnp.float64)}, s, params)
    assert u["w"].dtype == jnp.float64 and s2.scale.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(u["w"]), -0.1 * 2.0)
    chex.assert_trees_all_equal_shapes_and_dtypes(s, s2)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        (dict(init_scale=0.0), "dynamic_loss_scale: init_scale must be a finite number > 0, got 0.0"),
        (dict(init_scale=math.inf), "dynamic_loss_scale: init_scale must be a finite number > 0, got inf"),
        (dict(growth_factor=1.0), "dynamic_loss_scale: growth_factor must be in (1, inf), got 1.0"),
        (dict(backoff_factor=1.0), "dynamic_loss_scale: backoff_factor must be in (0, 1), got 1.0"),
        (dict(backoff_factor=0.0), "dynamic_loss_scale: backoff_factor must be in (0, 1), got 0.0"),
        (dict(growth_interval=0), "dynamic_loss_scale: growth_interval must be an integer >= 1, got 0"),
        (dict(growth_interval=2.5), "dynamic_loss_scale: growth_interval must be an integer >= 1, got 2.5"),
        # float32 would hold these as inf, 0 or 1, so S would be inf, 0 or never move:
        (dict(init_scale=1e39), "dynamic_loss_scale: init_scale must be in [1.17549e-38, 3.40282e+38], got 1e+39"),
        (dict(init_scale=1e-46), "dynamic_loss_scale: init_scale must be in [1.17549e-38, 3.40282e+38], got 1e-46"),
        (dict(growth_factor=1e39), "dynamic_loss_scale: growth_factor must be in (1, inf) in float32, got 1e+39"),
        (dict(growth_factor=1 + 1e-9), "dynamic_loss_scale: growth_factor must be in (1, inf) in float32"),
        (dict(backoff_factor=1e-46), "dynamic_loss_scale: backoff_factor must be in (0, 1) in float32, got 1e-46"),
        (dict(backoff_factor=1 - 1e-9), "dynamic_loss_scale: backoff_factor must be in (0, 1) in float32"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, text):
    with pytest.raises(ValueError) as info:
        gf.dynamic_loss_scale(gf.sgd(0.1), **kwargs)
    assert text in str(info.value), str(info.value)


def test_unscale_multiplies_by_the_float32_reciprocal():
    # g = g_S·(1/S), the reciprocal formed once in float32 (torch's inv_scale), not g_S/S:
    # with S = 3 the two round differently for some elements.
    rng = np.random.default_rng(0)
    g_s = (rng.standard_normal(2000) * 10).astype(np.float32)
    inv = np.float32(1) / np.float32(3)
    want = -(g_s * inv)  # sgd(1.0): u = −g
    assert np.any(g_s * inv != g_s / np.float32(3))  # the check can tell the two apart
    tx = gf.dynamic_loss_scale(gf.sgd(1.0), init_scale=3.0)
    params = {"x": jnp.zeros(2000, jnp.float32)}
    u, s = tx.update({"x": jnp.asarray(g_s)}, tx.init(params), params)
    np.testing.assert_array_equal(np.asarray(u["x"]).view(np.uint32), want.view(np.uint32))
    assert not bool(s.found_inf)


@pytest.mark.parametrize("scale", [2.0**-20, 3.0])
def test_float16_gradients_are_unscaled_in_float32(scale):
    # float16 g_S is unscaled in float32 (1/S formed in float32) and rounded back to float16 once:
    # 1/2⁻²⁰ = 2²⁰ overflows float16, and 1/3 in float16 has only 11 bits.
    g_s = np.array([2.0**-10, -(2.0**-12), 2.0**-14, 0.0, 3.0e-3, -7.0e-4, 1.0e-5, 2.0**-6], np.float16)
    inv = np.float32(1) / np.float32(scale)
    want = -(g_s.astype(np.float32) * inv).astype(np.float16)
    assert np.all(np.isfinite(want))
    tx = gf.dynamic_loss_scale(gf.sgd(1.0), init_scale=scale)
    params = {"w": jnp.zeros(g_s.shape, jnp.float16)}
    u, s = jax.jit(tx.update)({"w": jnp.asarray(g_s)}, tx.init(params), params)
    assert u["w"].dtype == jnp.float16 and not bool(s.found_inf)
    np.testing.assert_array_equal(np.asarray(u["w"]).view(np.uint16), want.view(np.uint16))


def test_count_counts_every_update_skipped_or_not():
    # count is the number of updates seen, skipped ones included; num_skipped only the skipped.
    tx = gf.dynamic_loss_scale(gf.sgd(0.1), init_scale=8.0, growth_interval=100)
    p = {"x": jnp.zeros(2)}
    s = tx.init(p)
    pattern = [True, False, False, True, False, True, True]
    for t, ok in enumerate(pattern):
        _, s = tx.update({"x": jnp.asarray([1.0, 2.0] if ok else [jnp.nan, 2.0])}, s, p)
        assert int(s.count) == t + 1
        assert int(s.num_skipped) == pattern[: t + 1].count(False)
        assert bool(s.found_inf) == (not ok)
    # three backoffs (8 → 1) and a tracker of the two finite steps since the last one
    assert float(s.scale) == 1.0 and int(s.growth_tracker) == 2


def test_overflow_is_judged_on_the_scaled_gradient_as_torch_does():
    # torch's _amp_foreach_non_finite_check_and_unscale_ checks g_S, then multiplies by 1/S. Below
    # S = 1 a finite g_S can unscale to inf; that step is not a found_inf one (the inner sees inf).
    tx = gf.dynamic_loss_scale(gf.sgd(1.0), init_scale=0.5)
    p = {"x": jnp.zeros(2)}
    u, s = tx.update({"x": jnp.asarray([3e38, 1.0], jnp.float32)}, tx.init(p), p)
    assert not bool(s.found_inf) and int(s.num_skipped) == 0 and float(s.scale) == 0.5
    assert np.isneginf(float(u["x"][0])) and float(u["x"][1]) == -2.0
