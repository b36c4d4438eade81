"""protect: bitwise pass-through when nothing fires, untouched inner state when a step is skipped."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf
from gradflow.protect import robust_location_scale

PARAMS = {"w": np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}


def grads_at(rng, scale=1.0):
    return {k: (rng.standard_normal(v.shape) * scale).astype(np.float32) for k, v in PARAMS.items()}


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


INNERS = {
    "gf.adamw+schedule": lambda: gf.adamw(gf.warmup_cosine_decay_schedule(0.0, 0.01, 5, 200), weight_decay=0.01),
    "optax.adamw+schedule": lambda: optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 0.01, 5, 200)),
    "optax standard recipe": lambda: optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 0.01, 5, 200))
    ),
    "gf.chain(clip, sgd momentum)": lambda: gf.chain(gf.clip_by_global_norm(1.0), gf.sgd(0.1, momentum=0.9)),
}


def healthy_losses(steps):
    rng = np.random.default_rng(1)
    return (2.0 * np.exp(-np.arange(steps) / 100) + 0.05 * rng.standard_normal(steps)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(INNERS))
def test_updates_equal_inner_bitwise_when_nothing_fires(name):
    # The relative update clip is off here (its own tests are below): this is the skipping logic.
    inner, guarded = INNERS[name](), gf.protect(INNERS[name](), max_update_ratio=None)
    params = jax.tree.map(jnp.asarray, PARAMS)
    s_in, s_pr = inner.init(params), guarded.init(params)
    # Op by op (no jit): each program runs the same primitives in the same order, so
    # equality is exact; under jit XLA may fuse the two programs differently (1-ulp).
    step_in = lambda g, s, p: inner.update(g, s, p)  # noqa: E731
    step_pr = lambda g, s, p, v: guarded.update(g, s, p, value=v)  # noqa: E731
    rng = np.random.default_rng(2)
    losses = healthy_losses(120)
    for t in range(120):
        g = grads_at(rng, 1.0 + 0.2 * rng.standard_normal())
        u_in, s_in = step_in(g, s_in, params)
        u_pr, s_pr = step_pr(g, s_pr, params, losses[t])
        assert not bool(s_pr.skipped), t
        assert_bitwise_equal(u_pr, u_in)
        assert_bitwise_equal(s_pr.inner_state, s_in)
        params = gf.apply_updates(params, u_in)
    assert int(s_pr.num_skipped) == 0 and int(s_pr.count) == 120


def test_default_update_clip_leaves_steps_below_its_bound_bit_identical():
    # AdamW at 0.01 on weights of RMS ~0.5-1 steps by ~1% of them: under the default ρ = 0.1.
    params = {"w": jnp.asarray(PARAMS["w"]), "b": jnp.full(3, 0.5, jnp.float32)}
    inner, guarded = INNERS["optax standard recipe"](), gf.protect(INNERS["optax standard recipe"]())
    s_in, s_pr = inner.init(params), guarded.init(params)
    rng = np.random.default_rng(4)
    losses = healthy_losses(100)
    for t in range(100):
        g = grads_at(rng)
        u_in, s_in = inner.update(g, s_in, params)
        u_pr, s_pr = guarded.update(g, s_pr, params, value=losses[t])
        assert_bitwise_equal(u_pr, u_in)
        params = gf.apply_updates(params, u_in)
    assert int(s_pr.update_clip.num_clipped) == 0 and 0 < float(s_pr.update_clip.max_ratio) < 0.1


def test_update_clip_bounds_each_tensor_relative_to_its_weights():
    params = {"w": jnp.asarray(PARAMS["w"]), "b": jnp.zeros(3, jnp.float32), "c": jnp.full(2, 100.0, jnp.float32)}
    tx = gf.protect(gf.sgd(1.0), watch_loss=False, watch_grad_norm=False, max_update_ratio=0.2, min_weight_rms=0.05,
                    clip_vector_updates=True)
    g = {"w": jnp.full((4, 3), 3.0), "b": jnp.asarray([1.0, -2.0, 2.0]), "c": jnp.asarray([0.5, -0.5])}
    u, state = tx.update(g, tx.init(params), params)
    rms = lambda x: float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64)))))  # noqa: E731
    np.testing.assert_allclose(rms(u["w"]), 0.2 * rms(params["w"]), rtol=1e-6)  # cut to ρ·RMS(w)
    np.testing.assert_allclose(rms(u["b"]), 0.2 * 0.05, rtol=1e-6)  # zero weights: cut to ρ·s
    np.testing.assert_allclose(np.asarray(u["b"]) / rms(u["b"]), -np.asarray(g["b"]) / rms(g["b"]), rtol=1e-6)
    assert_bitwise_equal(u["c"], -g["c"])  # 0.5 ≤ 0.2·100: untouched
    assert int(state.update_clip.num_leaves_clipped) == 2 and int(state.update_clip.num_clipped) == 1


def test_update_clip_leaves_vectors_alone_by_default():
    params = {"w": jnp.asarray(PARAMS["w"]), "b": jnp.zeros(3, jnp.float32)}
    tx = gf.protect(gf.sgd(1.0), watch_loss=False, watch_grad_norm=False, max_update_ratio=0.2, min_weight_rms=0.05)
    g = {"w": jnp.full((4, 3), 3.0), "b": jnp.asarray([1.0, -2.0, 2.0])}
    u, state = tx.update(g, tx.init(params), params)
    rms = lambda x: float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64)))))  # noqa: E731
    np.testing.assert_allclose(rms(u["w"]), 0.2 * rms(params["w"]), rtol=1e-6)  # the matrix: cut to ρ·RMS(w)
    assert_bitwise_equal(u["b"], -g["b"])  # the bias, 400× over its bound ρ·s: untouched
    assert int(state.update_clip.num_leaves_clipped) == 1
    np.testing.assert_allclose(np.asarray(state.update_clip.factor)[0], 1.0)  # leaves in tree order: b, w


@pytest.mark.parametrize("vectors", [False, True])
def test_update_clip_under_jit_equals_chaining_clip_relative_update_bitwise(vectors):
    # The cut is computed inside the skip cond and applied after it: the same numbers as the transform.
    params = {"w": jnp.asarray(PARAMS["w"]), "b": jnp.full(3, 0.5, jnp.float32)}
    inner = lambda: gf.adam(gf.warmup_cosine_decay_schedule(0.0, 0.3, 5, 60))  # noqa: E731
    guarded = gf.protect(inner(), watch_loss=False, watch_grad_norm=False, clip_vector_updates=vectors)
    chained = gf.chain(inner(), gf.clip_relative_update(vectors=vectors))
    s_pr, s_ch = guarded.init(params), chained.init(params)
    step_pr, step_ch = jax.jit(guarded.update), jax.jit(chained.update)
    rng = np.random.default_rng(5)
    for _ in range(40):
        g = grads_at(rng)
        u_pr, s_pr = step_pr(g, s_pr, params)
        u_ch, s_ch = step_ch(g, s_ch, params)
        assert_bitwise_equal(u_pr, u_ch)
        params = gf.apply_updates(params, u_pr)
    assert_bitwise_equal(s_pr.update_clip, s_ch[1])
    assert int(s_pr.update_clip.num_clipped) > 10


def test_update_clip_needs_params():
    tx = gf.protect(gf.adam(0.01), watch_loss=False)
    with pytest.raises(ValueError, match="max_update_ratio=None"):
        tx.update({"w": jnp.ones(3)}, tx.init({"w": jnp.ones(3)}))
    off = gf.protect(gf.adam(0.01), watch_loss=False, max_update_ratio=None)
    off.update({"w": jnp.ones(3)}, off.init({"w": jnp.ones(3)}))


BAD = {
    "nan gradient": lambda g, v: ({**g, "w": g["w"].at[1, 2].set(jnp.nan)}, v),
    "inf gradient": lambda g, v: ({**g, "b": g["b"].at[0].set(jnp.inf)}, v),
    "nan loss": lambda g, v: (g, jnp.float32(jnp.nan)),
    "loss and gradient spike": lambda g, v: (jax.tree.map(lambda x: x * 1e4, g), v * 1000),
    "loss spike (rule either)": lambda g, v: (g, v * 1000),
    "gradient spike (rule either)": lambda g, v: (jax.tree.map(lambda x: x * 1e4, g), v),
}


@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("name", sorted(INNERS))
def test_a_skipped_step_leaves_every_inner_leaf_bit_identical(name, bad):
    tx = gf.protect(INNERS[name](), spike_rule="either" if "either" in bad else "both")
    params = jax.tree.map(jnp.asarray, PARAMS)
    state = tx.init(params)
    step = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
    rng = np.random.default_rng(3)
    for t in range(6):  # a handful of healthy steps: enough for the robust statistics
        state_before = state
        g, v = grads_at(rng), jnp.float32(1.0 - 0.01 * t)
        if t == 5:
            g, v = BAD[bad](jax.tree.map(jnp.asarray, g), v)
        updates, state = step(g, state, params, v)
        if t < 5:
            assert not bool(state.skipped)
            params = gf.apply_updates(params, updates)
    assert bool(state.skipped) and int(state.num_skipped) == 1
    assert_bitwise_equal(state.inner_state, state_before.inner_state)
    assert_bitwise_equal(state.loss_history, state_before.loss_history)
    assert_bitwise_equal(state.grad_norm_history, state_before.grad_norm_history)
    for u in jax.tree.leaves(updates):
        assert np.all(np.asarray(u) == 0)


def test_catches_a_spike_from_the_fifth_step_and_counts_it():
    tx = gf.protect(gf.adam(0.01))
    params = jax.tree.map(jnp.asarray, PARAMS)
    state = tx.init(params)
    rng = np.random.default_rng(4)
    skipped = []
    for t in range(8):
        v = jnp.float32(50.0 if t == 4 else 1.0 + 0.01 * rng.standard_normal())
        _, state = tx.update(grads_at(rng, 100.0 if t == 4 else 1.0), state, params, value=v)
        skipped.append(bool(state.skipped))
    assert skipped == [False] * 4 + [True] + [False] * 3
    assert int(state.num_loss_spikes) == 1 and int(state.num_grad_norm_spikes) == 1


def test_default_margin_lets_a_tripled_loss_through():
    # Spikes must exceed the median by 9×|median| (10× in all): ordinary noise, even heavy-tailed, passes.
    tx = gf.protect(gf.adam(0.01))
    params = jax.tree.map(jnp.asarray, PARAMS)
    state = tx.init(params)
    rng = np.random.default_rng(4)
    for _ in range(6):
        _, state = tx.update(grads_at(rng), state, params, value=jnp.float32(1.0))
    _, state = tx.update(grads_at(rng, 3.0), state, params, value=jnp.float32(3.0))
    assert not bool(state.skipped)
    _, state = tx.update(grads_at(rng, 30.0), state, params, value=jnp.float32(30.0))
    assert bool(state.skipped)


def test_a_spike_before_min_samples_is_not_judged_but_a_nan_is():
    tx = gf.protect(gf.adam(0.01))
    params = jax.tree.map(jnp.asarray, PARAMS)
    state = tx.init(params)
    rng = np.random.default_rng(5)
    _, state = tx.update(grads_at(rng), state, params, value=jnp.float32(1.0))
    _, state = tx.update(grads_at(rng), state, params, value=jnp.float32(1e6))  # one value of history: no judgement
    assert not bool(state.skipped)
    _, state = tx.update(grads_at(rng), state, params, value=jnp.float32(jnp.inf))
    assert bool(state.skipped) and int(state.num_not_finite) == 1


def test_spike_rule_both_needs_loss_and_norm_to_spike():
    for rule, want in (("either", True), ("both", False)):
        tx = gf.protect(gf.adam(0.01), spike_rule=rule)
        params = jax.tree.map(jnp.asarray, PARAMS)
        state = tx.init(params)
        rng = np.random.default_rng(6)
        for _ in range(6):
            _, state = tx.update(grads_at(rng), state, params, value=jnp.float32(1.0 + 0.01 * rng.standard_normal()))
        _, state = tx.update(grads_at(rng), state, params, value=jnp.float32(100.0))  # loss spikes, norm does not
        assert bool(state.skipped) is want, rule
        _, state = tx.update(grads_at(rng, 1e4), state, params, value=jnp.float32(100.0))  # both spike
        assert bool(state.skipped), rule


def test_max_consecutive_skips_lets_a_lasting_change_through():
    tx = gf.protect(gf.adam(0.01), max_consecutive_skips=3, spike_rule="either")
    params = jax.tree.map(jnp.asarray, PARAMS)
    state = tx.init(params)
    rng = np.random.default_rng(7)
    for _ in range(5):
        _, state = tx.update(grads_at(rng), state, params, value=jnp.float32(1.0))
    flags = []
    for _ in range(5):  # the loss moves to a new level for good
        _, state = tx.update(grads_at(rng), state, params, value=jnp.float32(100.0))
        flags.append(bool(state.skipped))
    assert flags[:4] == [True, True, True, False]


def test_max_consecutive_skips_counts_through_non_finite_steps():
    # A NaN step between the spikes of a lasting change must not restart the count (it froze training).
    tx = gf.protect(gf.sgd(0.1), max_consecutive_skips=2, max_spike_rate=None, max_update_ratio=None)
    params = jnp.ones(4)
    state = tx.init(params)
    for t in range(8):
        _, state = tx.update(jnp.full(4, 1.0 + 0.01 * t), state, params, value=jnp.float32(1.0 + 0.01 * t))
    rows = []
    for f in [100.0, np.nan] * 4:
        _, state = tx.update(jnp.full(4, f), state, params, value=jnp.float32(f))
        rows.append((bool(state.skipped), int(state.num_consecutive_skips)))
    assert rows[:6] == [(True, 1), (True, 1), (True, 2), (True, 2), (False, 0), (True, 0)]


def _spiky_run(tx, every, steps=240):
    """protect's skips over a run whose loss and gradient are ×30 on every ``every``-th step from step 20."""
    params = jax.tree.map(jnp.asarray, PARAMS)
    state = tx.init(params)
    rng = np.random.default_rng(11)
    skipped, rates = [], []
    for t in range(steps):
        spike = t >= 20 and t % every == 0
        g, loss = grads_at(rng, 30.0 if spike else 1.0), jnp.float32(30.0 if spike else 1.0 + 0.01 * rng.standard_normal())
        _, state = tx.update(g, state, params, value=loss)
        skipped.append(bool(state.skipped))
        rates.append(float(state.spike_rate))
    return np.asarray(skipped), np.asarray(rates), state


