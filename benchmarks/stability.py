"""Training stability: gradflow's defences against optax's standard recipe, on seven failure modes and a healthy sweep.

Every scenario trains one small model on data that ships with Python or
scikit-learn or that it draws itself (nothing is downloaded), eight seeds each (with three, the medians
moved enough to turn the transformer's LR-sensitivity ratio from 0.67 into 0.54 on an
earlier five-rate grid) and 32 for the deep MLP, whose runs are chaotic, and the healthy sweep,
under each recipe:

  standard   the standard recipe, built with optax itself and never weakened:
             std = optax.chain(optax.clip_by_global_norm(1.0),
                               optax.adamw(sched, b1=0.9, b2, eps=1e-8, weight_decay=wd)),
             sched = optax.warmup_cosine_decay_schedule(0, 1, warmup, steps, 0.1) × peak;
  protect    gf.protect(std): protect around the same AdamW, schedule and clip, with its defaults;
  ablation   gf.protect(std, max_update_ratio=None): protect's skipping alone, without its
             relative update clip; gf.protect(std, hold_update_cut=False): the clip
             cutting each step on its own; gf.protect(std, max_spike_rate=None): every
             spike skipped, however common; to show what each part does;
  blocks     gradflow's newer building blocks with the same schedule, peak rate, β's and
             weight decay: stable_adamw (its update clipping replaces the gradient clip),
             std followed by clip_update_norm, std followed by clip_relative_update, spam,
             adam_atan2, and dynamic_loss_scale(std) in the float16 scenario;
  oracle     the standard recipe that skips exactly the batches known to be corrupted
             (only where that is known);
  reference  the standard recipe on the same model started without the failure mode
             (the RNN at spectral radius 1, the MLP at He init): what the failure mode
             costs the standard recipe, and so what a defence that removed it would gain.

Within a scenario every recipe gets the same peak learning rate, schedule (10%
linear warm-up, cosine to a tenth of the peak), β's, ε and weight decay, the same
initialisations and the same batches (but spam keeps its own default ε = 1e-6,
the SPAM code's, and adam_atan2 has no ε). The peak rates are common defaults for
Adam on such models (not tuned for any recipe); the transformer is swept over
all of them.

Scenarios (each a failure mode that real training meets; none is tuned to make
the standard recipe fail):

  transformer  a 2-layer pre-LN char-level transformer LM (d=32) on Python's
               documentation (``pydoc_data.topics``), swept over peak learning rates
               1e-3 … 1 in steps of √10, as Wortsman et al. 2023 sweep (the grid
               holds each recipe's best rate; instabilities show up as a rise in
               final loss at large rates). Reported: the per-rate losses and the LR
               sensitivity, mean over rates of (final loss − best final loss over
               rates), with divergent runs counted at the cap below.
  rnn          a vanilla tanh RNN char-LM (H=64) on the same text, its recurrent
               matrix orthogonal with spectral radius 1.5 and unrolled over 64
               characters: the recurrence multiplies the gradient by Jacobians of
               norm > 1 (Pascanu et al. 2013).
  deep_mlp     a 16-layer ReLU MLP (width 64) on scikit-learn's digits with a
               large-gain initialisation (1.4 × He): activations and gradients grow
               about 1.4× per layer, 1.4¹⁷ ≈ 300× through the stack. Its runs are
               chaotic: a difference of 10⁻⁷ in the second step's loss (two compiled
               programs that round differently) ends a run anywhere from 0.1 to 2,
               and with eight seeds the median of identical updates moved by 25%,
               so the full run gives it four times the seeds.
  corrupted    an MLP regressing the bottom half of a digit image from its top
               half; 3% of the batches have their targets multiplied by a factor
               drawn log-uniformly from [100, 1000] (a unit or scaling bug in a data
               shard). The oracle skips exactly those batches. Healthy gradient norms
               here are about 0.6 after warm-up, near the clip threshold, so a clipped
               corrupted step is barely larger than a healthy one and the oracle gains
               1% or less: a bound on what any skipping rule can gain on this task.
  corrupted_fit  the same corruption (3% of batches, ×100–1000) where it costs the standard
               recipe: an MLP (4→64→64→4) learning a fixed random tanh network from fresh
               inputs, 2000 steps, so the fit gets close and the healthy gradient norms fall
               to 0.1–0.3, well under the clip threshold; each clipped corrupted step then
               weighs as much as several healthy ones in AdamW's moments (the second moment
               remembers it for ~1/(1−β₂) = 1000 steps). The oracle shows what skipping gains.
               Its peak rate 1e-2 is the standard recipe's best of 3e-3, 1e-2 and 3e-2
               (0.0097, 0.0061 and 0.0080 over eight seeds).
  rnn_corrupted  an explosion-prone RNN with corrupted targets: a tanh RNN
               (H=32, recurrent matrix orthogonal × 1.5, as in ``rnn``) learning a fixed teacher
               RNN (H=16, radius 0.9; its two outputs scaled to unit variance) from fresh Gaussian
               input sequences of 32 steps, 1000 steps, with the same 3% of batches ×100–1000. Its
               peak rate 3e-2 is the standard recipe's best of 1e-2, 3e-2 and 1e-1 (0.0031, 0.00063
               and 0.0015 over eight seeds). The oracle shows what skipping gains; the radius-1
               reference what the recurrence costs.
  healthy_sweep  no failure mode: a 2-hidden-layer ReLU MLP (He init) on the digits, swept over
               peak rates 1e-3 … 3e-2 (the standard recipe's best is the lowest), 32 seeds.
               What a defence costs a healthy run, at the best rate and past it: at large
               rates the network fits its training set and the batches that draw the few
               examples it still gets wrong spike in loss and gradient norm, a heavy tail
               of healthy steps that a spike rule must not mistake for accidents.
  float16      an 8-layer ReLU MLP (He init) on the digits computed in float16 with
               float32 master weights, the loss multiplied by a fixed 2¹⁶ (the
               initial scale of torch's GradScaler) before the backward pass and the
               gradients divided by it after, as fixed-scale mixed precision does:
               a few early backward passes overflow float16's range (65504), and one
               inf gradient poisons AdamW's moments (and the parameters) unless the
               step is skipped. A dynamic loss scaler backs off instead; protect skips.

Held-out loss is measured on data no recipe trains on (the last 10% of the text;
a fixed 20% split of the digits). A run whose final parameters or held-out loss
are not finite, or whose loss exceeds the cap, is counted at the cap: the loss of
the trivial predictor (ln V for the LMs, ln 10 for digit classes, the held-out
targets' variance for the regression). The table shows the median over seeds
and the min–max spread, the ratio to the standard recipe's median, the steps
with a non-finite loss or gradient (summed over seeds and rates), and the runs
that end non-finite.

Each recipe's training step is compiled once per scenario: all seeds (and
learning rates) run side by side under ``jax.vmap`` in one ``lax.scan`` per chunk
of steps, and the same compiled chunk is reused for the whole run.

Run:  python benchmarks/stability.py                 # full run (see benchmarks/stability.md)
      python benchmarks/stability.py --quick         # fewer steps and rates, standard/protect/oracle only (under 2 min)
      python benchmarks/stability.py --scenario rnn --seeds 5 --out out/stab
Writes <out>.md (the table, also printed), <out>.json and docs/stability.png (or --png).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradflow as gf

# ----------------------------------------------------------------------------- data


def load_text_ids(test_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray, int]:
    """Python's documentation topics as int32 character ids; the last 10% is held out."""
    from pydoc_data import topics

    text = "\n".join(topics.topics[k] for k in sorted(topics.topics))
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((lookup[c] for c in text), dtype=np.int32, count=len(text))
    split = int(len(ids) * (1 - test_fraction))
    return ids[:split], ids[split:], len(vocab)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.data))
    return d.data[order].astype(np.float32), d.target[order].astype(np.int32)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


