"""Parity with torch.optim (recorded trajectories) and with optax (run side by side).

PyTorch: tests/parity/record_torch.py ran each torch.optim optimizer in float64 on one
fixed spiky gradient sequence and saved the parameters after every step; gradflow,
with the flags its docstrings name, must reproduce them to 1e-10 (float64). The suite
never imports torch.

optax: for every optimizer optax also has, gradflow with the flags its docstrings name
runs next to optax for 200 spiky steps, in float64 (1e-10) and float32 (1e-5).
"""

from __future__ import annotations

import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf
from tests import reference
from tests.fast_trajectory import scan_trajectory as run_trajectory
from tests.helpers import assert_trajectories_close

RECORDING = Path(__file__).parent / "parity" / "torch_trajectories.npz"


def _lr_schedule(t):
    """The schedule record_torch.py applied to the scheduled cases (t = updates done)."""
    return 0.01 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(t, 150) / 150)) / 2 + 1e-4


# record_torch.py case name -> gradflow with the documented flags
TORCH_EQUIVALENTS = {
    "sgd_momentum": lambda: gf.sgd(0.01, momentum=0.9),
    "sgd_nesterov": lambda: gf.sgd(0.01, momentum=0.9, nesterov=True),
    "sgd_dampening": lambda: gf.sgd(0.01, momentum=0.9, dampening=0.3),
    "adagrad": lambda: gf.adagrad(0.1),
    "adagrad_lr_decay_initial_accumulator": lambda: gf.adagrad(
        0.1, lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-3
    ),
    "rmsprop": lambda: gf.rmsprop(0.01, decay=0.9),
    "rmsprop_centered": lambda: gf.rmsprop(0.01, decay=0.95, centered=True, eps=1e-4),
    "rmsprop_momentum": lambda: gf.rmsprop(0.01, decay=0.99, momentum=0.9),
    "rmsprop_centered_momentum": lambda: gf.rmsprop(0.01, decay=0.9, momentum=0.5, centered=True, eps=1e-6),
    "adam": lambda: gf.adam(0.01),
    "adam_scheduled": lambda: gf.adam(_lr_schedule, b1=0.8, b2=0.99, eps=1e-6),
    "adamw": lambda: gf.adamw(0.01, weight_decay=0.1),
    "adamw_scheduled": lambda: gf.adamw(_lr_schedule, weight_decay=0.05),
    "adam_amsgrad": lambda: gf.amsgrad(0.01),
}


def _load_recording():
    data = np.load(RECORDING)
    meta = json.loads(str(data["meta"]))
    keys = sorted(k.split("/")[1] for k in data.files if k.startswith("params0/"))
    params = {k: data[f"params0/{k}"] for k in keys}
    steps = data[f"grads/{keys[0]}"].shape[0]
    grads = [{k: data[f"grads/{k}"][t] for k in keys} for t in range(steps)]
    trajectories = {
        name: [{k: data[f"{name}/{k}"][t] for k in keys} for t in range(steps)] for name in meta["cases"]
    }
    return params, grads, trajectories, meta


def test_recording_covers_every_case_and_is_small():
    _, grads, trajectories, meta = _load_recording()
    assert set(trajectories) == set(TORCH_EQUIVALENTS)
    assert len(grads) >= 200 and len(grads[0]) >= 3
    assert RECORDING.stat().st_size < 200_000
    spikes = sum(max(np.abs(v).max() for v in g.values()) > 25 for g in grads)
    assert spikes >= 10
    assert meta["cases"]["adagrad_lr_decay_initial_accumulator"]["kwargs"]["lr_decay"] == 0.01


@pytest.mark.parametrize("name", sorted(TORCH_EQUIVALENTS))
def test_matches_torch_float64(name, x64):
    params, grads, trajectories, _ = _load_recording()
    got = run_trajectory(TORCH_EQUIVALENTS[name](), params, grads, np.float64)
    assert_trajectories_close(got, trajectories[name], rtol=1e-10, atol=1e-10)


# case -> gradflow with one convention changed (ε placement, step offset, max rule, decay)
TORCH_NEAR_MISSES = {
    "adagrad_lr_decay_initial_accumulator": lambda: gf.adagrad(
        0.1, lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-3, eps_in_sqrt=True
    ),
    "rmsprop_centered": lambda: gf.rmsprop(0.01, decay=0.95, centered=True, eps=1e-4, eps_in_sqrt=True),
    "rmsprop_centered_momentum": lambda: gf.rmsprop(0.01, decay=0.9, momentum=0.5, eps=1e-6),
    "adam_amsgrad": lambda: gf.amsgrad(0.01, max_of_debiased=True),
    "adam_scheduled": lambda: gf.adam(lambda t: _lr_schedule(t + 1), b1=0.8, b2=0.99, eps=1e-6),
    "adamw": lambda: gf.adam(0.01),
}


