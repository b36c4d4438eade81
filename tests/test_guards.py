"""Guards: skipped steps give zero updates and leave the inner state bit-for-bit unchanged."""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf
from tests import reference_clipping as ref
from tests.helpers import run_trajectory

SHAPES = ref.SHAPES
PARAMS = {k: np.random.default_rng(21).standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def _normal(rng):
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def _bad(kind, rng):
    g = _normal(rng)
    if kind == "nan":
        g["w"][1, 2] = np.nan
    elif kind == "inf":
        g["b"][0] = np.inf
    elif kind == "spike":
        g["w"] = g["w"] * 1e6
    return g


def assert_bitwise_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


class Stepper:
    """A jitted ``update`` that counts its traces."""

    def __init__(self, tx, params=PARAMS):
        self.tx, self.traces = tx, 0
        self.params = jax.tree.map(jnp.asarray, params)
        self.state = tx.init(self.params)

        def step(g, state, params, value):
            self.traces += 1
            kwargs = {} if value is None else {"value": value}
            return tx.update(g, state, params, **kwargs)

        self._step = jax.jit(step)

    def __call__(self, g, value=None):
        before = self.state
        u, self.state = self._step(jax.tree.map(jnp.asarray, g), self.state, self.params, value)
        self.params = gf.apply_updates(self.params, u)
        return u, before, self.state


# --------------------------------------------------------------------------- apply_if_finite


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_apply_if_finite_skips_non_finite_and_keeps_inner_state(kind):
    rng = np.random.default_rng(0)
    run = Stepper(gf.apply_if_finite(gf.sgd(0.1, momentum=0.9), max_consecutive_errors=3))
    for _ in range(3):
        run(_normal(rng))
    u, before, after = run(_bad(kind, rng))
    chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, u))
    assert_bitwise_equal(after.inner_state, before.inner_state)
    assert bool(after.skipped) and int(after.num_skipped) == 1 and int(after.num_not_finite) == 1
    assert int(after.num_consecutive_errors) == 1 and int(after.count) == 4
    assert not np.isfinite(float(after.norm))
    u, before, after = run(_normal(rng))  # recovery
    assert not bool(after.skipped) and int(after.num_consecutive_errors) == 0
    assert int(after.inner_state[0].count) == 4  # the bad step never reached the momentum buffer
    chex.assert_tree_all_finite(run.params)
    assert run.traces == 1


def test_apply_if_finite_equals_inner_on_the_good_steps_only():
    rng = np.random.default_rng(1)
    kinds = ["ok"] * 5 + ["nan"] + ["ok"] * 3 + ["inf", "nan"] + ["ok"] * 4
    grads = [_normal(rng) if k == "ok" else _bad(k, rng) for k in kinds]
    got = run_trajectory(gf.apply_if_finite(gf.sgd(0.05, momentum=0.9), 5), PARAMS, grads)
    good = [g for g, k in zip(grads, kinds) if k == "ok"]
    want = run_trajectory(gf.sgd(0.05, momentum=0.9), PARAMS, good)
    chex.assert_trees_all_close(got[-1], want[-1], rtol=1e-6, atol=1e-7)  # separately compiled: an ulp apart


def test_apply_if_finite_max_consecutive_errors_lets_through_and_resets():
    rng = np.random.default_rng(2)
    run = Stepper(gf.apply_if_finite(gf.sgd(0.1, momentum=0.9), max_consecutive_errors=2))
    run(_normal(rng))
    seen = []
    for kind in ["nan", "nan", "nan", "ok", "nan"]:
        u, before, after = run(_normal(rng) if kind == "ok" else _bad(kind, rng))
        seen.append((bool(after.skipped), int(after.num_consecutive_errors), int(after.num_skipped), int(after.num_not_finite)))
        if kind == "nan" and not bool(after.skipped):
            # the third error in a row is let through (optax semantics): the inner state sees it
            assert not np.all(np.isfinite(np.asarray(after.inner_state[0].trace["w"])))
    assert seen == [(True, 1, 1, 1), (True, 2, 2, 2), (False, 3, 2, 3), (False, 0, 2, 3), (True, 1, 3, 4)]
    assert run.traces == 1


def test_apply_if_finite_counter_resets_so_isolated_errors_are_always_skipped():
    rng = np.random.default_rng(3)
    run = Stepper(gf.apply_if_finite(gf.sgd(0.1, momentum=0.9), max_consecutive_errors=1))
    for _ in range(6):
        run(_normal(rng))
        _, before, after = run(_bad("nan", rng))
        assert bool(after.skipped) and int(after.num_consecutive_errors) == 1
        assert_bitwise_equal(after.inner_state, before.inner_state)
    assert int(after.num_skipped) == 6
    chex.assert_tree_all_finite(run.params)


