"""Optimizers: each one a :func:`~gradflow.chain` of the building blocks.

Every optimizer works under :func:`~gradflow.inject_hyperparams` and gives
the same bits as when built directly: whether a block is in the chain (a
momentum buffer, a learning-rate decay) is decided only by Python numbers;
an injected (array) value keeps the block, which then works for any value,
0 included, as ``sgd`` keeps its momentum buffer.

The PyTorch parities below are for real parameters. For complex ones the
second moments hold |g|² = g·ḡ per element, as optax's do; ``torch.optim``
runs on ``view_as_real(p)``, a second moment for the real and one for the
imaginary part, and so gives other numbers (``sgd``, with no second moment,
agrees).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gradflow import hparams
from gradflow.adaptive import (
    check_adam_args,
    scale_by_adam,
    scale_by_amsgrad,
    scale_by_rms,
    scale_by_rss,
    scale_by_trust_ratio,
)
from gradflow.base import GradientTransformation, chain, identity
from gradflow.scaling import (
    add_decayed_weights,
    check_learning_rate,
    check_momentum,
    decoupled,
    scale_by_learning_rate,
    trace,
)

__all__ = ["sgd", "adagrad", "rmsprop", "adam", "amsgrad", "adamw", "lars", "lamb"]


def sgd(
    learning_rate: hparams.ScalarOrSchedule,
    momentum: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
) -> GradientTransformation:
    """Stochastic gradient descent, with optional momentum (docs/equations.md, eqs. (8), (9)).

    The update::

      without momentum:  θ ← θ − α_t·g.
      with momentum μ:   b₁ = g₁, b_t = μ·b_{t−1} + (1 − d)·g_t;
                         θ ← θ − α_t·b_t, or θ ← θ − α_t·(g_t + μ·b_t) with Nesterov.

    Args:
      learning_rate: α ≥ 0, or a schedule ``step -> α_t``.
      momentum: μ in [0, 1]; 0 disables the buffer.
      nesterov: Nesterov momentum (needs μ > 0 and d = 0, as in PyTorch).
      dampening: PyTorch's dampening d in [0, 1]; ignored when μ = 0, as in PyTorch.

    Returns:
      ``chain(trace(μ, nesterov, d), scale_by_learning_rate(α))`` (no trace when μ = 0).

    Parity:
      docs/equations.md, eq. (8): ``sgd(α)``; eq. (9): ``sgd(α, momentum=0.9)``.
      ``torch.optim.SGD(lr, momentum, dampening, nesterov)``: the same arguments.
      ``optax.sgd(lr, momentum, nesterov)``: the same arguments (d = 0).

    References:
      Robbins & Monro, A Stochastic Approximation Method, 1951.
      Sutskever et al., On the importance of initialization and momentum in deep learning, 2013.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.sgd(0.1, momentum=0.9)
      >>> params, grads = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
      >>> state = tx.init(params)
      >>> updates, state = tx.update(grads, state, params)
      >>> updates, state = tx.update(grads, state, params)   # b = 0.9·g + g
      >>> [round(float(u), 4) for u in updates]              # −0.1·1.9·g
      [-0.095, 0.19]
    """
    check_learning_rate("sgd", learning_rate)
    check_momentum("sgd", momentum, nesterov, dampening)
    # Numbers decide the structure; arrays (injected hyperparameters) never do.
    # With μ = 0 PyTorch keeps no buffer and ignores d; so does sgd.
    if hparams.static_number(momentum) == 0:
        return chain(scale_by_learning_rate(learning_rate))
    return chain(trace(momentum, nesterov, dampening), scale_by_learning_rate(learning_rate))


def _check_nesterov(fn: str, nesterov: bool, momentum: Any) -> None:
    # An injected (array) momentum was checked as a number when the optimizer was built.
    mu = hparams.static_number(momentum)
    if nesterov and mu is not None and not mu > 0:
        raise ValueError(f"{fn}: nesterov=True needs momentum > 0, got momentum={momentum!r}")


def _adam_direction(
    fn: str, block: Any, b1: Any, b2: Any, eps: Any, eps_root: Any, mu_dtype: Any, nu_dtype: Any, **flags: Any
) -> GradientTransformation:
    """``block(b1, b2, eps, eps_root=…, mu_dtype=…, nu_dtype=…, **flags)`` (``scale_by_adam`` or
    ``scale_by_amsgrad``), its arguments checked first under the optimizer ``fn``'s name."""
    check_adam_args(fn, b1, b2, eps, eps_root, **flags)
    hparams.check_dtypes(fn, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    return block(b1, b2, eps, eps_root=eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype, **flags)


def adagrad(
    learning_rate: hparams.ScalarOrSchedule,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    eps_in_sqrt: bool = False,
    lr_decay: float = 0.0,
) -> GradientTransformation:
    """AdaGrad: each coordinate's step shrinks with the root of its summed squared gradients.

    G ← G + g²  (G₀ = ``initial_accumulator_value``);
    θ ← θ − α_t·g/(√G + ε)   (default: docs/equations.md, eq. (10); PyTorch),
    θ ← θ − α_t·g/√(G + ε)   (``eps_in_sqrt=True``: docs/equations.md, eq. (11); optax);
    α_t = α/(1 + t·lr_decay), t = updates done before this one (PyTorch's ``lr_decay``,
    docs/equations.md, eq. (13)). A schedule for α is evaluated at t and then decayed.

    Args:
      learning_rate: α ≥ 0, or a schedule ``t -> α_t``.
      initial_accumulator_value, eps, eps_in_sqrt: as in :func:`~gradflow.adaptive.scale_by_rss`.
      lr_decay: PyTorch's lr_decay ≥ 0.

    Returns:
      ``chain(scale_by_rss(G₀, ε, eps_in_sqrt), scale_by_learning_rate(α_t))``.

    Parity:
      docs/equations.md, eq. (10): ``adagrad(α, eps=ε)``; eq. (11): ``adagrad(α, eps=ε, eps_in_sqrt=True)``;
      eq. (13), ``Adagrad(lr=0.01, lr_decay=0.01)``: ``adagrad(0.01, lr_decay=0.01)``.
      ``torch.optim.Adagrad(lr, lr_decay, initial_accumulator_value, eps)``: the same
      arguments (without weight_decay). ``optax.adagrad(lr, initial_accumulator_value=a, eps=e)``
      (defaults a = 0.1, e = 1e-7): ``adagrad(lr, initial_accumulator_value=a, eps=e,
      eps_in_sqrt=True)``.

    References:
      Duchi, Hazan & Singer, Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization, JMLR 2011.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.adagrad(0.1)
      >>> params, grads = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
      >>> state = tx.init(params)
      >>> updates, state = tx.update(grads, state, params)
      >>> updates, state = tx.update(grads, state, params)   # G = 2·g², so u = −0.1·g/(√2·|g|)
      >>> [round(float(u), 4) for u in updates]
      [-0.0707, 0.0707]
    """
    fn = "adagrad"
    check_learning_rate(fn, learning_rate)
    hparams.check_non_negative(fn, "initial_accumulator_value", initial_accumulator_value)
    hparams.check_non_negative(fn, "eps", eps)
    hparams.check_non_negative(fn, "lr_decay", lr_decay)
    hparams.check_flags(fn, eps_in_sqrt=eps_in_sqrt)
    lr = learning_rate
    if hparams.static_number(lr_decay) != 0:  # a Python 0 drops the decay; an array keeps it

        def lr(t):
            decay = jnp.asarray(lr_decay)  # formed in the decay's dtype, whether number or injected array
            return hparams.value_at(learning_rate, t) / (1 + t.astype(decay.dtype) * decay)

    return chain(
        scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt=eps_in_sqrt),
        scale_by_learning_rate(lr),
    )


