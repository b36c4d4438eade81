"""flatten_small: small leaves packed into flat buffers per dtype, the inner transform's numbers kept."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf

SHAPES = {
    "w0": (40, 30),  # large with max_size=500
    "w1": (7, 5),
    "w2": (7, 5),  # same shape as w1: cut out by the shared kernel
    "b0": (13,),
    "b1": (1,),
    "s": (),
    "h": (6, 4),  # bfloat16
    "e": (0,),
    "w3": (33, 17),  # large
}
MAX_SIZE = 500


def tree(seed: int, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    out = {k: jnp.asarray(scale * rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}
    out["h"] = out["h"].astype(jnp.bfloat16)
    return out


def spiky_grads(steps: int) -> list:
    return [tree(100 + t, scale=50.0 if t % 17 == 5 else 1.0) for t in range(steps)]


def run(tx, steps: int = 100, params=None):
    params = tree(0) if params is None else params
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda g: g.dtype, g)
        return gf.apply_updates(params, updates), state

    for g in spiky_grads(steps):
        params, state = step(params, state, g)
    return params, state


ELEMENTWISE = {
    "spam": lambda: gf.spam(1e-2, reset_interval=40, warmup_steps=5),  # its fixed threshold is per element
    "adam": lambda: gf.adam(1e-2),
    "adamw": lambda: gf.adamw(1e-2, weight_decay=0.1),
    "amsgrad": lambda: gf.amsgrad(1e-2),
    "sgd_momentum": lambda: gf.sgd(1e-2, momentum=0.9, nesterov=True),
    "rmsprop": lambda: gf.rmsprop(1e-2),
    "adagrad": lambda: gf.adagrad(1e-1),
    "adam_cosine": lambda: gf.adam(gf.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 100)),
}


def run_eager(tx, steps: int) -> dict:
    params = tree(0)
    state = tx.init(params)
    for g in spiky_grads(steps):
        updates, state = tx.update(g, state, params)
        params = gf.apply_updates(params, updates)
    return params


def assert_within_ulps(got: dict, want: dict) -> None:
    """Under jit, XLA's algebraic simplifier may rewrite a chain of divisions
    ((a/b)/c → a/(b·c), a/b → a·(1/b)) differently for a packed buffer than for
    separate leaves: an ulp or two per step, nothing more."""
    for k in SHAPES:
        assert got[k].dtype == want[k].dtype
        np.testing.assert_allclose(
            np.asarray(got[k], np.float32), np.asarray(want[k], np.float32), rtol=1e-6, atol=1e-6, err_msg=k
        )


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_transforms_are_unchanged_bit_for_bit_eagerly(name):
    want = run_eager(ELEMENTWISE[name](), steps=8)
    got = run_eager(gf.flatten_small(ELEMENTWISE[name](), max_size=MAX_SIZE), steps=8)
    for k in SHAPES:
        assert got[k].dtype == want[k].dtype
        np.testing.assert_array_equal(np.asarray(got[k], np.float32), np.asarray(want[k], np.float32), err_msg=k)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_transforms_agree_to_an_ulp_under_jit(name):
    want, _ = run(ELEMENTWISE[name]())
    got, state = run(gf.flatten_small(ELEMENTWISE[name](), max_size=MAX_SIZE))
    assert isinstance(state, gf.FlattenSmallState)
    assert_within_ulps(got, want)


@pytest.mark.parametrize(
    "make",
    [
        lambda: gf.chain(gf.clip_by_global_norm(1.0), gf.adam(1e-2)),
        lambda: gf.chain(gf.zclip(warmup_steps=5), gf.adam(1e-2)),
        lambda: gf.apply_if_finite(gf.chain(gf.clip(0.5), gf.sgd(1e-2, momentum=0.9)), 3),
        lambda: gf.monitor(gf.adam(1e-2)),
    ],
    ids=["clip_by_global_norm", "zclip", "apply_if_finite", "monitor"],
)
def test_global_norm_transforms_agree_up_to_summation_order(make):
    want, _ = run(make())
    got, _ = run(gf.flatten_small(make(), max_size=MAX_SIZE))
    for k in SHAPES:
        np.testing.assert_allclose(
            np.asarray(got[k], np.float32), np.asarray(want[k], np.float32), rtol=2e-5, atol=2e-6, err_msg=k
        )


def test_small_leaves_live_in_one_buffer_per_dtype():
    params = tree(0)
    state = gf.flatten_small(gf.adam(1e-2), max_size=MAX_SIZE).init(params)
    mu = state.inner_state[0].mu
    assert [x.shape for x in mu["large"]] == [SHAPES["w0"], SHAPES["w3"]]
    small_f32 = sum(int(np.prod(s)) for k, s in SHAPES.items() if k not in ("w0", "w3", "h"))
    assert [(x.shape, x.dtype) for x in mu["flat"]] == [((24,), jnp.bfloat16), ((small_f32,), jnp.float32)]
    assert state == gf.FlattenSmallState(inner_state=state.inner_state)  # the layout is not part of the state


def test_every_leaf_is_large_with_max_size_zero_but_empty_ones():
    params = tree(0)
    state = gf.flatten_small(gf.adam(1e-2), max_size=0).init(params)
    assert len(state.inner_state[0].mu["large"]) == len(SHAPES) - 1
    want, _ = run(gf.adam(1e-2), steps=5)
    got, _ = run(gf.flatten_small(gf.adam(1e-2), max_size=0), steps=5)
    for k in SHAPES:
        np.testing.assert_array_equal(np.asarray(got[k], np.float32), np.asarray(want[k], np.float32))


@pytest.mark.parametrize(
    "make",
    [
        lambda: gf.lamb(1e-3),
        lambda: gf.lars(1e-3),
        lambda: gf.chain(gf.clip_by_norm(1.0), gf.adam(1e-3)),
        lambda: gf.chain(gf.clip_by_block_rms(1.0), gf.adam(1e-3)),
        lambda: gf.chain(gf.adaptive_grad_clip(0.01), gf.sgd(1e-3)),
        lambda: gf.chain(gf.adagc(), gf.adam(1e-3)),
        lambda: gf.stable_adamw(1e-3),
        lambda: gf.spam(1e-3, adaptive_clip=True),
        lambda: gf.chain(gf.adam(1e-3), gf.clip_relative_update()),
    ],
    ids=["lamb", "lars", "clip_by_norm", "clip_by_block_rms", "adaptive_grad_clip", "adagc", "stable_adamw",
         "spam_adaptive_clip", "clip_relative_update"],
)
def test_per_leaf_transforms_are_refused(make):
    with pytest.raises(ValueError, match="flatten_small: tx holds .* per leaf"):
        gf.flatten_small(make(), max_size=MAX_SIZE).init(tree(0))


def test_leaves_after_a_repeated_shape_are_cut_from_their_own_place():
    # in SHAPES the two leaves of one shape come last in tree order; here a leaf follows them
    params = {"a": jnp.zeros(3), "b": jnp.zeros(3), "c": jnp.zeros(5), "d": jnp.zeros((2, 2))}
    g = {"a": jnp.arange(3.0), "b": 10 + jnp.arange(3.0), "c": 100 + jnp.arange(5.0), "d": 1000 + jnp.ones((2, 2))}
    tx = gf.flatten_small(gf.identity())
    for update in (tx.update, jax.jit(tx.update)):
        u, _ = update(g, tx.init(params))
        for k in g:
            np.testing.assert_array_equal(np.asarray(u[k]), np.asarray(g[k]), err_msg=k)


def test_a_nan_first_element_does_not_move_the_other_leaves():
    # the run-time starts come from a conditional on b == b for the buffer's first element b
    params = {"a": jnp.zeros(3), "b": jnp.zeros(3), "c": jnp.zeros(3)}
    g = {"a": jnp.array([jnp.nan, 1.0, 2.0]), "b": jnp.array([3.0, 4.0, 5.0]), "c": jnp.array([6.0, 7.0, 8.0])}
    tx = gf.flatten_small(gf.identity())
    u, _ = jax.jit(tx.update)(g, tx.init(params))
    for k in g:
        np.testing.assert_array_equal(np.asarray(u[k]), np.asarray(g[k]), err_msg=k)


@pytest.mark.parametrize("max_size", [0, 1 << 16])
@pytest.mark.parametrize("jit", [False, True])
def test_two_empty_leaves_of_one_shape_come_back_empty(max_size, jit):
    # the run-time starts read the buffer's first element: an empty buffer has none
    params = {"a": jnp.zeros((0,)), "b": jnp.zeros((0,))}
    tx = gf.flatten_small(gf.identity(), max_size=max_size)
    update = jax.jit(tx.update) if jit else tx.update
    updates, _ = update(params, tx.init(params))
    assert jax.tree.map(lambda x: x.shape, updates) == {"a": (0,), "b": (0,)}


def test_two_empty_leaves_of_one_shape_beside_a_large_one():
    params = {"a": jnp.zeros((2, 0)), "b": jnp.zeros((2, 0)), "w": jnp.zeros((300, 300))}
    tx = gf.flatten_small(gf.adam(1e-3), max_size=1000)
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    assert updates["a"].shape == (2, 0) and updates["b"].shape == (2, 0)


def test_integer_leaves_of_one_shape_are_cut_from_their_own_place():
    params = {"a": jnp.zeros(3, jnp.int32), "b": jnp.zeros(3, jnp.int32)}
    g = {"a": jnp.arange(3, dtype=jnp.int32), "b": 10 + jnp.arange(3, dtype=jnp.int32)}
    tx = gf.flatten_small(gf.identity())
    u, _ = jax.jit(tx.update)(g, tx.init(params))
    for k in g:
        np.testing.assert_array_equal(np.asarray(u[k]), np.asarray(g[k]), err_msg=k)


def test_protect_goes_around_flatten_small():
    tx = gf.protect(gf.flatten_small(gf.adam(1e-2), max_size=MAX_SIZE), watch_loss=False)
    want, _ = run(gf.protect(gf.adam(1e-2), watch_loss=False), steps=20)
    got, _ = run(tx, steps=20)
    assert_within_ulps(got, want)


def test_per_leaf_transform_outside_the_wrapper_works():
    tx = gf.chain(gf.clip_by_norm(1.0), gf.flatten_small(gf.adam(1e-2), max_size=MAX_SIZE))
    want, _ = run(gf.chain(gf.clip_by_norm(1.0), gf.adam(1e-2)), steps=20)
    got, _ = run(tx, steps=20)
    assert_within_ulps(got, want)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8"])
def test_bad_max_size_is_refused_at_build_time(bad):
    with pytest.raises(ValueError, match=f"flatten_small: max_size must be an integer >= 0, got {bad!r}"):
        gf.flatten_small(gf.adam(1e-3), max_size=bad)


def test_inject_hyperparams_inside_is_bitwise_and_settable():
    plain = gf.flatten_small(gf.adam(1e-2), max_size=MAX_SIZE)
    injected = gf.flatten_small(gf.inject_hyperparams(gf.adam)(learning_rate=1e-2), max_size=MAX_SIZE)
    want, _ = run(plain)
    got, state = run(injected)
    for k in SHAPES:
        np.testing.assert_array_equal(np.asarray(got[k], np.float32), np.asarray(want[k], np.float32))
    np.testing.assert_allclose(float(gf.current_hyperparams(state)["learning_rate"]), 1e-2)
    state = gf.set_hyperparams(state, learning_rate=0.0)
    params = tree(0)
    updates, _ = injected.update(tree(5), state, params)
    assert all(not np.any(np.asarray(u, np.float32)) for u in jax.tree.leaves(updates))


def test_checkpoint_resumes_bit_for_bit(tmp_path):
    tx = gf.flatten_small(gf.chain(gf.clip_by_global_norm(1.0), gf.adam(1e-2)), max_size=MAX_SIZE)
    grads = spiky_grads(30)
    step = jax.jit(lambda p, s, g: (lambda u, s: (gf.apply_updates(p, u), s))(*tx.update(g, s, p)))
    params, state = tree(0), tx.init(tree(0))
    for g in grads[:15]:
        params, state = step(params, state, g)
    gf.save_state(tmp_path / "state.npz", state)
    resumed = gf.load_state(tmp_path / "state.npz", tx.init(tree(0)))
    p1, s1, p2, s2 = params, state, params, resumed
    for g in grads[15:]:
        p1, s1 = step(p1, s1, g)
        p2, s2 = step(p2, s2, g)
    for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p2, s2))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_state_sharding_has_the_state_structure_on_one_device():
    params = tree(0)
    tx = gf.flatten_small(gf.adam(1e-2), max_size=MAX_SIZE)
    sh = gf.state_sharding(tx, params)
    assert jax.tree.structure(sh) == jax.tree.structure(jax.eval_shape(tx.init, params))
    state = gf.init_sharded(tx, params)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == jax.tree.map(
        lambda x: (x.shape, x.dtype), tx.init(params)
    )


def test_value_reaches_the_inner_transform():
    make = lambda: gf.reduce_on_plateau(patience=1, factor=0.5)  # noqa: E731
    tx, ref = gf.flatten_small(make(), max_size=MAX_SIZE), make()
    params = tree(0)
    state, ref_state = tx.init(params), ref.init(params)
    for loss in [1.0, 2.0, 3.0, 4.0]:
        updates, state = tx.update(tree(1), state, params, value=jnp.asarray(loss))
        want, ref_state = ref.update(tree(1), ref_state, params, value=jnp.asarray(loss))
    assert not np.allclose(np.asarray(want["w1"]), np.asarray(tree(1)["w1"]))  # the scale did shrink
    for k in SHAPES:
        np.testing.assert_array_equal(np.asarray(updates[k], np.float32), np.asarray(want[k], np.float32))


def test_small_leaves_beyond_int32_starts_are_refused():
    tx = gf.flatten_small(gf.sgd(0.1), max_size=2**30)
    params = {k: jax.ShapeDtypeStruct((2**30,), jnp.float32) for k in "abc"}
    with pytest.raises(ValueError, match="flatten_small: the small leaves hold 3221225472 elements, more than int32"):
        jax.eval_shape(tx.init, params)


def test_updates_come_back_in_the_gradients_dtypes_large_leaves_too():
    # an inner transform that computes in float32 (as some of optax's do with low-precision leaves)
    def promote(updates, state, params=None):
        return jax.tree.map(lambda u: u.astype(jnp.float32) * 2, updates), state

    inner = gf.GradientTransformation(lambda p: gf.EmptyState(), promote)
    g = {"big": jnp.ones(600, jnp.bfloat16), "a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(3, jnp.bfloat16)}
    tx = gf.flatten_small(inner, max_size=500)
    u, _ = jax.jit(tx.update)(g, tx.init(g))
    assert {k: v.dtype for k, v in u.items()} == {k: jnp.dtype(jnp.bfloat16) for k in g}
    np.testing.assert_array_equal(np.asarray(u["big"], np.float32), 2.0)