def text_windows(ids: jax.Array, key: jax.Array, batch: int, length: int) -> tuple[jax.Array, jax.Array]:
    start = jax.random.randint(key, (batch,), 0, ids.shape[0] - length - 1)
    idx = start[:, None] + jnp.arange(length + 1)
    w = ids[idx]
    return w[:, :-1], w[:, 1:]


# ----------------------------------------------------------------------------- models


def transformer_init(key, vocab: int, d: int, layers: int, length: int) -> dict:
    ks = iter(jax.random.split(key, 4 + 4 * layers))
    n = lambda shape, s=0.02: jax.random.normal(next(ks), shape) * s  # noqa: E731
    out_std = 0.02 / math.sqrt(2 * layers)
    p = {"embed": n((vocab, d)), "pos": n((length, d)), "ln_f": jnp.ones(d), "head": n((d, vocab))}
    p["blocks"] = [
        {
            "ln1": jnp.ones(d),
            "qkv": n((d, 3 * d)),
            "wo": n((d, d), out_std),
            "ln2": jnp.ones(d),
            "w1": n((d, 4 * d)),
            "w2": n((4 * d, d), out_std),
        }
        for _ in range(layers)
    ]
    return p


def _ln(x, scale):
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.var(x, -1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + 1e-5) * scale