@pytest.mark.parametrize("name", sorted(TORCH_NEAR_MISSES))
def test_torch_recording_pins_the_convention_down(name, x64):
    """The recording tells each convention from its neighbour, far beyond the 1e-10 tolerance."""
    params, grads, trajectories, _ = _load_recording()
    got = run_trajectory(TORCH_NEAR_MISSES[name](), params, grads, np.float64)
    diff = max(np.abs(g[k] - w[k]).max() for g, w in zip(got, trajectories[name]) for k in g)
    assert diff > 1e-6


# ------------------------------------------------------------------------------------------
# optax
# ------------------------------------------------------------------------------------------

SHAPES = {"w": (4, 3), "b": (3,), "s": ()}


def _problem(seed: int = 21):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    return params, reference.spiky_gradients(rng, SHAPES, 200)


def _optax_schedule(t):
    return 0.02 / (1.0 + 0.05 * t)


MASK = {"w": True, "b": False, "s": True}

# id -> (gradflow with the documented flags, the optax call it reproduces)
OPTAX_EQUIVALENTS = {
    "adagrad": (
        lambda: gf.adagrad(0.1, initial_accumulator_value=0.1, eps=1e-7, eps_in_sqrt=True),
        lambda: optax.adagrad(0.1),
    ),
    "adagrad-iav0": (
        lambda: gf.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-6, eps_in_sqrt=True),
        lambda: optax.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-6),
    ),
    "rmsprop": (lambda: gf.rmsprop(0.01, eps_in_sqrt=True), lambda: optax.rmsprop(0.01)),
    "rmsprop-eps-outside": (
        lambda: gf.rmsprop(0.01, decay=0.95),
        lambda: optax.rmsprop(0.01, decay=0.95, eps_in_sqrt=False),
    ),
    "rmsprop-centered-momentum-nesterov-initial_scale-bias_correction": (
        lambda: gf.rmsprop(
            0.01, decay=0.9, eps=1e-6, eps_in_sqrt=True, centered=True, momentum=0.8, nesterov=True,
            initial_scale=0.1, bias_correction=True,
        ),
        lambda: optax.rmsprop(
            0.01, decay=0.9, eps=1e-6, centered=True, momentum=0.8, nesterov=True, initial_scale=0.1,
            bias_correction=True,
        ),
    ),
    "rmsprop-bias_correction": (
        lambda: gf.rmsprop(0.01, eps_in_sqrt=False, bias_correction=True),
        lambda: optax.rmsprop(0.01, eps_in_sqrt=False, bias_correction=True),
    ),
    "adam": (lambda: gf.adam(0.01), lambda: optax.adam(0.01)),
    "adam-eps_root-schedule": (
        lambda: gf.adam(_optax_schedule, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
        lambda: optax.adam(_optax_schedule, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
    ),
    "adam-nesterov": (lambda: gf.adam(0.01, nesterov=True), lambda: optax.adam(0.01, nesterov=True)),
    "amsgrad": (lambda: gf.amsgrad(0.01, max_of_debiased=True), lambda: optax.amsgrad(0.01)),
    "amsgrad-eps_root": (
        lambda: gf.amsgrad(0.01, eps=1e-6, eps_root=1e-4, max_of_debiased=True),
        lambda: optax.amsgrad(0.01, eps=1e-6, eps_root=1e-4),
    ),
    "amsgrad-no-bias-correction": (
        lambda: gf.amsgrad(0.01, bias_correction=False),
        lambda: optax.amsgrad(0.01, bias_correction_mu=False, bias_correction_nu=False),
    ),
    "adamw": (lambda: gf.adamw(0.01, weight_decay=0.1), lambda: optax.adamw(0.01, weight_decay=0.1)),
    "adamw-mask-schedules": (
        lambda: gf.adamw(_optax_schedule, weight_decay=lambda t: 0.1 * 0.99**t, mask=MASK),
        lambda: optax.adamw(_optax_schedule, weight_decay=lambda t: 0.1 * 0.99**t, mask=MASK),
    ),
    "lars": (lambda: gf.lars(0.5, trust_coefficient=0.01), lambda: optax.lars(0.5, trust_coefficient=0.01)),
    "lars-nesterov-eps": (
        lambda: gf.lars(0.5, trust_coefficient=0.01, eps=1e-3, momentum=0.8, nesterov=True),
        lambda: optax.lars(0.5, trust_coefficient=0.01, eps=1e-3, momentum=0.8, nesterov=True),
    ),
    "lars-decay_inside_norm": (
        lambda: gf.lars(0.5, weight_decay=0.01, trust_coefficient=0.01, decay_inside_norm=True),
        lambda: optax.lars(0.5, weight_decay=0.01, trust_coefficient=0.01),
    ),
    "lamb": (lambda: gf.lamb(0.01), lambda: optax.lamb(0.01)),
    "lamb-decay-mask": (
        lambda: gf.lamb(0.01, weight_decay=0.01, mask=MASK),
        lambda: optax.lamb(0.01, weight_decay=0.01, mask=MASK),
    ),
}


@pytest.mark.parametrize("name", sorted(OPTAX_EQUIVALENTS))
def test_matches_optax_float64(name, x64):
    ours, theirs = OPTAX_EQUIVALENTS[name]
    params, grads = _problem()
    got = run_trajectory(ours(), params, grads, np.float64)
    want = run_trajectory(theirs(), params, grads, np.float64)
    assert_trajectories_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["adagrad", "rmsprop", "adam", "amsgrad", "adamw-mask-schedules", "lars", "lamb"])
