"""Rules of the schedules, the loss-driven transforms and inject_hyperparams that a mutation audit found unpinned.

Each test states one documented rule; the references are NumPy closed forms or exact
arithmetic written from the docstrings (optax where it has the same schedule).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf

# ----------------------------------------------------------------------------
# Step handling


def test_negative_steps_are_clamped_to_step_zero():
    # _step: "the step as an array, clamped at 0"
    for schedule in (
        gf.warm_restarts_schedule(1.0, 10, peak_mult=0.5),
        gf.piecewise_constant_schedule(1.0, {0: 0.5, 5: 0.1}),
    ):
        np.testing.assert_array_equal(schedule(jnp.array([-7, -1])), schedule(jnp.array([0, 0])))
        assert float(schedule(-2.5)) == float(schedule(0.0))


def test_int16_steps_locate_growing_cycles_like_int32_steps():
    # int16 steps are widened before the table of cycle starts (up to 2³¹) is cast to them
    schedule = gf.warm_restarts_schedule(1.0, 10, cycle_mult=2.0, peak_mult=0.5, min_value=0.01, warmup_steps=2)
    steps = np.array([0, 5, 37, 200, 1000, 5000, 20000, 32767])
    np.testing.assert_allclose(
        jax.jit(schedule)(jnp.asarray(steps, jnp.int16)), schedule(jnp.asarray(steps, jnp.int32)), rtol=1e-6
    )


def test_staircase_and_boundaries_at_the_largest_step_of_the_dtype():
    # ⌊t/T⌋ = 1 and b ≤ t hold at t = T = b = the dtype's largest value
    assert float(gf.exponential_decay(1.0, 255, 0.5, staircase=True)(jnp.uint8(255))) == 0.5
    assert float(gf.exponential_decay(1.0, 2**31 - 1, 0.5, staircase=True)(jnp.int32(2**31 - 1))) == 0.5
    assert float(gf.piecewise_constant_schedule(1.0, {255: 0.5})(jnp.uint8(255))) == 0.5
    assert float(gf.piecewise_constant_schedule(1.0, {2**31 - 1: 0.5})(jnp.int32(2**31 - 1))) == 0.5
    assert float(gf.piecewise_constant_schedule(1.0, {255: 0.5})(jnp.uint8(254))) == 1.0


# ----------------------------------------------------------------------------
# Argument rules that the docstrings allow or refuse


def test_exponential_decay_at_rate_one_needs_no_end_value():
    # only decay_rate > 1 needs end_value; r = 1 is a constant, as in optax
    t = jnp.arange(0, 50, 7)
    np.testing.assert_allclose(gf.exponential_decay(0.3, 10, 1.0)(t), 0.3, rtol=1e-6)
    np.testing.assert_allclose(gf.exponential_decay(0.3, 10, 1.0)(t), jax.vmap(optax.exponential_decay(0.3, 10, 1.0))(t))


def test_warmup_cosine_with_warmup_equal_to_decay_steps_jumps_to_end_value():
    # "optax refuses W = D, gradflow jumps to end_value at D"
    schedule = gf.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10, end_value=0.1)
    t = np.arange(15)
    want = np.where(t < 10, t / 10, 0.1)
    np.testing.assert_allclose(schedule(jnp.asarray(t)), want, rtol=1e-6)


def test_warmup_exponential_with_zero_warmup_is_the_exponential_decay_from_the_peak():
    # W = 0: α_t = E(t), E = exponential_decay(peak, ...); optax gives the same
    t = jnp.arange(0, 60, 3)
    ours = gf.warmup_exponential_decay_schedule(0.0, 1.0, 0, 10, 0.5, transition_begin=5)
    want = gf.exponential_decay(1.0, 10, 0.5, transition_begin=5)
    np.testing.assert_allclose(ours(t), want(t), rtol=1e-6)
    theirs = optax.warmup_exponential_decay_schedule(0.0, 1.0, 0, 10, 0.5, transition_begin=5)
    np.testing.assert_allclose(ours(t), jax.vmap(theirs)(t), rtol=1e-6)


def test_linear_onecycle_accepts_pct_final_one_and_refuses_pct_final_equal_to_pct_start():
    # pct_final in (pct_start, 1]: at 1 the schedule falls to peak/d at N, then holds peak/(d·f)
    n, peak, d, f = 100, 1.0, 25.0, 1e4
    schedule = gf.linear_onecycle_schedule(n, peak, pct_start=0.3, pct_final=1.0, div_factor=d, final_div_factor=f)
    np.testing.assert_allclose(schedule(30), peak, rtol=1e-6)
    np.testing.assert_allclose(schedule(99), peak + (peak / d - peak) * 69 / 70, rtol=1e-6)
    np.testing.assert_allclose(schedule(jnp.array([100, 101, 1000])), peak / (d * f), rtol=1e-5)
    with pytest.raises(ValueError, match="linear_onecycle_schedule: pct_final"):
        gf.linear_onecycle_schedule(n, peak, pct_start=0.3, pct_final=0.3)


# ----------------------------------------------------------------------------
# Warm restarts: exact restart steps and the cycles past the table


def test_warm_restarts_lands_on_an_exact_integer_start_despite_float_rounding():
    # T₀ = 25, m = 2.2: cycle 3 starts at 25 + 55 + 121 = 201 exactly (float64 sums give 201.00000000000003)
    schedule = gf.warm_restarts_schedule(1.0, 25, 2.2)
    assert float(schedule(201)) == 1.0
    length = 121.0
    np.testing.assert_allclose(schedule(200), 0.5 * (1 + math.cos(math.pi * 120 / length)), atol=1e-6)
    assert float(schedule(200)) < 1e-3


def _np_restarts_past_the_table(ts, t0, m):
    starts, lengths = [0.0], [float(t0)]
    while starts[-1] <= ts.max():
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * m)
    starts, lengths = np.asarray(starts), np.asarray(lengths)
    k = np.searchsorted(starts, ts, side="right") - 1
    gap = np.minimum(ts - starts[k], starts[k + 1] - ts)
    return 0.5 * (1 + np.cos(np.pi * (ts - starts[k]) / lengths[k])), gap


def test_warm_restarts_past_the_tabled_cycles_follow_the_closed_form():
    # m barely above 1: the 4096 tabled cycles end near step 5061; later cycles are located in float32
    schedule = gf.warm_restarts_schedule(1.0, 1, 1.0001)
    ts = np.arange(5000, 30000, 7)
    want, gap = _np_restarts_past_the_table(ts, 1, 1.0001)
    got = np.asarray(jax.jit(schedule)(jnp.asarray(ts)))
    clear = gap > 0.02  # float32 may place a step within a hair of a restart in the neighbouring cycle
    assert clear.mean() > 0.97
    np.testing.assert_allclose(got[clear], want[clear], atol=2e-2)


def test_warm_restarts_every_tabled_restart_is_at_the_peak_on_its_exact_step():
    # m = 2, T₀ = 1: cycle k starts at 2^k − 1 (formed in float64, "every restart lands on its exact step")
    schedule = gf.warm_restarts_schedule(1.0, 1, 2.0)
    starts = np.array([2**k - 1 for k in range(1, 32)])  # up to 2³¹ − 1, the last step an int32 counts
    np.testing.assert_array_equal(jax.jit(schedule)(jnp.asarray(starts)), 1.0)
    before = np.asarray(jax.jit(schedule)(jnp.asarray(starts[2:] - 1)))  # the last step of cycles of length ≥ 4
    assert before.max() < 0.15, before


def test_warm_restarts_starts_beyond_a_billion_steps_are_not_moved_early():
    # a slack of 1e-9·s in ⌈s − slack⌉ exceeded one step above 10⁹ and placed those restarts 1–2 steps early
    from gradflow.schedules import _CycleTable

    assert _CycleTable.build(1, 2.0).ceil_starts.tolist() == [2**k - 1 for k in range(32)]
    assert _CycleTable.build(3, 3.0).ceil_starts.tolist()[-2:] == [3 * (3**k - 1) // 2 for k in (18, 19)]


# ----------------------------------------------------------------------------
# reduce_on_plateau and restart_on_loss


def _run(tx, losses):
    params = jnp.zeros(1)
    state = tx.init(params)
    states = []
    for v in losses:
        _, state = tx.update(jnp.ones(1), state, params, value=v)
        states.append(state)
    return states


def test_minus_infinity_never_becomes_the_best_loss():
    # "Non-finite losses (NaN, ±inf) never improve and never become the best"
    states = _run(gf.reduce_on_plateau(patience=5), [1.0, -np.inf, 0.5])
    assert float(states[1].best_value) == 1.0 and int(states[1].plateau_count) == 1
    assert float(states[2].best_value) == 0.5 and int(states[2].plateau_count) == 0


def test_cooldown_counter_never_goes_below_zero():
    # cooldown_count: evaluations left in the cooldown (0 when none runs)
    states = _run(gf.reduce_on_plateau(patience=0, cooldown=1), [1.0] * 6)
    assert [int(s.cooldown_count) for s in states] == [0, 1, 0, 1, 0, 1]
    states = _run(gf.reduce_on_plateau(patience=100), [1.0] * 4)
    assert all(int(s.cooldown_count) == 0 for s in states)


def test_a_reduction_by_exactly_eps_is_not_applied():
    # "a reduction of the scale by ε or less is not applied" (PyTorch: old_lr − new_lr > eps)
    states = _run(gf.reduce_on_plateau(factor=0.5, patience=0, eps=0.5), [1.0, 1.0, 1.0])
    assert [float(s.scale) for s in states] == [1.0, 1.0, 1.0]
    states = _run(gf.reduce_on_plateau(factor=0.5, patience=0, eps=0.49), [1.0, 1.0])
    assert [float(s.scale) for s in states] == [1.0, 0.5]


def test_cooldown_counts_evaluations_not_updates():
    # with accumulation_size=2 an evaluation happens every 2nd update; the cooldown waits on evaluations
    tx = gf.reduce_on_plateau(factor=0.5, patience=0, cooldown=2, accumulation_size=2)
    states = _run(tx, [1.0] * 12)
    scales = [float(s.scale) for s in states]
    # evaluations at updates 2, 4, ...: 1st sets the best, 2nd reduces, 3rd and 4th are the cooldown, 5th (update 10) reduces again
    assert scales == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25], scales
    assert [int(s.cooldown_count) for s in states[3:6]] == [2, 2, 1]


def test_restart_resets_the_best_loss_to_infinity():
    # "A restart resets the best loss to +inf": after it, any finite loss is an improvement
    tx = gf.restart_on_loss(gf.linear_schedule(1.0, 0.0, 100), patience=1)
    states = _run(tx, [1.0, 2.0, 2.0, 3.0])
    assert int(states[2].restarts) == 1 and float(states[2].best_value) == np.inf
    assert float(states[3].best_value) == 3.0 and int(states[3].plateau_count) == 0


def test_after_a_patience_restart_the_loss_must_reach_the_threshold_again():
    # "after a restart the loss must rise to the threshold again before the next threshold restart"
    tx = gf.restart_on_loss(gf.linear_schedule(1.0, 0.0, 100), threshold=1.0, patience=1)
    states = _run(tx, [2.0, 2.0, 2.0, 0.5])  # the 3rd update restarts by patience while the loss is above 1
    assert [int(s.restarts) for s in states] == [0, 0, 1, 1]
    assert not bool(states[2].armed)


def test_restart_on_loss_initial_scale_is_the_schedules_value_at_step_zero():
    # state.scale holds the schedule's value (S(0) before any update), never a placeholder 1
    tx = gf.restart_on_loss(gf.cosine_decay_schedule(0.1, 100), patience=3)
    np.testing.assert_allclose(tx.init(jnp.zeros(2)).scale, 0.1, rtol=1e-6)


# ----------------------------------------------------------------------------
# inject_hyperparams


def test_inject_hyperparams_injects_an_int_where_the_default_is_a_float():
    # "a Python int where the factory's default is a float" is injected, stored as float32
    tx = gf.inject_hyperparams(gf.adam)(learning_rate=0.1, b1=0)
    hp = gf.current_hyperparams(tx.init(jnp.zeros(2)))
    assert "b1" in hp and hp["b1"].dtype == jnp.float32 and float(hp["b1"]) == 0.0


def test_inject_hyperparams_keeps_the_dtype_of_an_array_you_pass():
    # "stored as float32 (... or the dtype of a NumPy/JAX array you pass ...)"
    tx = gf.inject_hyperparams(gf.sgd)(learning_rate=jnp.asarray(0.5, jnp.bfloat16))
    assert gf.current_hyperparams(tx.init(jnp.zeros(2)))["learning_rate"].dtype == jnp.bfloat16
    tx = gf.inject_hyperparams(gf.sgd)(learning_rate=0.5)
    assert gf.current_hyperparams(tx.init(jnp.zeros(2, jnp.bfloat16)))["learning_rate"].dtype == jnp.float32


def test_inject_hyperparams_hyperparam_dtype_forces_the_stored_dtype():
    tx = gf.inject_hyperparams(gf.sgd, hyperparam_dtype=jnp.bfloat16)(learning_rate=0.5)
    assert gf.current_hyperparams(tx.init(jnp.zeros(2)))["learning_rate"].dtype == jnp.bfloat16


def test_current_hyperparams_refuses_two_injected_states_sharing_a_name():
    # "Raises: ValueError: ... two that share a name"
    tx = gf.chain(gf.inject_hyperparams(gf.sgd)(learning_rate=0.1), gf.inject_hyperparams(gf.sgd)(learning_rate=0.2))
    with pytest.raises(ValueError, match="current_hyperparams: two injected states"):
        gf.current_hyperparams(tx.init(jnp.zeros(2)))


def test_set_hyperparams_judges_a_value_as_the_stored_dtype_holds_it():
    # "b2=1 - 1e-9, 1.0 in float32 ... raises ValueError"
    state = gf.inject_hyperparams(gf.adam)(learning_rate=0.1).init(jnp.zeros(2))
    with pytest.raises(ValueError, match="b2"):
        gf.set_hyperparams(state, b2=1 - 1e-9)
