"""A newcomer's review of README.md and examples/README.md: the snippets run, the claims hold.

Tests without a marker fail on the documentation as reviewed (each names the README line it checks);
tests marked ``# guarantee`` pin README claims that hold and had no test of their own.
The snippets are cut from the README's text, so an edit there is what these tests run.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
from tests.helpers import load_script

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLES_README = (ROOT / "examples" / "README.md").read_text()


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)


def _block(containing: str) -> str:
    """The one README python block that contains ``containing``."""
    found = [b for b in _python_blocks(README) if containing in b]
    assert len(found) == 1, (containing, len(found))
    return found[0]


TRAINING_STEP = _block("def loss_fn(params, x, y):")


def _run(code: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(code, "<README>", "exec"), namespace)  # noqa: S102
    return namespace


# ------------------------------------------------------------------ confirmed problems (fail now)


def test_examples_readme_digits_split_counts():
    # examples/README.md lines 48-49: "(1437 to train, 360 held out)"; the script holds out
    # int(1797 * 0.2) = 359 and trains on 1438 (line 121 of the same README says "of 1438").
    m = re.search(r"digits \((\d+) to train,\s+(\d+) held out\)", EXAMPLES_README)
    assert m, "the digits split sentence is gone"
    module = load_script(ROOT / "examples" / "gradient_explosion.py", "review_gradient_explosion")
    x_train, _, x_test, _ = module.load_digits_split(0)
    assert (int(m.group(1)), int(m.group(2))) == (len(x_train), len(x_test))


def test_examples_readme_seed_count_matches_stability_md():
    # examples/README.md lines 31-32: "benchmarks/stability.md, three seeds per scenario"; the file
    # says "8 seeds per scenario unless its title says more" (32 for deep_mlp and healthy_sweep).
    stability = (ROOT / "benchmarks" / "stability.md").read_text()
    seeds = int(re.search(r"(\d+) seeds per scenario", stability).group(1))
    words = {3: "three", 8: "eight"}
    claimed = re.search(r"stability\.md\)?,\s+(\w+) seeds per scenario", EXAMPLES_README)
    assert claimed, "the seed-count sentence is gone"
    assert claimed.group(1) in (str(seeds), words.get(seeds)), (claimed.group(1), seeds)


def test_readme_float16_second_moment_underflow_threshold():
    # README.md line 631: "(1 − β₂)·g² underflows to 0 for |g| below about 8e-3". With float16
    # parameters gf.adam's ν stays nonzero (float16's smallest subnormal, 6e-8) down to about 5.5e-3.
    m = re.search(r"underflows to 0 for \|g\| below about ([0-9.e-]+)", README)
    assert m, "the float16 sentence is gone"
    bound = float(m.group(1))
    g = 0.8 * bound  # well below the claimed threshold
    params = {"w": jnp.ones(3, jnp.float16)}
    tx = gf.adam(0.1)
    _, state = tx.update({"w": jnp.full(3, g, jnp.float16)}, tx.init(params), params)
    assert float(state[0].nu["w"][0]) == 0.0, f"ν did not underflow at |g| = {g:.2g}"


def test_many_devices_snippet_runs_on_several_devices():
    # README.md lines 539-560 reuse the first block's params ({"w": (1, 1)}) and batch (100 rows):
    # on 4 or 8 devices device_put(params, P("fsdp", None)) raises IndivisibleError (dimension 1
    # cannot be split 4 ways). The snippet should build params and a batch its mesh can split.
    code = TRAINING_STEP + _block("gf.init_sharded(tx, params)") + textwrap.dedent(
        """
        x = jax.device_put(x[:96], batch_sharding); y = jax.device_put(y[:96], batch_sharding)
        params, opt_state, loss = train_step(params, opt_state, x, y)
        print("OK", len(jax.devices()))
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "OK 4" in out.stdout, out.stderr[-2000:]


# ------------------------------------------------------------------ guarantees (pass now)


@pytest.fixture(scope="module")
def trained():
    # guarantee: the "A training step" block (README.md lines 49-80) runs and fits y = 3x + 2
    return _run(TRAINING_STEP.replace("print(", "_printed = ("))


def test_training_step_snippet_fits_the_line(trained):  # guarantee
    p = trained["params"]
    assert abs(float(p["w"][0, 0]) - 3.0) < 1e-3 and abs(float(p["b"][0]) - 2.0) < 1e-3
    assert float(trained["loss"]) < 1e-6


def test_protect_snippet_and_its_stats_keys():  # guarantee
    # README.md lines 120-128 and the keys listed at lines 143-145.
    code = _block("gf.protect(optax.chain(").replace("...\n", "")
    ns = {"params": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}}
    ns["grads"] = jax.tree.map(jnp.ones_like, ns["params"])
    ns["loss"] = jnp.float32(1.0)
    code = code.replace("updates, opt_state", "opt_state = tx.init(params)\nupdates, opt_state", 1)
    ns = _run(code, ns)
    keys = gf.stats(ns["opt_state"])
    para = README[README.index("`gf.stats(opt_state)` shows") :].split("…", 1)[0]
    named = re.findall(r"`(protect/[\w/]+)`", para)
    assert len(named) >= 6 and not [k for k in named if k not in keys], (named, sorted(keys))