def test_matches_optax_float32(name):
    ours, theirs = OPTAX_EQUIVALENTS[name]
    params, grads = _problem(22)
    got = run_trajectory(ours(), params, grads, np.float32)
    want = run_trajectory(theirs(), params, grads, np.float32)
    assert_trajectories_close(got, want, rtol=1e-5, atol=1e-5)


def test_defaults_differ_from_optax_where_the_docs_say_so():
    """gradflow's defaults follow the documents and PyTorch, not optax: the flags matter."""
    params, grads = _problem()
    pairs = [
        (gf.adagrad(0.1), optax.adagrad(0.1)),
        (gf.rmsprop(0.01), optax.rmsprop(0.01)),
        (gf.amsgrad(0.01), optax.amsgrad(0.01)),
        (gf.lars(0.5, weight_decay=0.01, trust_coefficient=0.01), optax.lars(0.5, weight_decay=0.01, trust_coefficient=0.01)),
    ]
    for ours, theirs in pairs:
        got, want = run_trajectory(ours, params, grads[:100]), run_trajectory(theirs, params, grads[:100])
        assert max(np.abs(got[-1][k] - want[-1][k]).max() for k in SHAPES) > 1e-4


# The README's table of where gradflow's defaults differ from optax's: each row's arguments give
# optax's default numbers, and without them the numbers differ.
DEFAULTS_TABLE = {
    "adagrad": (lambda: gf.adagrad(0.1, initial_accumulator_value=0.1, eps=1e-7, eps_in_sqrt=True),
                lambda: gf.adagrad(0.1), lambda: optax.adagrad(0.1)),
    "rmsprop": (lambda: gf.rmsprop(0.01, eps_in_sqrt=True), lambda: gf.rmsprop(0.01), lambda: optax.rmsprop(0.01)),
    "amsgrad": (lambda: gf.amsgrad(0.01, max_of_debiased=True), lambda: gf.amsgrad(0.01), lambda: optax.amsgrad(0.01)),
    "lars": (lambda: gf.lars(0.1, weight_decay=0.1, decay_inside_norm=True), lambda: gf.lars(0.1, weight_decay=0.1),
             lambda: optax.lars(0.1, weight_decay=0.1)),
    "adamw": (lambda: gf.adamw(0.01, weight_decay=1e-4), lambda: gf.adamw(0.01), lambda: optax.adamw(0.01)),
}


@pytest.mark.parametrize("name", sorted(DEFAULTS_TABLE))
def test_readme_defaults_table(name, x64):
    with_args, default, theirs = DEFAULTS_TABLE[name]
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3))), "b": jnp.asarray(rng.normal(size=3) * 1e-3)}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * (1e-3 if t % 7 else 1.0)), params)
             for t in range(60)]

    def run(tx):
        p, s, out = params, tx.init(params), []
        for g in grads:
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
            out.append(p)
        return out

    want = run(theirs())
    chex.assert_trees_all_close(run(with_args()), want, rtol=1e-10, atol=1e-12)
    got_default = run(default())
    assert not all(np.allclose(a["w"], b["w"], rtol=1e-6) for a, b in zip(got_default, want))
