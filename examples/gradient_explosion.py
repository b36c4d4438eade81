"""Gradient explosion on real data, and the gradflow recipes that stop it.

Two models that the documents name as explosion-prone, trained on data that ships
with Python and scikit-learn (nothing is downloaded):

  rnn  a vanilla tanh RNN language model on the characters of Python's own
       documentation (``pydoc_data.topics``), unrolled over long truncated-BPTT
       windows: the recurrence multiplies the gradient by the same Jacobian at
       every time step, so it explodes (document 004 §3.4);
  mlp  a deep ReLU network (16 hidden layers) with a large-gain initialisation
       on scikit-learn's bundled hand-written digits: every layer amplifies the
       signal and the gradient (document 004 §3.4, "weight initialisation").

Each task is trained with the same model, data, initialisation and batches under
five recipes, each learning rate tuned for the task: plain SGD (at its best rate,
and at the larger rate clipping allows), SGD + clip_by_global_norm, the standard
recipe built with optax, and gradflow's recipe, ``gf.protect`` around that same
standard recipe (same schedule, same peak):

    schedule = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, steps, peak / 100)
    standard = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule))
    tx = gf.protect(standard)                    # skip NaN/inf steps and steps whose loss and ‖g‖ spike
    updates, state = tx.update(grads, state, params, value=loss)

On these two tasks the clip already tames the explosion, so the two Adam-based
recipes end close together; protect's difference shows where steps turn NaN or a
batch is corrupted (``benchmarks/stability.py`` measures five such scenarios).

The script prints a table per task and saves a PNG of loss, gradient norm and
learning rate against step.

Run:  python examples/gradient_explosion.py                # both tasks, about 2 minutes on 2 CPU cores
      python examples/gradient_explosion.py --task rnn --steps 200 --seed 1
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradflow as gf

# ----------------------------------------------------------------------------- data


def load_text() -> str:
    """Python's documentation topics (about 465k characters of English), in a fixed order."""
    from pydoc_data import topics

    return "\n".join(topics.topics[k] for k in sorted(topics.topics))