def test_protect_refuses_a_missing_loss_and_skips_nan_with_state_untouched():  # guarantee
    # README.md lines 130-131 (skip: zero update, the wrapped state untouched bit for bit) and 645
    # (a transform that watches the loss needs value=loss).
    import optax

    tx = gf.protect(optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)))
    params = {"w": jnp.ones((4, 4)), "b": jnp.zeros(4)}
    grads = jax.tree.map(lambda a: 0.1 * jnp.ones_like(a), params)
    state = tx.init(params)
    with pytest.raises(TypeError, match="value=loss"):
        tx.update(grads, state, params)
    _, state = tx.update(grads, state, params, value=jnp.float32(1.0))
    updates, new = tx.update(grads, state, params, value=jnp.float32(jnp.nan))
    assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))
    assert float(gf.stats(new)["protect/num_skipped"]) == 1.0
    assert jax.tree.structure(new.inner_state) == jax.tree.structure(state.inner_state)
    for a, b in zip(jax.tree.leaves(new.inner_state), jax.tree.leaves(state.inner_state)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_blowups_snippets_and_stats_names(trained):  # guarantee
    # README.md lines 247-256 (apply_if_finite/skip_spikes/zclip/monitor) and 264-274 (stats under
    # jit); the names quoted at lines 257-259 are keys of gf.stats.
    ns = {k: trained[k] for k in ("loss_fn", "x", "y", "jax", "jnp")}
    ns["params"] = {"w": jnp.zeros((1, 1)), "b": jnp.zeros((1,))}
    code = _block("gf.monitor(tx, learning_rate=0.01)") + _block("jax.debug.callback(")
    code = code.replace("jax.debug.callback(lambda s: print(", "jax.debug.callback(lambda s: _seen.append(")
    ns["_seen"] = []
    ns = _run(code, ns)
    opt_state = ns["tx"].init(ns["params"])
    _, opt_state, _ = ns["train_step"](ns["params"], opt_state, ns["x"], ns["y"])
    jax.effects_barrier()
    keys = gf.stats(opt_state)
    for name in ("monitor/grad_norm", "monitor/apply_if_finite/num_skipped",
                 "monitor/apply_if_finite/skip_spikes/zclip/num_clipped"):  # fmt: skip
        assert name in README and name in keys, name
    assert ns["_seen"] and set(ns["_seen"][0]) == set(keys)


def test_plateau_and_inject_snippets(trained):  # guarantee
    # README.md lines 381-384 (opt_state[1].scale) and 397-401 (set/current hyperparams).
    ns = {"gf": gf, "params": trained["params"], "loss": jnp.float32(1.0)}
    ns["grads"] = jax.tree.map(jnp.ones_like, ns["params"])
    code = _block("gf.reduce_on_plateau(factor=0.5, patience=5)")
    ns = _run(code.replace("updates, opt_state", "opt_state = tx.init(params)\nupdates, opt_state", 1), ns)
    assert float(ns["opt_state"][1].scale) == 1.0
    code = _block("gf.set_hyperparams(opt_state, momentum=0.95)")
    ns = _run(code.replace("opt_state = gf.set", "opt_state = tx.init(params)\nopt_state = gf.set", 1), ns)
    assert float(ns["lr"]) == pytest.approx(0.1)
    assert float(gf.current_hyperparams(ns["opt_state"])["momentum"]) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="momentum must be in"):  # line 628: build-time checks apply
        gf.set_hyperparams(ns["opt_state"], momentum=1.5)


def test_save_load_snippet_round_trip(tmp_path, trained):  # guarantee
    # README.md lines 604-611: round trip, bfloat16 included; another template raises ValueError.
    tx = gf.chain(gf.clip_by_global_norm(1.0), gf.adam(3e-3))
    params = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.zeros(3, jnp.bfloat16)}
    opt_state = tx.init(params)
    _, opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
    code = _block('gf.save_state("opt_state.npz", opt_state)').replace('"opt_state.npz"', repr(str(tmp_path / "s.npz")))
    ns = _run(code, {"gf": gf, "jax": jax, "tx": tx, "params": params, "opt_state": opt_state})
    restored = ns["opt_state"]
    assert jax.tree.structure(restored) == jax.tree.structure(opt_state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(opt_state)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    other = {"w": jnp.ones((2, 3), jnp.float16), "b": jnp.zeros(3, jnp.float16)}
    with pytest.raises(ValueError):
        gf.load_state(tmp_path / "s.npz", like=tx.init(other))


def test_readme_error_messages():  # guarantee
    # README.md lines 111-113.
    with pytest.raises(ValueError, match=re.escape("sgd: momentum must be in [0, 1], got 1.5")):
        gf.sgd(0.1, momentum=1.5)
    tx = gf.sgd(0.1, momentum=0.9)
    params = {"w": jnp.ones(3)}
    with pytest.raises(TypeError, match=r"\['b'\]"):
        tx.init({"b": jnp.ones(3, jnp.int32)})
    with pytest.raises(TypeError, match="tree structure"):
        tx.update({"v": jnp.ones(3)}, tx.init(params), params)
    with pytest.raises(ValueError, match=r"\(3, 1\)"):  # line 625
        gf.apply_updates(params, {"w": jnp.ones((3, 1))})


def test_readme_module_table_names_exist():  # guarantee
    # README.md lines 89-109: every name in the API table lives in that module and at gf.<name>.
    import importlib

    skip = {"value", "adaptive_clip", "vectors", "True"}
    for line in README.split("## API", 1)[1].split("\n\n", 2)[1].splitlines()[2:]:
        m = re.match(r"\| `(gradflow\.\w+)`[^|]*\| (.*) \|$", line)
        assert m, line
        module = importlib.import_module(m.group(1))
        for name in set(re.findall(r"`(\w+)`", m.group(2))) - skip:
            assert hasattr(module, name) and hasattr(gf, name), (m.group(1), name)