def test_rare_spikes_are_all_skipped():
    skipped, rates, state = _spiky_run(gf.protect(gf.adam(0.01), max_update_ratio=None), every=40)
    spikes = np.asarray([t >= 20 and t % 40 == 0 for t in range(len(skipped))])
    np.testing.assert_array_equal(skipped, spikes)  # 5 spikes, 2.5% of the steps: every one skipped, nothing else
    assert int(state.num_loss_spikes) == 5 and float(rates.max()) < 0.05


def test_spikes_on_more_than_max_spike_rate_of_the_steps_are_let_through():
    # a spike every 4th step is the run's own scale, not an accident: once the average rate of spikes
    # (over about 128 steps) passes max_spike_rate = 0.05, they are applied and recorded
    tx = gf.protect(gf.adam(0.01), max_update_ratio=None)
    skipped, rates, state = _spiky_run(tx, every=4)
    judged = np.asarray([t >= 20 and t % 4 == 0 for t in range(len(skipped))], np.float64)
    want = np.zeros(len(judged))  # the rate after each step: r ← r + (spike − r)/128, judged before the update
    r = 0.0
    for t, j in enumerate(judged):
        r += (j - r) / 128
        want[t] = r
    np.testing.assert_allclose(rates, want, rtol=1e-5, atol=1e-7)
    before = np.concatenate([[0.0], want[:-1]])  # each step is judged against the rate before it
    np.testing.assert_array_equal(skipped, judged.astype(bool) & (before <= 0.05))
    assert skipped.sum() == 8 and not skipped[52:].any()  # 8 skipped while the rate climbs to 0.05, then let through
    every_spike = _spiky_run(gf.protect(gf.adam(0.01), max_update_ratio=None, max_spike_rate=None,
                                        max_consecutive_skips=None), every=4)[0]
    np.testing.assert_array_equal(every_spike, judged.astype(bool))  # without the rule: every one skipped