def transformer_loss(params, batch, heads: int = 4):
    x, y = batch
    h = params["embed"][x] + params["pos"][: x.shape[1]]
    b, t, d = h.shape
    mask = jnp.tril(jnp.ones((t, t), bool))
    for blk in params["blocks"]:
        q, k, v = jnp.split(_ln(h, blk["ln1"]) @ blk["qkv"], 3, axis=-1)
        split = lambda z: z.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        att = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(d // heads)
        att = jax.nn.softmax(jnp.where(mask, att, -1e30), axis=-1)
        o = (att @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        h = h + o @ blk["wo"]
        h = h + jax.nn.gelu(_ln(h, blk["ln2"]) @ blk["w1"]) @ blk["w2"]
    return cross_entropy(_ln(h, params["ln_f"]) @ params["head"], y)


def rnn_init(key, n_in: int, hidden: int, n_out: int, radius: float, in_scale: float) -> dict:
    """A tanh RNN's parameters: input weights N(0, in_scale²), a recurrent matrix orthogonal × ``radius``
    (every singular value and |eigenvalue| is ``radius``), a readout N(0, 1/hidden)."""
    kx, kh, ky = jax.random.split(key, 3)
    q, _ = jnp.linalg.qr(jax.random.normal(kh, (hidden, hidden)))
    return {
        "w_x": jax.random.normal(kx, (n_in, hidden)) * in_scale,
        "w_h": q * radius,
        "b": jnp.zeros(hidden),
        "w_y": jax.random.normal(ky, (hidden, n_out)) / math.sqrt(hidden),
        "b_y": jnp.zeros(n_out),
    }


def rnn_outputs(params, xs: jax.Array, embed: Callable) -> jax.Array:
    """The RNN's readout at every step, (time, batch, n_out), from time-major inputs ``xs``:
    h_t = tanh(embed(x_t) + h_{t−1} W_h + b), h_0 = 0, where ``embed`` projects a step's inputs
    to (batch, hidden)."""

    def cell(h, x_t):
        h = jnp.tanh(embed(x_t) + h @ params["w_h"] + params["b"])
        return h, h

    _, hs = jax.lax.scan(cell, jnp.zeros((xs.shape[1], params["w_h"].shape[0])), xs)
    return hs @ params["w_y"] + params["b_y"]


def rnn_loss(params, batch):
    """The char-LM's cross-entropy: characters (batch, time) in, the next characters predicted."""
    x, y = batch
    return cross_entropy(rnn_outputs(params, x.T, lambda c: params["w_x"][c]), y.T)


def mlp_init(key, sizes: list[int], gain: float) -> list[dict]:
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) * (gain * math.sqrt(2.0 / m)), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]


def mlp_apply(params, x, dtype=jnp.float32):
    x = x.astype(dtype)
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"].astype(dtype) + layer["b"].astype(dtype))
    return x @ params[-1]["w"].astype(dtype) + params[-1]["b"].astype(dtype)


# ----------------------------------------------------------------------------- scenarios


@dataclasses.dataclass(frozen=True, eq=False)
class Scenario:
    name: str
    title: str
    steps: int
    batch: int
    lrs: tuple[float, ...]  # peak learning rates (one except for the sweep)
    b2: float
    weight_decay: float
    data: Any  # device arrays passed to the compiled chunk
    init: Callable  # key -> params
    loss: Callable  # (params, batch) -> scalar (float32)
    sample: Callable  # (data, key, step) -> batch
    evaluate: Callable  # (params, data) -> held-out loss
    cap: float  # loss of the trivial predictor
    corrupt: Callable | None = None  # (key, step) -> (is_corrupted, factor), or None
    half_precision: bool = False
    static_loss_scale: float | None = None  # loss × S before the backward pass, gradients ÷ S after
    healthy_init: Callable | None = None  # key -> params of the same model without the failure mode, or None
    healthy: str = ""  # what healthy_init changes, for the reference row's name
    seed_factor: int = 1  # the full run gives it this many times --seeds seeds (chaotic or noisy ones need more for a stable median)


def transformer_scenario(quick: bool) -> Scenario:
    train, test, vocab = load_text_ids()
    length, d, layers, batch = 32, 32, 2, 16
    test_x = np.stack([test[i : i + length] for i in range(0, 64 * 97, 97)])
    test_y = np.stack([test[i + 1 : i + length + 1] for i in range(0, 64 * 97, 97)])
    lrs = (1e-3, 3e-2, 1.0) if quick else (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    return Scenario(
        "transformer", "transformer char-LM, LR sweep", 60 if quick else 150, batch, lrs, 0.95, 0.1,
        data=(jnp.asarray(train), jnp.asarray(test_x), jnp.asarray(test_y)),
        init=lambda k: transformer_init(k, vocab, d, layers, length),
        loss=transformer_loss,
        sample=lambda data, k, t: text_windows(data[0], k, batch, length),
        evaluate=lambda p, data: transformer_loss(p, (data[1], data[2])),
        cap=math.log(vocab),
    )


def rnn_scenario(quick: bool) -> Scenario:
    train, test, vocab = load_text_ids()
    length, hidden, batch = 64, 64, 16
    test_x = np.stack([test[i : i + length] for i in range(0, 64 * 97, 97)])
    test_y = np.stack([test[i + 1 : i + length + 1] for i in range(0, 64 * 97, 97)])
    return Scenario(
        "rnn", "tanh RNN, spectral radius 1.5", 60 if quick else 300, batch, (1e-2,), 0.999, 1e-4,
        data=(jnp.asarray(train), jnp.asarray(test_x), jnp.asarray(test_y)),
        init=lambda k: rnn_init(k, vocab, hidden, vocab, 1.5, 0.5),
        loss=rnn_loss,
        sample=lambda data, k, t: text_windows(data[0], k, batch, length),
        evaluate=lambda p, data: rnn_loss(p, (data[1], data[2])),
        cap=math.log(vocab),
        healthy_init=lambda k: rnn_init(k, vocab, hidden, vocab, 1.0, 0.5),
        healthy="spectral radius 1",
    )


def _digits_class_data(normalise: bool):
    x, y = load_digits_arrays()
    n_test = len(x) // 5
    xtr, ytr, xte, yte = x[n_test:], y[n_test:], x[:n_test], y[:n_test]
    if normalise:
        mean, std = xtr.mean(0), xtr.std(0) + 1e-3
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
    return tuple(jnp.asarray(a) for a in (xtr, ytr, xte, yte))


def _sample_rows(data, k, batch):
    i = jax.random.randint(k, (batch,), 0, data[0].shape[0])
    return data[0][i], data[1][i]


def _digits_mlp_scenario(name: str, title: str, steps: int, lrs: tuple, sizes: list[int], gain: float,
                         dtype=jnp.float32, **extra) -> Scenario:
    """A ReLU MLP (layer ``sizes``, gain × He init) classifying the normalised digits in batches of 64,
    computed in ``dtype``; ``extra`` fills the scenario's remaining fields."""
    batch = 64
    return Scenario(
        name, title, steps, batch, lrs, 0.999, 1e-4,
        data=_digits_class_data(True),
        init=lambda k: mlp_init(k, sizes, gain),
        loss=lambda p, b: cross_entropy(mlp_apply(p, b[0], dtype), b[1]),
        sample=lambda data, k, t: _sample_rows(data, k, batch),
        evaluate=lambda p, data: cross_entropy(mlp_apply(p, data[2], dtype), data[3]),
        cap=math.log(10),
        **extra,
    )


def deep_mlp_scenario(quick: bool) -> Scenario:
    sizes = [64] + [64] * 16 + [10]
    return _digits_mlp_scenario(
        "deep_mlp", "16-layer ReLU MLP, 1.4× He init", 100 if quick else 300, (1e-2,), sizes, 1.4,
        healthy_init=lambda k: mlp_init(k, sizes, 1.0), healthy="He init", seed_factor=4,
    )


def mse(pred: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - y))


