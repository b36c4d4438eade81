"""Optimizers: each one a :func:`~gradflow.chain` of the building blocks."""

from __future__ import annotations

from gradflow import hparams
from gradflow.base import GradientTransformation, chain
from gradflow.scaling import check_learning_rate, scale_by_learning_rate, trace


def sgd(
    learning_rate: hparams.ScalarOrSchedule,
    momentum: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
) -> GradientTransformation:
    """Stochastic gradient descent, with optional momentum (documents 001, 003, 004).

    Without momentum:  θ ← θ − α_t·g.
    With momentum μ:   b₁ = g₁, b_t = μ·b_{t−1} + (1 − d)·g_t;
                       θ ← θ − α_t·b_t, or θ ← θ − α_t·(g_t + μ·b_t) with Nesterov.

    Args:
      learning_rate: α ≥ 0, or a schedule ``step -> α_t``.
      momentum: μ in [0, 1]; 0 disables the buffer.
      nesterov: Nesterov momentum (needs μ > 0 and d = 0, as in PyTorch).
      dampening: PyTorch's dampening d in [0, 1].

    Returns:
      ``chain(trace(μ, nesterov, d), scale_by_learning_rate(α))`` (no trace when μ = d = 0).

    Parity:
      documents 001 §3.1 / 004 §3.2: ``sgd(α)``; document 003 §4: ``sgd(α, momentum=0.9)``.
      ``torch.optim.SGD(lr, momentum, dampening, nesterov)``: the same arguments.
      ``optax.sgd(lr, momentum, nesterov)``: the same arguments (d = 0).

    References:
      Robbins & Monro, A Stochastic Approximation Method, 1951.
      Sutskever et al., On the importance of initialization and momentum in deep learning, 2013.
    """
    check_learning_rate("sgd", learning_rate)
    hparams.check_range("sgd", "momentum", momentum, 0.0, 1.0)
    hparams.check_range("sgd", "dampening", dampening, 0.0, 1.0)
    # Numbers decide the structure; arrays (injected hyperparameters) never do.
    mu_num, d_num = hparams.static_number(momentum), hparams.static_number(dampening)
    if nesterov and ((mu_num is not None and mu_num <= 0) or (d_num is not None and d_num != 0)):
        raise ValueError(
            f"sgd: nesterov=True needs momentum > 0 and dampening == 0, "
            f"got momentum={momentum!r}, dampening={dampening!r}"
        )
    if mu_num == 0 and d_num == 0:
        return chain(scale_by_learning_rate(learning_rate))
    return chain(trace(momentum, nesterov, dampening), scale_by_learning_rate(learning_rate))