def test_clip_to_history_cuts_the_norm_to_the_bound():
    tx = gf.protect(gf.sgd(1.0), clip_to_history=2.0, watch_loss=False, watch_grad_norm=False, max_update_ratio=None)
    params = jax.tree.map(jnp.asarray, PARAMS)
    state = tx.init(params)
    rng = np.random.default_rng(8)
    norms = []
    for _ in range(6):
        g = grads_at(rng)
        norms.append(float(gf.global_norm(g)))
        u, state = tx.update(g, state, params)
        assert_bitwise_equal(u, jax.tree.map(lambda x: -x, jax.tree.map(jnp.asarray, g)))
    big = grads_at(rng, 100.0)
    u, state = tx.update(big, state, params)
    bound = 2.0 * float(np.median(norms))
    np.testing.assert_allclose(float(gf.global_norm(u)), bound, rtol=1e-5)
    assert bool(state.clipped) and int(state.num_clipped) == 1 and not bool(state.skipped)


def test_robust_statistics_match_numpy():
    rng = np.random.default_rng(9)
    for n in range(1, 17):
        values = rng.standard_normal(16).astype(np.float32)
        med, sigma = robust_location_scale(jnp.asarray(values), jnp.int32(n))
        x = values[:n]
        np.testing.assert_allclose(float(med), np.median(x), rtol=1e-6)
        np.testing.assert_allclose(float(sigma), 1.4826 * np.median(np.abs(x - np.median(x))), rtol=1e-5, atol=1e-7)


