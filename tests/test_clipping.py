"""Clippers: hand-computed cases, NumPy references over spiky sequences, spikes cut to the bound,
normal steps left bit-for-bit alone, parity with optax and PyTorch, composability, bad input."""

from __future__ import annotations

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf
from tests import reference
from tests import reference_clipping as ref
from tests.helpers import assert_trajectories_close, run_trajectory

SHAPES = ref.SHAPES
PARAMS = {k: np.random.default_rng(11).standard_normal(s) for k, s in SHAPES.items()}
GRADS = ref.spike_sequence(seed=0, steps=300)


def _f32(tree):
    return {k: np.asarray(v, np.float32) for k, v in tree.items()}


def run_clipper(tx, grads, params=PARAMS, dtype=np.float32):
    """Run ``tx`` alone under jit; return the outputs (NumPy) and the state after every step."""
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    state = tx.init(params)
    step = jax.jit(tx.update)
    outs, states = [], []
    for g in grads:
        u, state = step(jax.tree.map(lambda x: jnp.asarray(x, dtype), g), state, params)
        outs.append(jax.tree.map(np.asarray, u))
        states.append(state)
    return outs, states


def _norm(x):
    return float(np.sqrt(np.sum(np.asarray(x, np.float64) ** 2)))


def assert_cut_to_bound(grads, outs, info, rtol=2e-5):
    """Clipped steps have exactly the bound's norm; every other step (or leaf) is the input, bit for bit."""
    for t, (g, u, i) in enumerate(zip(grads, outs, info)):
        g32 = _f32(g)
        bound = i["bound"]
        if isinstance(bound, dict):  # per-leaf bounds
            for k, b in bound.items():
                if b is None:
                    np.testing.assert_array_equal(u[k], g32[k], err_msg=f"step {t} leaf {k} should be untouched")
                else:
                    np.testing.assert_allclose(_norm(u[k]), b, rtol=rtol, err_msg=f"step {t} leaf {k}")
        elif i["clipped"]:
            np.testing.assert_allclose(ref.global_norm(u), bound, rtol=rtol, err_msg=f"step {t}")
        else:
            for k in g32:
                np.testing.assert_array_equal(u[k], g32[k], err_msg=f"step {t} leaf {k} should be untouched")


def assert_outputs_close(outs, want, rtol=2e-5, atol=1e-6):
    for t, (u, w) in enumerate(zip(outs, want)):
        for k in w:
            np.testing.assert_allclose(np.asarray(u[k], np.float64), w[k], rtol=rtol, atol=atol, err_msg=f"step {t} leaf {k}")


def assert_flags(states, info):
    got = [bool(s.clipped) for s in states]
    want = [bool(i["clipped"]) for i in info]
    assert got == want
    assert int(states[-1].num_clipped) == sum(want)
    assert int(states[-1].count) == len(info)
    np.testing.assert_allclose([float(s.norm) for s in states], [i["norm"] for i in info], rtol=2e-6)


# --------------------------------------------------------------------------- hand-computed cases


def test_clip_by_value_hand_case():
    tx = gf.clip(1.0)
    s = tx.init({"a": jnp.zeros(3)})
    u, s = tx.update({"a": jnp.array([3.0, -0.5, -2.0])}, s)
    np.testing.assert_array_equal(u["a"], [1.0, -0.5, -1.0])
    assert bool(s.clipped) and int(s.num_clipped) == 1
    np.testing.assert_allclose(s.norm, np.sqrt(13.25), rtol=1e-6)
    u, s = tx.update({"a": jnp.array([0.25, -0.5, 1.0])}, s)
    np.testing.assert_array_equal(u["a"], [0.25, -0.5, 1.0])
    assert not bool(s.clipped) and int(s.num_clipped) == 1 and int(s.count) == 2