def _corrupt_batches(rate: float) -> Callable:
    """(key, step) -> (is_corrupted, factor): a share ``rate`` of the batches, their targets × a factor
    drawn log-uniformly from [100, 1000]."""

    def corrupt(k, t):
        k1, k2 = jax.random.split(k)
        hit = jax.random.uniform(k1) < rate
        factor = jnp.exp(jax.random.uniform(k2, minval=math.log(100.0), maxval=math.log(1000.0)))
        return hit, factor

    return corrupt


def corrupted_scenario(quick: bool) -> Scenario:
    x, _ = load_digits_arrays()
    mean, std = x.mean(0), x.std(0) + 1e-3
    x = (x - mean) / std
    n_test = len(x) // 5
    top, bottom = x[:, :32], x[:, 32:]
    data = tuple(jnp.asarray(a) for a in (top[n_test:], bottom[n_test:], top[:n_test], bottom[:n_test]))
    batch = 32
    return Scenario(
        "corrupted", "regression, 3% batches with targets ×100–1000", 100 if quick else 400, batch, (1e-3,),
        0.999, 1e-4,
        data=data,
        init=lambda k: mlp_init(k, [32, 128, 128, 128, 32], 1.0),
        loss=lambda p, b: mse(mlp_apply(p, b[0]), b[1]),
        sample=lambda data, k, t: _sample_rows(data, k, batch),
        evaluate=lambda p, data: mse(mlp_apply(p, data[2]), data[3]),
        cap=float(np.mean(np.var(bottom[:n_test], axis=0))),
        corrupt=_corrupt_batches(0.03),
    )


def _teacher_student_scenario(name: str, title: str, steps: int, lr: float, teacher: Callable, predict: Callable,
                              init: Callable, inputs: Callable, n_test: int, batch: int, **extra) -> Scenario:
    """A student ``predict(params, x)`` fitting teacher(x)/σ from fresh Gaussian inputs every step, with 3% of
    the batches' targets ×100–1000; σ is the teacher's standard deviation per output on ``n_test`` held-out
    inputs, ``inputs(n)`` the shape of n samples' inputs; ``extra`` fills the scenario's remaining fields."""
    x_test = jax.random.normal(jax.random.PRNGKey(99), inputs(n_test))
    raw = teacher(x_test)
    axes = tuple(range(raw.ndim - 1))  # all but the outputs'
    scale = jnp.std(raw, axes)
    target = lambda x: teacher(x) / scale  # noqa: E731
    y_test = target(x_test)

    def sample(data, k, t):  # a fresh batch of inputs every step
        x = jax.random.normal(k, inputs(batch))
        return x, target(x)

    return Scenario(
        name, title, steps, batch, (lr,), 0.999, 1e-4,
        data=(x_test, y_test),
        init=init,
        loss=lambda p, b: mse(predict(p, b[0]), b[1]),
        sample=sample,
        evaluate=lambda p, data: mse(predict(p, data[0]), data[1]),
        cap=float(jnp.mean(jnp.var(y_test, axis=axes))),
        corrupt=_corrupt_batches(0.03),
        **extra,
    )