def test_watching_the_loss_without_value_raises_a_clear_error():
    tx = gf.protect(gf.adam(0.01))
    params = jax.tree.map(jnp.asarray, PARAMS)
    with pytest.raises(TypeError, match=r"protect: .*value=loss.*watch_loss=False"):
        tx.update(grads_at(np.random.default_rng(0)), tx.init(params), params)
    quiet = gf.protect(gf.adam(0.01), watch_loss=False)
    u, state = quiet.update(grads_at(np.random.default_rng(0)), quiet.init(params), params)
    assert float(state.loss) == 0.0


@pytest.mark.parametrize(
    "kwargs,arg",
    [
        (dict(threshold=0.0), "threshold"),
        (dict(threshold=float("nan")), "threshold"),
        (dict(margin=-1.0), "margin"),
        (dict(window=1), "window"),
        (dict(min_samples=1), "min_samples"),
        (dict(window=4, min_samples=8), "min_samples"),
        (dict(max_consecutive_skips=-1), "max_consecutive_skips"),
        (dict(max_spike_rate=0.0), "max_spike_rate"),
        (dict(max_spike_rate=1.5), "max_spike_rate"),
        (dict(clip_to_history=0.0), "clip_to_history"),
        (dict(spike_rule="all"), "spike_rule"),
        (dict(watch_loss=1), "watch_loss"),
    ],
)
def test_bad_arguments_raise_value_error_naming_function_argument_and_value(kwargs, arg):
    with pytest.raises(ValueError) as info:
        gf.protect(gf.adam(0.01), **kwargs)
    msg = str(info.value)
    assert msg.startswith("protect: ") and arg in msg and repr(next(iter(kwargs.values()))) in msg