def rmsprop(
    learning_rate: hparams.ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    *,
    eps_in_sqrt: bool = False,
    centered: bool = False,
    momentum: float = 0.0,
    nesterov: bool = False,
    initial_scale: float = 0.0,
    bias_correction: bool = False,
) -> GradientTransformation:
    """RMSProp: divide by the root of a moving average of squared gradients.

    v ← β·v + (1 − β)·g²  (v₀ = ``initial_scale``);
    d = g/(√v + ε)  (default: docs/equations.md, eq. (14); PyTorch),
    d = g/√(v + ε)  (``eps_in_sqrt=True``: docs/equations.md, eq. (15); optax's default);
    centered: v − m² under the root, m ← β·m + (1 − β)·g.
    Without momentum θ ← θ − α_t·d. With momentum μ (PyTorch's form):
    b ← μ·b + d, θ ← θ − α_t·b (or θ ← θ − α_t·(d + μ·b) with Nesterov).

    Args:
      learning_rate: α ≥ 0, or a schedule.
      decay, eps, eps_in_sqrt, centered, initial_scale, bias_correction: as in :func:`~gradflow.adaptive.scale_by_rms`.
      momentum: μ in [0, 1]; 0 disables the buffer.
      nesterov: Nesterov look-ahead (needs μ > 0).

    Returns:
      ``chain(scale_by_rms(...), trace(μ, nesterov) or identity(), scale_by_learning_rate(α))``.

    Parity:
      docs/equations.md, eq. (14): ``rmsprop(α, decay=β, eps=ε)``; eq. (15):
      ``rmsprop(α, decay=β, eps=ε, eps_in_sqrt=True)``.
      ``torch.optim.RMSprop(lr, alpha, eps, momentum=μ, centered=c)``:
      ``rmsprop(lr, decay=alpha, eps=eps, momentum=μ, centered=c)``.
      ``optax.rmsprop(lr, decay, eps, initial_scale, eps_in_sqrt, centered, momentum, nesterov,
      bias_correction)``: the same arguments, with ``eps_in_sqrt=True`` for optax's default
      (optax applies α before the momentum buffer, so with momentum and a learning-rate
      schedule the two differ; with a constant α they agree).

    References:
      Tieleman & Hinton, Lecture 6.5 — RMSProp, COURSERA: Neural Networks for Machine Learning, 2012.
      Graves, Generating Sequences With Recurrent Neural Networks, 2013, arXiv:1308.0850.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.rmsprop(0.01, decay=0.9)
      >>> params, grads = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
      >>> updates, state = tx.update(grads, tx.init(params), params)   # v = 0.1·g²
      >>> [round(float(u), 4) for u in updates]                        # −0.01·g/(√0.1·|g|)
      [-0.0316, 0.0316]
    """
    fn = "rmsprop"
    check_learning_rate(fn, learning_rate)
    hparams.check_decay(fn, "decay", decay)
    hparams.check_non_negative(fn, "eps", eps)
    hparams.check_range(fn, "momentum", momentum, 0.0, 1.0)
    hparams.check_non_negative(fn, "initial_scale", initial_scale)
    hparams.check_flags(
        fn, eps_in_sqrt=eps_in_sqrt, centered=centered, nesterov=nesterov, bias_correction=bias_correction
    )
    _check_nesterov(fn, nesterov, momentum)
    rms = scale_by_rms(
        decay, eps, eps_in_sqrt=eps_in_sqrt, centered=centered, initial_scale=initial_scale, bias_correction=bias_correction
    )
    # A Python 0 drops the buffer (an array keeps it); identity() keeps the state's three entries.
    buffer = trace(momentum, nesterov) if hparams.static_number(momentum) != 0 else identity()
    return chain(rms, buffer, scale_by_learning_rate(learning_rate))