def encode_text(text: str, test_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Characters → int32 ids; the last ``test_fraction`` of the text is held out."""
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((lookup[c] for c in text), dtype=np.int32, count=len(text))
    split = int(len(ids) * (1 - test_fraction))
    return ids[:split], ids[split:], vocab


def load_digits_split(seed: int, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """scikit-learn's 8×8 digits (1797 images), standardised, split by ``seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = int(len(x) * test_fraction)
    x_train, y_train, x_test, y_test = x[n_test:], y[n_test:], x[:n_test], y[:n_test]
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy, in nats."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


# ----------------------------------------------------------------------------- models


def rnn_init(key: jax.Array, vocab: int, hidden: int, gain: float, input_scale: float) -> dict:
    """h_t = tanh(W_x[c_t] + W_h h_{t−1} + b); logits_t = W_y h_t + b_y.

    W_h ~ N(0, gain²/H): a gain above 1 puts the recurrence in the regime where
    its Jacobians multiply up over a long window.
    """
    kx, kh, ky = jax.random.split(key, 3)
    return {
        "w_x": jax.random.normal(kx, (vocab, hidden)) * input_scale,
        "w_h": jax.random.normal(kh, (hidden, hidden)) * (gain / np.sqrt(hidden)),
        "b": jnp.zeros((hidden,)),
        "w_y": jax.random.normal(ky, (hidden, vocab)) / np.sqrt(hidden),
        "b_y": jnp.zeros((vocab,)),
    }


def rnn_loss(params: dict, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Next-character cross-entropy over every position of every window."""
    inputs, targets = batch  # (B, T) int32 each

    def cell(h, c):
        h = jnp.tanh(params["w_x"][c] + h @ params["w_h"] + params["b"])
        return h, h

    h0 = jnp.zeros((inputs.shape[0], params["w_h"].shape[0]))
    _, hs = jax.lax.scan(cell, h0, inputs.T)  # (T, B, H)
    logits = hs @ params["w_y"] + params["b_y"]
    return cross_entropy(logits, targets.T)


def mlp_init(key: jax.Array, sizes: list[int], gain: float) -> list[dict]:
    """Dense layers with W ~ N(0, gain²·2/fan_in): Kaiming's He init times ``gain``.

    He init keeps a ReLU stack's activations at a constant scale; a gain g
    multiplies them (and the gradients) by about g per layer, g^L in all.
    """
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "w": jax.random.normal(k, (m, n)) * (gain * np.sqrt(2.0 / m)),
            "b": jnp.zeros((n,)),
        }
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]


def mlp_logits(params: list[dict], x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def mlp_loss(params: list[dict], batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    x, y = batch
    return cross_entropy(mlp_logits(params, x), y)


# ----------------------------------------------------------------------------- tasks and recipes


@dataclasses.dataclass(frozen=True, eq=False)
class Recipe:
    """One way to train: a gradflow transform and the learning-rate schedule it uses (for the plot)."""

    name: str
    tx: gf.GradientTransformation
    learning_rate: Callable[[Any], Any]  # step -> α_t
    description: str  # the code that builds ``tx``, printed under the table


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A model, its data, and how to draw a batch and evaluate."""

    name: str
    title: str
    default_steps: int
    data: Any  # the training data, passed to the jitted step (not baked in as a constant)
    init: Callable[[jax.Array], Any]  # key -> params
    loss: Callable[[Any, Any], jax.Array]  # (params, batch) -> scalar
    sample: Callable[[Any, jax.Array], Any]  # (data, key) -> batch, inside jit
    evaluate: Callable[[Any], dict[str, float]]  # params -> held-out metrics
    recipes: Callable[[int], list[Recipe]]  # steps -> recipes
    diverge_above: float = math.inf  # a training loss above this counts as divergence


def constant(value: float) -> Callable[[Any], Any]:
    return lambda step: jnp.full((), value, jnp.float32)


def make_recipes(steps: int, sgd_lr: float, clip_lr: float, peak_lr: float) -> list[Recipe]:
    """The recipes compared on every task; the learning rates were tuned per task (see the task).

    - plain SGD at its best learning rate, and at the clipped recipe's (larger) one;
    - SGD + clip_by_global_norm(1) (Pascanu et al. 2013);
    - the standard recipe, built with optax itself: clip_by_global_norm(1) and
      AdamW on a warmup-cosine schedule (10% warmup, down to 1% of the peak);
    - gradflow's recipe: the same standard recipe, same schedule, wrapped in
      ``gf.protect``, which skips a step whose gradient or loss is NaN/inf, or
      whose loss and gradient norm are both more than 10× (and 6 robust σ above)
      the median of the last 16 accepted steps (judged from the fifth step on).
    """
    warmup = max(1, steps // 10)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak_lr, warmup_steps=warmup, decay_steps=steps, end_value=peak_lr / 100
    )
    sched_code = f"optax.warmup_cosine_decay_schedule(0.0, {peak_lr:g}, {warmup}, {steps}, {peak_lr / 100:g})"
    standard_code = f"optax.chain(optax.clip_by_global_norm(1.0), optax.adamw({sched_code}))"

    def standard():
        return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule))

    return [
        Recipe(f"SGD (lr {sgd_lr:g})", gf.sgd(sgd_lr), constant(sgd_lr), f"gf.sgd({sgd_lr:g})"),
        Recipe(f"SGD (lr {clip_lr:g})", gf.sgd(clip_lr), constant(clip_lr), f"gf.sgd({clip_lr:g})"),
        Recipe(
            f"SGD (lr {clip_lr:g}) + clip_by_global_norm",
            gf.chain(gf.clip_by_global_norm(1.0), gf.sgd(clip_lr)),
            constant(clip_lr),
            f"gf.chain(gf.clip_by_global_norm(1.0), gf.sgd({clip_lr:g}))",
        ),
        Recipe("standard recipe (optax)", standard(), schedule, standard_code),
        Recipe(
            "gradflow recipe",
            gf.protect(standard()),
            schedule,
            f"gf.protect({standard_code}), update(..., value=loss)",
        ),
    ]


