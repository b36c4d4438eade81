"""adam_atan2, stable_adamw, spam: NumPy references over spiky runs, bounds, jit, dtypes, bad input."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf
from tests import reference, reference_spikes

SHAPES = {"w": (8, 5), "b": (5,), "s": ()}
STEPS = 150


def _problem(seed=0, steps=STEPS, spike=50.0):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = reference.spiky_gradients(rng, SHAPES, steps, spike=spike)
    return params, grads


def _run(tx, params, grads, dtype=jnp.float32):
    """Parameters after every step and the last state, one jitted step; asserts a single trace."""
    traces = []

    def step(p, s, g):
        traces.append(1)
        u, s = tx.update(g, s, p)
        return gf.apply_updates(p, u), s, u

    step = jax.jit(step)
    p = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    s = tx.init(p)
    out, states = [], []
    for g in grads:
        p, s, u = step(p, s, jax.tree.map(lambda x: jnp.asarray(x, dtype), g))
        assert all(x.dtype == dtype for x in jax.tree.leaves(u))
        out.append(jax.tree.map(np.asarray, p))
        states.append(s)
    assert len(traces) == 1
    return out, states


def _close(got, want, dtype):
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == jnp.float32 else dict(rtol=1e-10, atol=1e-12)
    for t, (a, b) in enumerate(zip(got, want)):
        for k in b:
            np.testing.assert_allclose(a[k], b[k], err_msg=f"step {t}, leaf {k}", **tol)


def _moved(traj, params):
    assert all(not np.allclose(traj[-1][k], params[k]) for k in params)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    if request.param == "float64":
        jax.config.update("jax_enable_x64", True)
        try:
            yield jnp.float64
        finally:
            jax.config.update("jax_enable_x64", False)
    else:
        yield jnp.float32


# --------------------------------------------------------------------------------------------
# adam_atan2
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(), dict(b1=0.8, b2=0.95, a=2.0, b=0.5, weight_decay=0.1)])
def test_adam_atan2_matches_reference(dtype, kwargs):
    params, grads = _problem()
    got, _ = _run(gf.adam_atan2(0.01, **kwargs), params, grads, dtype)
    want = reference_spikes.adam_atan2(params, grads, 0.01, **kwargs)
    _close(got, want, dtype)
    _moved(got, params)


def test_adam_atan2_schedule_and_mask():
    params, grads = _problem(1, steps=120)
    lr = gf.warmup_cosine_decay_schedule(0.0, 0.02, 10, 100)
    mask = {"w": True, "b": False, "s": True}
    got, _ = _run(gf.adam_atan2(lr, weight_decay=0.5, mask=mask), params, grads)
    want = reference_spikes.adam_atan2(params, grads, lr, weight_decay={"w": 0.5, "b": 0.0, "s": 0.5})
    _close(got, want, jnp.float32)


def test_adam_atan2_step_is_bounded_by_a_pi_over_2():
    params = {"w": jnp.zeros((64,), jnp.float32)}
    tx = gf.adam_atan2(0.1, a=1.27)
    s = tx.init(params)
    rng = np.random.default_rng(0)
    for t in range(30):
        g = rng.standard_normal(64).astype(np.float32) * (1e30 if t == 20 else 1.0)
        u, s = jax.jit(tx.update)({"w": jnp.asarray(g)}, s, params)
        assert float(jnp.max(jnp.abs(u["w"]))) <= 0.1 * 1.27 * math.pi / 2 * (1 + 1e-6)
    chex.assert_tree_all_finite(u)
    # Zero gradients from the start: atan2(0, 0) = 0, no 0/0.
    z = tx.init(params)
    u, _ = tx.update({"w": jnp.zeros(64)}, z, params)
    assert float(jnp.max(jnp.abs(u["w"]))) == 0.0


def test_adam_atan2_is_adam_for_small_ratios():
    # With b large, a·atan2(m̂, b√v̂) → (a/b)·m̂/√v̂: Adam's direction with ε = 0.
    params, grads = _problem(2, steps=20)
    got, _ = _run(gf.adam_atan2(0.01, a=1e4, b=1e4), params, grads)
    want, _ = _run(gf.adam(0.01, b1=0.9, b2=0.99, eps=0.0), params, grads)
    _close(got, want, jnp.float32)


def test_adam_atan2_rejects_complex_params():
    with pytest.raises(TypeError, match=r"scale_by_adam_atan2: params leaf \['w'\] has dtype complex64"):
        gf.adam_atan2(0.1).init({"w": jnp.ones(3, jnp.complex64)})


# --------------------------------------------------------------------------------------------
# shared: bad input, dtypes, jit, inject
# --------------------------------------------------------------------------------------------

BAD = [
    (lambda: gf.adam_atan2(-0.1), "adam_atan2: learning_rate", "-0.1"),
    (lambda: gf.adam_atan2(0.1, b1=1.0), "adam_atan2: b1", "1.0"),
    (lambda: gf.adam_atan2(0.1, b2=-0.5), "adam_atan2: b2", "-0.5"),
    (lambda: gf.adam_atan2(0.1, a=0.0), "adam_atan2: a", "0.0"),
    (lambda: gf.adam_atan2(0.1, b=-1.0), "adam_atan2: b", "-1.0"),
    (lambda: gf.adam_atan2(0.1, weight_decay=-1.0), "adam_atan2: weight_decay", "-1.0"),
    (lambda: gf.adam_atan2(0.1, a=math.nan), "adam_atan2: a", "nan"),
    (lambda: gf.scale_by_adam_atan2(b=math.inf), "scale_by_adam_atan2: b", "inf"),
    (lambda: gf.stable_adamw(-1.0), "stable_adamw: learning_rate", "-1.0"),
    (lambda: gf.stable_adamw(0.1, b2=1.0), "stable_adamw: b2", "1.0"),
    (lambda: gf.stable_adamw(0.1, eps=0.0), "stable_adamw: eps", "0.0"),
    (lambda: gf.stable_adamw(0.1, clip_threshold=-1.0), "stable_adamw: clip_threshold", "-1.0"),
    (lambda: gf.stable_adamw(0.1, weight_decay=math.nan), "stable_adamw: weight_decay", "nan"),
    (lambda: gf.scale_by_stable_adam(clip_threshold=0.0), "scale_by_stable_adam: clip_threshold", "0.0"),
    (lambda: gf.spam(-0.1), "spam: learning_rate", "-0.1"),
    (lambda: gf.spam(0.1, b1=1.0), "spam: b1", "1.0"),
    (lambda: gf.spam(0.1, threshold=-1.0), "spam: threshold", "-1.0"),
    (lambda: gf.spam(0.1, reset_interval=-1), "spam: reset_interval", "-1"),
    (lambda: gf.spam(0.1, warmup_steps=2.5), "spam: warmup_steps", "2.5"),
    (lambda: gf.spam(0.1, clip_start=-3), "spam: clip_start", "-3"),
    (lambda: gf.spam(0.1, max_decay=1.0), "spam: max_decay", "1.0"),
    (lambda: gf.spam(0.1, weight_decay=-1.0), "spam: weight_decay", "-1.0"),
    (lambda: gf.scale_by_spam(eps=math.nan), "scale_by_spam: eps", "nan"),
]


@pytest.mark.parametrize("call, name, value", BAD, ids=[n for _, n, _ in BAD])
def test_bad_hyperparameters_raise_value_error(call, name, value):
    with pytest.raises(ValueError) as info:
        call()
    assert name in str(info.value) and value in str(info.value), str(info.value)


OPTIMIZERS = {
    "adam_atan2": (gf.adam_atan2, dict(learning_rate=0.01, weight_decay=0.01)),
    "stable_adamw": (gf.stable_adamw, dict(learning_rate=0.01, weight_decay=0.01, clip_threshold=0.8)),
    "spam": (gf.spam, dict(learning_rate=0.01, threshold=100.0, reset_interval=50, warmup_steps=10, clip_start=5)),
    "spam_adaptive": (gf.spam, dict(learning_rate=0.01, adaptive_clip=True, max_decay=0.99, reset_interval=60)),
    "spam_no_clip": (gf.spam, dict(learning_rate=0.01, threshold=0.0, reset_interval=40, warmup_steps=10, weight_decay=0.01)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dt", [jnp.bfloat16, jnp.float32])
def test_dtypes_kept_and_no_recompile(name, dt):
    factory, kwargs = OPTIMIZERS[name]
    params, grads = _problem(3, steps=12, spike=1e3)
    tx = factory(**kwargs)
    p = jax.tree.map(lambda x: jnp.asarray(x, dt), params)
    state0 = tx.init(p)
    shape_of = jax.eval_shape(tx.init, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), p))
    chex.assert_trees_all_equal_shapes_and_dtypes(shape_of, state0)
    _, states = _run(tx, params, grads, dt)
    chex.assert_trees_all_equal_shapes_and_dtypes(states[-1], state0)
    assert all(x.dtype == dt for x in jax.tree.leaves(states[-1].__getitem__(0)) if jnp.ndim(x) and x.dtype != jnp.int32)


def _scan_traj(tx, params, grads):
    p = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    stacked = {k: jnp.asarray(np.stack([g[k] for g in grads]), jnp.float32) for k in params}

    @jax.jit
    def go(p, s, gs):
        def body(c, g):
            p, s = c
            u, s = tx.update(g, s, p)
            p = gf.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(body, (p, s), gs)

    (_, s), traj = go(p, tx.init(p), stacked)
    return jax.tree.map(np.asarray, traj), s


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_inject_hyperparams_bitwise_and_optax_inject(name):
    factory, kwargs = OPTIMIZERS[name]
    params, grads = _problem(4, steps=200)
    plain, _ = _scan_traj(factory(**kwargs), params, grads)
    injected, state = _scan_traj(gf.inject_hyperparams(factory)(**kwargs), params, grads)
    for k in plain:
        if name.startswith("spam"):
            # Around SPAM's reset and clipping selects XLA's CPU backend may pair a multiply-add
            # differently when a factor is a constant: the two builds agree to rounding.
            np.testing.assert_allclose(injected[k], plain[k], rtol=1e-4, atol=1e-5, err_msg=k)
        else:
            np.testing.assert_array_equal(injected[k].view(np.uint32), plain[k].view(np.uint32), err_msg=k)
    assert {k for k, v in kwargs.items() if isinstance(v, float)} <= set(state.hyperparams)
    via_optax, _ = _scan_traj(optax.inject_hyperparams(factory)(**kwargs), params, grads)
    for k in plain:
        np.testing.assert_allclose(via_optax[k], plain[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert not np.allclose(plain["w"][-1], params["w"])


# --------------------------------------------------------------------------------------------
# stable_adamw
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(weight_decay=0.1), dict(b1=0.8, b2=0.95, eps=1e-4, weight_decay=0.0, clip_threshold=0.5)])
def test_stable_adamw_matches_reference(dtype, kwargs):
    params, grads = _problem(5)
    got, states = _run(gf.stable_adamw(0.01, **kwargs), params, grads, dtype)
    want, rms = reference_spikes.stable_adamw(params, grads, 0.01, **kwargs)
    _close(got, want, dtype)
    _moved(got, params)
    # The diagnostics: the largest per-tensor RMS and how many tensors were shrunk, at every step.
    d = kwargs.get("clip_threshold", 1.0)
    for t, (s, r) in enumerate(zip(states, rms)):
        st = gf.stats(s)
        np.testing.assert_allclose(st["scale_by_stable_adam/max_rms"], max(r.values()), rtol=1e-4, err_msg=str(t))
        assert int(st["scale_by_stable_adam/num_leaves_clipped"]) == sum(x > d for x in r.values()), t
    n_steps_clipped = sum(any(x > d for x in r.values()) for r in rms)
    assert 0 < n_steps_clipped < STEPS
    assert int(gf.stats(states[-1])["scale_by_stable_adam/num_clipped"]) == n_steps_clipped


def test_stable_adamw_cuts_a_spiking_tensor_only():
    params = {"w": jnp.zeros((16,), jnp.float32), "b": jnp.zeros((4,), jnp.float32)}
    tx = gf.scale_by_stable_adam()
    s = tx.init(params)
    rng = np.random.default_rng(0)
    for _ in range(50):
        g = {k: jnp.asarray(rng.standard_normal(p.shape), jnp.float32) for k, p in params.items()}
        _, s = tx.update(g, s)
    g = {"w": jnp.asarray(rng.standard_normal(16) * 1e3, jnp.float32), "b": jnp.asarray(rng.standard_normal(4), jnp.float32)}
    u, s2 = tx.update(g, s)
    plain, _ = gf.scale_by_adam(0.9, 0.99, 1e-6).update(g, gf.ScaleByAdamState(s.count, s.mu, s.nu))
    # b: not clipped, bit for bit Adam's direction with ε outside the root.
    np.testing.assert_array_equal(np.asarray(u["b"]), np.asarray(plain["b"]))
    # w: Adam's direction times d/RMS, with RMS from g²/v̂ of this step.
    v_hat = np.asarray(s2.nu["w"], np.float64) / (1 - 0.99 ** int(s2.count))
    rms = math.sqrt(np.mean(np.asarray(g["w"], np.float64) ** 2 / np.maximum(v_hat, 1e-12)))
    assert rms > 1.0
    np.testing.assert_allclose(np.asarray(u["w"]), np.asarray(plain["w"]) / rms, rtol=1e-5)
    assert int(s2.num_leaves_clipped) == 1 and int(s2.num_clipped) == int(s.num_clipped) + 1


def test_stable_adamw_with_unreachable_threshold_is_adamw():
    params, grads = _problem(6, steps=100)
    got, _ = _run(gf.stable_adamw(0.01, weight_decay=0.05, clip_threshold=1e30), params, grads)
    want, _ = _run(gf.adamw(0.01, b1=0.9, b2=0.99, eps=1e-6, weight_decay=0.05), params, grads)
    _close(got, want, jnp.float32)


def test_stable_adamw_empty_and_complex_leaves():
    params = {"e": jnp.zeros((0, 3), jnp.float32), "z": jnp.ones((3,), jnp.complex64)}
    tx = gf.stable_adamw(0.1)
    s = tx.init(params)
    g = {"e": jnp.zeros((0, 3), jnp.float32), "z": jnp.asarray([1 + 1j, 2j, -1.0], jnp.complex64)}
    u, s = jax.jit(tx.update)(g, s, params)
    chex.assert_tree_all_finite(u)
    assert u["z"].dtype == jnp.complex64 and s[0].max_rms.dtype == jnp.float32


# --------------------------------------------------------------------------------------------
# spam
# --------------------------------------------------------------------------------------------

SPAM_CASES = [
    dict(threshold=100.0, reset_interval=40, warmup_steps=10, clip_start=5),
    dict(threshold=100.0, reset_interval=0, clip_start=0, weight_decay=0.1, b1=0.8, b2=0.99, eps=1e-4),
    dict(threshold=5.0, reset_interval=0, clip_start=7),  # clip_start alone decides, with no resets
    dict(threshold=0.0, reset_interval=25, warmup_steps=30, clip_start=20),
    dict(adaptive_clip=True, max_decay=0.9, reset_interval=50, warmup_steps=5),
    dict(adaptive_clip=True, reset_interval=1, warmup_steps=3),
]


@pytest.mark.parametrize("kwargs", SPAM_CASES, ids=[f"case{i}" for i in range(len(SPAM_CASES))])
def test_spam_matches_reference(dtype, kwargs):
    params, grads = _problem(7, steps=STEPS, spike=300.0)
    ref_kwargs = {("adaptive" if k == "adaptive_clip" else "gamma" if k == "max_decay" else k): v for k, v in kwargs.items()}
    got, states = _run(gf.spam(0.01, **kwargs), params, grads, dtype)
    want, clipped = reference_spikes.spam(params, grads, 0.01, **ref_kwargs)
    _close(got, want, dtype)
    _moved(got, params)
    got_clipped = [int(gf.stats(s)["scale_by_spam/num_clipped"]) for s in states]
    if dtype == jnp.float64:
        assert got_clipped == clipped
    else:  # g² against θ·v in float32: an element at the bound may fall either side
        assert all(abs(a - b) <= 1 for a, b in zip(got_clipped, clipped))
    if kwargs.get("threshold", 1.0) != 0.0:
        assert sum(clipped) > 0  # the spikes were cut
    assert int(gf.stats(states[-1])["scale_by_spam/total_clipped"]) == sum(got_clipped)
    if kwargs.get("reset_interval", 0) > 1:
        # warm-up factor after a reset: 0.01 at the reset step, back to 1 after W steps
        dT, W = kwargs["reset_interval"], kwargs.get("warmup_steps", 150)
        scales = [float(s[0].warmup_scale) for s in states]
        assert scales[dT - 1] == pytest.approx(0.01, rel=1e-5) and scales[dT - 2] == 1.0
        if W < dT:  # (a longer warm-up is cut short by the next reset)
            assert scales[dT - 1 + W] == 1.0 and scales[dT - 2 + W] < 1.0


def test_spam_clips_against_the_previous_v_and_resets_moments():
    tx = gf.scale_by_spam(b1=0.9, b2=0.999, threshold=10.0, reset_interval=6, warmup_steps=2, clip_start=2)
    params = {"x": jnp.zeros(2, jnp.float32)}
    s = tx.init(params)
    for _ in range(3):
        _, s = tx.update({"x": jnp.asarray([1.0, -1.0], jnp.float32)}, s)
    v_prev = np.asarray(s.nu["x"], np.float64)
    _, s4 = tx.update({"x": jnp.asarray([1e3, -1e3], jnp.float32)}, s)  # step 4: 4 mod 6 = 4 ≥ 2
    assert int(s4.num_clipped) == 2
    g_clipped = np.array([1.0, -1.0]) * np.sqrt(10.0 * v_prev)
    np.testing.assert_allclose(np.asarray(s4.nu["x"]), 0.999 * v_prev + 0.001 * g_clipped**2, rtol=1e-4)
    _, s5 = tx.update({"x": jnp.asarray([1.0, 1.0], jnp.float32)}, s4)
    _, s6 = tx.update({"x": jnp.asarray([2.0, -3.0], jnp.float32)}, s5)  # step 6: reset, then no clip (6 mod 6 = 0 < 2)
    np.testing.assert_allclose(np.asarray(s6.mu["x"]), 0.1 * np.array([2.0, -3.0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s6.nu["x"]), 0.001 * np.array([4.0, 9.0]), rtol=1e-4)  # 1 − β₂ in float32
    assert int(s6.num_clipped) == 0 and float(s6.warmup_scale) == pytest.approx(0.01, rel=1e-5)


def test_spam_adaptive_clip_cuts_to_the_ema_of_the_max():
    tx = gf.scale_by_spam(adaptive_clip=True, max_decay=0.5, reset_interval=0)
    params = {"x": jnp.zeros(3, jnp.float32)}
    s = tx.init(params)
    _, s = tx.update({"x": jnp.asarray([1.0, -2.0, 0.5], jnp.float32)}, s)
    assert int(s.num_clipped) == 0  # m̂_max = max|g| at the first step
    _, s2 = tx.update({"x": jnp.asarray([8.0, -1.0, 0.5], jnp.float32)}, s)
    # m_max = 0.5·(0.5·2) + 0.5·8 = 4.5, m̂ = 4.5/(1 − 0.25) = 6: 8 → 8·6/8 = 6.
    assert int(s2.num_clipped) == 1
    np.testing.assert_allclose(float(s2.max_ema["x"]), 4.5, rtol=1e-6)
    v1 = np.asarray(s.nu["x"], np.float64)
    np.testing.assert_allclose(np.asarray(s2.nu["x"]), 0.999 * v1 + 0.001 * np.array([36.0, 1.0, 0.25]), rtol=1e-4)


def test_spam_empty_complex_and_shapes_only():
    params = {"e": jnp.zeros((0,), jnp.float32), "z": jnp.ones((2,), jnp.complex64)}
    for kw in (dict(), dict(adaptive_clip=True)):
        tx = gf.spam(0.01, **kw)
        s = tx.init(params)
        g = {"e": jnp.zeros((0,), jnp.float32), "z": jnp.asarray([1 + 2j, -3j], jnp.complex64)}
        u, s = jax.jit(tx.update)(g, s, params)
        chex.assert_tree_all_finite(u)
        shapes = jax.eval_shape(tx.init, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params))
        chex.assert_trees_all_equal_shapes_and_dtypes(shapes, s)


@pytest.mark.parametrize("clip_start,reset_interval", [(0, 500), (0, 0), (1, 0), (1, 500)])
def test_spam_never_clips_against_an_empty_v(clip_start, reset_interval):
    # Clipping against v = 0 would set every nonzero g to 0 and keep v at 0: training stops.
    params = {"w": jnp.zeros(64, jnp.float32)}
    tx = gf.spam(0.01, threshold=5.0, clip_start=clip_start, reset_interval=reset_interval)
    s = tx.init(params)
    rng = np.random.default_rng(0)
    p = params
    for _ in range(30):
        u, s = tx.update({"w": jnp.asarray(rng.standard_normal(64), jnp.float32)}, s, p)
        p = optax.apply_updates(p, u)
    assert float(jnp.max(jnp.abs(p["w"]))) > 0.05  # it trains (each step moves up to ~0.01)


def test_spam_coordinate_that_starts_at_zero_is_not_frozen():
    # Without resets, a coordinate whose gradient is 0 until clipping starts has v = 0 then.
    params = {"w": jnp.zeros(2, jnp.float32)}
    tx = gf.scale_by_spam(threshold=5.0, clip_start=3, reset_interval=0)
    s = tx.init(params)
    for k in range(1, 50):
        g = jnp.asarray([1.0, 1.0 if k > 2 else 0.0], jnp.float32)
        u, s = tx.update({"w": g}, s)
    np.testing.assert_allclose(u["w"][1], u["w"][0], rtol=0.2)  # both ~1 (Adam's step on a constant g)
    assert float(s.nu["w"][1]) > 0


@pytest.mark.parametrize("make", [gf.scale_by_adam_atan2, gf.scale_by_stable_adam, gf.scale_by_spam])
def test_spike_blocks_refuse_a_gradient_of_another_shape(make):
    tx = make()
    s = tx.init({"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"updates leaf \['w'\] has shape \(3, 1\)"):
        tx.update({"w": jnp.ones((3, 1))}, s)


@pytest.mark.parametrize("make", [gf.scale_by_adam_atan2, gf.scale_by_stable_adam, gf.scale_by_spam])
def test_spike_blocks_form_float64_moments_in_float64(make, x64):
    # float64 moments for float32 gradients are formed in float64 (as scale_by_adam's), not float32-exact.
    tx = make(mu_dtype=jnp.float64, nu_dtype=jnp.float64)
    s = tx.init({"w": jnp.zeros(4, jnp.float32)})
    g = jnp.asarray([0.1, 0.3, 1.7, 3.3], jnp.float32)
    _, s = tx.update({"w": g}, s)
    _, s = tx.update({"w": g}, s)
    g64 = np.asarray(g, np.float64)
    b2 = 0.999 if make is gf.scale_by_spam else 0.99
    want = (1 - b2) * g64**2 * b2 + (1 - b2) * g64**2
    assert s.nu["w"].dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(s.nu["w"]), want, rtol=1e-13)


def test_spam_total_clipped_saturates_at_int32_max():
    # total_clipped counts clipped elements so far and saturates at 2³¹ − 1 instead of wrapping.
    tx = gf.scale_by_spam(threshold=10.0, reset_interval=0, clip_start=1)
    s = tx.init({"x": jnp.zeros(3, jnp.float32)})
    _, s = tx.update({"x": jnp.ones(3, jnp.float32)}, s)  # step 1: v = 0, nothing to clip against
    imax = np.iinfo(np.int32).max
    s = s._replace(total_clipped=jnp.asarray(imax - 1, jnp.int32))
    _, s = tx.update({"x": jnp.full(3, 1e3, jnp.float32)}, s)  # g² = 1e6 > 10·v = 0.01: all 3 clipped
    assert int(s.num_clipped) == 3 and int(s.total_clipped) == imax
    _, s = tx.update({"x": jnp.full(3, 1e4, jnp.float32)}, s)
    assert int(s.num_clipped) == 3 and int(s.total_clipped) == imax
