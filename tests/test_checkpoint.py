"""Checkpoints: a run saved mid-way and resumed in a fresh process continues bit for bit.

For every optimizer, clipper and guard of the catalog, plus injected
hyperparameters, a schedule and the loss-driven transforms, the state after
``SAVE_AT`` steps is written (with ``orbax.checkpoint`` and with
``gradflow.checkpoint.save_state``); one subprocess restores all of them, runs
the remaining steps and writes what it got; every parameter and state leaf must
equal the uninterrupted run's bit for bit.

Run as a module (``python -m tests.test_checkpoint DIR``) it is that subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
from gradflow.checkpoint import load_state, save_state
from tests import catalog

STEPS = 8
SAVE_AT = 4
ROOT = Path(__file__).resolve().parents[1]


def _cases() -> dict:
    cases = {f"opt/{k}": v for k, v in catalog.OPTIMIZERS.items()}
    # Every clipper in one chain (one compilation instead of eight); a leaf that does not resume names its clipper.
    cases["clip/all"] = lambda: gf.chain(*(make() for make in catalog.CLIPPERS.values()), gf.sgd(0.05))
    cases.update({f"guard/{k}": v for k, v in catalog.GUARDS.items()})
    # b1 and b2 stay static: scale_by_adam needs them as Python numbers until adam is injection-friendly.
    cases["inject/adam_schedule"] = lambda: gf.inject_hyperparams(gf.adam)(
        learning_rate=gf.warmup_cosine_decay_schedule(0.0, 0.01, 2, 10), b2=0.99
    )
    cases["inject/sgd_momentum"] = lambda: gf.inject_hyperparams(gf.sgd)(0.05, momentum=0.9)
    cases["schedule/sgd_onecycle"] = lambda: gf.sgd(gf.cosine_onecycle_schedule(10, 0.1), momentum=0.9)
    cases["plateau/reduce_on_plateau"] = lambda: gf.chain(gf.adam(0.05), gf.reduce_on_plateau(0.5, patience=1))
    cases["plateau/restart_on_loss"] = lambda: gf.chain(
        gf.sgd(1.0), gf.restart_on_loss(gf.cosine_decay_schedule(0.1, 5), patience=1)
    )
    return cases


CASES = _cases()


def _params() -> dict:
    rng = np.random.default_rng(0)
    return {
        "dense": {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32), "b": jnp.zeros((4,), jnp.float32)},
        "emb": [jnp.asarray(rng.standard_normal((5,)), jnp.bfloat16)],
    }


def _grads() -> list:
    """Spiky gradients: a heavy-tailed sequence with one 100x spike after the checkpoint."""
    rng = np.random.default_rng(1)
    like = _params()
    out = []
    for t in range(STEPS):
        spike = 100.0 if t == SAVE_AT + 1 else 1.0
        out.append(jax.tree.map(lambda p: jnp.asarray(spike * rng.standard_t(3, p.shape), p.dtype), like))
    return out


def _step_fn(tx):
    def step(params, state, grads):
        loss = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(params))
        updates, state = tx.update(grads, state, params, value=loss)
        return gf.apply_updates(params, updates), state

    return jax.jit(step)


def _run(step, params, state, grads):
    trajectory = []
    for g in grads:
        params, state = step(params, state, g)
        trajectory.append(params)
    return trajectory, state


def _template() -> dict:
    """Shapes and dtypes of every case's saved (params, state)."""
    p = _params()
    return {name: {"params": p, "state": jax.eval_shape(make().init, p)} for name, make in CASES.items()}


def _resume(steps: dict, saved: dict) -> dict:
    grads = _grads()
    out = {}
    for name, step in steps.items():
        trajectory, state = _run(step, saved[name]["params"], saved[name]["state"], grads[SAVE_AT:])
        out[name] = {"trajectory": trajectory, "state": state}
    return out


