"""One list of every optimizer, clipper and guard under test, built with usable arguments.

Tests that must hold "for every optimizer" (sharding, fuzzing, checkpoints)
parametrize over these.
"""

from __future__ import annotations

import gradflow as gf

OPTIMIZERS = {
    "sgd": lambda: gf.sgd(0.05),
    "sgd_momentum": lambda: gf.sgd(0.05, momentum=0.9),
    "sgd_nesterov": lambda: gf.sgd(0.05, momentum=0.9, nesterov=True),
    "sgd_dampening": lambda: gf.sgd(0.05, momentum=0.9, dampening=0.5),
    "adagrad": lambda: gf.adagrad(0.05, lr_decay=0.01, initial_accumulator_value=0.1),
    "rmsprop": lambda: gf.rmsprop(0.01),
    "rmsprop_centered_momentum": lambda: gf.rmsprop(0.01, centered=True, momentum=0.9),
    "adam": lambda: gf.adam(0.01),
    "amsgrad": lambda: gf.amsgrad(0.01),
    "adamw": lambda: gf.adamw(0.01, weight_decay=0.01),
    "lars": lambda: gf.lars(0.1, weight_decay=1e-4),
    "lamb": lambda: gf.lamb(0.01, weight_decay=0.01),
    "adam_warmup_cosine": lambda: gf.adam(gf.warmup_cosine_decay_schedule(0.0, 0.01, 2, 10)),
    "adam_atan2": lambda: gf.adam_atan2(0.01, weight_decay=0.01),
    "stable_adamw": lambda: gf.stable_adamw(0.01, weight_decay=0.01),
    "spam": lambda: gf.spam(0.01, threshold=100.0, reset_interval=3, warmup_steps=2, clip_start=1),
    "spam_adaptive": lambda: gf.spam(0.01, adaptive_clip=True, reset_interval=3, warmup_steps=2),
}

CLIPPERS = {
    "clip": lambda: gf.clip(1.0),
    "clip_by_norm": lambda: gf.clip_by_norm(5.0),
    "clip_by_global_norm": lambda: gf.clip_by_global_norm(5.0),
    "clip_by_block_rms": lambda: gf.clip_by_block_rms(1.0),
    "adaptive_grad_clip": lambda: gf.adaptive_grad_clip(0.1),
    "autoclip": lambda: gf.autoclip(),
    "zclip": lambda: gf.zclip(warmup_steps=2),
    "adagc": lambda: gf.adagc(),
    "clip_update_norm": lambda: gf.clip_update_norm(window=4, min_history=2),
}

GUARDS = {
    "apply_if_finite": lambda: gf.apply_if_finite(gf.adam(0.01), max_consecutive_errors=3),
    "skip_spikes": lambda: gf.skip_spikes(gf.adam(0.01), window=8, min_samples=2),
    "monitor": lambda: gf.monitor(gf.adam(0.01)),
    "dynamic_loss_scale": lambda: gf.dynamic_loss_scale(gf.adam(0.01), init_scale=4.0, growth_interval=2),
    # watch_loss=False: the generic tests do not all pass value=loss (test_protect covers loss watching)
    "protect": lambda: gf.protect(gf.adam(0.01), watch_loss=False, window=8, min_samples=2, clip_to_history=3.0),
}

SCHEDULES = {
    "constant": lambda: gf.constant_schedule(0.1),
    "polynomial": lambda: gf.polynomial_schedule(0.1, 0.001, 2.0, 100, 5),
    "linear": lambda: gf.linear_schedule(0.1, 0.0, 100),
    "exponential_decay": lambda: gf.exponential_decay(0.1, 10, 0.5, end_value=1e-4),
    "exponential_decay_staircase": lambda: gf.exponential_decay(0.1, 10, 0.9, staircase=True),
    "warmup_constant": lambda: gf.warmup_constant_schedule(0.0, 0.1, 10),
    "piecewise_constant": lambda: gf.piecewise_constant_schedule(0.1, {10: 0.5, 50: 0.1}),
    "piecewise_interpolate": lambda: gf.piecewise_interpolate_schedule("cosine", 0.1, {10: 0.5, 50: 0.1}),
    "cosine_decay": lambda: gf.cosine_decay_schedule(0.1, 100, alpha=0.01),
    "warmup_cosine_decay": lambda: gf.warmup_cosine_decay_schedule(0.0, 0.1, 10, 100),
    "warmup_exponential_decay": lambda: gf.warmup_exponential_decay_schedule(0.0, 0.1, 10, 20, 0.5),
    "join": lambda: gf.join_schedules([gf.linear_schedule(0.0, 0.1, 10), gf.cosine_decay_schedule(0.1, 90)], [10]),
    "warm_restarts": lambda: gf.warm_restarts_schedule(0.1, 10, cycle_mult=2.0, peak_mult=0.5, warmup_steps=2),
    "sgdr": lambda: gf.sgdr_schedule(
        [dict(init_value=0.0, peak_value=0.1, warmup_steps=2, decay_steps=10)] * 3
    ),
    "cosine_onecycle": lambda: gf.cosine_onecycle_schedule(100, 0.1),
    "linear_onecycle": lambda: gf.linear_onecycle_schedule(100, 0.1),
    "wsd": lambda: gf.wsd_schedule(0.1, 10, 50, 40),
    "inverse_sqrt": lambda: gf.inverse_sqrt_schedule(0.1, warmup_steps=10),
}
