"""The docstrings' examples exist where a reader looks for them, and `pytest` runs them.

The examples themselves run as doctests (pyproject: ``testpaths = ["tests", "gradflow"]`` and
``--doctest-modules``); this file checks that the configuration says so and that every public
optimizer, clipper, guard and the main schedules keep an example, so none is dropped silently.
"""

from __future__ import annotations

import doctest
import pathlib
import re

import gradflow as gf

ROOT = pathlib.Path(__file__).resolve().parent.parent

NEED_EXAMPLES = [
    # optimizers
    "sgd", "adagrad", "rmsprop", "adam", "amsgrad", "adamw", "lars", "lamb",
    # clippers
    "clip", "clip_by_norm", "clip_by_global_norm", "clip_by_block_rms", "adaptive_grad_clip",
    "autoclip", "zclip", "adagc", "clip_update_norm", "clip_relative_update",
    # guards, the wrapper, hyperparameters and logging
    "apply_if_finite", "skip_spikes", "protect", "inject_hyperparams", "stats", "monitor",
    # the main schedules
    "constant_schedule", "polynomial_schedule", "linear_schedule", "exponential_decay",
    "warmup_constant_schedule", "piecewise_constant_schedule", "cosine_decay_schedule",
    "warmup_cosine_decay_schedule", "join_schedules", "warm_restarts_schedule", "wsd_schedule",
    "inverse_sqrt_schedule", "reduce_on_plateau",
]  # fmt: skip


def _examples(obj) -> list[doctest.Example]:
    tests = doctest.DocTestFinder(recurse=False).find(obj, obj.__name__)
    return [e for t in tests for e in t.examples]


def test_pytest_runs_the_docstring_examples():
    # (read as text: tomllib is Python 3.11+, and the project supports 3.10)
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.pytest.ini_options]", 1)[1].split("\n[", 1)[0]
    testpaths = re.search(r"^testpaths = \[(.*)\]$", section, re.M).group(1)
    addopts = re.search(r'^addopts = "(.*)"$', section, re.M).group(1)
    assert '"gradflow"' in testpaths and '"tests"' in testpaths, testpaths
    assert "--doctest-modules" in addopts.split(), addopts


def test_public_functions_have_checked_examples():
    missing = [name for name in NEED_EXAMPLES if not _examples(getattr(gf, name))]
    assert not missing, f"no doctested example in: {missing}"
    for name in NEED_EXAMPLES:
        examples = _examples(getattr(gf, name))
        assert any(e.want.strip() for e in examples), f"{name}'s example prints nothing to check"


def test_at_least_twenty_examples_in_the_package():
    finder = doctest.DocTestFinder()
    modules = sorted(p.stem for p in (ROOT / "gradflow").glob("*.py") if p.stem != "__init__")
    count = 0
    for stem in modules:
        module = __import__(f"gradflow.{stem}", fromlist=[stem])
        count += sum(1 for t in finder.find(module) if t.examples)
    assert count >= 20, count