def test_works_inside_optax_chain_and_gf_chain():
    for outer in (optax.chain, gf.chain):
        tx = outer(optax.scale(1.0), gf.protect(optax.adamw(0.01)))
        params = jax.tree.map(jnp.asarray, PARAMS)
        state = tx.init(params)
        step = jax.jit(lambda g, s, v: tx.update(g, s, params, value=v))
        rng = np.random.default_rng(10)
        for _ in range(5):
            _, state = step(grads_at(rng), state, jnp.float32(1.0))
        before = state[1].inner_state
        u, state = step(grads_at(rng, 1e3), state, jnp.float32(1e3))
        assert bool(state[1].skipped)
        assert_bitwise_equal(state[1].inner_state, before)
        assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))


def test_runs_under_jit_without_recompiling():
    tx = gf.protect(optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 0.01, 5, 50)))
    params = jax.tree.map(jnp.asarray, PARAMS)
    traces = []

    @jax.jit
    def step(params, state, g, v):
        traces.append(1)
        u, state = tx.update(g, state, params, value=v)
        return gf.apply_updates(params, u), state

    state = tx.init(params)
    rng = np.random.default_rng(11)
    for t in range(30):
        g = grads_at(rng, 1e5 if t % 7 == 6 else 1.0)
        v = np.nan if t == 20 else (1e3 if t % 7 == 6 else 1.0)
        params, state = step(params, state, g, jnp.float32(v))
    assert len(traces) == 1
    assert int(state.num_skipped) >= 4


def test_no_run_ends_with_non_finite_parameters():
    rng = np.random.default_rng(12)
    for inner in (gf.adam(0.01), optax.adamw(0.01), gf.sgd(0.1, momentum=0.9)):
        tx = gf.protect(inner)
        params = jax.tree.map(jnp.asarray, PARAMS)
        state = tx.init(params)

        @jax.jit
        def step(params, state, g, v, tx=tx):
            u, state = tx.update(g, state, params, value=v)
            return gf.apply_updates(params, u), state

        for _ in range(300):
            g = grads_at(rng)
            v = 1.0 + 0.1 * rng.standard_normal()
            kind = rng.integers(10)
            if kind == 0:
                g["w"][rng.integers(4), rng.integers(3)] = rng.choice([np.nan, np.inf, -np.inf])
            elif kind == 1:
                v = rng.choice([np.nan, np.inf])
            elif kind == 2:
                g = {k: x * 1e30 for k, x in g.items()}
            params, state = step(params, state, g, jnp.float32(v))
        chex.assert_tree_all_finite(params)
        chex.assert_tree_all_finite(state.inner_state)
        assert int(state.num_not_finite) > 10


def test_stats_names_are_readable():
    tx = gf.protect(optax.adamw(0.01))
    params = jax.tree.map(jnp.asarray, PARAMS)
    _, state = tx.update(grads_at(np.random.default_rng(0)), tx.init(params), params, value=jnp.float32(1.0))
    keys = set(gf.stats(state))
    for k in ("num_skipped", "num_not_finite", "num_loss_spikes", "num_grad_norm_spikes", "loss_median",
              "grad_norm_median", "skipped", "grad_norm", "loss"):
        assert f"protect/{k}" in keys, sorted(keys)
    # the keys the README names
    assert {"protect/spike_rate", "protect/clip_relative_update/num_clipped"} <= keys, sorted(keys)


def test_fresh_state_can_be_donated():
    tx = gf.protect(optax.adamw(0.01), clip_to_history=3.0)
    params = jax.tree.map(jnp.asarray, PARAMS)
    state = tx.init(params)
    pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state)]
    assert len(pointers) == len(set(pointers))

    def step(params, state, g):
        u, state = tx.update(g, state, params, value=jnp.float32(1.0))
        return gf.apply_updates(params, u), state

    step = jax.jit(step, donate_argnums=(0, 1))
    for _ in range(3):
        params, state = step(params, state, grads_at(np.random.default_rng(0)))
    chex.assert_tree_all_finite(params)