def test_clip_by_norm_hand_case():
    tx = gf.clip_by_norm(1.0)
    p = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    u, s = tx.update({"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.3, 0.4])}, tx.init(p))
    np.testing.assert_allclose(u["a"], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(u["b"], np.float32([0.3, 0.4]))
    assert int(s.num_leaves_clipped) == 1 and bool(s.clipped)
    np.testing.assert_allclose(s.norm, np.sqrt(25.25), rtol=1e-6)


def test_clip_by_global_norm_hand_case_and_pytorch_eps():
    p = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
    g = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.0])}
    u, s = gf.clip_by_global_norm(1.0).update(g, gf.clip_by_global_norm(1.0).init(p))
    np.testing.assert_allclose(u["a"], [0.6, 0.8], rtol=1e-6)
    assert float(s.norm) == 5.0 and bool(s.clipped)
    tx = gf.clip_by_global_norm(1.0, pytorch_eps=True)
    u, _ = tx.update(g, tx.init(p))
    np.testing.assert_allclose(u["a"], np.array([3.0, 4.0]) / (5.0 + 1e-6), rtol=1e-6)
    # within 1e-6 below the bound: exact clipping leaves it alone, PyTorch's +1e-6 scales by c/(‖g‖ + 1e-6)
    below = {"a": jnp.array([0.6, 0.8]) * (1 - 5e-7), "b": jnp.array([0.0])}
    u, s = gf.clip_by_global_norm(1.0).update(below, gf.clip_by_global_norm(1.0).init(p))
    np.testing.assert_array_equal(u["a"], below["a"])
    assert not bool(s.clipped)
    u, s = tx.update(below, tx.init(p))
    n = float(gf.global_norm(below))
    assert n < 1.0
    np.testing.assert_allclose(u["a"], np.asarray(below["a"], np.float64) / (n + 1e-6), rtol=1e-7)
    assert bool(s.clipped) and float(u["a"][0]) < float(below["a"][0])


