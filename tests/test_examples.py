"""Every example runs with a small budget and its output means something."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

from tests.helpers import load_script

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    """Import ``examples/<name>.py`` as a module."""
    return load_script(EXAMPLES / f"{name}.py", f"example_{name}")


def test_quickstart_fits_the_line():
    out = load("quickstart").main(["--steps", "300"])
    assert abs(out["w"] - 3) < 0.3 and abs(out["b"] - 2) < 0.3


def test_doc001_recovers_slope_and_intercept():
    out = load("doc001_linear_regression").main([])  # the document's 1000 steps take well under a second
    assert abs(out["slope"] - 3) < 0.1
    assert abs(out["intercept"] - 2) < 0.1
    assert out["loss"] < 0.3  # about the noise variance 0.25


def test_doc001_stops_short_of_the_answer_with_few_steps():
    # Adam moves each weight by about lr = 0.01 per step: 20 steps cannot reach intercept 2.
    out = load("doc001_linear_regression").main(["--steps", "20"])
    assert abs(out["intercept"] - 2) > 1


def test_doc002_every_optimizer_moves_theta_towards_zero():
    out = load("doc002_scalar_theta").main(["--steps", "400"])
    theta0 = out["theta0"]
    assert len(out["results"]) == 3
    for name, r in out["results"].items():
        assert math.isfinite(r["theta"]), name
        assert abs(r["theta"]) < abs(theta0), name
    assert abs(out["results"]["Adam(lr 0.01)"]["theta"]) < 0.2
    assert abs(out["results"]["RMSprop(lr 0.01, decay 0.9)"]["theta"]) < 0.2


def test_doc003_classifier_learns():
    out = load("doc003_classifier").main(["--steps", "4"])
    assert len(out["losses"]) == 4
    assert out["losses"][-1] < out["initial_loss"] - 0.1
    assert np.all(np.diff(out["losses"]) < 0)  # full-data loss after each epoch keeps falling


def test_doc004_network_loss_falls():
    out = load("doc004_network").main(["--steps", "300"])
    assert len(out["losses"]) == 300
    assert out["final_loss"] < 0.8 * out["losses"][0]


def test_flax_training_through_nnx_optimizer():
    out = load("flax_training").main(["--steps", "80"])
    assert math.isfinite(out["loss"])
    assert out["test_accuracy"] > 0.8  # ten classes: chance is 0.1


@pytest.fixture(scope="module")
def explosion():
    return load("gradient_explosion")


@pytest.mark.parametrize("task,steps", [("mlp", 100), ("rnn", 40)])
def test_gradient_explosion_recipe_beats_plain_sgd(explosion, tmp_path, capsys, task, steps):
    png = tmp_path / "plot.png"
    out = explosion.main(["--task", task, "--steps", str(steps), "--out", str(png), "--no-progress"])
    results = out["results"][task]
    names = list(results)
    assert len(names) == 5 and names[-1] == "gradflow recipe" and names[3] == "standard recipe (optax)"
    assert [n.split(" ")[0] for n in names[:3]] == ["SGD", "SGD", "SGD"]
    recipe, standard = results["gradflow recipe"], results["standard recipe (optax)"]
    assert recipe.diverged_at is None and math.isfinite(recipe.final_loss)
    # the same schedule for the baseline and gradflow's recipe
    np.testing.assert_array_equal(recipe.learning_rate, standard.learning_rate)
    assert "gf.protect(optax.chain(optax.clip_by_global_norm(1.0)" in recipe.description
    for sgd in (results[n] for n in names[:2]):  # plain SGD, at both of its learning rates
        sgd_loss = math.inf if sgd.diverged_at is not None else sgd.final_loss
        assert recipe.final_loss < sgd_loss
        assert recipe.metrics["test loss"] < sgd.metrics.get("test loss", math.inf)
    for r in results.values():
        assert len(r.loss) == len(r.grad_norm) == len(r.learning_rate) == steps
    printed = capsys.readouterr().out
    assert "gradflow recipe" in printed and "max grad norm" in printed and str(png) in printed
    assert png.stat().st_size > 10_000


def test_gradient_explosion_is_deterministic_per_seed(explosion):
    task = explosion.mlp_task(seed=3)
    recipe = task.recipes(30)[-1]
    a = explosion.train(task, recipe, 30, seed=3, progress=False)
    b = explosion.train(task, recipe, 30, seed=3, progress=False)
    c = explosion.train(task, recipe, 30, seed=4, progress=False)  # other initialisation and batches
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.grad_norm, b.grad_norm)
    assert not np.array_equal(a.loss, c.loss)


def test_gradient_explosion_help_names_the_flags(explosion, capsys):
    with pytest.raises(SystemExit) as exit_info:
        explosion.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--steps", "--seed", "--task", "--out"):
        assert flag in text
