"""benchmarks/stability.py: every scenario trains under its recipes, and the oracle skips what it should."""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np
import pytest

from tests.helpers import load_script

BENCHMARK = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "stability.py"
NAMES = ["transformer", "rnn", "deep_mlp", "corrupted", "corrupted_fit", "rnn_corrupted", "float16", "healthy_sweep"]


@pytest.fixture(scope="module")
def stability():
    return load_script(BENCHMARK, "stability_benchmark")


def test_the_list_of_scenarios_is_the_one_tested(stability):
    assert sorted(stability.SCENARIOS) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_scenario_trains_a_few_steps_under_its_recipes(stability, name):
    scenario = stability.SCENARIOS[name](True)
    scenario = dataclasses.replace(scenario, steps=8, lrs=scenario.lrs[:1])
    recipes = stability.recipes_for(scenario, candidates=False, blocks=False)
    results = [stability.run_recipe(scenario, r, [0], 2, False) for r in recipes]
    for r in results:
        assert len(r.final) == 1 and math.isfinite(r.final[0]) and 0 < r.final[0] <= scenario.cap, r.name
        assert len(r.train_loss[0]) == 8 and r.curve_steps == [4, 8], r.name
    table = stability.scenario_table(scenario, results)
    assert [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")][1:] == [
        f"| {r.name}" for r in recipes
    ]


def test_the_oracle_skips_exactly_the_corrupted_batches(stability):
    # every batch corrupted: the oracle never moves the parameters, the standard recipe does
    scenario = stability.SCENARIOS["corrupted_fit"](True)
    scenario = dataclasses.replace(scenario, steps=6, corrupt=stability._corrupt_batches(1.0))
    untrained = float(scenario.evaluate(scenario.init(stability.jax.random.fold_in(
        stability.jax.random.PRNGKey(0), 10_000)), scenario.data))
    by_name = {r.name: r for r in stability.recipes_for(scenario, candidates=False, blocks=False)}
    oracle = stability.run_recipe(scenario, by_name["oracle (skip corrupted)"], [0], 1, False)
    standard = stability.run_recipe(scenario, by_name["standard (optax)"], [0], 1, False)
    np.testing.assert_allclose(oracle.raw_final[0], untrained, rtol=1e-5)  # the same weights, evaluated under vmap
    assert abs(standard.raw_final[0] / untrained - 1) > 1e-3, (standard.raw_final[0], untrained)


def test_the_oracle_trains_on_the_clean_batches(stability):
    # no batch corrupted: the oracle skips nothing, so it is the standard recipe, run for run
    scenario = stability.SCENARIOS["corrupted_fit"](True)
    scenario = dataclasses.replace(scenario, steps=6, corrupt=stability._corrupt_batches(0.0))
    by_name = {r.name: r for r in stability.recipes_for(scenario, candidates=False, blocks=False)}
    oracle = stability.run_recipe(scenario, by_name["oracle (skip corrupted)"], [0], 1, False)
    standard = stability.run_recipe(scenario, by_name["standard (optax)"], [0], 1, False)
    np.testing.assert_allclose(oracle.raw_final[0], standard.raw_final[0], rtol=1e-6)


def test_protect_overhead_help_describes_it_without_running(capsys):
    script = load_script(BENCHMARK.parent / "protect_overhead.py", "protect_overhead_benchmark")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    assert "What ``protect`` costs per step" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main(["--steps", "3"])  # it takes no options: an unknown one is refused, not ignored