def test_state_structure_does_not_depend_on_hyperparameters():
    params = jax.tree.map(jnp.asarray, PARAMS)
    a = gf.protect(gf.adam(0.01)).init(params)
    b = gf.protect(gf.adam(0.01), watch_loss=False, watch_grad_norm=False, clip_to_history=2.0,
                   skip_not_finite=False, spike_rule="both", max_update_ratio=None).init(params)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert [x.shape for x in jax.tree.leaves(a)] == [x.shape for x in jax.tree.leaves(b)]


def test_float64_params_keep_float64_statistics(x64):
    params = {"w": jnp.ones(3, jnp.float64)}
    tx = gf.protect(gf.adam(0.01))
    u, state = tx.update({"w": jnp.ones(3, jnp.float64)}, tx.init(params), params, value=jnp.float64(1.0))
    assert state.loss_history.dtype == jnp.float64 and u["w"].dtype == jnp.float64


def test_bfloat16_updates_keep_their_dtype():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    tx = gf.protect(gf.adam(0.01))
    u, state = tx.update({"w": jnp.ones(3, jnp.bfloat16)}, tx.init(params), params, value=jnp.float32(1.0))
    assert u["w"].dtype == jnp.bfloat16 and state.grad_norm.dtype == jnp.float32


def test_windows_keep_cycling_past_int32_max():
    # A saturating counter would write one slot of the windows for ever after 2³¹−1 accepted steps.
    tx = gf.protect(gf.sgd(0.1), window=4, min_samples=2, threshold=1e6, max_update_ratio=None)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    state = state._replace(num_recorded=jnp.asarray(2**31 - 3, jnp.int32), loss_history=jnp.arange(1.0, 5.0))
    step = jax.jit(tx.update)
    for v in [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]:
        _, state = step({"w": jnp.ones(2)}, state, params, value=jnp.float32(v))
        assert not bool(state.skipped)
    assert sorted(np.asarray(state.loss_history).tolist()) == [12.0, 13.0, 14.0, 15.0]
    assert int(state.num_recorded) >= 4


def test_the_margin_scales_with_the_modulus_of_a_negative_loss():
    # an NLL or ELBO can sit below 0: ρ·|median| must still be a margin above it, not below
    tx = gf.protect(gf.adam(0.01), spike_rule="either", max_update_ratio=None)
    p = {"w": jnp.ones(3)}
    s = tx.init(p)
    rng = np.random.default_rng(0)
    g = lambda: {"w": jnp.asarray(rng.standard_normal(3), jnp.float32)}  # noqa: E731
    for _ in range(8):
        _, s = tx.update(g(), s, p, value=jnp.float32(-10.0 + 0.01 * rng.standard_normal()))
    _, s = tx.update(g(), s, p, value=jnp.float32(-9.0))  # +1 on a median of −10: inside 9·|m| = 90
    assert not bool(s.skipped)
    _, s = tx.update(g(), s, p, value=jnp.float32(85.0))  # +95: beyond max(6σ̂, 90)
    assert bool(s.skipped) and int(s.num_loss_spikes) == 1