def corrupted_fit_scenario(quick: bool) -> Scenario:
    din = 4
    teacher = mlp_init(jax.random.PRNGKey(1234), [din, 32, 4], 1.0)

    def raw(x):  # a fixed random tanh network
        return jnp.tanh(x @ teacher[0]["w"] + teacher[0]["b"]) @ teacher[1]["w"] + teacher[1]["b"]

    return _teacher_student_scenario(
        "corrupted_fit", "teacher–student regression, 3% batches with targets ×100–1000", 500 if quick else 2000,
        1e-2, raw, mlp_apply, lambda k: mlp_init(k, [din, 64, 64, 4], 1.0), lambda n: (n, din), 2048, 32,
    )


def rnn_corrupted_scenario(quick: bool) -> Scenario:
    din, dout, length, hidden = 4, 2, 32, 32
    teacher = rnn_init(jax.random.PRNGKey(4321), din, 16, dout, 0.9, 1 / math.sqrt(din))
    predict = lambda p, x: rnn_outputs(p, x, lambda x_t: x_t @ p["w_x"])  # noqa: E731
    return _teacher_student_scenario(
        "rnn_corrupted", "tanh RNN (spectral radius 1.5) fitting a teacher RNN, 3% batches with targets ×100–1000",
        300 if quick else 1000, 3e-2, lambda x: predict(teacher, x),
        predict, lambda k: rnn_init(k, din, hidden, dout, 1.5, 1 / math.sqrt(din)),
        lambda n: (length, n, din), 512, 32,  # time-major, as rnn_outputs
        healthy_init=lambda k: rnn_init(k, din, hidden, dout, 1.0, 1 / math.sqrt(din)), healthy="spectral radius 1",
    )


def healthy_sweep_scenario(quick: bool) -> Scenario:
    lrs = (1e-3, 3e-2) if quick else (1e-3, 3e-3, 1e-2, 3e-2)
    return _digits_mlp_scenario(
        "healthy_sweep", "healthy 2-layer MLP (256 wide) on the digits, LR sweep", 100 if quick else 300, lrs,
        [64, 256, 256, 10], 1.0, seed_factor=4,
    )


def float16_scenario(quick: bool) -> Scenario:
    return _digits_mlp_scenario(
        "float16", "float16 compute, static loss scale 2¹⁶", 100 if quick else 300, (1e-3,), [64] + [64] * 8 + [10],
        1.0, jnp.float16, half_precision=True, static_loss_scale=2.0**16,
    )


SCENARIOS = {
    "transformer": transformer_scenario,
    "rnn": rnn_scenario,
    "deep_mlp": deep_mlp_scenario,
    "corrupted": corrupted_scenario,
    "corrupted_fit": corrupted_fit_scenario,
    "rnn_corrupted": rnn_corrupted_scenario,
    "float16": float16_scenario,
    "healthy_sweep": healthy_sweep_scenario,
}

# ----------------------------------------------------------------------------- recipes


@dataclasses.dataclass(frozen=True, eq=False)
class Recipe:
    name: str
    build: Callable  # (schedule, b2, weight_decay) -> transform
    code: str  # how it is built, for the table's notes
    oracle: bool = False  # skip the known-corrupted batches
    loss_scale: bool = False  # multiply the loss by gf.loss_scale(state) (dynamic_loss_scale)
    healthy: bool = False  # start from the scenario's healthy_init (the reference without the failure mode)


def schedule(peak, warmup: int, steps: int) -> Callable:
    """optax's warmup-cosine schedule (0 → peak over ``warmup`` steps, cosine to peak/10 at ``steps``).

    Built at peak 1 and multiplied by ``peak``, so the peak can be a traced value
    (one compiled step serves every learning rate of a sweep).
    """
    unit = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, steps, 0.1)
    return lambda count: peak * unit(count)


def _adamw(schedule, b2, wd):
    return optax.adamw(schedule, b1=0.9, b2=b2, eps=1e-8, weight_decay=wd)


def standard(schedule, b2, wd):
    return optax.chain(optax.clip_by_global_norm(1.0), _adamw(schedule, b2, wd))


def _protect(**kwargs) -> Callable:
    return lambda s, b2, wd: gf.protect(standard(s, b2, wd), **kwargs)