def test_clip_by_block_rms_hand_case():
    tx = gf.clip_by_block_rms(1.0)
    p = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    u, s = tx.update({"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.5, -0.5])}, tx.init(p))
    np.testing.assert_allclose(u["a"], np.array([3.0, 4.0]) / np.sqrt(12.5), rtol=1e-6)
    np.testing.assert_array_equal(u["b"], [0.5, -0.5])
    assert int(s.num_leaves_clipped) == 1


def test_adaptive_grad_clip_hand_case_both_layouts():
    w = jnp.array([[3.0, 0.0], [4.0, 1.0]])  # columns: norms 5 and 1; rows: norms 3 and √17
    g = jnp.eye(2)  # every row and column has norm 1
    tx = gf.adaptive_grad_clip(0.3)
    u, s = tx.update({"w": g}, tx.init({"w": w}), {"w": w})
    np.testing.assert_allclose(u["w"], [[1.0, 0.0], [0.0, 0.3]], rtol=1e-6)  # column 1 cut to 0.3·1
    assert int(s.num_units_clipped) == 1
    tx = gf.adaptive_grad_clip(0.3, pytorch_layout=True)
    u, s = tx.update({"w": g}, tx.init({"w": w}), {"w": w})
    np.testing.assert_allclose(u["w"], [[0.9, 0.0], [0.0, 1.0]], rtol=1e-6)  # row 0 cut to 0.3·3
    assert int(s.num_units_clipped) == 1
    # zero parameters: the floor ε keeps the gradient alive (bound λ·ε)
    tx = gf.adaptive_grad_clip(0.5, eps=1e-3)
    u, _ = tx.update({"w": jnp.array([2.0])}, tx.init({"w": jnp.zeros(1)}), {"w": jnp.zeros(1)})
    np.testing.assert_allclose(u["w"], [5e-4], rtol=1e-6)
    with pytest.raises(ValueError, match="adaptive_grad_clip: update needs params"):
        tx.update({"w": jnp.array([2.0])}, tx.init({"w": jnp.zeros(1)}))


def _scalar_run(tx, values):
    p = {"x": jnp.zeros(())}
    s = tx.init(p)
    outs, states = [], []
    for v in values:
        u, s = tx.update({"x": jnp.asarray(v, jnp.float32)}, s, p)
        outs.append(float(u["x"]))
        states.append(s)
    return outs, states


def test_autoclip_hand_case():
    outs, states = _scalar_run(gf.autoclip(percentile=50.0), [1.0, 2.0, 3.0, 4.0, 100.0])
    np.testing.assert_allclose(outs, [1.0, 1.5, 2.0, 2.5, 3.0], rtol=1e-6)
    assert [bool(s.clipped) for s in states] == [False, True, True, True, True]
    outs, _ = _scalar_run(gf.autoclip(percentile=50.0, history_size=3), [1.0, 2.0, 3.0, 4.0, 100.0])
    np.testing.assert_allclose(outs, [1.0, 1.5, 2.0, 3.0, 4.0], rtol=1e-6)  # median of the last 3 norms
    outs, _ = _scalar_run(gf.autoclip(percentile=100.0), [1.0, 5.0, 2.0])
    assert outs == [1.0, 5.0, 2.0]  # the 100th percentile never clips


def test_zclip_hand_case():
    outs, states = _scalar_run(gf.zclip(alpha=0.5, z_threshold=1.0, warmup_steps=2, eps=0.0), [1.0, 3.0, 2.0, 4.0])
    assert outs[:3] == [1.0, 3.0, 2.0]  # warm-up, then z = 0
    np.testing.assert_allclose(outs[3], 2.25, rtol=1e-6)  # μ + z_thr²σ/z = 2 + 0.5/2
    np.testing.assert_allclose(float(states[1].mean), 2.0)
    np.testing.assert_allclose(float(states[1].var), 1.0)
    np.testing.assert_allclose(float(states[2].var), 0.5)
    np.testing.assert_allclose(float(states[3].z), 2.0 / np.sqrt(0.5), rtol=1e-6)
    np.testing.assert_allclose(float(states[3].mean), 2.125, rtol=1e-6)
    np.testing.assert_allclose(float(states[3].var), 0.2578125, rtol=1e-6)
    assert [int(s.num_clipped) for s in states] == [0, 0, 0, 1]


def test_adagc_hand_case():
    tx = gf.adagc(lambda_abs=1.0, lambda_rel=2.0, beta=0.5, warmup_steps=1)
    p = {"a": jnp.zeros(()), "b": jnp.zeros(())}
    s = tx.init(p)
    seen = []
    for g in [(3.0, 4.0), (1.0, 0.5), (10.0, -1.0)]:
        u, s = tx.update({"a": jnp.float32(g[0]), "b": jnp.float32(g[1])}, s, p)
        seen.append((float(u["a"]), float(u["b"]), float(s.gamma["a"]), float(s.gamma["b"]), int(s.num_leaves_clipped)))
    np.testing.assert_allclose(
        seen,
        [(0.6, 0.8, 0.6, 0.8, 2), (1.0, 0.5, 0.8, 0.65, 0), (1.6, -1.0, 1.2, 0.825, 1)],
        rtol=1e-6,
    )


# --------------------------------------------------------------------------- NumPy references, spikes


STATIC = [
    ("clip_by_global_norm", lambda: gf.clip_by_global_norm(8.0), lambda g: ref.clip_global(g, 8.0)),
    ("clip_by_global_norm_pt", lambda: gf.clip_by_global_norm(8.0, pytorch_eps=True), lambda g: ref.clip_global(g, 8.0, True)),
    ("clip_by_norm", lambda: gf.clip_by_norm(8.0), lambda g: ref.clip_per_leaf(g, 8.0)),
    ("clip_by_block_rms", lambda: gf.clip_by_block_rms(3.0), lambda g: ref.clip_block_rms(g, 3.0)),
]


@pytest.mark.parametrize("name, make, reference_fn", STATIC, ids=[s[0] for s in STATIC])
def test_static_clippers_match_reference_and_cut_spikes(name, make, reference_fn):
    outs, states = run_clipper(make(), GRADS)
    pairs = [reference_fn(g) for g in GRADS]
    want, info = [p[0] for p in pairs], [p[1] for p in pairs]
    assert_outputs_close(outs, want)
    if name.endswith("_pt"):
        # PyTorch's +1e-6 moves the bound by ~1e-7 relative; the per-step check is the reference match above
        assert [bool(s.clipped) for s in states] == [i["clipped"] for i in info]
    else:
        assert_cut_to_bound(GRADS, outs, info)
        assert_flags(states, info)
    for t in ref.SPIKES:
        assert info[t]["clipped"] and bool(states[t].clipped), f"spike at step {t} was not cut"
    normal = [t for t in range(len(GRADS)) if t not in ref.SPIKES]
    assert sum(info[t]["clipped"] for t in normal) < len(normal) // 10  # bounds chosen above typical norms


def test_clip_by_value_matches_reference_and_optax():
    outs, states = run_clipper(gf.clip(0.5), GRADS)
    assert_outputs_close(outs, [ref.clip_value(_f32(g), 0.5) for g in GRADS], rtol=0, atol=0)
    want, _ = run_clipper(optax.clip(0.5), GRADS)
    chex.assert_trees_all_equal(outs, want)
    clipped = [any(np.any(np.abs(v) > 0.5) for v in g.values()) for g in GRADS]
    assert [bool(s.clipped) for s in states] == clipped
    for t in ref.SPIKES:
        assert max(np.max(np.abs(v)) for v in outs[t].values()) <= 0.5


@pytest.mark.parametrize("layout", ["jax", "torch"])
def test_adaptive_grad_clip_matches_reference(layout):
    shapes = {"w": (8, 4), "b": (4,), "s": (), "h": (3, 3, 2), "k": (2, 2, 3, 4), "r": (1, 5)}
    rng = np.random.default_rng(5)
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = ref.spike_sequence(seed=1, steps=120, shapes=shapes, spikes={20: ("all", 50.0), 60: ("k", 1e3), 90: ("r", 1e4)})
    grads = [{k: 0.1 * v for k, v in g.items()} for g in grads]
    outs, states = run_clipper(gf.adaptive_grad_clip(0.05, pytorch_layout=(layout == "torch")), grads, params)
    p32 = _f32(params)
    want = [ref.agc(g, p32, 0.05, layout=layout) for g in grads]
    assert_outputs_close(outs, want)
    for t in (20, 60, 90):
        assert bool(states[t].clipped)
    # units under the bound are untouched bit for bit
    for g, u in zip(grads, outs):
        for k, v in _f32(g).items():
            gn = ref.unit_norms(v, layout)
            wn = np.maximum(ref.unit_norms(p32[k], layout), 1e-3)
            keep = np.broadcast_to(gn / wn <= 0.05 * (1 - 1e-5), v.shape)
            np.testing.assert_array_equal(u[k][keep], v[keep])


def test_adaptive_grad_clip_equals_optax():
    shapes = {"w": (8, 4), "b": (4,), "h": (3, 3, 2), "k": (2, 2, 3, 4), "r": (1, 5)}
    rng = np.random.default_rng(6)
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = ref.spike_sequence(seed=2, steps=40, shapes=shapes, spikes={10: ("all", 50.0)})
    got, _ = run_clipper(gf.adaptive_grad_clip(0.1), grads, params)
    want, _ = run_clipper(optax.adaptive_grad_clip(0.1), grads, params)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("history_size", [None, 50])
def test_autoclip_matches_reference_and_cuts_spikes(history_size):
    size = history_size or len(GRADS)
    outs, states = run_clipper(gf.autoclip(percentile=10.0, history_size=size), GRADS)
    want, info = ref.autoclip(GRADS, 10.0, history_size)
    assert_outputs_close(outs, want)
    assert_cut_to_bound(GRADS, outs, info)
    assert_flags(states, info)
    np.testing.assert_allclose([float(s.threshold) for s in states], [i["bound"] for i in info], rtol=2e-6)
    for t in ref.SPIKES:
        assert info[t]["clipped"] and info[t]["bound"] < 2 * np.median([i["norm"] for i in info])


def test_autoclip_percentile_matches_numpy():
    rng = np.random.default_rng(9)
    values = jnp.asarray(rng.standard_normal(40).astype(np.float32))
    for n in (1, 2, 7, 40):
        for q in (0.5, 10.0, 33.3, 50.0, 90.0, 100.0):
            got = float(gf.clipping.linear_percentile(values, jnp.int32(n), q))
            np.testing.assert_allclose(got, np.percentile(np.asarray(values[:n], np.float64), q), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("sequence", ["spike_sequence", "spiky_gradients"])
def test_zclip_matches_reference_and_cuts_spikes(sequence):
    grads = GRADS if sequence == "spike_sequence" else reference.spiky_gradients(np.random.default_rng(3), SHAPES, 200)
    outs, states = run_clipper(gf.zclip(), grads)
    want, info = ref.zclip(grads)
    assert_outputs_close(outs, want)
    assert_cut_to_bound(grads, outs, info)
    assert_flags(states, info)
    if sequence == "spike_sequence":
        for t in ref.SPIKES:
            assert info[t]["clipped"], f"spike at step {t} was not cut"
            assert info[t]["bound"] < 1.5 * info[t - 1]["norm"] + 3.0


@pytest.mark.parametrize("sequence", ["spike_sequence", "spiky_gradients"])
def test_adagc_matches_reference_and_cuts_spikes(sequence):
    grads = GRADS if sequence == "spike_sequence" else reference.spiky_gradients(np.random.default_rng(4), SHAPES, 200)
    warm = 50 if sequence == "spike_sequence" else 100
    outs, states = run_clipper(gf.adagc(warmup_steps=warm), grads)
    want, info = ref.adagc(grads, warmup=warm)
    assert_outputs_close(outs, want, rtol=1e-4, atol=1e-5)
    assert_cut_to_bound(grads, outs, info, rtol=1e-4)
    assert [bool(s.clipped) for s in states] == [i["clipped"] for i in info]
    for k in SHAPES:
        np.testing.assert_allclose(float(states[-1].gamma[k]), info[-1]["gamma"][k], rtol=1e-4)
    if sequence == "spike_sequence":
        for t, (leaf, _) in ref.SPIKES.items():
            for k in SHAPES if leaf == "all" else [leaf]:
                assert info[t]["bound"][k] is not None, f"spike at step {t} leaf {k} was not cut"


def test_clippers_in_float64_match_reference_tightly(x64):
    grads = GRADS[:120]
    outs, _ = run_clipper(gf.zclip(), grads, dtype=np.float64)
    want, _ = ref.zclip(grads)
    assert_outputs_close(outs, want, rtol=1e-12, atol=1e-12)
    outs, states = run_clipper(gf.clip_by_global_norm(8.0), grads, dtype=np.float64)
    assert states[-1].norm.dtype == jnp.float64
    assert_outputs_close(outs, [ref.clip_global(g, 8.0)[0] for g in grads], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- parity: optax, PyTorch

PARITY = np.load(pathlib.Path(__file__).parent / "parity" / "torch_clipping.npz")
PARITY_NAMES = sorted(SHAPES)


def _parity_problem():
    params = {k: PARITY[f"params0/{k}"] for k in PARITY_NAMES}
    steps = PARITY[f"grads/{PARITY_NAMES[0]}"].shape[0]
    grads = [{k: PARITY[f"grads/{k}"][t] for k in PARITY_NAMES} for t in range(steps)]
    return params, grads


def _torch_trajectory(opt: str):
    steps = PARITY[f"{opt}/{PARITY_NAMES[0]}"].shape[0]
    return [{k: PARITY[f"{opt}/{k}"][t].astype(np.float64) for k in PARITY_NAMES} for t in range(steps)]


def test_clip_by_global_norm_sgd_equals_torch_recording():
    params, grads = _parity_problem()
    c = float(PARITY["max_norm"])
    tx = gf.chain(gf.clip_by_global_norm(c, pytorch_eps=True), gf.sgd(0.01, momentum=0.9))
    got = run_trajectory(tx, params, grads)
    assert_trajectories_close(got, _torch_trajectory("sgd"), rtol=1e-5, atol=1e-6)
    _, states = run_clipper(gf.clip_by_global_norm(c), grads)
    np.testing.assert_allclose([float(s.norm) for s in states], PARITY["sgd/norm"], rtol=1e-5)
    assert sum(bool(s.clipped) for s in states) >= 5  # the recorded spikes were clipped


def test_clip_by_global_norm_adam_equals_torch_recording():
    params, grads = _parity_problem()
    tx = gf.chain(gf.clip_by_global_norm(float(PARITY["max_norm"]), pytorch_eps=True), gf.adam(0.01))
    got = run_trajectory(tx, params, grads)
    assert_trajectories_close(got, _torch_trajectory("adam"), rtol=1e-4, atol=1e-5)


def test_clip_by_global_norm_sgd_equals_optax():
    params, grads = _parity_problem()
    got = run_trajectory(gf.chain(gf.clip_by_global_norm(5.0), gf.sgd(0.01, momentum=0.9)), params, grads)
    want = run_trajectory(optax.chain(optax.clip_by_global_norm(5.0), optax.sgd(0.01, momentum=0.9)), params, grads)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)


def test_static_clippers_equal_optax_on_spikes():
    for ours, theirs in [
        (gf.clip_by_global_norm(8.0), optax.clip_by_global_norm(8.0)),
        (gf.clip_by_block_rms(3.0), optax.clip_by_block_rms(3.0)),
    ]:
        got, _ = run_clipper(ours, GRADS[:150])
        want, _ = run_clipper(theirs, GRADS[:150])
        chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- composability

CLIPPERS = {
    "clip": lambda: gf.clip(0.5),
    "clip_by_norm": lambda: gf.clip_by_norm(8.0),
    "clip_by_global_norm": lambda: gf.clip_by_global_norm(8.0),
    "clip_by_block_rms": lambda: gf.clip_by_block_rms(3.0),
    "adaptive_grad_clip": lambda: gf.adaptive_grad_clip(0.05),
    "autoclip": gf.autoclip,
    "zclip": lambda: gf.zclip(warmup_steps=5),
    "adagc": lambda: gf.adagc(warmup_steps=5),
}
OPTIMIZERS = [n for n in ("sgd", "adam", "adamw", "amsgrad", "rmsprop", "adagrad", "lamb", "lars") if hasattr(gf, n)]


def _two_step_trajectory(clipper, opt, params, grads):
    """The clipper and the optimizer run one after the other by hand, each with its own state."""
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    cs, os_ = clipper.init(params), opt.init(params)

    @jax.jit
    def step(params, cs, os_, g):
        u, cs = clipper.update(g, cs, params)
        u, os_ = opt.update(u, os_, params)
        return gf.apply_updates(params, u), cs, os_

    out = []
    for g in grads:
        params, cs, os_ = step(params, cs, os_, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g))
        out.append(jax.tree.map(np.asarray, params))
    return out


@pytest.mark.parametrize("name", sorted(CLIPPERS))
def test_clipper_composes_in_gradflow_and_optax_chains(name):
    grads = GRADS[50:80]
    for opt_name in OPTIMIZERS:
        got = run_trajectory(gf.chain(CLIPPERS[name](), getattr(gf, opt_name)(0.01)), PARAMS, grads)
        want = _two_step_trajectory(CLIPPERS[name](), getattr(gf, opt_name)(0.01), PARAMS, grads)
        chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
    got = run_trajectory(optax.chain(CLIPPERS[name](), optax.sgd(0.01, momentum=0.9)), PARAMS, grads)
    want = _two_step_trajectory(CLIPPERS[name](), optax.sgd(0.01, momentum=0.9), PARAMS, grads)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(got[-1]["w"], run_trajectory(optax.sgd(0.01, momentum=0.9), PARAMS, grads)[-1]["w"])


# --------------------------------------------------------------------------- jit, dtypes, shapes


def test_clippers_do_not_recompile_and_keep_dtypes():
    params = {"w": jnp.ones((4, 3), jnp.bfloat16), "b": jnp.ones(3, jnp.float32)}
    for name, make in CLIPPERS.items():
        tx = make()
        traces = []

        def step(g, s, tx=tx, traces=traces):
            traces.append(1)
            return tx.update(g, s, params)

        step = jax.jit(step)
        state = tx.init(params)
        shape_of = jax.eval_shape(tx.init, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params))
        chex.assert_trees_all_equal_shapes_and_dtypes(shape_of, state)
        for i in range(8):
            g = jax.tree.map(lambda p: jnp.full(p.shape, 0.5 + 10.0 * (i == 6), p.dtype), params)
            u, new_state = step(g, state)
            assert jax.tree.map(lambda x: x.dtype, u) == jax.tree.map(lambda x: x.dtype, params), name
            chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
            state = new_state
        assert len(traces) == 1, name


def test_schedules_for_static_bounds():
    tx = gf.clip_by_global_norm(lambda t: 1.0 + t)
    p = {"x": jnp.zeros(())}
    s = tx.init(p)
    outs = []
    for _ in range(3):
        u, s = tx.update({"x": jnp.float32(10.0)}, s)
        outs.append(float(u["x"]))
    assert outs == [1.0, 2.0, 3.0]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: gf.clip(0.0), r"clip: max_delta must be a finite number > 0, got 0.0"),
        (lambda: gf.clip(-1.0), r"clip: max_delta must be a finite number > 0, got -1.0"),
        (lambda: gf.clip_by_norm(0), r"clip_by_norm: max_norm must be a finite number > 0, got 0"),
        (lambda: gf.clip_by_global_norm(-2.0), r"clip_by_global_norm: max_norm must be a finite number > 0, got -2.0"),
        (lambda: gf.clip_by_global_norm(float("nan")), r"clip_by_global_norm: max_norm must not be NaN"),
        (lambda: gf.clip_by_block_rms(0.0), r"clip_by_block_rms: threshold must be a finite number > 0, got 0.0"),
        (lambda: gf.adaptive_grad_clip(-0.1), r"adaptive_grad_clip: clipping must be a finite number > 0, got -0.1"),
        (lambda: gf.adaptive_grad_clip(0.1, eps=-1.0), r"adaptive_grad_clip: eps must be a finite number >= 0, got -1.0"),
        (lambda: gf.autoclip(percentile=0.0), r"autoclip: percentile must be in \(0, 100\], got 0.0"),
        (lambda: gf.autoclip(percentile=100.5), r"autoclip: percentile must be in \(0, 100\], got 100.5"),
        (lambda: gf.autoclip(history_size=0), r"autoclip: history_size must be an integer >= 1, got 0"),
        (lambda: gf.autoclip(history_size=2.5), r"autoclip: history_size must be an integer >= 1, got 2.5"),
        (lambda: gf.zclip(z_threshold=0.0), r"zclip: z_threshold must be a finite number > 0, got 0.0"),
        (lambda: gf.zclip(z_threshold=-1.0), r"zclip: z_threshold must be a finite number > 0, got -1.0"),
        (lambda: gf.zclip(alpha=1.0), r"zclip: alpha must be in \(0, 1\), got 1.0"),
        (lambda: gf.zclip(alpha=0.0), r"zclip: alpha must be in \(0, 1\), got 0.0"),
        (lambda: gf.zclip(warmup_steps=0), r"zclip: warmup_steps must be an integer >= 1, got 0"),
        (lambda: gf.adagc(beta=1.5), r"adagc: beta must be in \(0, 1\), got 1.5"),
        (lambda: gf.adagc(beta=0.0), r"adagc: beta must be in \(0, 1\), got 0.0"),
        (lambda: gf.adagc(lambda_rel=0.0), r"adagc: lambda_rel must be a finite number > 0, got 0.0"),
        (lambda: gf.adagc(lambda_abs=-1.0), r"adagc: lambda_abs must be a finite number > 0, got -1.0"),
        (lambda: gf.adagc(warmup_steps=0), r"adagc: warmup_steps must be an integer >= 1, got 0"),
    ],
)
def test_bad_hyperparameters_raise_when_built(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_structure_mismatch_raises_type_error():
    tx = gf.adaptive_grad_clip(0.1)
    p = {"a": jnp.zeros(2)}
    with pytest.raises(TypeError, match="adaptive_grad_clip"):
        tx.update({"b": jnp.zeros(2)}, tx.init(p), p)


def test_adagc_one_zero_gradient_in_warmup_does_not_zero_gamma():
    # Issue 13, item 2: a leaf with no gradient for one warm-up step (an MoE expert that got
    # no tokens) keeps learning afterwards; only a gradient zero throughout warm-up gives γ = 0.
    tx = gf.adagc(lambda_abs=10.0, warmup_steps=3)
    params = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    state = tx.init(params)
    g = {"a": jnp.array([0.3, 0.4]), "b": jnp.array([0.6, 0.8])}
    zero_b = {"a": g["a"], "b": jnp.zeros(2)}
    for grads in (g, zero_b, g, g):
        out, state = tx.update(grads, state, params)
    assert float(state.gamma["b"]) > 0.9  # min of the non-zero norms (1.0), then the EMA
    assert float(jnp.linalg.norm(out["b"])) > 0.9
    never = {"a": g["a"], "b": jnp.zeros(2)}
    state = tx.init(params)
    for grads in (never, never, never):
        _, state = tx.update(grads, state, params)
    assert float(state.gamma["b"]) == 0.0  # zero throughout warm-up: the paper's γ = 0


def test_adagc_zero_gradient_at_the_last_warmup_step_keeps_gamma():
    tx = gf.adagc(warmup_steps=3)
    state = tx.init(jnp.zeros(1))
    for g in [0.5, 0.4, 0.0]:  # γ = min of the non-zero norms seen, 0.4, not the last one's 0
        _, state = tx.update(jnp.array([g]), state)
    assert float(state.gamma) > 0.39
    u, state = tx.update(jnp.array([5.0]), state)
    assert float(u[0]) > 0.39


def test_adagc_zero_gradient_at_the_first_step_is_replaced_later():
    tx = gf.adagc(lambda_abs=10.0, warmup_steps=3)
    params = {"b": jnp.zeros(2)}
    state = tx.init(params)
    for grads in ({"b": jnp.zeros(2)}, {"b": jnp.array([0.6, 0.8])}, {"b": jnp.array([1.2, 1.6])}):
        _, state = tx.update(grads, state, params)
    np.testing.assert_allclose(float(state.gamma["b"]), 1.0, rtol=1e-6)


def test_autoclip_ring_buffer_keeps_cycling_past_int32_max():
    # Issue 13, item 7: a saturated counter must not freeze the history on one slot.
    tx = gf.autoclip(percentile=50.0, history_size=4)
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    state = state._replace(num_recorded=jnp.asarray(2**31 - 3, jnp.int32), history=jnp.ones(4))
    step = jax.jit(tx.update)
    for v in [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]:
        _, state = step({"w": jnp.array([v])}, state, params)
    assert sorted(np.asarray(state.history).tolist()) == [12.0, 13.0, 14.0, 15.0]
    assert int(state.num_recorded) >= 4


@pytest.mark.parametrize(
    "make",
    [
        lambda: gf.clip(1.0),
        lambda: gf.clip_by_norm(1.0),
        lambda: gf.clip_by_global_norm(1.0),
        lambda: gf.clip_by_block_rms(1.0),
        lambda: gf.adaptive_grad_clip(0.1),
        lambda: gf.autoclip(),
        lambda: gf.zclip(),
        lambda: gf.adagc(),
    ],
)
def test_clipper_with_state_none_says_what_to_pass(make):
    # Issue 13, item 13: optax's stateless clippers take update(g, None); gradflow's need their state.
    with pytest.raises(TypeError, match=r"update got state=None.*state = tx\.init\(params\)"):
        make().update({"w": jnp.ones(3)}, None, {"w": jnp.ones(3)})


@pytest.mark.parametrize("axis, message", [
    ("x", "axis must be None, an int or a tuple of ints, got 'x'"),  # jnp.sum took it for a mesh axis name
    (1.5, "axis must be None, an int or a tuple of ints, got 1.5"),
    (True, "axis must be None, an int or a tuple of ints, got True"),
    (5, r"axis 5 is out of range for a leaf of shape \(3,\)"),
    ((0, -2), r"axis \(0, -2\) is out of range for a leaf of shape \(3,\)"),
])
def test_adaptive_grad_clip_refuses_axes_that_are_not_axes_of_the_leaves(axis, message):
    x = jnp.ones(3)
    with pytest.raises(ValueError, match=rf"adaptive_grad_clip: {message}"):
        tx = gf.adaptive_grad_clip(0.1, axis=axis)
        tx.update(x, tx.init(x), x)


def test_adaptive_grad_clip_takes_a_list_of_axes_as_a_tuple():
    g, p = jnp.arange(1.0, 7.0).reshape(2, 3), jnp.ones((2, 3))
    a = gf.adaptive_grad_clip(0.1, axis=[0])
    b = gf.adaptive_grad_clip(0.1, axis=(0,))
    np.testing.assert_array_equal(a.update(g, a.init(p), p)[0], b.update(g, b.init(p), p)[0])
