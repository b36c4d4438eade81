"""Audit tests (mutation testing) for gradflow.checkpoint, gradflow.plateau and gradflow.diagnostics.

Each test pins one rule that a surviving mutant showed the existing suite did not check.
"""

import pickle
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
from gradflow.checkpoint import load_state, save_state

# ----------------------------------------------------------------------------- checkpoint


def test_load_state_refuses_a_file_with_an_extra_leaf(tmp_path):
    """Rule: a leaf in the file that `like` lacks is a ValueError (not silently dropped)."""
    save_state(tmp_path / "s", {"a": jnp.ones(2), "b": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"extra \[\"\['b'\]\"\]"):
        load_state(tmp_path / "s", {"a": jnp.ones(2)})


def test_load_state_refuses_a_file_missing_a_leaf(tmp_path):
    """Rule: a leaf of `like` missing from the file is a ValueError naming it (not a KeyError)."""
    save_state(tmp_path / "s", {"a": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"missing \[\"\['b'\]\"\]"):
        load_state(tmp_path / "s", {"a": jnp.ones(2), "b": jnp.ones(2)})


def test_load_state_returns_jax_arrays(tmp_path):
    """Rule: load_state returns JAX arrays (documented "Returns: ... as JAX arrays"), not NumPy ones."""
    save_state(tmp_path / "s", {"a": jnp.arange(3.0), "n": jnp.int32(4)})
    back = load_state(tmp_path / "s", {"a": jnp.ones(3), "n": jnp.int32(0)})
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(back))


def test_load_state_bare_array_round_trip(tmp_path):
    """Rule: a state that is a single array (empty tree path) round-trips."""
    save_state(tmp_path / "s", jnp.arange(3.0))
    np.testing.assert_array_equal(load_state(tmp_path / "s", jnp.ones(3)), [0.0, 1.0, 2.0])


def test_load_state_keeps_the_sharding_of_a_committed_template(tmp_path):
    """Rule: a committed jax.Array leaf of `like` gives a leaf put with its sharding (committed)."""
    dev = jax.devices()[0]
    save_state(tmp_path / "s", {"a": jnp.arange(3.0)})
    back = load_state(tmp_path / "s", {"a": jax.device_put(jnp.ones(3), dev)})
    assert back["a"].committed and back["a"].sharding == jax.sharding.SingleDeviceSharding(dev)


def test_load_state_uses_the_sharding_of_a_shape_dtype_struct(tmp_path):
    """Rule: a jax.ShapeDtypeStruct built with sharding=... gives a leaf put with that sharding."""
    sh = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    save_state(tmp_path / "s", {"a": jnp.arange(3.0)})
    back = load_state(tmp_path / "s", {"a": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=sh)})
    assert back["a"].committed and back["a"].sharding == sh


def test_load_state_leaves_uncommitted_templates_uncommitted(tmp_path):
    """Rule: an uncommitted template leaf (plain jnp.ones) gives an uncommitted leaf on the default device."""
    save_state(tmp_path / "s", {"a": jnp.arange(3.0)})
    back = load_state(tmp_path / "s", {"a": jnp.ones(3)})
    assert not back["a"].committed


_UNPICKLED = []


def _record_unpickle():
    _UNPICKLED.append(True)
    return 0


class _Payload:
    def __reduce__(self):
        return (_record_unpickle, ())


def test_load_state_never_unpickles(tmp_path):
    """Rule: load_state reads with allow_pickle=False: an object array in the file is refused, never unpickled."""
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload()
    pickle.dumps(obj)  # the payload is picklable
    np.savez(tmp_path / "s.npz", **{"['a']": obj})
    _UNPICKLED.clear()
    with pytest.raises(ValueError):
        load_state(tmp_path / "s", {"a": jnp.ones(1)})
    assert not _UNPICKLED


def test_load_state_dtype_names_survive_keys_with_equals_sign(tmp_path):
    """Rule: the dtype entry is split at the *last* '=' so a dict key containing '=' keeps its bfloat16 name
    (and a bfloat16 leaf is not reinterpreted as float16)."""
    save_state(tmp_path / "s", {"a=b": jnp.ones(3, jnp.bfloat16)})
    with pytest.raises(ValueError, match=r"bfloat16\[3\] in the file, float16\[3\]"):
        load_state(tmp_path / "s", {"a=b": jnp.ones(3, jnp.float16)})
    back = load_state(tmp_path / "s", {"a=b": jnp.zeros(3, jnp.bfloat16)})
    assert back["a=b"].dtype == jnp.bfloat16


def test_load_state_reads_a_file_without_dtype_entry(tmp_path):
    """Rule: a plain np.savez file keyed by tree paths (no __dtypes__ entry) still loads."""
    np.savez(tmp_path / "s.npz", **{"['a']": np.arange(2, dtype=np.float32)})
    np.testing.assert_array_equal(load_state(tmp_path / "s", {"a": jnp.ones(2)})["a"], [0.0, 1.0])


# ----------------------------------------------------------------------------- diagnostics


