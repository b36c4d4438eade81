"""The core type: chain order, extra args, identity, stateless, apply_updates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf


def _recording(name: str, log: list, factor: float = 1.0) -> gf.GradientTransformation:
    """A transform that multiplies by ``factor`` and records its name and extra args."""

    def init_fn(params):
        return gf.EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        log.append((name, dict(extra_args)))
        return jax.tree.map(lambda g: g * factor, updates), state

    return gf.GradientTransformation(init_fn, update_fn)


def test_chain_applies_members_in_order():
    log: list = []
    add_one = gf.stateless(lambda u, p: jax.tree.map(lambda g: g + 1.0, u))
    tx = gf.chain(_recording("a", log, 2.0), add_one, _recording("b", log, 3.0))
    params = {"w": jnp.ones(2)}
    u, state = tx.update({"w": jnp.array([1.0, 2.0])}, tx.init(params), params)
    np.testing.assert_array_equal(u["w"], [(1 * 2 + 1) * 3, (2 * 2 + 1) * 3])
    assert [n for n, _ in log] == ["a", "b"]
    assert len(state) == 3


def test_chain_passes_extra_args_to_every_member():
    log: list = []
    tx = gf.chain(_recording("a", log), gf.chain(_recording("b", log)), gf.identity())
    params = {"w": jnp.ones(2)}
    tx.update(params, tx.init(params), params, value=jnp.float32(3.0), other="x")
    assert log == [("a", {"value": 3.0, "other": "x"}), ("b", {"value": 3.0, "other": "x"})]


def test_chain_drops_extra_args_for_transforms_that_take_none():
    def init_fn(params):
        return ()

    def update_fn(updates, state, params=None):  # no **extra_args, like a plain optax transform
        return updates, state

    tx = gf.chain(gf.GradientTransformation(init_fn, update_fn), gf.scale(2.0))
    params = {"w": jnp.ones(2)}
    u, _ = tx.update(params, tx.init(params), params, value=1.0)
    np.testing.assert_array_equal(u["w"], [2.0, 2.0])


def test_identity_and_stateless():
    params = {"w": jnp.arange(3.0)}
    u, s = gf.identity().update(params, gf.identity().init(params))
    assert u is params and s == gf.EmptyState()
    neg = gf.stateless(lambda u, p: jax.tree.map(lambda g, q: g - q, u, p))
    u, _ = neg.update({"w": jnp.ones(3)}, neg.init(params), params)
    np.testing.assert_array_equal(u["w"], [1.0, 0.0, -1.0])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_apply_updates_keeps_parameter_dtype(dtype):
    params = {"w": jnp.ones(4, dtype), "b": jnp.zeros((), dtype)}
    updates = {"w": jnp.full(4, 0.5, jnp.float32), "b": jnp.float32(0.25)}
    new = gf.apply_updates(params, updates)
    assert new["w"].dtype == dtype and new["b"].dtype == dtype
    np.testing.assert_allclose(np.asarray(new["w"], np.float32), 1.5)


def test_apply_updates_rejects_mismatched_trees():
    with pytest.raises(TypeError, match="apply_updates.*structure"):
        gf.apply_updates({"w": jnp.ones(2)}, {"v": jnp.ones(2)})


def test_mismatched_gradient_tree_shows_both_structures():
    params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    tx = gf.sgd(0.1, momentum=0.9)
    state = tx.init(params)
    with pytest.raises(TypeError) as err:
        tx.update({"w": jnp.ones(2)}, state, params)
    msg = str(err.value)
    assert "updates: PyTreeDef({'w': *})" in msg and "params: PyTreeDef({'b': *, 'w': *})" in msg


def test_mismatched_gradient_tree_without_params_is_caught_by_state():
    params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    tx = gf.trace(0.9)
    with pytest.raises(TypeError, match="momentum buffer"):
        tx.update({"w": jnp.ones(2)}, tx.init(params))


@pytest.mark.parametrize("bad", [jnp.arange(3), jnp.array([True, False])])
def test_integer_or_boolean_params_are_refused_naming_the_leaf(bad):
    params = {"layer": {"kernel": jnp.ones(3), "bias": bad}}
    with pytest.raises(TypeError, match=r"\['layer'\]\['bias'\].*floating"):
        gf.sgd(0.1).init(params)


# Leaf shapes (issue 13, item 1): a (3, 1) gradient for a (3,) parameter must not broadcast.
SHAPE_PARAMS = {"w": jnp.ones((3,), jnp.float32), "b": jnp.ones((2,), jnp.float32)}
SHAPE_GRADS = {"w": jnp.ones((3, 1), jnp.float32), "b": jnp.ones((2,), jnp.float32)}


@pytest.mark.parametrize(
    "make",
    [
        lambda: gf.sgd(0.1),
        lambda: gf.sgd(0.1, momentum=0.9),
        lambda: gf.adam(1e-3),
        lambda: gf.adamw(1e-3),
        lambda: gf.lamb(1e-3),
        lambda: gf.clip_by_global_norm(1.0),
        lambda: gf.zclip(),
        lambda: gf.adagc(),
        lambda: gf.apply_if_finite(gf.adam(1e-3), 3),
        lambda: gf.skip_spikes(gf.adam(1e-3)),
    ],
)
def test_update_refuses_a_leaf_of_another_shape_naming_it(make):
    tx = make()
    state = tx.init(SHAPE_PARAMS)
    with pytest.raises(ValueError, match=r"\['w'\] has shape \(3, 1\).*\(3,\)"):
        jax.jit(tx.update)(SHAPE_GRADS, state, SHAPE_PARAMS)


@pytest.mark.parametrize(
    "make", [lambda: gf.scale_by_adam(), lambda: gf.scale_by_rms(), lambda: gf.scale_by_rss(), lambda: gf.trace(0.9)]
)
def test_per_leaf_blocks_refuse_a_leaf_shaped_unlike_their_state(make):
    tx = make()
    state = tx.init(SHAPE_PARAMS)
    with pytest.raises(ValueError, match=r"\['w'\] has shape \(3, 1\)"):
        tx.update(SHAPE_GRADS, state)  # no params: the state's shapes are the reference


def test_apply_updates_refuses_a_leaf_of_another_shape():
    with pytest.raises(ValueError, match=r"apply_updates: updates leaf \['w'\] has shape \(3, 1\).*\(3,\)"):
        gf.apply_updates(SHAPE_PARAMS, SHAPE_GRADS)


def test_shape_check_costs_nothing_at_run_time():
    # The check is Python at trace time: the compiled step is the same program with and without it.
    tx = gf.adam(1e-3)
    state = tx.init(SHAPE_PARAMS)
    grads = jax.tree.map(jnp.ones_like, SHAPE_PARAMS)
    with_check = jax.jit(tx.update).lower(grads, state, SHAPE_PARAMS).as_text()
    import gradflow.tree as tree_lib

    saved = tree_lib.check_same_shapes
    tree_lib.check_same_shapes = tree_lib.check_same_structure
    try:
        without = jax.jit(tx.update).lower(grads, state, SHAPE_PARAMS).as_text()
    finally:
        tree_lib.check_same_shapes = saved
    assert with_check == without


@pytest.mark.parametrize(
    "make",
    [
        lambda: gf.adam(0.1),
        lambda: gf.sgd(0.1, momentum=0.9),
        lambda: gf.rmsprop(0.1),
        lambda: gf.lamb(0.1),
        lambda: gf.clip_by_global_norm(1.0),
        lambda: gf.adagc(),
        lambda: gf.autoclip(),
        lambda: gf.skip_spikes(gf.adam(0.1)),
        lambda: gf.apply_if_finite(gf.adamw(0.1), 2),
        lambda: gf.monitor(gf.lars(0.1)),
    ],
)
def test_python_float_leaves_work_as_in_optax(make):
    # Issue 13, item 11: {"a": 1.0} is a valid params tree (optax accepts it).
    tx = make()
    state = tx.init({"a": 1.0})
    u, state = jax.jit(tx.update)({"a": 0.5}, state, {"a": 1.0})
    u2, _ = tx.update({"a": jnp.asarray(0.5)}, state, {"a": 1.0})
    assert np.isfinite(float(u["a"])) and np.isfinite(float(u2["a"]))
    new = gf.apply_updates({"a": 1.0}, u)
    assert jnp.shape(new["a"]) == ()


def test_python_float_leaves_match_optax_adam():
    tx, ref = gf.adam(0.1), optax.adam(0.1)
    s, r = tx.init({"a": 1.0}), ref.init({"a": 1.0})
    for g in (0.5, -2.0, 0.25):
        u, s = tx.update({"a": jnp.asarray(g)}, s, {"a": 1.0})
        v, r = ref.update({"a": jnp.asarray(g)}, r, {"a": 1.0})
        np.testing.assert_allclose(u["a"], v["a"], rtol=1e-4)