def test_apply_if_finite_matches_optax_let_through_rule():
    rng = np.random.default_rng(4)
    kinds = ["ok", "nan", "nan", "nan", "ok", "inf", "ok"]
    grads = [_normal(rng) if k == "ok" else _bad(k, rng) for k in kinds]
    ours = Stepper(gf.apply_if_finite(gf.sgd(0.1), 2))
    theirs = Stepper(optax.apply_if_finite(optax.sgd(0.1), 2))
    for g in grads:
        _, _, s1 = ours(g)
        _, _, s2 = theirs(g)
        assert int(s1.num_consecutive_errors) == int(s2.notfinite_count)
        assert int(s1.num_not_finite) == int(s2.total_notfinite)
    chex.assert_trees_all_equal(ours.params, theirs.params)


def test_apply_if_finite_inside_optax_chain_and_bad_input():
    tx = optax.chain(gf.apply_if_finite(gf.sgd(0.1), 1), optax.scale(1.0))
    s = tx.init(jax.tree.map(jnp.asarray, PARAMS))
    u, s = tx.update(_bad("nan", np.random.default_rng(0)), s, PARAMS)
    chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, u))
    with pytest.raises(ValueError, match=r"apply_if_finite: max_consecutive_errors must be an integer >= 0, got -1"):
        gf.apply_if_finite(gf.sgd(0.1), -1)
    with pytest.raises(ValueError, match=r"apply_if_finite: max_consecutive_errors must be an integer >= 0, got 1.5"):
        gf.apply_if_finite(gf.sgd(0.1), 1.5)


# --------------------------------------------------------------------------- skip_spikes


def reference_skips(values, k=6.0, window=128, min_samples=64, max_consecutive=10):
    """The rule from OLMo's skip-step optimizer, over a window of accepted values (NumPy, float64)."""
    accepted: list[float] = []
    skips, run = [], 0
    for v in values:
        hist = accepted[-window:]
        skip = not np.isfinite(v)
        if not skip and len(hist) >= min_samples and (max_consecutive is None or run < max_consecutive):
            skip = v - np.mean(hist) > k * np.std(hist, ddof=1)
        skips.append(skip)
        run = run + 1 if skip else 0
        if not skip:
            accepted.append(v)
    return skips


def test_skip_spikes_defaults_skip_injected_spikes_after_warmup():
    grads = [_f32(g) for g in ref.spike_sequence(seed=0, steps=300)]
    run = Stepper(gf.skip_spikes(gf.sgd(0.01, momentum=0.9)))
    skipped = []
    for g in grads:
        _, before, after = run(g)
        skipped.append(bool(after.skipped))
        if skipped[-1]:
            assert_bitwise_equal(after.inner_state, before.inner_state)
    want = reference_skips([ref.global_norm(g) for g in grads])
    assert skipped == want
    expected = {t for t in ref.SPIKES if t >= 64}  # the window needs 64 values first
    assert {t for t, s in enumerate(skipped) if s} == expected
    assert int(run.state.num_skipped) == len(expected) and run.traces == 1
    good = [g for g, s in zip(grads, skipped) if not s]
    want_params = run_trajectory(gf.sgd(0.01, momentum=0.9), PARAMS, good)[-1]
    chex.assert_trees_all_close(jax.tree.map(np.asarray, run.params), want_params, rtol=1e-6, atol=1e-6)


def _f32(g):
    return {k: np.asarray(v, np.float32) for k, v in g.items()}


@pytest.mark.parametrize("kind", ["nan", "inf", "spike"])
def test_skip_spikes_skips_bad_steps_with_zero_update_and_untouched_state(kind):
    rng = np.random.default_rng(5)
    run = Stepper(gf.skip_spikes(gf.sgd(0.1, momentum=0.9), window=16, min_samples=8))
    for _ in range(10):
        run(_normal(rng))
    u, before, after = run(_bad(kind, rng))
    chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, u))
    assert_bitwise_equal(after.inner_state, before.inner_state)
    assert_bitwise_equal(after.history, before.history)
    assert bool(after.skipped) and int(after.num_skipped) == 1 and int(after.num_consecutive_skips) == 1
    assert int(after.num_recorded) == 10
    u, before, after = run(_normal(rng))
    assert not bool(after.skipped) and int(after.num_consecutive_skips) == 0 and int(after.num_recorded) == 11
    chex.assert_tree_all_finite(run.params)
    assert run.traces == 1