def test_monitor_reads_the_first_injected_learning_rate():
    """Rule: with several inject_hyperparams states inside `inner`, monitor records the first one's learning rate."""
    tx = gf.chain(gf.inject_hyperparams(gf.sgd)(learning_rate=0.3), gf.inject_hyperparams(gf.sgd)(learning_rate=0.7))
    m = gf.monitor(tx)
    p = jnp.ones(2)
    _, s = m.update(jnp.ones(2), m.init(p), p)
    np.testing.assert_allclose(float(s.learning_rate), 0.3, rtol=1e-6)


def test_monitor_finds_a_learning_rate_inside_a_dict_state():
    """Rule: the search for an injected learning rate descends into dict-valued states."""
    from gradflow.base import GradientTransformation

    inj = gf.inject_hyperparams(gf.sgd)(learning_rate=0.3)

    def update(u, s, p=None):
        u, inner = inj.update(u, s["opt"], p)
        return u, {"opt": inner}

    m = gf.monitor(GradientTransformation(lambda p: {"opt": inj.init(p)}, update))
    p = jnp.ones(2)
    _, s = m.update(jnp.ones(2), m.init(p), p)
    np.testing.assert_allclose(float(s.learning_rate), 0.3, rtol=1e-6)


def test_monitor_param_norm_is_nan_without_params():
    """Rule: param_norm is NaN (not 0) when update gets no params."""
    m = gf.monitor(gf.sgd(0.1))
    _, s = m.update(jnp.ones(2), m.init(jnp.ones(2)))
    assert np.isnan(float(s.param_norm))


def test_monitor_counts_updates_and_uses_the_count_for_an_explicit_schedule():
    """Rule: monitor's count increases by one per update and α_t is learning_rate(t) with t = 0 on the first update."""
    m = gf.monitor(gf.sgd(1.0), learning_rate=lambda t: 1.0 / (t + 1.0))
    p = jnp.ones(2)
    s = m.init(p)
    lrs = []
    for _ in range(3):
        _, s = m.update(jnp.ones(2), s, p)
        lrs.append(float(s.learning_rate))
    assert int(s.count) == 3
    np.testing.assert_allclose(lrs, [1.0, 0.5, 1.0 / 3.0], rtol=1e-6)


def test_monitor_grad_norm_is_of_the_incoming_gradients():
    """Rule: grad_norm is ‖g‖ of what entered the monitor, update_norm ‖u‖ of what left it."""
    m = gf.monitor(gf.sgd(0.1))
    p = jnp.zeros(2)
    _, s = m.update(jnp.array([3.0, 4.0]), m.init(p), p)
    np.testing.assert_allclose([float(s.grad_norm), float(s.update_norm)], [5.0, 0.5], rtol=1e-6)


def test_monitor_drops_extra_args_the_inner_does_not_take():
    """Rule: monitor passes `inner` only the extra arguments it accepts (a plain update(u, s, p) takes none)."""
    from gradflow.base import GradientTransformation

    def update(u, s, p=None):  # no **extra_args: value= must not reach it
        return jax.tree.map(lambda g: -0.1 * g, u), s

    m = gf.monitor(GradientTransformation(lambda p: (), update))
    p = jnp.zeros(2)
    u, _ = m.update(jnp.ones(2), m.init(p), p, value=1.0)
    np.testing.assert_allclose(u, [-0.1, -0.1], rtol=1e-6)


class HTTPServerState(NamedTuple):
    flag: object
    n: object
    v: object


class State(NamedTuple):
    x: object


def test_stats_snake_cases_acronyms_casts_bools_keeps_python_scalars_and_drops_vectors():
    """Rules: a foreign class name is snake-cased with acronyms split (HTTPServerState -> http_server); booleans
    become int32; Python scalars count; arrays of more than one element are left out."""
    st = gf.stats(HTTPServerState(jnp.array(True), 3, jnp.ones(2)))
    assert list(st) == ["http_server/flag", "http_server/n"]
    assert st["http_server/flag"].dtype == jnp.int32 and int(st["http_server/flag"]) == 1
    assert int(st["http_server/n"]) == 3


def test_stats_a_class_named_state_keeps_its_name():
    """Rule: only a *suffix* State is stripped; a class named exactly State is named `state`."""
    assert list(gf.stats(State(jnp.float32(1)))) == ["state/x"]


def test_stats_sorts_dict_keys_as_jax_does():
    """Rule: dict children are named in sorted-key order (JAX's), whatever the insertion order."""
    assert list(gf.stats({"b": jnp.float32(1), "a": jnp.float32(2)})) == ["a", "b"]


def test_stats_numbers_colliding_spellings_uniquely():
    """Rule: different paths that spell the same name get #1, #2, ... so no value is overwritten."""
    tree = {"a/b/c": jnp.float32(1), "a": {"b/c": jnp.float32(2), "b": {"c": jnp.float32(3)}}, "a/b": {"c": jnp.float32(4)}}
    st = gf.stats(tree)
    assert sorted(st) == ["a/b/c", "a/b/c#1", "a/b/c#2", "a/b/c#3"]
    assert sorted(float(v) for v in st.values()) == [1.0, 2.0, 3.0, 4.0]


def test_stats_leaves_out_prng_keys():
    """Rule: only numeric scalars are stats; a typed PRNG key (optax.add_noise) is left out."""
    import optax

    assert list(gf.stats(optax.add_noise(0.1, 0.55, 0).init(jnp.ones(2)))) == ["add_noise/count"]
