"""reduce_on_plateau and restart_on_loss on scripted losses, under jit, against NumPy and PyTorch."""

from __future__ import annotations

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf

PARITY = pathlib.Path(__file__).parent / "parity" / "torch_schedules.npz"


# ----------------------------------------------------------------------------
# NumPy references, written from the rules in the docstrings (PyTorch's algorithm)


def np_reduce_on_plateau(losses, factor, patience, rtol=1e-4, atol=0.0, cooldown=0, accumulation_size=1,
                         min_scale=0.0, torch_negative_rule=False, eps=0.0):
    """Scale after each loss. ``torch_negative_rule`` uses PyTorch's b·(1 − rtol) literally."""
    scale, best, bad, cool, window, out = 1.0, math.inf, 0, 0, [], []
    for v in losses:
        window.append(float(v))
        if len(window) == accumulation_size:
            m = sum(window) / accumulation_size
            window = []
            bound = best * (1 - rtol) - atol if torch_negative_rule else best - rtol * abs(best) - atol
            if best == math.inf:
                bound = math.inf
            if math.isfinite(m) and m < bound:
                best, bad = m, 0
            else:
                bad += 1
            if cool > 0:
                cool -= 1
                bad = 0
            if bad > patience:
                new = max(scale * factor, min_scale)
                if scale - new > eps:  # PyTorch: a change of eps or less is not applied
                    scale = new
                cool = cooldown
                bad = 0
        out.append(scale)
    return np.asarray(out)


def np_restart_on_loss(losses, schedule, threshold=None, patience=None, rtol=1e-4, atol=0.0, cooldown=0):
    """(schedule step used, scale, restarts) after each loss."""
    k, best, bad, armed, cool, restarts = 0, math.inf, 0, False, 0, 0
    steps, scales, counts = [], [], []
    for v in losses:
        v = float(v)
        finite = math.isfinite(v)
        bound = math.inf if best == math.inf else best - rtol * abs(best) - atol
        if finite and v < bound:
            best, bad = v, 0
        else:
            bad += 1
        in_cool = cool > 0
        if in_cool:
            bad = 0
        fire = False
        if threshold is not None:
            fire = armed and finite and v < threshold
            if finite:
                armed = v >= threshold
        if patience is not None and bad > patience:
            fire = True
        if fire and not in_cool:
            k, best, bad, armed, cool = 0, math.inf, 0, False, cooldown
            restarts += 1
        else:
            cool = max(cool - 1, 0)
        steps.append(k)
        scales.append(schedule(k))
        counts.append(restarts)
        k += 1
    return np.asarray(steps), np.asarray(scales), np.asarray(counts)


def _run(tx, losses, grad=1.0):
    """Feed the losses one per update under jit (lax.scan); return per-step states and updates."""
    params = {"w": jnp.zeros((3,), jnp.float32)}
    state = tx.init(params)

    @jax.jit
    def go(state, losses):
        def body(state, loss):
            u, state = tx.update({"w": jnp.full((3,), grad, jnp.float32)}, state, params, value=loss)
            return state, (u["w"][0], state)

        return jax.lax.scan(body, state, losses)

    _, (u, states) = go(state, jnp.asarray(losses, jnp.float32))
    return np.asarray(u), jax.tree.map(np.asarray, states)


# ----------------------------------------------------------------------------
# reduce_on_plateau


def _torch_plateau_cases():
    # A missing or empty recording must fail the suite, not skip these tests: one case stands for it.
    if not PARITY.exists():
        return [{"name": "recording-missing"}]
    cases = json.loads(str(np.load(PARITY)["spec"]))["plateau"]
    return [c for c in cases if not c["name"].endswith("_flat")] or [{"name": "recording-empty"}]


