"""monitor() and stats(): diagnostics as a flat dict of scalars, computed under jit."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf

PARAMS = {"w": jnp.arange(12.0).reshape(4, 3) / 10, "b": jnp.ones(3)}


def _grads(scale=1.0):
    return {"w": jnp.full((4, 3), 0.5 * scale), "b": jnp.full(3, -1.0 * scale)}


def _norm(tree):
    return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree))))


def test_monitor_records_norms_and_learning_rate_and_passes_updates_through():
    inner = gf.chain(gf.clip_by_global_norm(1.0), gf.sgd(lambda t: 0.1 / (1 + t), momentum=0.9))
    tx = gf.monitor(inner, learning_rate=lambda t: 0.1 / (1 + t))
    s, s_inner = tx.init(PARAMS), inner.init(PARAMS)
    step = jax.jit(tx.update)
    for t in range(3):
        u, s = step(_grads(t + 1), s, PARAMS)
        u_inner, s_inner = inner.update(_grads(t + 1), s_inner, PARAMS)
        chex.assert_trees_all_close(u, u_inner, rtol=1e-6)
        np.testing.assert_allclose(float(s.grad_norm), _norm(_grads(t + 1)), rtol=1e-6)
        np.testing.assert_allclose(float(s.update_norm), _norm(u), rtol=1e-6)
        np.testing.assert_allclose(float(s.param_norm), _norm(PARAMS), rtol=1e-6)
        np.testing.assert_allclose(float(s.learning_rate), 0.1 / (1 + t), rtol=1e-6)
    assert int(s.count) == 3
    st = gf.stats(s)
    for key in ("monitor/grad_norm", "monitor/update_norm", "monitor/param_norm", "monitor/learning_rate", "monitor/count"):
        assert key in st


def test_monitor_finds_inject_hyperparams_learning_rate_or_records_none():
    tx = gf.monitor(optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(0.5, 0.1, 4)))
    s = tx.init(PARAMS)
    seen = []
    for _ in range(3):
        u, s = tx.update(_grads(), s, PARAMS)
        seen.append(float(s.learning_rate))
        np.testing.assert_allclose(float(s.update_norm), seen[-1] * _norm(_grads()), rtol=1e-6)
    np.testing.assert_allclose(seen, [0.5, 0.4, 0.3], rtol=1e-6)
    plain = gf.monitor(gf.sgd(0.1))
    s = plain.init(PARAMS)
    _, s = plain.update(_grads(), s, PARAMS)
    assert s.learning_rate is None and "monitor/learning_rate" not in gf.stats(s)


def test_monitor_alone_at_the_end_of_a_chain_is_an_identity():
    tx = gf.chain(gf.sgd(0.1), gf.monitor())
    s = tx.init(PARAMS)
    u, s = tx.update(_grads(), s, PARAMS)
    chex.assert_trees_all_close(u, jax.tree.map(lambda g: -0.1 * g, _grads()), rtol=1e-6)
    np.testing.assert_allclose(float(s[1].update_norm), 0.1 * _norm(_grads()), rtol=1e-6)
    u, s = tx.update(_grads(), s)  # no params: the parameter norm is NaN
    assert np.isnan(float(s[1].param_norm))


def test_stats_of_a_chain_has_stable_named_scalars_under_jit():
    tx = gf.monitor(
        gf.apply_if_finite(gf.chain(gf.clip_by_global_norm(1.0), gf.zclip(warmup_steps=2), gf.sgd(0.1, momentum=0.9)), 3)
    )
    s = tx.init(PARAMS)

    @jax.jit
    def step(g, s):
        u, s = tx.update(g, s, PARAMS)
        return s, gf.stats(s)

    s, st1 = step(_grads(), s)
    s, st2 = step(_grads(100.0), s)
    assert set(st1) == set(st2)
    expected = {
        "monitor/apply_if_finite/clip_by_global_norm/norm",
        "monitor/apply_if_finite/clip_by_global_norm/clipped",
        "monitor/apply_if_finite/clip_by_global_norm/num_clipped",
        "monitor/apply_if_finite/zclip/num_clipped",
        "monitor/apply_if_finite/zclip/mean",
        "monitor/apply_if_finite/zclip/z",
        "monitor/apply_if_finite/num_skipped",
        "monitor/apply_if_finite/skipped",
        "monitor/apply_if_finite/trace/count",
        "monitor/grad_norm",
    }
    assert expected <= set(st2)
    assert all(jnp.ndim(v) == 0 for v in st2.values())
    assert not any("history" in k or "warmup_norms" in k or "trace/trace" in k for k in st2)  # no arrays
    assert st2["monitor/apply_if_finite/clip_by_global_norm/clipped"].dtype == jnp.int32  # bools as 0/1
    assert int(st2["monitor/apply_if_finite/clip_by_global_norm/num_clipped"]) == 2
    np.testing.assert_allclose(float(st2["monitor/apply_if_finite/clip_by_global_norm/norm"]), 100 * _norm(_grads()), rtol=1e-6)


def test_stats_makes_duplicate_names_unique_with_positions():
    tx = gf.chain(gf.clip_by_global_norm(1.0), gf.trace(0.9), gf.clip_by_global_norm(2.0), gf.trace(0.5))
    st = gf.stats(tx.init(PARAMS))
    assert "0/clip_by_global_norm/norm" in st and "2/clip_by_global_norm/norm" in st
    assert "1/trace/count" in st and "3/trace/count" in st
    assert len(st) == 2 * 4 + 2


def _gradflow_state_classes() -> list:
    import inspect
    import pkgutil

    found = []
    for info in pkgutil.iter_modules(gf.__path__):
        module = __import__(f"gradflow.{info.name}", fromlist=["_"])
        for obj in vars(module).values():
            if inspect.isclass(obj) and obj.__module__ == module.__name__ and obj.__name__.endswith("State"):
                found.append(obj)
    return found


def test_every_gradflow_state_class_names_its_stats():
    classes = _gradflow_state_classes()
    assert len(classes) >= 25, [c.__name__ for c in classes]
    missing = [c.__name__ for c in classes if "stats_name" not in vars(c)]
    assert not missing, f"state classes without their own stats_name: {missing}"
    names = [c.stats_name for c in classes]
    assert len(set(names)) == len(names), "two state classes share a stats_name"


def test_renaming_a_state_class_keeps_its_stats_keys():
    tx = gf.chain(gf.clip_by_global_norm(1.0), gf.adam(0.1))
    state = tx.init(PARAMS)
    before = gf.stats(state)
    renamed = type("GlobalNormClipperState", (gf.ClipByGlobalNormState,), {"__slots__": ()})
    state = (renamed(*state[0]),) + state[1:]
    assert gf.stats(state).keys() == before.keys()
    assert "clip_by_global_norm/norm" in before and "scale_by_adam/count" in before


def test_stats_of_optax_and_nested_dict_states():
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=0.1))
    s = tx.init(PARAMS)
    _, s = tx.update(_grads(), s, PARAMS)
    st = gf.stats(s)
    assert int(st["inject_stateful_hyperparams/scale_by_adam/count"]) == 1
    np.testing.assert_allclose(float(st["inject_stateful_hyperparams/hyperparams/learning_rate"]), 0.1)
    st = gf.stats({"encoder": gf.adagc().init({"a": jnp.zeros(2), "b": {"c": jnp.zeros(())}}), "n": 3, "v": np.zeros(4)})
    assert "encoder/adagc/gamma/a" in st and "encoder/adagc/gamma/b/c" in st and "n" in st and "v" not in st


def test_stats_keys_keep_their_order_through_jit():
    # A dict comes back from jit with sorted keys; a logger writing columns by dict order must see one order.
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
    s = tx.init(PARAMS)
    _, jitted = jax.jit(tx.update)(_grads(), s, PARAMS)
    assert list(gf.stats(s)) == list(gf.stats(jitted))
    # and that order is the state's leaves' order
    leaves = [x for x in jax.tree.leaves(s) if np.ndim(x) == 0]
    assert [float(v) for v in gf.stats(s).values()] == [float(x) for x in leaves]


def test_stats_can_be_logged_from_inside_jit():
    tx = gf.chain(gf.skip_spikes(gf.sgd(0.1), window=4, min_samples=2), gf.monitor())
    logged = []

    @jax.jit
    def step(params, state, g):
        u, state = tx.update(g, state, params)
        jax.debug.callback(lambda d: logged.append({k: float(v) for k, v in d.items()}), gf.stats(state))
        return gf.apply_updates(params, u), state

    params, state = PARAMS, tx.init(PARAMS)
    for scale in (1.0, 1.1, 0.9, 1e6):
        params, state = step(params, state, _grads(scale))
    jax.effects_barrier()
    assert len(logged) == 4
    assert [d["skip_spikes/skipped"] for d in logged] == [0.0, 0.0, 0.0, 1.0]
    assert logged[-1]["skip_spikes/num_skipped"] == 1.0 and logged[-1]["monitor/update_norm"] == 0.0


def test_monitor_bad_learning_rate():
    with pytest.raises(ValueError, match=r"monitor: learning_rate must be a finite number >= 0, got -1.0"):
        gf.monitor(learning_rate=-1.0)


@pytest.mark.parametrize("inject", ["gradflow", "optax"])
def test_monitor_records_the_learning_rate_the_step_used(inject):
    # Issue 13, item 4: gradflow's injected state holds the next step's value, optax's the last
    # step's; monitor reports the one each step used, for both.
    sched = gf.linear_schedule(1.0, 0.0, 10)
    inner = (gf.inject_hyperparams(gf.sgd) if inject == "gradflow" else optax.inject_hyperparams(optax.sgd))(sched)
    tx = gf.monitor(inner)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    step = jax.jit(tx.update)
    g = {"w": jnp.ones(2)}
    for t in range(4):
        u, state = step(g, state, params)
        np.testing.assert_allclose(float(state.learning_rate), float(sched(t)), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(u["w"]), -float(sched(t)) * np.ones(2), rtol=1e-6)


@pytest.mark.parametrize("params", [(jnp.zeros(2), jnp.zeros(3)), [jnp.zeros(2)]], ids=["tuple", "list1"])
def test_stats_names_adagc_gamma_for_sequence_params(params):
    # AdagcState.gamma is shaped like params: tuple params named it adagc/0, adagc/1 (a
    # one-leaf list: plain adagc), where dict params give adagc/gamma/a
    tx = gf.adagc()
    keys = list(gf.stats(tx.init(params)))
    gamma_keys = [k for k in keys if k.startswith("adagc/gamma")]
    assert len(gamma_keys) == len(jax.tree.leaves(params)), keys
