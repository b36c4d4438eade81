"""One list of every optimizer and clipper under test, built with usable arguments.

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
}

CLIPPERS: dict = {}