def recipes_for(scenario: Scenario, candidates: bool, blocks: bool, references: bool = True) -> list[Recipe]:
    """The recipes run on ``scenario``: the standard recipe first (the tables' reference); the healthy-start
    reference row only with ``references``."""
    std = "optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched))"
    out = [
        Recipe("standard (optax)", standard, std),
        Recipe("protect(standard)", _protect(), f"gf.protect({std})"),
    ]
    if candidates:
        out.append(Recipe("protect(standard, max_update_ratio=None)", _protect(max_update_ratio=None),
                          f"gf.protect({std}, max_update_ratio=None) (skipping only: without the relative update clip)"))
        out.append(Recipe("protect(standard, hold_update_cut=False)", _protect(hold_update_cut=False),
                          f"gf.protect({std}, hold_update_cut=False) (the update clip cuts each step on its own)"))
        out.append(Recipe("protect(standard, max_spike_rate=None)", _protect(max_spike_rate=None),
                          f"gf.protect({std}, max_spike_rate=None) (every spike skipped, however common)"))
    if blocks:
        out += [
            Recipe(
                "stable_adamw",
                lambda s, b2, wd: gf.stable_adamw(s, b1=0.9, b2=b2, eps=1e-8, weight_decay=wd),
                "gf.stable_adamw(sched, b1, b2, eps=1e-8, weight_decay) (its update clipping replaces the gradient clip)",
            ),
            Recipe(
                "standard + clip_update_norm",
                lambda s, b2, wd: optax.chain(standard(s, b2, wd), gf.clip_update_norm()),
                f"optax.chain({std}, gf.clip_update_norm())",
            ),
            Recipe(
                "standard + clip_relative_update",
                lambda s, b2, wd: optax.chain(standard(s, b2, wd), gf.clip_relative_update()),
                f"optax.chain({std}, gf.clip_relative_update())",
            ),
            Recipe("spam", lambda s, b2, wd: gf.spam(s, b2=b2, weight_decay=wd), "gf.spam(sched)"),
            Recipe(
                "adam_atan2",
                lambda s, b2, wd: gf.adam_atan2(s, b1=0.9, b2=b2, weight_decay=wd),
                "gf.adam_atan2(sched, b1, b2, weight_decay) (bounded steps; no gradient clip)",
            ),
        ]
    if scenario.half_precision:
        out.append(Recipe(
            "dynamic_loss_scale(standard)",
            lambda s, b2, wd: gf.dynamic_loss_scale(standard(s, b2, wd)),
            f"gf.dynamic_loss_scale({std}); the loss is multiplied by gf.loss_scale(state)",
            loss_scale=True,
        ))
    if scenario.corrupt is not None:
        out.append(Recipe("oracle (skip corrupted)", standard, "the standard recipe; known-corrupted steps skipped",
                          oracle=True))
    if references and scenario.healthy_init is not None:
        out.append(Recipe(f"reference: standard, {scenario.healthy}", standard,
                          "the standard recipe on the same model started without the failure mode "
                          "(what the failure mode costs the standard recipe)", healthy=True))
    return out


# ----------------------------------------------------------------------------- training


def _tree_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_chunk(scenario: Scenario, recipe: Recipe, chunk: int) -> Callable:
    """A compiled function running ``chunk`` steps of every (seed, lr) run side by side."""
    steps, warmup = scenario.steps, max(1, scenario.steps // 10)

    def build(lr):
        sched = schedule(lr, warmup, steps)
        return recipe.build(sched, scenario.b2, scenario.weight_decay)

    def run(params, state, bad, start, lrs, keys, data):
        def per_run(params, state, bad, lr, key):
            tx = build(lr)

            def step(carry, t):
                params, state, bad = carry
                kb, kc = jax.random.split(jax.random.fold_in(key, t))
                x, y = scenario.sample(data, kb, t)
                corrupted = jnp.zeros((), bool)
                if scenario.corrupt is not None:
                    corrupted, factor = scenario.corrupt(kc, t)
                    y = jnp.where(corrupted, y * factor, y)

                if recipe.loss_scale:  # the transform scales the loss, unscales the gradients and backs off
                    scale = gf.loss_scale(state).astype(jnp.float32)
                else:
                    scale = jnp.float32(scenario.static_loss_scale or 1.0)

                def loss_fn(p):
                    loss = scenario.loss(p, (x, y))
                    return loss * scale, loss

                (_, loss), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
                if scenario.static_loss_scale and not recipe.loss_scale:
                    grads = jax.tree.map(lambda g: g / scale, grads)
                updates, new_state = tx.update(grads, state, params, value=loss)
                new_params = optax.apply_updates(params, updates)
                if recipe.oracle:
                    keep = ~corrupted
                    new_params = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_params, params)
                    new_state = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_state, state)
                ok = jnp.isfinite(loss) & _tree_finite(grads)
                return (new_params, new_state, bad + (~ok).astype(jnp.int32)), loss

            (params, state, bad), losses = jax.lax.scan(step, (params, state, bad), start + jnp.arange(chunk))
            held_out = scenario.evaluate(params, data)
            skips = [v for k, v in gf.stats(state).items() if k.endswith("num_skipped")]
            skipped = sum(skips) if skips else jnp.zeros((), jnp.int32)
            return params, state, bad, losses, held_out, _tree_finite(params), skipped

        return jax.vmap(per_run)(params, state, bad, lrs, keys)

    return jax.jit(run, donate_argnums=(0, 1))


