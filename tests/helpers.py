"""Helpers shared by the tests."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

import jax
import numpy as np

import gradflow as gf


def load_script(path: pathlib.Path, name: str) -> types.ModuleType:
    """Import the script at ``path`` as the module ``name`` (examples and benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def run_trajectory(tx: gf.GradientTransformation, params: dict, grads: list[dict], dtype=np.float32) -> list[dict]:
    """Run ``tx`` under jit over a gradient sequence; return the parameters after each step (as NumPy)."""
    params = jax.tree.map(lambda x: jax.numpy.asarray(x, dtype), params)
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return gf.apply_updates(params, updates), state

    out = []
    for g in grads:
        params, state = step(params, state, jax.tree.map(lambda x: jax.numpy.asarray(x, dtype), g))
        out.append(jax.tree.map(np.asarray, params))
    return out


def assert_trajectories_close(got: list[dict], want: list[dict], rtol: float, atol: float = 0.0) -> None:
    """Every step's parameters agree within the tolerances (reports the first bad step)."""
    assert len(got) == len(want)
    for t, (g, w) in enumerate(zip(got, want)):
        for k in w:
            np.testing.assert_allclose(np.asarray(g[k], np.float64), w[k], rtol=rtol, atol=atol, err_msg=f"step {t}, leaf {k}")