def test_skip_spikes_inactive_until_min_samples():
    rng = np.random.default_rng(6)
    run = Stepper(gf.skip_spikes(gf.sgd(0.1), window=16, min_samples=8))
    for _ in range(7):
        run(_normal(rng))
    _, _, after = run(_bad("spike", rng))  # only 7 values so far: not judged
    assert not bool(after.skipped)


def test_skip_spikes_watches_the_loss_when_given():
    rng = np.random.default_rng(7)
    losses = list(1.0 + 0.01 * rng.standard_normal(120))
    losses[80] = 3.0  # a loss spike with an ordinary gradient
    losses[100] = float("nan")
    tx = gf.chain(gf.skip_spikes(gf.sgd(0.1), window=32, min_samples=16))
    run = Stepper(tx)
    skipped = []
    for v in losses:
        _, _, after = run(_normal(rng), value=jnp.float32(v))
        skipped.append(bool(after[0].skipped))
    assert [t for t, s in enumerate(skipped) if s] == [80, 100]
    assert skipped == reference_skips(np.float32(losses), window=32, min_samples=16)
    np.testing.assert_allclose(float(run.state[0].value), np.float32(losses[-1]))
    assert run.traces == 1


@pytest.mark.parametrize("v, skip", [(2.58, False), (2.70, True)])
def test_skip_spikes_band_uses_the_n_minus_1_standard_deviation(v, skip):
    # window [1, 2, 1, 2]: mean 1.5, σ = 0.577 with n − 1 (OLMo's torch.std), 0.5 with n;
    # k = 2 puts the band at 2.655: 2.58 is inside it (outside a population-σ band), 2.70 is not
    tx = gf.skip_spikes(gf.sgd(0.1), threshold=2.0, window=8, min_samples=4)
    p = {"w": jnp.ones(2)}
    s = tx.init(p)
    for loss in [1.0, 2.0, 1.0, 2.0, v]:
        _, s = tx.update({"w": jnp.ones(2)}, s, p, value=jnp.float32(loss))
    assert bool(s.skipped) == skip
    assert reference_skips([1.0, 2.0, 1.0, 2.0, v], k=2.0, window=8, min_samples=4)[-1] == skip


def test_skip_spikes_never_skips_a_constant_value():
    # σ = 0: only a value strictly above the mean is a spike, or a flat loss would skip every step
    tx = gf.skip_spikes(gf.sgd(0.1), threshold=6.0, window=4, min_samples=2, max_consecutive_skips=None)
    p = {"w": jnp.ones(2)}
    s = tx.init(p)
    for _ in range(5):
        _, s = tx.update({"w": jnp.ones(2)}, s, p, value=jnp.float32(1.0))
    assert int(s.num_skipped) == 0


def test_skip_spikes_max_consecutive_skips_learns_a_lasting_change():
    values = [1.0 + 0.01 * np.sin(t) for t in range(40)] + [100.0 + np.cos(t) for t in range(60)]
    run = Stepper(gf.skip_spikes(gf.sgd(0.1), window=16, min_samples=8, max_consecutive_skips=3))
    skipped = []
    for v in values:
        _, _, after = run(_normal(np.random.default_rng(0)), value=jnp.float32(v))
        skipped.append(bool(after.skipped))
    assert skipped == reference_skips(np.float32(values), window=16, min_samples=8, max_consecutive=3)
    assert skipped[40:43] == [True, True, True] and not skipped[43]  # forced through after 3 skips
    assert not any(skipped[-10:])  # the new level has been learned
    never = Stepper(gf.skip_spikes(gf.sgd(0.1), window=16, min_samples=8, max_consecutive_skips=None))
    for v in values:
        _, _, after = never(_normal(np.random.default_rng(0)), value=jnp.float32(v))
    assert int(after.num_skipped) == 60


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(threshold=0.0), r"skip_spikes: threshold must be a finite number > 0, got 0.0"),
        (dict(window=1), r"skip_spikes: window must be an integer >= 2, got 1"),
        (dict(min_samples=1), r"skip_spikes: min_samples must be an integer >= 2, got 1"),
        (dict(window=8, min_samples=9), r"skip_spikes: min_samples must be <= window \(8\), got 9"),
        (dict(max_consecutive_skips=-1), r"skip_spikes: max_consecutive_skips must be an integer >= 0, got -1"),
    ],
)
def test_skip_spikes_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gf.skip_spikes(gf.sgd(0.1), **kwargs)