def rnn_task(
    seed: int, window: int = 200, batch: int = 32, hidden: int = 128, gain: float = 1.5, input_scale: float = 0.1
) -> Task:
    """Character language model; loss in nats per character (ln 103 ≈ 4.63 is a uniform guess)."""
    train_ids, test_ids, vocab = encode_text(load_text())

    def sample(data, key):
        start = jax.random.randint(key, (batch,), 0, data.shape[0] - window - 1)
        chunk = data[start[:, None] + jnp.arange(window + 1)]
        return chunk[:, :-1], chunk[:, 1:]

    # Held-out text: 64 fixed windows spread over the last tenth of the text.
    starts = np.linspace(0, len(test_ids) - window - 2, 64).astype(np.int64)
    test_windows = np.stack([test_ids[s : s + window + 1] for s in starts])
    eval_loss = jax.jit(rnn_loss)

    def evaluate(params):
        return {"test loss": float(eval_loss(params, (test_windows[:, :-1], test_windows[:, 1:])))}

    # Learning rates tuned for 600 steps over {0.003, 0.01, 0.03, 0.1, 0.3, 1} (SGD, plain and clipped),
    # {1e-3, 3e-3, 0.01, 0.02} (Adam, constant). With seed 0, plain SGD diverges at the first step from
    # 0.03 up; 0.01 survives its 10⁵-sized gradient spikes but ends above 0.003. Adam's best constant
    # rate, 0.01, is the peak of the schedule that the standard recipe and protect share.
    recipes = functools.partial(make_recipes, sgd_lr=0.003, clip_lr=0.3, peak_lr=0.01)

    return Task(
        name="rnn",
        title=f"tanh RNN language model, {window}-character BPTT windows, W_h gain {gain}",
        default_steps=600,
        data=jnp.asarray(train_ids),
        init=lambda key: rnn_init(key, len(vocab), hidden, gain, input_scale),
        loss=rnn_loss,
        sample=sample,
        evaluate=evaluate,
        recipes=recipes,
        diverge_above=4 * math.log(len(vocab)),  # four times the loss of a uniform guess
    )


def mlp_task(seed: int, depth: int = 16, width: int = 64, gain: float = 1.4, batch: int = 128) -> Task:
    """Deep ReLU classifier on the digits; loss in nats (ln 10 ≈ 2.30 is a uniform guess)."""
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    sizes = [x_train.shape[1]] + [width] * depth + [10]

    def sample(data, key):
        x, y = data
        idx = jax.random.randint(key, (batch,), 0, x.shape[0])
        return x[idx], y[idx]

    @jax.jit
    def metrics(params):
        logits = mlp_logits(params, x_test)
        return cross_entropy(logits, y_test), jnp.mean(jnp.argmax(logits, -1) == y_test)

    def evaluate(params):
        loss, acc = metrics(params)
        return {"test loss": float(loss), "test accuracy": float(acc)}

    # Learning rates tuned for 600 steps over {1e-3, 0.01, 0.03, 0.1, 0.3, 1} (SGD, plain and clipped),
    # {1e-3, 3e-3, 0.01, 0.02} (Adam, constant; its best, 0.01, is the shared schedule's peak). Plain SGD
    # diverges in the first steps at every rate from 0.01 up, and crawls at 0.001.
    recipes = functools.partial(make_recipes, sgd_lr=0.001, clip_lr=0.3, peak_lr=0.01)

    return Task(
        name="mlp",
        title=f"{depth}-layer ReLU MLP on digits, He init × gain {gain}",
        default_steps=600,
        data=(jnp.asarray(x_train), jnp.asarray(y_train)),
        init=lambda key: mlp_init(key, sizes, gain),
        loss=mlp_loss,
        sample=sample,
        evaluate=evaluate,
        recipes=recipes,
    )


TASKS = {"rnn": rnn_task, "mlp": mlp_task}

# ----------------------------------------------------------------------------- training


@dataclasses.dataclass
class Result:
    """What one recipe did on one task."""

    recipe: str
    description: str
    loss: np.ndarray  # (steps,) training loss per step; NaN after divergence
    grad_norm: np.ndarray  # (steps,) ‖g‖₂ of the raw gradient
    learning_rate: np.ndarray  # (steps,) α_t
    clipped: np.ndarray  # (steps,) bool: a clipper in the recipe scaled this step down
    skipped: np.ndarray  # (steps,) bool: a guard in the recipe skipped this step
    diverged_at: int | None  # first step whose loss was non-finite or above the task's bound
    final_loss: float  # mean training loss over the last tenth of the steps (NaN if diverged)
    metrics: dict[str, float]  # held-out metrics of the final parameters
    wall_time: float  # seconds, compilation included


def _counter_sum(stats: dict, suffix: str) -> jax.Array:
    """Σ of the state's running counters named ``…/suffix`` (0 when the recipe has none)."""
    total = jnp.zeros((), jnp.int32)
    for key, value in stats.items():
        if key == suffix or key.endswith("/" + suffix):
            total = total + value.astype(jnp.int32)
    return total