def test_every_part_off_is_inner_exactly_through_non_finite_steps():
    tx = gf.protect(gf.adam(0.1), skip_not_finite=False, watch_loss=False, watch_grad_norm=False,
                    max_update_ratio=None)
    inner = gf.adam(0.1)
    p = {"w": jnp.ones(2)}
    s, si = tx.init(p), inner.init(p)
    step, step_i = jax.jit(tx.update), jax.jit(inner.update)
    for g in ([0.5, 1.0], [jnp.nan, 1.0], [jnp.inf, -2.0], [0.3, 0.1]):
        g = {"w": jnp.asarray(g, jnp.float32)}
        u, s = step(g, s, p)
        want, si = step_i(g, si, p)
        np.testing.assert_array_equal(np.asarray(u["w"]), np.asarray(want["w"]))
        assert not bool(s.skipped)
    for a, b in zip(jax.tree.leaves(s.inner_state), jax.tree.leaves(si)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_non_finite_step_let_through_is_kept_out_of_the_windows():
    tx = gf.protect(gf.sgd(0.1), skip_not_finite=False, max_update_ratio=None)
    p = {"w": jnp.ones(2)}
    s = tx.init(p)
    for loss, g in [(1.0, [0.5, 1.0]), (jnp.nan, [jnp.nan, 1.0]), (1.1, [0.4, 0.9])]:
        _, s = tx.update({"w": jnp.asarray(g, jnp.float32)}, s, p, value=jnp.float32(loss))
    assert int(s.num_recorded) == 2 and int(s.num_not_finite) == 1
    assert np.all(np.isfinite(np.asarray(s.loss_history))) and np.all(np.isfinite(np.asarray(s.grad_norm_history)))


# --------------------------------------------------------------------------- each constant, bound and counter of the rule, one at a time


def _flat_run(tx, losses, grads=None):
    """protect over constant-direction gradients: each step's loss and gradient norm as given."""
    p = jnp.ones(4)
    s = tx.init(p)
    states = []
    for t, v in enumerate(losses):
        norm = 1.0 if grads is None else grads[t]
        _, s = tx.update(jnp.full(4, norm / 2.0, jnp.float32), s, p, value=jnp.float32(v))  # ‖g‖ = norm
        states.append(s)
    return states


def test_the_default_min_samples_judges_from_the_fourth_recorded_value_on():
    # n ≥ min_samples = 4: a spike with three values recorded is let through, with four it is skipped
    tx = lambda: gf.protect(gf.sgd(0.1), max_update_ratio=None)  # noqa: E731
    three = _flat_run(tx(), [1.0, 1.0, 1.0, 1e4], [1.0, 1.0, 1.0, 1e4])
    assert not bool(three[-1].skipped) and int(three[-1].num_loss_spikes) == 0
    four = _flat_run(tx(), [1.0, 1.0, 1.0, 1.0, 1e4], [1.0, 1.0, 1.0, 1.0, 1e4])
    assert bool(four[-1].skipped) and int(four[-1].num_loss_spikes) == 1


def test_the_default_threshold_is_six_robust_sigmas():
    # window [−1, 1, −1, 1]: median 0 (so the margin ρ·|m| is 0), MAD 1, σ̂ = 1.4826; 6σ̂ = 8.8956
    for loss, spike in ((8.5, False), (9.2, True)):
        s = _flat_run(gf.protect(gf.sgd(0.1), spike_rule="either", max_update_ratio=None), [-1.0, 1.0, -1.0, 1.0, loss])[-1]
        assert float(s.loss_median) == 0.0
        np.testing.assert_allclose(float(s.loss_sigma), 1.4826, rtol=1e-6)
        assert bool(s.skipped) is spike, loss


def test_a_spike_must_exceed_the_bound_strictly():
    # a flat window of 1.0: σ̂ = 0 and the bound is ρ·|m| = 9 exactly; x − m = 9 is not above it
    for loss, spike in ((10.0, False), (10.5, True)):
        s = _flat_run(gf.protect(gf.sgd(0.1), spike_rule="either", max_update_ratio=None), [1.0] * 5 + [loss])[-1]
        assert bool(s.skipped) is spike, loss


def test_the_window_statistics_are_the_median_and_1_4826_mad_of_each_window():
    # losses [1, 2, 4, 8]: median 3, |x − 3| = [2, 1, 1, 5], MAD 1.5; norms [1, 2, 3, 4]: median 2.5, MAD 1
    s = _flat_run(gf.protect(gf.sgd(0.1), max_update_ratio=None), [1.0, 2.0, 4.0, 8.0, 5.0], [1.0, 2.0, 3.0, 4.0, 3.5])[-1]
    np.testing.assert_allclose(float(s.loss_median), 3.0, rtol=1e-6)
    np.testing.assert_allclose(float(s.loss_sigma), 1.4826 * 1.5, rtol=1e-6)
    np.testing.assert_allclose(float(s.grad_norm_median), 2.5, rtol=1e-6)
    np.testing.assert_allclose(float(s.grad_norm_sigma), 1.4826, rtol=1e-6)
    np.testing.assert_allclose(float(s.loss), 5.0, rtol=1e-6)
    np.testing.assert_allclose(float(s.grad_norm), 3.5, rtol=1e-6)


def test_a_loss_spike_and_a_gradient_norm_spike_are_counted_apart():
    tx = gf.protect(gf.sgd(0.1), spike_rule="either", max_update_ratio=None)
    states = _flat_run(tx, [1.0] * 5 + [100.0, 1.0, 1.0], [1.0] * 5 + [1.0, 100.0, 1.0])
    assert [bool(s.skipped) for s in states[5:]] == [True, True, False]
    assert (int(states[5].num_loss_spikes), int(states[5].num_grad_norm_spikes)) == (1, 0)
    assert (int(states[6].num_loss_spikes), int(states[6].num_grad_norm_spikes)) == (1, 1)


@pytest.mark.parametrize("watched", ["loss", "grad_norm"])
def test_rule_both_with_one_statistic_watched_skips_on_that_one(watched):
    # "both" skips only when all *watched* statistics spike: with one watched, its spike alone skips
    tx = gf.protect(gf.sgd(0.1), spike_rule="both", watch_loss=watched == "loss",
                    watch_grad_norm=watched == "grad_norm", max_update_ratio=None)
    s = _flat_run(tx, [1.0] * 5 + [100.0], [1.0] * 5 + [100.0])[-1]
    assert bool(s.skipped)


def test_the_default_window_keeps_the_last_16_accepted_values():
    # 17 losses of 100, then 16 of 1 (falls are never spikes): the 16-value window holds only the 1s
    s = _flat_run(gf.protect(gf.sgd(0.1), max_update_ratio=None), [100.0] * 17 + [1.0] * 17)
    assert not any(bool(x.skipped) for x in s)
    assert float(s[-1].loss_median) == 1.0 and float(s[-1].loss_sigma) == 0.0


def test_the_default_max_consecutive_skips_lets_the_17th_spike_through():
    tx = gf.protect(gf.sgd(0.1), spike_rule="either", max_spike_rate=None, max_update_ratio=None)
    s = _flat_run(tx, [1.0] * 5 + [100.0] * 18)
    assert [bool(x.skipped) for x in s[5:22]] == [True] * 16 + [False]  # then the row starts again


def test_a_spike_is_still_skipped_at_a_rate_equal_to_max_spike_rate():
    # let through only while r_{t−1} > max_spike_rate: at r = max_spike_rate exactly it is skipped
    tx = gf.protect(gf.sgd(0.1), spike_rule="either", max_spike_rate=0.5, max_update_ratio=None)
    p = jnp.ones(4)
    s = tx.init(p)
    for _ in range(5):
        _, s = tx.update(jnp.full(4, 0.5), s, p, value=jnp.float32(1.0))
    for rate, skip in ((0.5, True), (0.5009765625, False)):  # 0.5 + 2⁻¹⁰, exact in float32
        _, after = tx.update(jnp.full(4, 0.5), s._replace(spike_rate=jnp.float32(rate)), p, value=jnp.float32(100.0))
        assert bool(after.skipped) is skip, rate


def test_clip_to_history_acts_from_min_samples_recorded_norms():
    tx = gf.protect(gf.sgd(1.0), clip_to_history=2.0, watch_loss=False, watch_grad_norm=False, max_update_ratio=None)
    p = jnp.ones(4)
    s = tx.init(p)
    for norm in (1.0, 1.0, 1.0, 1.0):  # min_samples = 4 norms recorded
        _, s = tx.update(jnp.full(4, norm / 2.0), s, p)
    u, s = tx.update(jnp.full(4, 5.0), s, p)  # ‖g‖ = 10 against 2·median = 2
    assert bool(s.clipped) and int(s.num_clipped) == 1
    np.testing.assert_allclose(float(jnp.linalg.norm(u)), 2.0, rtol=1e-6)


def test_a_skipped_step_is_not_counted_as_clipped():
    tx = gf.protect(gf.sgd(1.0), clip_to_history=2.0, spike_rule="either", max_update_ratio=None)
    s = _flat_run(tx, [1.0] * 5 + [100.0], [1.0] * 5 + [100.0])[-1]
    assert bool(s.skipped) and not bool(s.clipped) and int(s.num_clipped) == 0


def test_the_loss_reaches_an_inner_optimizer_that_takes_it():
    def update(updates, state, params=None, *, value):  # scales the step by the loss
        return jax.tree.map(lambda u: u * value, updates), state

    inner = gf.GradientTransformation(lambda params: optax.EmptyState(), update)
    tx = gf.protect(inner, max_update_ratio=None)
    p = jnp.ones(2)
    u, _ = tx.update(jnp.ones(2), tx.init(p), p, value=jnp.float32(3.0))
    np.testing.assert_allclose(np.asarray(u), [3.0, 3.0])


def test_a_non_finite_step_is_not_counted_as_a_spike_and_the_first_diagnostics_are_finite():
    tx = gf.protect(gf.sgd(0.1), skip_not_finite=False, clip_to_history=2.0, spike_rule="either", max_update_ratio=None)
    first = _flat_run(tx, [1.0])[0]  # judged against an empty window: no NaN in the diagnostics
    for x in (first.loss_median, first.loss_sigma, first.grad_norm_median, first.grad_norm_sigma):
        assert np.isfinite(float(x))
    s = _flat_run(tx, [1.0] * 5 + [np.inf], [1.0] * 5 + [np.inf])[-1]  # let through (skip_not_finite=False)
    assert int(s.num_not_finite) == 1 and not bool(s.skipped)
    assert int(s.num_loss_spikes) == 0 and int(s.num_grad_norm_spikes) == 0  # spikes are of finite values only
    assert not bool(s.clipped) and int(s.num_clipped) == 0  # nor is a non-finite gradient clipped