def test_skip_spikes_ring_buffer_keeps_cycling_past_int32_max():
    # Issue 13, item 7: a saturated counter must not freeze the window on one slot.
    tx = gf.skip_spikes(gf.sgd(0.1), threshold=1e6, window=4, min_samples=2)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    state = state._replace(num_recorded=jnp.asarray(2**31 - 3, jnp.int32), history=jnp.arange(1.0, 5.0))
    step = jax.jit(tx.update)
    for v in [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]:
        _, state = step({"w": jnp.ones(2)}, state, params, value=jnp.float32(v))
        assert not bool(state.skipped)
    assert sorted(np.asarray(state.history).tolist()) == [12.0, 13.0, 14.0, 15.0]
    assert int(state.num_recorded) >= 4


# --------------------------------------------------------------------------- each constant, bound and counter of the rule, one at a time


def test_apply_if_finite_applies_a_step_with_no_leaves_and_reports_the_norm():
    tx = gf.apply_if_finite(gf.sgd(0.1), 3)
    u, s = tx.update({}, tx.init({}), {})
    assert u == {} and not bool(s.skipped) and int(s.num_skipped) == 0
    params = jax.tree.map(jnp.asarray, PARAMS)
    g = _normal(np.random.default_rng(0))
    _, s = tx.update(g, tx.init(params), params)
    np.testing.assert_allclose(float(s.norm), ref.global_norm(g), rtol=1e-6)


def test_guards_inside_shard_map_skip_a_bad_step_and_keep_the_inner_state():
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((1,), ("x",))
    for tx in (gf.apply_if_finite(gf.sgd(0.1, momentum=0.9), 2, axis_name="x"),
               gf.skip_spikes(gf.sgd(0.1, momentum=0.9), window=8, min_samples=4, axis_name="x")):
        params = jax.tree.map(jnp.asarray, PARAMS)
        step = jax.jit(jax.shard_map(lambda g, s, p, tx=tx: tx.update(g, s, p), mesh=mesh,
                                     in_specs=(P(), P(), P()), out_specs=(P(), P())))
        s = tx.init(params)
        rng = np.random.default_rng(0)
        for _ in range(5):
            u, s = step(_normal(rng), s, params)
            assert not bool(s.skipped)
            assert not all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))
        before = s
        u, s = step(_bad("nan", rng), s, params)
        assert bool(s.skipped) and int(s.num_skipped) == 1
        assert_bitwise_equal(s.inner_state, before.inner_state)
        assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))
        _, s = step(_normal(rng), s, params)
        assert not bool(s.skipped)


def test_skip_spikes_skips_a_non_finite_gradient_when_watching_the_loss():
    rng = np.random.default_rng(8)
    run = Stepper(gf.skip_spikes(gf.sgd(0.1, momentum=0.9), window=8, min_samples=4))
    for _ in range(3):
        run(_normal(rng), value=jnp.float32(1.0))
    for kind in ("nan", "inf"):
        u, before, after = run(_bad(kind, rng), value=jnp.float32(1.0))  # the loss is finite, ‖g‖ is not
        assert bool(after.skipped), kind
        assert_bitwise_equal(after.inner_state, before.inner_state)
        chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, u))


def test_skip_spikes_reports_the_window_mean_and_n_minus_1_std():
    # a full window of 4: all four values count
    tx = gf.skip_spikes(gf.sgd(0.1), threshold=2.0, window=4, min_samples=4)
    p = {"w": jnp.ones(2)}
    s = tx.init(p)
    for loss in [1.0, 2.0, 1.0, 2.0, 2.5]:
        _, s = tx.update({"w": jnp.ones(2)}, s, p, value=jnp.float32(loss))
    np.testing.assert_allclose(float(s.mean), 1.5, rtol=1e-6)
    np.testing.assert_allclose(float(s.std), np.sqrt(1.0 / 3.0), rtol=1e-6)  # Σ(x − 1.5)² = 1, over n − 1 = 3