def init_runs(scenario: Scenario, recipe: Recipe, lrs: jax.Array, keys: jax.Array):
    steps, warmup = scenario.steps, max(1, scenario.steps // 10)

    init = scenario.healthy_init if recipe.healthy else scenario.init

    def one(lr, key):
        params = init(jax.random.fold_in(key, 10_000))
        sched = schedule(lr, warmup, steps)
        return params, recipe.build(sched, scenario.b2, scenario.weight_decay).init(params)

    params, state = jax.jit(jax.vmap(one))(lrs, keys)
    return params, state


@dataclasses.dataclass
class RecipeResult:
    name: str
    code: str
    lrs: list[float]  # per run
    seeds: list[int]  # per run
    final: list[float]  # per run, capped
    raw_final: list[float]  # per run, as measured (may be inf/nan)
    curve_steps: list[int]
    curves: list[list[float]]  # per run, held-out loss after each chunk (capped)
    train_loss: list[list[float]]  # per run, per step
    nonfinite_steps: int
    nonfinite_runs: int
    skipped_steps: int
    seconds: float


def run_recipe(scenario: Scenario, recipe: Recipe, seeds: list[int], chunks: int, progress: bool) -> RecipeResult:
    from tqdm.auto import tqdm

    pairs = [(lr, s) for lr in scenario.lrs for s in seeds]
    lrs = jnp.asarray([p[0] for p in pairs], jnp.float32)
    keys = jnp.stack([jax.random.PRNGKey(p[1]) for p in pairs])
    chunk = scenario.steps // chunks
    t0 = time.perf_counter()
    params, state = init_runs(scenario, recipe, lrs, keys)
    bad = jnp.zeros(len(pairs), jnp.int32)
    runner = make_chunk(scenario, recipe, chunk)
    curves, train_loss, steps_done = [], [], []
    with tqdm(total=scenario.steps, desc=f"{scenario.name}: {recipe.name}", disable=not progress, leave=False) as bar:
        for c in range(chunks):
            params, state, bad, losses, held_out, finite, skipped = runner(
                params, state, bad, jnp.int32(c * chunk), lrs, keys, scenario.data
            )
            held = np.asarray(held_out, np.float64)
            held = np.where(np.isfinite(held) & np.asarray(finite), held, np.inf)
            curves.append(np.minimum(held, scenario.cap))
            train_loss.append(np.asarray(losses, np.float64))
            steps_done.append((c + 1) * chunk)
            bar.update(chunk)
    seconds = time.perf_counter() - t0
    raw = held
    final = np.minimum(np.where(np.isfinite(raw), raw, np.inf), scenario.cap)
    return RecipeResult(
        name=recipe.name,
        code=recipe.code,
        lrs=[p[0] for p in pairs],
        seeds=[p[1] for p in pairs],
        final=final.tolist(),
        raw_final=[float(v) for v in raw],
        curve_steps=steps_done,
        curves=np.stack(curves, 1).tolist(),
        train_loss=np.concatenate(train_loss, 1).tolist(),
        nonfinite_steps=int(np.sum(np.asarray(bad))),
        nonfinite_runs=int(np.sum(~np.asarray(finite) | ~np.isfinite(raw))),
        skipped_steps=int(np.sum(np.asarray(skipped))),
        seconds=seconds,
    )


# ----------------------------------------------------------------------------- reporting


def _by_lr(r: RecipeResult, lr: float) -> np.ndarray:
    return np.asarray([f for f, rate in zip(r.final, r.lrs) if rate == lr])


def lr_sensitivity(r: RecipeResult, lrs: tuple[float, ...]) -> float:
    """Wortsman et al. 2023: mean over rates of (median final loss at the rate − the best rate's)."""
    med = np.asarray([np.median(_by_lr(r, lr)) for lr in lrs])
    return float(np.mean(med - med.min()))


def fmt(x: float) -> str:
    """Four decimals, or three significant digits below 0.01."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if abs(x) < 0.01 else f"{x:.4f}"


def scenario_table(scenario: Scenario, results: list[RecipeResult]) -> str:
    base = results[0]
    n_seeds = len(set(base.seeds))
    lines = [f"### {scenario.name}: {scenario.title} ({scenario.steps} steps, {n_seeds} seeds, cap {scenario.cap:.3f})", ""]
    if len(scenario.lrs) > 1:
        head = "| recipe | " + " | ".join(f"lr {lr:g}" for lr in scenario.lrs) + " | LR sensitivity | × standard | worst rate vs standard | non-finite steps | skipped steps | runs ending non-finite |"
        lines += [head, "|" + "---|" * (len(scenario.lrs) + 7)]
        base_sens = lr_sensitivity(base, scenario.lrs)
        for r in results:
            meds = [float(np.median(_by_lr(r, lr))) for lr in scenario.lrs]
            base_meds = [float(np.median(_by_lr(base, lr))) for lr in scenario.lrs]
            worst = max(m / b - 1 for m, b in zip(meds, base_meds))
            sens = lr_sensitivity(r, scenario.lrs)
            lines.append(
                f"| {r.name} | " + " | ".join(fmt(m) for m in meds)
                + f" | {sens:.4f} | {sens / base_sens if base_sens > 0 else math.nan:.2f} | {100 * worst:+.2f}% "
                f"| {r.nonfinite_steps} | {r.skipped_steps} | {r.nonfinite_runs} |"
            )
    else:
        lines += [
            "| recipe | held-out loss, median [min–max] | × standard | non-finite steps | skipped steps | runs ending non-finite | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        b = float(np.median(base.final))
        for r in results:
            f = np.asarray(r.final)
            m = float(np.median(f))
            lines.append(
                f"| {r.name} | {fmt(m)} [{fmt(float(f.min()))}–{fmt(float(f.max()))}] | {m / b:.2f} "
                f"| {r.nonfinite_steps} | {r.skipped_steps} | {r.nonfinite_runs} | {r.seconds:.0f} |"
            )
    return "\n".join(lines)


def plot(all_results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(all_results)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, (name, (scenario, results)) in zip(axes.flat, all_results.items()):
        for r in results:
            style = "--" if r.name.startswith("standard") else ("-" if r.name.startswith("protect") else ":")
            if len(scenario.lrs) > 1:
                meds = [np.median(_by_lr(r, lr)) for lr in scenario.lrs]
                ax.plot(scenario.lrs, meds, style, marker="o", label=r.name)
                ax.set_xscale("log")
                ax.set_xlabel("peak learning rate")
            else:
                curves = np.asarray(r.curves)
                ax.plot(r.curve_steps, np.median(curves, 0), style, label=r.name)
                ax.set_xlabel("step")
        ax.set_title(textwrap.fill(f"{name}: {scenario.title}", 60), fontsize=8)
        ax.set_ylabel("held-out loss (median over seeds)")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rates; standard, protect and oracle only")
    parser.add_argument("--seeds", type=int, default=8, help="seeds per scenario (default 8)")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="run only these (repeatable)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "stability"),
                        help="output prefix: writes <out>.md and <out>.json")
    parser.add_argument("--png", default=None, help="loss-curve figure (default docs/stability.png)")
    parser.add_argument("--no-candidates", action="store_true", help="skip the ablation of protect (--quick skips it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="combine the .json outputs of earlier runs into one table and figure (no training)")
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    png = args.png or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "stability.png")
    if args.merge:
        merge(args.merge, args.out, png)
        return {}
    t0 = time.perf_counter()
    all_results, tables, dump = {}, [], {}
    for name in names:
        scenario = SCENARIOS[name](args.quick)
        seeds = list(range(args.seeds * (1 if args.quick else scenario.seed_factor)))  # --quick stays under 2 min
        results = [
            run_recipe(scenario, r, seeds, 2 if args.quick else 10, not args.no_progress)
            for r in recipes_for(scenario, not (args.quick or args.no_candidates), not args.quick, not args.quick)
        ]
        all_results[name] = (scenario, results)
        table = scenario_table(scenario, results)
        print(table + "\n", flush=True)
        tables.append(table)
        dump[name] = {"title": scenario.title, "steps": scenario.steps, "lrs": list(scenario.lrs), "cap": scenario.cap,
                      "results": [dataclasses.asdict(r) | {"train_loss": None} for r in results]}
    wall = time.perf_counter() - t0
    command = "python benchmarks/stability.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    write_outputs(all_results, tables, [(command, wall)], args.quick, args.seeds, args.out, png, dump)
    return {"wall_seconds": wall, "results": all_results}


def write_outputs(all_results, tables, runs, quick, n_seeds, out, png, dump) -> None:
    """<out>.md (the tables, with the commands and wall times), <out>.json and the figure."""
    codes: dict[str, str] = {}
    for _, results in all_results.values():
        for r in results:
            codes.setdefault(r.name, r.code)
    notes = ["", "Recipes:", ""] + [f"- {name}: `{code}`" for name, code in codes.items()]
    cmds = "; ".join(f"`{c}` ({w / 60:.1f} min)" for c, w in runs)
    header = [
        "# Stability benchmark", "",
        f"{cmds}: {n_seeds} seeds per scenario unless its title says more, {os.cpu_count()} CPU cores (shared with other work), jax {jax.__version__}, "
        f"optax {optax.__version__}. Final held-out loss; non-finite or worse-than-trivial runs count at the "
        "scenario's cap. Non-finite steps: steps with a NaN/inf loss or gradient, summed over runs; skipped "
        "steps: steps a guard skipped, summed over runs.", "",
    ]
    text = "\n".join(header) + "\n\n".join(tables) + "\n" + "\n".join(notes) + "\n"
    with open(out + ".md", "w") as f:
        f.write(text)
    with open(out + ".json", "w") as f:
        json.dump({"runs": runs, "quick": quick, "scenarios": dump}, f)
    plot(all_results, png)
    print(f"wrote {out}.md, {out}.json and {png}")


def merge(paths: list[str], out: str, png: str) -> None:
    """Combine the JSON outputs of several runs (say, one per scenario) into one table and figure."""
    all_results, runs, dump, quick = {}, [], {}, False
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if "runs" in data:
            runs += [tuple(r) for r in data["runs"]]
        else:  # written before the command was recorded: rebuild it from the scenarios it holds
            flags = "".join(f" --scenario {n}" for n in data["scenarios"])
            runs.append((f"python benchmarks/stability.py{flags}", data["wall_seconds"]))
        quick = quick or data["quick"]
        for name, d in data["scenarios"].items():
            scenario = argparse.Namespace(name=name, title=d["title"], steps=d["steps"], lrs=tuple(d["lrs"]), cap=d["cap"])
            all_results[name] = (scenario, [RecipeResult(**r) for r in d["results"]])
            dump[name] = d
    order = [n for n in SCENARIOS if n in all_results]
    all_results = {n: all_results[n] for n in order}
    tables = [scenario_table(*all_results[n]) for n in order]
    seeds = min(len(set(results[0].seeds)) for _, results in all_results.values())  # the header's count
    print("\n\n".join(tables))
    write_outputs(all_results, tables, runs, quick, seeds, out, png, dump)


if __name__ == "__main__":
    main()