@pytest.mark.parametrize("case", _torch_plateau_cases(), ids=lambda c: c["name"])
def test_reduce_on_plateau_matches_pytorch(case):
    assert PARITY.exists(), f"{PARITY.name} is missing: run python -m tests.parity.record_torch_schedules"
    assert "losses" in case, f"{PARITY.name} records no reduce_on_plateau case"
    data = np.load(PARITY)
    losses = data[f"losses_{case['losses']}"]
    kw, lr = case["kwargs"], case["lr"]
    rel = kw["threshold_mode"] == "rel"
    tx = gf.chain(
        gf.sgd(lr),
        gf.reduce_on_plateau(
            factor=kw["factor"], patience=kw["patience"], rtol=kw["threshold"] if rel else 0.0,
            atol=0.0 if rel else kw["threshold"], cooldown=kw["cooldown"], min_scale=kw["min_lr"] / lr,
            eps=kw.get("eps", 1e-8) / lr,
        ),
    )
    u, states = _run(tx, losses)
    want = data[case["name"]]  # PyTorch's lr after scheduler.step(loss)
    got = states[1].scale * lr
    assert np.any(np.diff(want) != 0), "the recorded run must contain a reduction"
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(u, -want, rtol=1e-6)  # the update carries the new learning rate


def test_flat_negative_plateau_reduces_where_pytorch_never_does():
    data = np.load(PARITY)
    losses = data["losses_negative_flat"]
    torch_lr = data["plateau_rel_negative_flat"]
    assert np.all(torch_lr == 0.1)  # PyTorch: every repeat of the best (negative) loss "improves"
    kw = dict(factor=0.1, patience=2, rtol=1e-4)
    _, states = _run(gf.reduce_on_plateau(**kw), losses)
    want = np_reduce_on_plateau(losses, **kw)
    np.testing.assert_allclose(np_reduce_on_plateau(losses, **kw, torch_negative_rule=True), torch_lr / 0.1)
    np.testing.assert_allclose(states.scale, want, rtol=1e-6)
    assert want[-1] < 1e-3


def _scripted_losses():
    rng = np.random.default_rng(3)
    a = np.linspace(3.0, 1.0, 12)
    b = np.full(15, 1.0) + 1e-5 * rng.standard_normal(15)
    c = np.array([0.9, np.nan, np.nan, np.nan, np.nan, 0.8, np.inf, 0.7])
    d = np.full(10, 0.7)
    return np.concatenate([a, b, c, d])


@pytest.mark.parametrize(
    "kw",
    [
        dict(factor=0.5, patience=2),
        dict(factor=0.1, patience=0, cooldown=3),
        dict(factor=0.3, patience=1, rtol=0.0, atol=0.05, min_scale=0.05),
        dict(factor=0.5, patience=1, accumulation_size=3),
        dict(factor=0.5, patience=4, rtol=0.2, cooldown=1),
    ],
    ids=str,
)
def test_reduce_on_plateau_matches_reference(kw):
    losses = _scripted_losses()
    _, states = _run(gf.reduce_on_plateau(**kw), losses)
    want = np_reduce_on_plateau(losses, **kw)
    assert want[-1] < 1.0
    np.testing.assert_allclose(states.scale, want, rtol=1e-6)
    assert np.all(np.isfinite(states.best_value[3:]))


def test_reduce_on_plateau_negative_losses_need_a_real_decrease():
    # Best −1.0; −0.99995 is *worse*. PyTorch's b·(1 − rtol) = −0.9999 counts it as an
    # improvement (so it never reduces); gradflow does not, and reduces.
    losses = np.array([-1.0] + [-0.99995] * 6)
    kw = dict(factor=0.5, patience=2, rtol=1e-4)
    ours = np_reduce_on_plateau(losses, **kw)
    torch_rule = np_reduce_on_plateau(losses, **kw, torch_negative_rule=True)
    assert torch_rule[-1] == 1.0 and ours[-1] == 0.25  # two reductions: 3 bad, then 3 more
    _, states = _run(gf.reduce_on_plateau(**kw), losses)
    np.testing.assert_allclose(states.scale, ours)
    assert states.best_value[-1] == np.float32(-1.0)
    # A real decrease of negative losses is an improvement: no reduction.
    _, states = _run(gf.reduce_on_plateau(**kw), -np.linspace(1.0, 2.0, 12))
    assert np.all(states.scale == 1.0)