def _main(directory: str) -> None:
    """The fresh process: restore both checkpoints, resume every case, write the results."""
    import orbax.checkpoint as ocp

    d = Path(directory)
    like = _template()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like)
    restored = ocp.StandardCheckpointer().restore(d / "orbax", abstract)
    steps = {name: _step_fn(make()) for name, make in CASES.items()}
    save_state(d / "resumed_orbax.npz", _resume(steps, restored))
    save_state(d / "resumed_npz.npz", _resume(steps, load_state(d / "saved.npz", like)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted runs, and the runs resumed in a subprocess from both checkpoints."""
    import orbax.checkpoint as ocp

    d = tmp_path_factory.mktemp("ckpt")
    params, grads = _params(), _grads()
    full, saved = {}, {}
    for name, make in CASES.items():
        tx = make()
        step = _step_fn(tx)
        trajectory, state = _run(step, params, tx.init(params), grads[:SAVE_AT])
        saved[name] = {"params": trajectory[-1], "state": state}
        rest, final = _run(step, trajectory[-1], state, grads[SAVE_AT:])
        full[name] = {"trajectory": rest, "state": final}
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(d / "orbax", saved)
    checkpointer.wait_until_finished()
    save_state(d / "saved.npz", saved)

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_checkpoint", str(d)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resumed = {
        "orbax": load_state(d / "resumed_orbax.npz", full),
        "npz": load_state(d / "resumed_npz.npz", full),
    }
    return full, resumed


def _assert_bitwise(got, want, what: str) -> None:
    assert jax.tree.structure(got) == jax.tree.structure(want), what
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what}{jax.tree_util.keystr(path)}"
        assert g.tobytes() == w.tobytes(), f"{what}{jax.tree_util.keystr(path)}: {g} != {w}"


@pytest.mark.parametrize("method", ["orbax", "npz"])
@pytest.mark.parametrize("name", list(CASES))
def test_resumed_run_is_bitwise_identical(runs, name, method):
    full, resumed = runs
    got, want = resumed[method][name], full[name]
    _assert_bitwise(got["trajectory"], want["trajectory"], f"{name} params ")
    _assert_bitwise(got["state"], want["state"], f"{name} state ")
    # The resumed steps really moved the parameters (a checkpoint of the initial state would not match).
    assert not np.array_equal(np.asarray(want["trajectory"][-1]["dense"]["w"]), np.asarray(_params()["dense"]["w"]))


def test_save_state_round_trip_keeps_dtypes_and_refuses_other_structures(tmp_path):
    p = _params()
    state = gf.adam(0.1, mu_dtype=jnp.bfloat16).init(p)
    state = jax.tree.map(lambda x: x + 1 if x.dtype != jnp.int32 else x + 7, state)
    save_state(tmp_path / "s.npz", state)
    _assert_bitwise(load_state(tmp_path / "s.npz", jax.eval_shape(lambda: state)), state, "adam state ")
    with pytest.raises(ValueError, match="different leaves"):
        load_state(tmp_path / "s.npz", gf.sgd(0.1, momentum=0.9).init(p))
    wrong = jax.tree.map(lambda x: x.astype(jnp.float16) if x.dtype == jnp.float32 else x, state)
    with pytest.raises(ValueError, match="float32"):
        load_state(tmp_path / "s.npz", wrong)


if __name__ == "__main__":
    _main(sys.argv[1])


def test_save_and_load_take_the_same_name(tmp_path):
    # Issue 13, item 11: save_state("x") writes x.npz; load_state("x") reads it.
    state = gf.adam(0.1).init({"w": jnp.arange(3.0)})
    save_state(tmp_path / "x", state)
    assert (tmp_path / "x.npz").exists()
    _assert_bitwise(load_state(tmp_path / "x", state), state, "adam state ")
    _assert_bitwise(load_state(str(tmp_path / "x.npz"), state), state, "adam state ")


def test_bfloat16_mismatch_names_the_dtypes(tmp_path):
    p = {"w": jnp.ones(3, jnp.bfloat16)}
    save_state(tmp_path / "s.npz", gf.adam(0.1).init(p))
    like = gf.adam(0.1).init({"w": jnp.ones(3, jnp.float16)})  # same item size: must not be reinterpreted
    with pytest.raises(ValueError, match=r"bfloat16\[3\] in the file, float16\[3\] in `like`"):
        load_state(tmp_path / "s.npz", like)
    like32 = gf.adam(0.1).init({"w": jnp.ones(3, jnp.float32)})
    with pytest.raises(ValueError, match=r"bfloat16\[3\] in the file, float32\[3\]") as info:
        load_state(tmp_path / "s.npz", like32)
    assert "V2" not in str(info.value)


def _key_data_or_array(x):
    return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def test_typed_prng_keys_round_trip_and_the_run_resumes_bit_for_bit(tmp_path):
    # optax.add_noise keeps a typed key (jax.random.key) in its state.
    import optax

    params = {"w": jnp.arange(3.0), "b": jnp.ones(2, jnp.bfloat16)}
    grads = jax.tree.map(jnp.ones_like, params)
    tx = optax.chain(optax.add_noise(0.1, 0.55, 0), gf.sgd(0.1))
    step = _step_fn(tx)
    params, state = step(params, tx.init(params), grads)
    save_state(tmp_path / "s.npz", state)
    back = load_state(tmp_path / "s.npz", jax.eval_shape(tx.init, params))
    assert jax.tree.map(lambda x: x.dtype, back) == jax.tree.map(lambda x: x.dtype, state)
    _assert_bitwise(jax.tree.map(_key_data_or_array, back), jax.tree.map(_key_data_or_array, state), "add_noise ")
    want, got = step(params, state, grads), step(params, back, grads)
    _assert_bitwise(jax.tree.map(_key_data_or_array, got), jax.tree.map(_key_data_or_array, want), "next step ")
    assert not np.array_equal(np.asarray(want[0]["w"]), np.asarray(params["w"]))

    # Another implementation comes back as itself, and a template of another kind of leaf is refused.
    rbg = {"k": jax.random.split(jax.random.key(1, impl="rbg"), 3)}
    save_state(tmp_path / "rbg", rbg)
    back = load_state(tmp_path / "rbg", rbg)
    assert back["k"].dtype == rbg["k"].dtype and back["k"].shape == (3,)
    np.testing.assert_array_equal(jax.random.key_data(back["k"]), jax.random.key_data(rbg["k"]))
    with pytest.raises(ValueError, match=r"key<rbg>\[3\] in the file, key<fry>\[3\] in `like`"):
        load_state(tmp_path / "rbg", {"k": jax.random.split(jax.random.key(1), 3)})
    with pytest.raises(ValueError, match=r"key<rbg>\[3\] in the file, uint32\[3, 4\] in `like`"):
        load_state(tmp_path / "rbg", {"k": jax.random.key_data(rbg["k"])})


def test_load_state_reads_the_file_save_state_wrote(tmp_path):
    # save_state("x") writes x.npz; load_state("x") reads x.npz even when something else is named x.
    (tmp_path / "step_1000").mkdir()  # e.g. an orbax checkpoint directory of the same name
    save_state(tmp_path / "step_1000", {"a": jnp.full(2, 3.0)})
    np.testing.assert_array_equal(load_state(tmp_path / "step_1000", {"a": jnp.ones(2)})["a"], [3.0, 3.0])
    with open(tmp_path / "opt_state", "wb") as f:  # a stale checkpoint written through a file object
        np.savez(f, **{"['a']": np.zeros(2, np.float32)})
    save_state(tmp_path / "opt_state", {"a": jnp.full(2, 7.0)})
    np.testing.assert_array_equal(load_state(tmp_path / "opt_state", {"a": jnp.ones(2)})["a"], [7.0, 7.0])
    np.testing.assert_array_equal(load_state(str(tmp_path / "opt_state.npz"), {"a": jnp.ones(2)})["a"], [7.0, 7.0])