def test_the_smallest_windows_and_zero_consecutive_skips_are_accepted():
    # window ≥ 2, 2 ≤ min_samples ≤ window, max_consecutive_skips ≥ 0
    gf.protect(gf.sgd(0.1), window=2, min_samples=2, max_consecutive_skips=0)
    gf.protect(gf.sgd(0.1), window=5, min_samples=5)
    tx = gf.skip_spikes(gf.sgd(0.1), window=2, min_samples=2, max_consecutive_skips=0)
    gf.skip_spikes(gf.sgd(0.1), window=5, min_samples=5)
    # no spike-skip is allowed: every finite step goes through, a non-finite one is still skipped
    p = {"w": jnp.ones(2)}
    s = tx.init(p)
    skipped = []
    for v in [1.0, 1.0, 1e6, np.nan, 1e9]:
        _, s = tx.update({"w": jnp.ones(2)}, s, p, value=jnp.float32(v))
        skipped.append(bool(s.skipped))
    assert skipped == [False, False, False, True, False]


def _alternating_then(tail):
    return [1.0 + (t % 2) for t in range(64)] + list(tail)  # 64 values: mean 1.5, n − 1 std 0.50395


def test_skip_spikes_default_threshold_is_six_standard_deviations():
    # band 1.5 + 6·0.50395 = 4.524 (with k = 5 it would be 4.020)
    for v, skip in ((4.3, False), (4.6, True)):
        run = Stepper(gf.skip_spikes(gf.sgd(0.1)))
        for x in _alternating_then([v]):
            _, _, after = run(_normal(np.random.default_rng(0)), value=jnp.float32(x))
        assert bool(after.skipped) is skip, v


def test_skip_spikes_default_max_consecutive_skips_is_ten():
    run = Stepper(gf.skip_spikes(gf.sgd(0.1)))
    skipped = []
    for x in _alternating_then([100.0] * 11):
        _, _, after = run(_normal(np.random.default_rng(0)), value=jnp.float32(x))
        skipped.append(bool(after.skipped))
    assert skipped[64:] == [True] * 10 + [False]


def test_skip_spikes_passes_the_loss_to_an_inner_transform_that_takes_it():
    def update(updates, state, params=None, *, value):  # scales the step by the loss
        return jax.tree.map(lambda u: u * value, updates), state

    tx = gf.skip_spikes(gf.GradientTransformation(lambda params: optax.EmptyState(), update), window=4, min_samples=2)
    p = jnp.ones(2)
    u, _ = tx.update(jnp.ones(2), tx.init(p), p, value=jnp.float32(3.0))
    np.testing.assert_allclose(np.asarray(u), [3.0, 3.0])


class _KeyState(NamedTuple):
    key: jax.Array


def _noisy():
    """A transform whose state holds a new-style typed PRNG key (jax.random.key)."""

    def init(params):
        del params
        return _KeyState(jax.random.key(0))

    def update(updates, state, params=None):
        del params
        k1, k2 = jax.random.split(state.key)
        return jax.tree.map(lambda u: u + 0.01 * jax.random.normal(k1, u.shape), updates), _KeyState(k2)

    return gf.GradientTransformation(init, update)


@pytest.mark.parametrize(
    "wrap",
    [lambda i: gf.apply_if_finite(i, 2), lambda i: gf.skip_spikes(i, window=4, min_samples=2)],
    ids=["apply_if_finite", "skip_spikes"],
)
def test_guards_accept_typed_prng_key_state_eagerly(wrap):
    # the new inner state is cast to the old one's dtypes, and a typed key has no astype
    params = jnp.zeros(2)
    tx = wrap(_noisy())
    state = tx.init(params)
    updates, state = tx.update(jnp.ones(2), state, params)
    assert updates.shape == (2,)
    jit_updates, _ = jax.jit(tx.update)(jnp.ones(2), tx.init(params), params)
    assert jnp.allclose(updates, jit_updates)


@pytest.mark.parametrize("k", [0, 1, 3])
def test_apply_if_finite_counters_read_as_optax_state(k):
    # optax's notfinite_count, total_notfinite and last_finite are num_consecutive_errors,
    # num_not_finite and num_consecutive_errors == 0 (not `not skipped`: a let-through step is neither)
    rng = np.random.default_rng(k)
    params = jnp.ones(3)
    ours, theirs = gf.apply_if_finite(gf.sgd(0.1), k), optax.apply_if_finite(optax.sgd(0.1), k)
    s, t = ours.init(params), theirs.init(params)
    for _ in range(60):
        g = jnp.asarray(rng.standard_normal(3), jnp.float32)
        if rng.random() < 0.5:
            g = g.at[0].set(jnp.nan)
        _, s = ours.update(g, s, params)
        _, t = theirs.update(g, t, params)
        assert int(s.num_consecutive_errors) == int(t.notfinite_count)
        assert int(s.num_not_finite) == int(t.total_notfinite)
        assert bool(s.num_consecutive_errors == 0) == bool(t.last_finite)