def adam(
    learning_rate: hparams.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    eps_root: float = 0.0,
    bias_correction: bool = True,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Adam: moving averages of g and g², with bias correction.

    θ ← θ − α_t·m̂/(√(v̂ + ε_root) + ε), with the moments m̂, v̂ of :func:`~gradflow.adaptive.scale_by_adam`;
    ``bias_correction=False`` uses m and v directly (docs/equations.md, eq. (16)).

    Args:
      learning_rate: α ≥ 0, or a schedule.
      b1, b2, eps, eps_root, bias_correction, nesterov, mu_dtype, nu_dtype: as in
        :func:`~gradflow.adaptive.scale_by_adam`.

    Returns:
      ``chain(scale_by_adam(...), scale_by_learning_rate(α))``.

    Parity:
      Kingma & Ba (docs/equations.md, eq. (17)): ``adam(α)``; eq. (16):
      ``adam(α, b1, b2, eps, bias_correction=False)``.
      ``torch.optim.Adam(lr, betas=(b1, b2), eps)``: ``adam(lr, b1, b2, eps)``.
      ``optax.adam(lr, b1, b2, eps, eps_root, mu_dtype, nesterov=...)``: the same arguments.

    References:
      Kingma & Ba, Adam: A Method for Stochastic Optimization, 2014, arXiv:1412.6980.
      Dozat, Incorporating Nesterov Momentum into Adam, ICLR workshop 2016.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.adam(0.1)
      >>> params, grads = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> [round(float(u), 4) for u in updates]   # the first step is −α·sign(g): m̂ = g, v̂ = g²
      [-0.1, 0.1]
    """
    check_learning_rate("adam", learning_rate)
    direction = _adam_direction(
        "adam", scale_by_adam, b1, b2, eps, eps_root, mu_dtype, nu_dtype, bias_correction=bias_correction, nesterov=nesterov
    )
    return chain(direction, scale_by_learning_rate(learning_rate))


def amsgrad(
    learning_rate: hparams.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    eps_root: float = 0.0,
    bias_correction: bool = True,
    max_of_debiased: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """AMSGrad: Adam whose second moment never decreases.

    θ ← θ − α_t·u, with u the direction of :func:`~gradflow.adaptive.scale_by_amsgrad`, where
    v_max ← max(v_max, v):  u = m̂ / (√(v_max/(1 − β₂ᵏ) + ε_root) + ε)  (default, PyTorch).

    Args:
      learning_rate: α ≥ 0, or a schedule.
      b1, b2, eps, eps_root, bias_correction, max_of_debiased, mu_dtype, nu_dtype: as in
        :func:`~gradflow.adaptive.scale_by_amsgrad`.

    Returns:
      ``chain(scale_by_amsgrad(...), scale_by_learning_rate(α))``.

    Parity:
      ``torch.optim.Adam(lr, betas, eps, amsgrad=True)``: ``amsgrad(lr, b1, b2, eps)``.
      ``optax.amsgrad(lr, b1, b2, eps)``: ``amsgrad(lr, b1, b2, eps, max_of_debiased=True)``;
      ``optax.amsgrad(..., bias_correction_mu=False, bias_correction_nu=False)``:
      ``amsgrad(..., bias_correction=False)``.

    References:
      Reddi, Kale & Kumar, On the Convergence of Adam and Beyond, ICLR 2018, arXiv:1904.09237.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> params = jnp.array([1.0])
      >>> def last_update(tx, grads):
      ...     state = tx.init(params)
      ...     for g in grads:
      ...         u, state = tx.update(jnp.array([g]), state, params)
      ...     return round(float(u[0]), 4)
      >>> # g = 1 then 0: AMSGrad divides by √ of the larger, older v; Adam by the decayed one
      >>> last_update(gf.amsgrad(1.0), [1.0, 0.0]), last_update(gf.adam(1.0), [1.0, 0.0])
      (-0.6697, -0.6701)
    """
    check_learning_rate("amsgrad", learning_rate)
    direction = _adam_direction(
        "amsgrad", scale_by_amsgrad, b1, b2, eps, eps_root, mu_dtype, nu_dtype,
        bias_correction=bias_correction, max_of_debiased=max_of_debiased,
    )
    return chain(direction, scale_by_learning_rate(learning_rate))


def adamw(
    learning_rate: hparams.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    weight_decay: hparams.ScalarOrSchedule = 1e-2,
    mask: Any = None,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """AdamW: Adam with decoupled weight decay, scaled by the learning rate.

    θ ← θ − α_t·(m̂/(√(v̂ + ε_root) + ε) + λ_t·θ), with the m̂ and v̂ of :func:`~gradflow.adaptive.scale_by_adam`.

    Args:
      learning_rate: α ≥ 0, or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nu_dtype: as in :func:`~gradflow.adaptive.scale_by_adam`.
      weight_decay: λ ≥ 0, or a schedule.
      mask: tree of bools like the params (or ``params -> tree``); ``False`` leaves are not decayed.

    Returns:
      ``chain(scale_by_adam(...), add_decayed_weights(λ, mask), scale_by_learning_rate(α))``.

    Parity:
      ``torch.optim.AdamW(lr, betas, eps, weight_decay)`` (θ ← θ(1 − α·λ) − α·Adam):
      ``adamw(lr, b1, b2, eps, weight_decay=weight_decay)``. ``optax.adamw(lr, b1, b2, eps,
      weight_decay=λ, mask=...)``: the same arguments (optax's default λ is 1e-4, PyTorch's
      and gradflow's 1e-2).

    References:
      Loshchilov & Hutter, Decoupled Weight Decay Regularization, ICLR 2019, arXiv:1711.05101.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.adamw(0.1, weight_decay=0.5)
      >>> params = jnp.array([1.0, 2.0])
      >>> updates, state = tx.update(jnp.zeros(2), tx.init(params), params)
      >>> [round(float(u), 4) for u in updates]   # zero gradient: only the decay, −α·λ·θ
      [-0.05, -0.1]
    """
    direction = _adam_direction("adamw", scale_by_adam, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    return decoupled("adamw", direction, learning_rate, weight_decay, mask)


def lars(
    learning_rate: hparams.ScalarOrSchedule,
    weight_decay: hparams.ScalarOrSchedule = 0.0,
    trust_coefficient: float = 1e-3,
    eps: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    *,
    decay_inside_norm: bool = False,
    axis_name: Any = None,
) -> GradientTransformation:
    """LARS: layer-wise adaptive rate scaling, with momentum.

    Per leaf (layer) θ with gradient g::

      local rate r = η·‖θ‖ / (‖g‖ + λ·‖θ‖ + ε)  (r = 1 where ‖θ‖ = 0 or the denominator is 0);
      b ← μ·b + α_t·r·(g + λ·θ);  θ ← θ − b   (Nesterov: θ ← θ − (α_t·r·(g + λθ) + μ·b)).

    ``decay_inside_norm=True`` uses ‖g + λθ‖ + ε as the denominator instead (optax.lars).

    Args:
      learning_rate: the global rate α ≥ 0 (You et al.'s γ), or a schedule.
      weight_decay: λ ≥ 0, or a schedule.
      trust_coefficient, eps, axis_name: as in :func:`~gradflow.adaptive.scale_by_trust_ratio`.
      momentum: μ in [0, 1]; 0 disables the buffer.
      nesterov: Nesterov look-ahead (needs μ > 0).
      decay_inside_norm: measure the decayed gradient's norm, as optax does.

    Returns:
      ``chain(scale_by_trust_ratio(η, ε, λ), scale_by_learning_rate(α), [trace(μ, nesterov)])``
      (with ``decay_inside_norm``: ``add_decayed_weights(λ)`` then ``scale_by_trust_ratio(η, ε)``).

    Parity:
      You et al. 2017, Algorithm 1: ``lars(γ, weight_decay=β, trust_coefficient=η, momentum=m)``.
      ``optax.lars(lr, weight_decay=λ, trust_coefficient=η, eps=ε, momentum=μ, nesterov=n)``:
      the same arguments when λ = 0; with λ > 0 add ``decay_inside_norm=True``.

    References:
      You, Gitman & Ginsburg, Large Batch Training of Convolutional Networks, 2017, arXiv:1708.03888.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.lars(0.1, trust_coefficient=0.1, momentum=0.0)
      >>> params, grads = jnp.array([3.0, 4.0]), jnp.array([0.6, 0.8])
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> [round(float(u), 4) for u in updates]   # local rate 0.1·‖θ‖/‖g‖ = 0.5, so u = −0.1·0.5·g
      [-0.03, -0.04]
    """
    fn = "lars"
    check_learning_rate(fn, learning_rate)
    hparams.check_non_negative(fn, "weight_decay", weight_decay, schedule=True)
    hparams.check_non_negative(fn, "trust_coefficient", trust_coefficient)
    hparams.check_non_negative(fn, "eps", eps)
    hparams.check_range(fn, "momentum", momentum, 0.0, 1.0)
    hparams.check_flags(fn, nesterov=nesterov, decay_inside_norm=decay_inside_norm)
    _check_nesterov(fn, nesterov, momentum)
    if decay_inside_norm:
        members = [
            add_decayed_weights(weight_decay),
            scale_by_trust_ratio(trust_coefficient, eps, axis_name=axis_name),
        ]
    else:
        members = [scale_by_trust_ratio(trust_coefficient, eps, weight_decay=weight_decay, axis_name=axis_name)]
    members.append(scale_by_learning_rate(learning_rate))
    if hparams.static_number(momentum) != 0:  # a Python 0 drops the buffer; an array keeps it
        members.append(trace(momentum, nesterov))
    return chain(*members)


def lamb(
    learning_rate: hparams.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    *,
    weight_decay: hparams.ScalarOrSchedule = 0.0,
    mask: Any = None,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    axis_name: Any = None,
) -> GradientTransformation:
    """LAMB: Adam's direction plus decoupled decay, rescaled per leaf by a trust ratio.

    d = m̂/(√(v̂ + ε_root) + ε) + λ_t·θ  (Adam's m̂, v̂);
    θ ← θ − α_t·(‖θ‖/‖d‖)·d per leaf (ratio 1 where ‖θ‖ = 0 or ‖d‖ = 0).

    Args:
      learning_rate, weight_decay, mask: as in :func:`adamw`.
      b1, b2, eps, eps_root, mu_dtype, nu_dtype: as in :func:`~gradflow.adaptive.scale_by_adam`.
      axis_name: as in :func:`~gradflow.adaptive.scale_by_trust_ratio`.

    Returns:
      ``chain(scale_by_adam(...), add_decayed_weights(λ, mask), scale_by_trust_ratio(),
      scale_by_learning_rate(α))``.

    Parity:
      ``optax.lamb(lr, b1, b2, eps, eps_root, weight_decay, mask)``: the same arguments.

    References:
      You et al., Large Batch Optimization for Deep Learning: Training BERT in 76 minutes, 2019,
      arXiv:1904.00962.

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.lamb(0.1)
      >>> params, grads = jnp.array([3.0, 4.0]), jnp.array([1.0, 1.0])
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> [round(float(u), 4) for u in updates]   # d ≈ sign(g) = (1, 1); u = −0.1·(‖θ‖/‖d‖)·d = −0.1·(5/√2)
      [-0.3536, -0.3536]
    """
    direction = _adam_direction("lamb", scale_by_adam, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    return decoupled("lamb", direction, learning_rate, weight_decay, mask, scale_by_trust_ratio(axis_name=axis_name))