@functools.cache
def make_runner(task: Task, recipe: Recipe, chunk: int) -> Callable:
    """A jitted ``run(params, state, data, start, batch_key)`` doing ``chunk`` steps in one ``lax.scan``.

    Parameters and optimizer state are donated: their buffers are reused in place.
    Compiled once per task, recipe and chunk length, whatever the seed.
    """
    tx = recipe.tx

    def run(params, state, data, start, batch_key):
        def one_step(carry, step):
            params, state = carry
            batch = task.sample(data, jax.random.fold_in(batch_key, step))
            loss, grads = jax.value_and_grad(task.loss)(params, batch)
            updates, state = tx.update(grads, state, params, value=loss)
            params = gf.apply_updates(params, updates)
            stats = gf.stats(state)
            out = {
                "loss": loss,
                "grad_norm": gf.global_norm(grads),
                "learning_rate": jnp.asarray(recipe.learning_rate(step), jnp.float32),
                "num_clipped": _counter_sum(stats, "num_clipped"),
                "num_skipped": _counter_sum(stats, "num_skipped"),
                "ok": (loss <= task.diverge_above) & jnp.isfinite(gf.global_norm(params)),
            }
            return (params, state), out

        steps = start + jnp.arange(chunk, dtype=jnp.int32)
        (params, state), out = jax.lax.scan(one_step, (params, state), steps)
        return params, state, out

    return jax.jit(run, donate_argnums=(0, 1))


def train(task: Task, recipe: Recipe, steps: int, seed: int, progress: bool = True, chunk: int = 25) -> Result:
    """Train ``task`` with ``recipe`` for ``steps`` steps (stopping early if it diverges)."""
    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    init_key, batch_key = jax.random.split(jax.random.PRNGKey(seed))
    params = task.init(init_key)
    state = recipe.tx.init(params)
    history: list[dict] = []
    diverged_at = None
    done = 0
    with tqdm(total=steps, desc=f"{task.name}: {recipe.name}", disable=not progress, leave=True,
              dynamic_ncols=True) as bar:
        while done < steps:
            n = min(chunk, steps - done)
            run = make_runner(task, recipe, n)
            params, state, out = run(params, state, task.data, jnp.int32(done), batch_key)
            out = jax.tree.map(np.asarray, out)
            history.append(out)
            bad = np.flatnonzero(~out["ok"])
            bar.update(n)
            done += n
            if bad.size:
                diverged_at = done - n + int(bad[0])
                bar.set_postfix_str(f"diverged at step {diverged_at}")
                break
            bar.set_postfix_str(f"loss {float(np.mean(out['loss'])):.3f}")
    wall = time.perf_counter() - start_time

    h = {k: np.concatenate([o[k] for o in history]) for k in history[0]}
    pad = steps - len(h["loss"])
    for k in ("loss", "grad_norm", "learning_rate"):
        h[k] = np.concatenate([h[k].astype(np.float64), np.full(pad, np.nan)])
    clipped = np.diff(np.concatenate([[0], h["num_clipped"]])) > 0
    skipped = np.diff(np.concatenate([[0], h["num_skipped"]])) > 0
    clipped = np.concatenate([clipped, np.zeros(pad, bool)])
    skipped = np.concatenate([skipped, np.zeros(pad, bool)])
    if diverged_at is None:
        tail = max(1, steps // 10)
        final_loss = float(np.mean(h["loss"][-tail:]))
        metrics = task.evaluate(params)
    else:
        h["loss"][diverged_at:] = np.nan
        h["grad_norm"][diverged_at + 1 :] = np.nan  # the chunk ran on past the divergence
        h["learning_rate"][diverged_at + 1 :] = np.nan
        final_loss = float("nan")
        metrics = {}
    return Result(
        recipe=recipe.name,
        description=recipe.description,
        loss=h["loss"],
        grad_norm=h["grad_norm"],
        learning_rate=h["learning_rate"],
        clipped=clipped,
        skipped=skipped,
        diverged_at=diverged_at,
        final_loss=final_loss,
        metrics=metrics,
        wall_time=wall,
    )


# ----------------------------------------------------------------------------- reporting


def format_table(task: Task, results: list[Result]) -> str:
    """One row per recipe: final losses (or where it diverged), max ‖g‖, clipped, skipped, wall time."""
    metric_names = sorted({k for r in results for k in r.metrics})
    header = ["recipe", "final train loss"] + metric_names + ["max grad norm", "clipped", "skipped", "time (s)"]
    rows = []
    for r in results:
        if r.diverged_at is not None:
            cells = [f"diverged at step {r.diverged_at}"] + ["-"] * len(metric_names)
        else:
            cells = [f"{r.final_loss:.4f}"] + [
                f"{r.metrics[m]:.4f}" if "loss" in m else f"{100 * r.metrics[m]:.1f}%" for m in metric_names
            ]
        max_norm = np.nanmax(r.grad_norm) if np.any(np.isfinite(r.grad_norm)) else float("nan")
        rows.append(
            [r.recipe] + cells + [f"{max_norm:.3g}", str(int(r.clipped.sum())), str(int(r.skipped.sum())), f"{r.wall_time:.1f}"]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda row: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))
    )
    lines = [task.title, fmt(header), "  ".join("-" * w for w in widths)]
    lines += [fmt(row) for row in rows]
    lines.append(f"final train loss: mean over the last {max(1, len(results[0].loss) // 10)} steps; test metrics: held-out data.")
    lines += [f"  {r.recipe}: {r.description}" for r in results]
    return "\n".join(lines)


def smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Trailing moving average over ``width`` steps (NaN where the run had stopped)."""
    if width <= 1:
        return x
    out = np.full_like(x, np.nan)
    for i in np.flatnonzero(np.isfinite(x)):
        out[i] = np.nanmean(x[max(0, i - width + 1) : i + 1])
    return out


def plot(all_results: dict[str, tuple[Task, list[Result]]], path: str) -> None:
    """Loss, gradient norm and learning rate against step: one column per task, one line per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(all_results)
    fig, axes = plt.subplots(3, cols, figsize=(6.5 * cols, 9), squeeze=False, sharex="col")
    for c, (task, results) in enumerate(all_results.values()):
        steps = len(results[0].loss)
        width = max(1, steps // 50)
        tops = []
        for r in results:
            label = r.recipe if r.diverged_at is None else f"{r.recipe} (diverged at step {r.diverged_at})"
            smoothed = smooth(r.loss, width)
            line, = axes[0, c].plot(smoothed, label=label, lw=1.3)
            if r.diverged_at is not None:
                axes[0, c].axvline(r.diverged_at, color=line.get_color(), ls=":", lw=1.5)
            else:
                tops.append(np.nanmax(smoothed))
            skipped = np.flatnonzero(r.skipped)
            if skipped.size:
                axes[1, c].plot(skipped, r.grad_norm[skipped], "x", color=line.get_color(), ms=5)
            axes[1, c].plot(r.grad_norm, color=line.get_color(), lw=0.8, alpha=0.8)
            axes[2, c].plot(r.learning_rate, color=line.get_color(), lw=1.3)
        axes[0, c].set_title(task.title, fontsize=9)
        axes[0, c].set_ylabel(f"training loss (mean of {width} steps)")
        axes[0, c].set_yscale("log")
        if tops:  # keep the survivors readable: a diverged run's loss leaves the top of the axis
            axes[0, c].set_ylim(top=2 * max(tops))
        axes[0, c].legend(fontsize=8)
        axes[1, c].set_ylabel("gradient norm ‖g‖ (x: skipped step)")
        axes[1, c].set_yscale("log")
        axes[2, c].set_ylabel("learning rate")
        axes[2, c].set_yscale("log")
        axes[2, c].set_xlabel("step")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns ``{task: {recipe: Result}}`` and the plot path."""
    parser = argparse.ArgumentParser(
        description="Train explosion-prone models on real data with plain SGD, clipped SGD, the standard "
        "recipe (optax) and "
        "gradflow's recommended recipe; print a table per task and save a plot.",
    )
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per recipe (default 600)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for initialisation, batches and the data split (default 0); "
                        "a given seed always gives the same numbers")
    parser.add_argument("--task", choices=["all", *TASKS], default="all",
                        help="rnn: tanh RNN on Python's docs text; mlp: deep ReLU MLP on digits (default all)")
    parser.add_argument("--out", default=os.path.join("out", "gradient_explosion.png"),
                        help="where to save the PNG (default out/gradient_explosion.png)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")

    names = list(TASKS) if args.task == "all" else [args.task]
    all_results: dict[str, tuple[Task, list[Result]]] = {}
    for name in names:
        task = TASKS[name](args.seed)
        steps = args.steps or task.default_steps
        results = [train(task, r, steps, args.seed, progress=not args.no_progress) for r in task.recipes(steps)]
        all_results[name] = (task, results)
        print()
        print(format_table(task, results))
        print(flush=True)
    out = args.out if os.path.splitext(args.out)[1] else args.out + ".png"
    plot(all_results, out)
    print(f"plot saved to {os.path.abspath(out)}")
    return {"results": {n: {r.recipe: r for r in rs} for n, (_, rs) in all_results.items()}, "plot": out}


if __name__ == "__main__":
    main()
