"""Hostile review of the spike remedies' rules (spam, stable_adamw, adam_atan2, clip_update_norm,
clip_relative_update, zclip, adagc).

Each failing test is a finding: the comment says what happens, what should happen and the
reference value. Tests marked "# guarantee" pin a rule that passes today.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf


def _steps(tx, grads, params):
    state = tx.init(params)
    update = jax.jit(tx.update)
    outs = []
    for g in grads:
        u, state = update(g, state, params)
        outs.append(u)
    return outs, state


# --------------------------------------------------------------------------------------------
# findings: clip_relative_update, scale_by_spam(adaptive_clip=True), adagc
# --------------------------------------------------------------------------------------------


def test_clip_relative_update_one_inf_step_freezes_the_matrix_for_good():
    # What happens: one update with an inf element gives RMS(u) = inf, so c = b/inf = 0, and
    # hold=True keeps f = min(f, 0) = 0 for ever: every later (finite, small) step of that
    # matrix is multiplied by 0, so the tensor never moves again.
    # What should happen: a non-finite step must not enter the held minimum (as
    # clip_update_norm keeps non-finite norms out of its history, zclip/adagc keep them out of
    # their EMAs). The later step u = 0.01 has RMS 0.01 < b = ρ·RMS(w) = 0.1 and should pass
    # unchanged: reference value 0.01 per element.
    params = {"w": jnp.ones((2, 2))}
    grads = [{"w": jnp.array([[jnp.inf, 0.0], [0.0, 0.0]])}, {"w": jnp.full((2, 2), 0.01)}, {"w": jnp.full((2, 2), 0.01)}]
    outs, state = _steps(gf.clip_relative_update(0.1, 0.01), grads, params)
    np.testing.assert_allclose(np.asarray(outs[-1]["w"]), 0.01, rtol=1e-6)  # actual: 0.0
    assert float(state.factor[0]) == 1.0  # actual: 0.0


def test_spam_adaptive_max_ema_is_poisoned_for_good_by_one_inf_gradient():
    # What happens: an inf gradient element makes M = max|g| = inf, so the EMA m_max becomes inf
    # and stays inf (it is never reset, and inf·γ + … stays inf). SPAM's reset at k = 5 makes m
    # and v finite again, so training resumes, but the bound m̂_max = inf never clips again: the
    # ×1000 spike at k = 11 passes unclipped (num_clipped 0). With a NaN the same holds (NaN EMA).
    # What should happen: a non-finite max must not enter m_max (zclip and adagc leave their EMAs
    # unchanged on a non-finite norm); then m_max is the EMA of finite maxima ≈ 1 and the spike
    # 1000 > m̂_max ≈ 1 is clipped (reference: num_clipped = 1 at k = 11, max_ema finite).
    params = {"w": jnp.ones(4)}
    seq = [1.0, 1.0, np.inf, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1000.0]
    grads = [{"w": jnp.array([x, 0.5, -0.5, 0.25])} for x in seq]
    tx = gf.scale_by_spam(adaptive_clip=True, reset_interval=5, warmup_steps=0, max_decay=0.9)
    outs, state = _steps(tx, grads, params)
    assert np.all(np.isfinite(np.asarray(outs[-1]["w"])))  # the moments did recover at the reset
    assert np.isfinite(float(state.max_ema["w"]))  # actual: inf
    assert int(state.num_clipped) >= 1  # actual: 0 (the ×1000 spike is not clipped)


def test_adagc_warmup_counts_zero_and_empty_leaves_as_clipped():
    # What happens: during warm-up a leaf counts as clipped whenever the *global* norm exceeds
    # λ_abs, so an all-zero leaf and an empty leaf are reported among num_leaves_clipped (3),
    # though nothing in them was scaled down; after warm-up the test is ‖g_i‖ > bound, which a
    # zero leaf never passes, so the same tree reports 1 there.
    # What should happen (AdagcState: "leaves scaled down in the last update"): 1, only "a".
    params = {"a": jnp.ones(3), "z": jnp.zeros(3), "e": jnp.zeros((0,))}
    grads = [{"a": jnp.full(3, 10.0), "z": jnp.zeros(3), "e": jnp.zeros((0,))}]
    _, state = _steps(gf.adagc(warmup_steps=3), grads, params)
    assert int(state.num_leaves_clipped) == 1  # actual: 3


# --------------------------------------------------------------------------------------------
# guarantees
# --------------------------------------------------------------------------------------------


def test_spam_warmup_and_reset_follow_the_code_counter():
    # guarantee: SPAM's code sets current_step = 0 at the end of update k − 1 when k % ΔT == 0,
    # so the reset update k itself has s = 1 − 0.99 = 0.01 and the c-th after it
    # s = 1 − 0.99·(1 + cos(π·c/(W + 1)))/2 while c < W; s = 1 before the first reset.
    import math

    dT, W = 4, 3
    params = {"w": jnp.ones(2)}
    grads = [{"w": jnp.array([1.0, -2.0])}] * 12
    tx = gf.scale_by_spam(threshold=0.0, reset_interval=dT, warmup_steps=W, clip_start=0)
    state = tx.init(params)
    got = []
    for g in grads:
        _, state = tx.update(g, state, params)
        got.append(float(state.warmup_scale))
    want = []
    for k in range(1, 13):
        last = (k // dT) * dT
        c = k - last
        want.append(1 - 0.99 * (1 + math.cos(math.pi * c / (W + 1))) / 2 if last >= dT and c < W else 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert abs(got[dT - 1] - 0.01) < 1e-6


def test_stable_adamw_decay_uses_unclipped_rate_on_a_clipped_step():
    # guarantee: the authors' StableAdamWUnfused does theta.mul_(1 - lr*weight_decay) and then
    # addcdiv_(m̂, √v̂ + ε, value=-lr/max(1, RMS/d)): the decay is not shrunk with the step.
    lr, wd, eps, b1, b2 = 0.1, 0.5, 1e-6, 0.9, 0.99
    params = {"w": jnp.full((2,), 2.0)}
    gs = [np.array([1.0, 1.0]), np.array([100.0, 1.0])]
    tx = gf.stable_adamw(lr, b1, b2, eps, weight_decay=wd)
    state = tx.init(params)
    p = params
    theta = np.full(2, 2.0)
    m = np.zeros(2)
    v = np.zeros(2)
    for k, g in enumerate(gs, start=1):
        u, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, p)
        p = gf.apply_updates(p, u)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = m / (1 - b1**k), v / (1 - b2**k)
        rms = np.sqrt(np.mean(g * g / np.maximum(vh, eps * eps)))
        theta = theta * (1 - lr * wd) - lr / max(1.0, rms) * mh / (np.sqrt(vh) + eps)
    assert rms > 1.1  # the second step is clipped (RMS ≈ 1.22)
    np.testing.assert_allclose(np.asarray(p["w"]), theta, rtol=1e-5)