def test_reduce_on_plateau_nan_losses_shrink_the_scale_and_keep_best_finite():
    losses = np.array([1.0, 0.5] + [np.nan] * 7)
    u, states = _run(gf.reduce_on_plateau(factor=0.1, patience=2), losses, grad=2.0)
    np.testing.assert_allclose(states.scale, [1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
    np.testing.assert_allclose(u, 2.0 * states.scale, rtol=1e-6)
    assert np.all(states.best_value[1:] == 0.5)


def test_reduce_on_plateau_keeps_dtypes_and_compiles_once():
    tx = gf.reduce_on_plateau(patience=1)
    params = {"a": jnp.zeros((2,), jnp.bfloat16), "b": jnp.zeros((), jnp.float32)}
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(state, loss):
        traces.append(1)
        return tx.update(jax.tree.map(jnp.ones_like, params), state, params, value=loss)

    for loss in [1.0, 1.0, 1.0, 0.5]:
        u, state = step(state, jnp.float32(loss))
    assert len(traces) == 1
    assert u["a"].dtype == jnp.bfloat16 and u["b"].dtype == jnp.float32
    assert float(state.scale) == pytest.approx(0.1)
    before = jax.tree.map(lambda x: (x.shape, x.dtype), tx.init(params))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == before


def test_loss_transforms_need_value():
    params = {"w": jnp.zeros(2)}
    for tx in (gf.reduce_on_plateau(), gf.restart_on_loss(gf.constant_schedule(1.0), patience=1)):
        with pytest.raises(TypeError, match="value=loss"):
            tx.update(params, tx.init(params), params)


def test_chain_passes_value_through_sgd():
    tx = gf.chain(gf.sgd(0.1, momentum=0.9), gf.reduce_on_plateau(factor=0.5, patience=0))
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    for loss in [1.0, 2.0]:
        u, state = tx.update({"w": jnp.ones(2)}, state, params, value=loss)
    assert float(state[1].scale) == 0.5


# ----------------------------------------------------------------------------
# restart_on_loss

SCHED = gf.cosine_decay_schedule(0.1, 20)


def _np_sched(k):
    return 0.1 * 0.5 * (1 + math.cos(math.pi * min(k, 20) / 20))


def _restart_losses():
    down = np.linspace(2.0, 1.05, 8)
    at = np.full(6, 1.0)  # a plateau exactly at the threshold: no threshold restart
    cross = np.array([0.99, 0.95, 0.9])  # falls below: one restart
    back = np.array([1.2, 1.1, np.nan, 0.8, 0.7])  # rises again, NaN, falls below again
    neg = -np.array([0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0])
    return np.concatenate([down, at, cross, back, neg])


@pytest.mark.parametrize(
    "kw",
    [
        dict(threshold=1.0),
        dict(patience=3),
        dict(threshold=1.0, patience=3, cooldown=2),
        dict(threshold=-1.5, patience=5, atol=0.01),
    ],
    ids=str,
)
def test_restart_on_loss_matches_reference(kw):
    losses = _restart_losses()
    u, states = _run(gf.restart_on_loss(SCHED, **kw), losses, grad=-3.0)
    steps, scales, restarts = np_restart_on_loss(losses, _np_sched, **kw)
    assert restarts[-1] >= 1
    np.testing.assert_array_equal(states.count - 1, steps)
    np.testing.assert_allclose(states.scale, scales, rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(u, -3.0 * scales, rtol=2e-6, atol=1e-8)
    np.testing.assert_array_equal(states.restarts, restarts)


def test_restart_threshold_plateau_exactly_at_threshold_does_not_restart():
    losses = np.concatenate([np.linspace(2.0, 1.0, 5), np.full(20, 1.0)])
    _, states = _run(gf.restart_on_loss(SCHED, threshold=1.0), losses)
    assert states.restarts[-1] == 0
    np.testing.assert_array_equal(states.count, np.arange(1, 26))
    # One ulp below restarts once, and staying below does not restart again.
    losses = np.concatenate([losses, [np.nextafter(np.float32(1.0), np.float32(0.0))] * 5])
    _, states = _run(gf.restart_on_loss(SCHED, threshold=1.0), losses)
    np.testing.assert_array_equal(states.restarts[-6:], [0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(states.count[-5:], [1, 2, 3, 4, 5])


def test_restart_on_loss_nan_counts_as_no_improvement():
    losses = np.array([1.0, 0.9] + [np.nan] * 4)
    _, states = _run(gf.restart_on_loss(SCHED, patience=2), losses)
    np.testing.assert_array_equal(states.restarts, [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(states.count, [1, 2, 3, 4, 1, 2])


# ----------------------------------------------------------------------------
# Bad input

BAD = [
    (lambda: gf.reduce_on_plateau(factor=0.0), "reduce_on_plateau: factor", "0.0"),
    (lambda: gf.reduce_on_plateau(factor=1.0), "reduce_on_plateau: factor", "1.0"),
    (lambda: gf.reduce_on_plateau(factor=1.5), "reduce_on_plateau: factor", "1.5"),
    (lambda: gf.reduce_on_plateau(factor=-0.1), "reduce_on_plateau: factor", "-0.1"),
    (lambda: gf.reduce_on_plateau(patience=-1), "reduce_on_plateau: patience", "-1"),
    (lambda: gf.reduce_on_plateau(cooldown=-2), "reduce_on_plateau: cooldown", "-2"),
    (lambda: gf.reduce_on_plateau(accumulation_size=0), "reduce_on_plateau: accumulation_size", "0"),
    (lambda: gf.reduce_on_plateau(rtol=1.0), "reduce_on_plateau: rtol", "1.0"),
    (lambda: gf.reduce_on_plateau(atol=-1e-3), "reduce_on_plateau: atol", "-0.001"),
    (lambda: gf.reduce_on_plateau(min_scale=-0.5), "reduce_on_plateau: min_scale", "-0.5"),
    (lambda: gf.restart_on_loss(SCHED), "restart_on_loss: give threshold", "None"),
    (lambda: gf.restart_on_loss(0.1, patience=3), "restart_on_loss: schedule", "0.1"),
    (lambda: gf.restart_on_loss(SCHED, threshold=float("nan")), "restart_on_loss: threshold", "nan"),
    (lambda: gf.restart_on_loss(SCHED, patience=-1), "restart_on_loss: patience", "-1"),
]


@pytest.mark.parametrize("build,prefix,value", BAD, ids=[f"{b[1]}={b[2]}" for b in BAD])
def test_bad_arguments_raise_at_build_time(build, prefix, value):
    with pytest.raises(ValueError) as e:
        build()
    assert str(e.value).startswith(prefix) and value in str(e.value), str(e.value)


def test_reduce_on_plateau_eps_rule_over_a_long_plateau():
    # Issue 13, item 10: PyTorch's ReduceLROnPlateau does not apply a reduction of eps or
    # less (eps=1e-8 in lr units; at lr=0.1 that is 1e-7 in scale units). Over a long
    # plateau the scale must stop where PyTorch's learning rate stops.
    lr, torch_eps = 0.1, 1e-8
    kw = dict(factor=0.5, patience=2)
    losses = np.ones(200, np.float32)
    _, states = _run(gf.reduce_on_plateau(**kw, eps=torch_eps / lr), losses)
    want = np_reduce_on_plateau(losses, **kw, eps=torch_eps / lr)
    np.testing.assert_allclose(states.scale, want, rtol=1e-6)
    assert want[-1] > 1e-7 and want[-1] == want[-100]  # the reductions stopped
    _, states = _run(gf.reduce_on_plateau(**kw), losses)  # the default eps is PyTorch's 1e-8
    np.testing.assert_allclose(states.scale, np_reduce_on_plateau(losses, **kw, eps=1e-8), rtol=1e-6)


def test_restart_on_loss_cooldown_counts_steps_after_the_restart():
    tx = gf.restart_on_loss(gf.linear_schedule(1.0, 0.0, 10), threshold=1.0, cooldown=1)
    s = tx.init(jnp.zeros(1))
    for loss in [2.0, 0.5, 2.0, 0.5]:  # a restart at step 1; one step of cooldown; another at step 3
        _, s = tx.update(jnp.ones(1), s, value=jnp.float32(loss))
    assert int(s.restarts) == 2
