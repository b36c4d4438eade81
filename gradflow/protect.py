"""``protect``: one wrapper that puts the defences the stability benchmark supports around any optimizer."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradflow import hparams, relative_update
from gradflow import tree as tree_lib
from gradflow.base import GradientTransformation, extra_args_filter
from gradflow.guards import check_sees_non_finite, check_window, step_unless_skipped
from gradflow.tree import robust_location_scale

__all__ = ["ProtectState", "protect"]

_RULES = ("either", "both")
_RATE_STEPS = 128  # the spike rate is an exponential average over about this many steps


class ProtectState(NamedTuple):
    """State of :func:`protect`."""
    stats_name = "protect"

    inner_state: Any  # the wrapped optimizer's state
    count: jnp.ndarray  # int32 scalar: updates seen
    loss: jnp.ndarray  # float scalar: the last loss (value=), 0 when the loss is not watched
    grad_norm: jnp.ndarray  # float scalar: ‖g‖ of the last incoming gradient, before any clipping
    loss_median: jnp.ndarray  # float scalar: median of the loss window the last loss was judged against
    loss_sigma: jnp.ndarray  # float scalar: 1.4826·MAD of that window
    grad_norm_median: jnp.ndarray  # float scalar: median of the gradient-norm window
    grad_norm_sigma: jnp.ndarray  # float scalar: 1.4826·MAD of that window
    skipped: jnp.ndarray  # bool scalar: whether the last step was skipped
    clipped: jnp.ndarray  # bool scalar: whether the last gradient was clipped against its history
    num_skipped: jnp.ndarray  # int32 scalar: steps skipped so far (for any reason)
    num_not_finite: jnp.ndarray  # int32 scalar: steps whose gradient norm or loss was NaN/inf
    num_loss_spikes: jnp.ndarray  # int32 scalar: steps whose loss was judged a spike
    num_grad_norm_spikes: jnp.ndarray  # int32 scalar: steps whose gradient norm was judged a spike
    num_clipped: jnp.ndarray  # int32 scalar: gradients clipped against their history so far
    num_consecutive_skips: jnp.ndarray  # int32 scalar: spike-skips since the last accepted step
    spike_rate: jnp.ndarray  # float scalar: exponential average (over ~128 steps) of the steps judged spikes
    num_recorded: jnp.ndarray  # int32 scalar: accepted steps recorded in the windows (past 2³¹−1 it cycles below it)
    loss_history: jnp.ndarray  # (window,) float: ring buffer of the last accepted losses
    grad_norm_history: jnp.ndarray  # (window,) float: ring buffer of the last accepted gradient norms
    update_clip: Any  # ClipRelativeUpdateState: the relative update clip's diagnostics (unchanged when it is off)


def _is_spike(v, med, sigma, n, threshold, margin, min_samples):
    """v − median > max(k·σ̂, ρ·|median|), judged once ``min_samples`` values are recorded."""
    bound = jnp.maximum(threshold * sigma, margin * jnp.abs(med))
    return (n >= min_samples) & (v - med > bound)


class _Verdict(NamedTuple):
    """One step as :func:`protect` judged it, and the window statistics it was judged against."""
    n: jnp.ndarray  # int32 scalar: values in the windows (at most ``window``)
    loss_median: jnp.ndarray  # float scalar: median of the loss window
    loss_sigma: jnp.ndarray  # float scalar: 1.4826·MAD of the loss window
    grad_norm_median: jnp.ndarray  # float scalar: median of the gradient-norm window
    grad_norm_sigma: jnp.ndarray  # float scalar: 1.4826·MAD of the gradient-norm window
    loss_spike: jnp.ndarray  # bool scalar: the (finite) loss spiked
    norm_spike: jnp.ndarray  # bool scalar: the (finite) gradient norm spiked
    judged_spike: jnp.ndarray  # bool scalar: a spike by the rule
    spike: jnp.ndarray  # bool scalar: skipped for spiking (a spike, unless max_spike_rate or max_consecutive_skips let it through)
    skipped: jnp.ndarray  # bool scalar: skipped for any reason
    accept: jnp.ndarray  # bool scalar: not skipped


def _judge(state, loss, norm, finite, *, size, need, threshold, margin, watch_loss, watch_grad_norm, both,
           max_spike_rate, max_consecutive_skips, skip_not_finite) -> _Verdict:
    """The spikes of ``loss`` and ``norm`` against the windows in ``state``, and whether the step is skipped."""
    n = jnp.minimum(state.num_recorded, size)
    n_safe = jnp.maximum(n, 1)
    loss_med, loss_sig = robust_location_scale(state.loss_history, n_safe)
    norm_med, norm_sig = robust_location_scale(state.grad_norm_history, n_safe)
    false = jnp.zeros((), jnp.bool_)
    loss_spike = _is_spike(loss, loss_med, loss_sig, n, threshold, margin, need) if watch_loss else false
    norm_spike = _is_spike(norm, norm_med, norm_sig, n, threshold, margin, need) if watch_grad_norm else false
    loss_spike, norm_spike = loss_spike & finite, norm_spike & finite
    judged_spike = spike = loss_spike & norm_spike if both else loss_spike | norm_spike
    if max_spike_rate is not None:  # spikes on more than this share of recent steps are the run's own scale
        spike = spike & (state.spike_rate <= max_spike_rate)
    if max_consecutive_skips is not None:
        spike = spike & (state.num_consecutive_skips < max_consecutive_skips)
    skipped = spike | (~finite if skip_not_finite else false)
    return _Verdict(n, loss_med, loss_sig, norm_med, norm_sig, loss_spike, norm_spike, judged_spike, spike, skipped,
                    ~skipped)


def _clip_to_history(updates, norm, finite, judged: _Verdict, c, need) -> tuple:
    """(g·min(1, c·m_‖g‖/‖g‖), clipped) once ``need`` norms are recorded; (g, False) when c is None."""
    if c is None:
        return updates, jnp.zeros((), jnp.bool_)
    bound = jnp.asarray(c, norm.dtype) * judged.grad_norm_median
    clipped = (judged.n >= need) & (norm > bound) & finite
    factor = jnp.where(clipped, bound / norm, jnp.ones_like(norm))
    return tree_lib.times_scalar(updates, factor, in_leaf_dtype=False), clipped


def _cut(updates, params, clip_state, ratio, min_rms, hold, vectors, axis_name):
    """The clip state after :func:`gradflow.clip_relative_update`'s rule (its ``factor``: each leaf's cut);
    as it is when the ratio is None."""
    if ratio is None:
        return clip_state
    if params is None:  # checked after inner.update, which reports a mismatched tree first
        raise ValueError(
            "protect: max_update_ratio bounds each step relative to its weights, so update needs "
            "params: call update(grads, state, params, ...), or build protect(..., max_update_ratio=None)"
        )
    return relative_update.cut("protect", updates, params, clip_state, ratio, min_rms, hold, vectors, axis_name)


def _new_state(state, judged: _Verdict, loss, norm, finite, clipped, new_inner, new_clip, size) -> ProtectState:
    """The state after a step ``judged`` so: inner and clip states kept only if accepted, counters, windows."""
    inc, accept = tree_lib.safe_increment, judged.accept
    record = accept & finite
    loss_history = tree_lib.ring_write(state.loss_history, state.num_recorded, loss, record)
    norm_history = tree_lib.ring_write(state.grad_norm_history, state.num_recorded, norm, record)
    count_if = lambda flag, c: jnp.where(flag, inc(c), c)  # noqa: E731
    return ProtectState(
        inner_state=new_inner, count=inc(state.count),
        loss=loss, grad_norm=norm, loss_median=judged.loss_median, loss_sigma=judged.loss_sigma,
        grad_norm_median=judged.grad_norm_median, grad_norm_sigma=judged.grad_norm_sigma,
        skipped=judged.skipped, clipped=clipped & accept,
        num_skipped=count_if(judged.skipped, state.num_skipped),
        num_not_finite=count_if(~finite, state.num_not_finite),
        num_loss_spikes=count_if(judged.loss_spike, state.num_loss_spikes),
        num_grad_norm_spikes=count_if(judged.norm_spike, state.num_grad_norm_spikes),
        num_clipped=count_if(clipped & accept, state.num_clipped),
        # A non-finite skip between spike-skips neither counts nor breaks the row; an accepted step ends it.
        num_consecutive_skips=jnp.where(
            judged.spike, inc(state.num_consecutive_skips),
            jnp.where(judged.skipped, state.num_consecutive_skips, jnp.zeros((), jnp.int32)),
        ),
        spike_rate=state.spike_rate + (judged.judged_spike.astype(state.spike_rate.dtype) - state.spike_rate) / _RATE_STEPS,
        num_recorded=jnp.where(record, tree_lib.ring_increment(state.num_recorded, size), state.num_recorded),
        loss_history=loss_history, grad_norm_history=norm_history,
        update_clip=new_clip,
    )


def protect(
    inner: GradientTransformation,
    *,
    skip_not_finite: bool = True,
    watch_loss: bool = True,
    watch_grad_norm: bool = True,
    spike_rule: str = "both",
    threshold: float = 6.0,
    margin: float = 9.0,
    window: int = 16,
    min_samples: int = 4,
    max_spike_rate: float | None = 0.05,
    max_consecutive_skips: int | None = 16,
    clip_to_history: float | None = None,
    max_update_ratio: float | None = 0.1,
    min_weight_rms: float = 0.01,
    hold_update_cut: bool = True,
    clip_vector_updates: bool = False,
    axis_name: Any = None,
) -> GradientTransformation:
    """Wrap any optimizer (gradflow's or optax's) in the defences that the stability benchmark supports.

    With g_t the incoming gradient, ℓ_t the loss (``update(..., value=loss)``), and
    for each watched statistic x ∈ {ℓ, ‖g‖} the median m_x and σ̂_x = 1.4826·MAD_x
    of its last ``window`` values from *accepted* steps (n of them):

      not finite:  ℓ_t or ‖g_t‖ is NaN/±inf (a NaN/±inf in g_t, or a norm that
                   overflows its float32 (float64) accumulation)          → skip;
      spike_x:     n ≥ min_samples and x_t − m_x > max(k·σ̂_x, ρ·|m_x|);
      "either":    skip when spike_ℓ or spike_‖g‖ (OLMo's skip-step rule);
      "both":      skip when spike_ℓ and spike_‖g‖;
      spike rate:  r_t = r_{t−1} + (spike_t − r_{t−1})/128 over the steps judged spikes;
                   a spike is let through instead while r_{t−1} > ``max_spike_rate``;
      clip:        with c = ``clip_to_history``, g_t ← g_t·min(1, c·m_‖g‖/‖g_t‖);
      otherwise    (u_t, s_t) = inner(g_t, s_{t−1}), and ℓ_t, ‖g_t‖ join the windows;
      update clip: with ρ = ``max_update_ratio`` and s = ``min_weight_rms``, each
                   tensor's step u_i ← f_i·u_i, f_i the smallest min(1, ρ·max(RMS(w_i), s)/RMS(u_i))
                   so far for a matrix (this step's alone for a vector, or with ``hold_update_cut=False``;
                   :func:`gradflow.clip_relative_update`).

    A skipped step returns zero updates and the inner state exactly as it was
    (counters, schedules, moments: bit for bit); its values do not enter the
    windows, so a spike cannot widen the band for the next one. After
    ``max_consecutive_skips`` spike-skips in a row the next finite step is let
    through and recorded, so a lasting change of scale is learned instead of
    freezing training (non-finite steps are always skipped; between spike-skips
    they neither count nor break the row). Likewise, while
    more than ``max_spike_rate`` of recent steps (an average over about 128) were
    judged spikes, the spikes are the run's own heavy tail rather than accidents,
    and they are let through and recorded. When nothing fires
    (no skip, and no tensor's step above ρ·max(RMS(w), s)), the updates are
    ``inner``'s, bit for bit.

    Why these statistics: the median and MAD are judged from four values on, so
    a corrupted batch at step 5 is caught (a rolling mean ± 6σ needs OLMo's 63
    previous values before it may judge, and one outlier inflates σ). The relative
    margin ρ keeps heavy-tailed but healthy noise from firing: late in training,
    when the loss is near zero, single batches at 3–5× the median are common.

    Defaults, chosen by measurement. On the 16-layer ReLU MLP of
    ``examples/gradient_explosion.py`` (600 steps, seed 0, a healthy run around
    the standard recipe ``chain(clip_by_global_norm(1), adamw(warmup_cosine))``,
    whose held-out loss is 0.237): OLMo's "either" rule with ρ = 1 skipped 98
    steps and ended at 0.307; "both" with ρ = 1 skipped 139 and ended at 0.549;
    "either" with ρ = 9 skipped 82 (0.356); "both" with ρ = 9, the default,
    skipped 27 and ended at 0.208 (measured before the spike-rate rule and the
    update clip; with both, the example now skips 8 steps and ends at 0.203). Corrupted batches (targets ×100–1000: loss
    ×10⁴ and more, gradient norm ×100 and more) and NaN/inf steps are far
    beyond either bound. In ``benchmarks/stability.py`` (eight seeds, held-out
    loss, median over seeds; ``benchmarks/stability.md``), ``protect`` around the
    standard recipe: float16 with a fixed 2¹⁶ loss scale 0.306 where the standard
    recipe ends NaN in 7 of 8 runs (counted at ln 10 = 2.303: 0.13×); 3% of
    batches with targets ×100–1000 0.640 against 0.642 (the oracle that skips
    exactly the corrupted batches: 0.641), and where that corruption costs the
    standard recipe (a teacher–student regression fitted closely) 0.00466 against
    0.00605 (0.77×; the oracle 0.00463), and on a tanh RNN of spectral radius 1.5
    fitting a teacher RNN 0.000166 against 0.000625 (0.27×; the oracle 0.000150). OLMo's "either" rule with ρ = 1
    on the float16 and first corrupted scenarios, on another machine: 0.349 and 0.663.
    Clipping against the history is off by default: it needs history, so it
    cannot act on the first steps, where a fixed clip does.

    A limit of skipping: a genuine training example that the network gets badly
    wrong spikes every batch that draws it, and were each of those steps skipped,
    the example would never be learnt (in ``examples/gradient_explosion.py``
    without the spike-rate rule, one digit of 1438 ended at a loss of 347 nats,
    skipped 57 times, and the final train loss was 0.449 against 0.0035; with it,
    8 steps are skipped and the train loss is 0.0044). At learning rates past the
    best, many batches spike so, and skipping them all hurt: in the benchmark's
    healthy sweep (a 2-hidden-layer MLP on the digits, 32 seeds, peak rates
    10⁻³…0.03; the standard recipe's best is 10⁻³, where protect ends 0.1% above it)
    skipping every spike (``max_spike_rate=None``; 3390 of 38400 steps) ended at
    0.0723, 0.150 and 0.462 at rates 0.003, 0.01 and 0.03, against the standard
    recipe's 0.0678, 0.138 and 0.337; with ``max_spike_rate=0.05`` (760 skipped),
    0.0655, 0.137 and 0.311, and the corrupted batches of the
    benchmark are still caught (483 skipped in the teacher–student runs, which hold about 480).
    The rate averages over about 128 steps: over 64 it passed 5% by chance often
    enough, with 3% of batches corrupted, to let 6% of them through (453 skipped,
    0.0049 against the oracle's 0.0046), and the healthy sweep ended at 0.0657,
    0.139 and 0.325; over 256 the healthy sweep skipped 1291 steps and ended
    at 0.142 at rate 0.01. The rule's limit: bad batches on more than
    ``max_spike_rate`` of the steps look like the run's own tail and are let
    through. With 10% of the teacher–student batches corrupted, protect ends where
    the standard recipe does (0.0083 against 0.0084, 32 seeds), and
    ``max_spike_rate=None`` at 0.0048 (the oracle 0.0047): where bad batches are
    known to be that common, raise ``max_spike_rate`` above their share or set it
    to None. Watch ``protect/num_loss_spikes`` and ``protect/spike_rate``; a larger
    ``margin`` or ``threshold`` skips less.

    Cost: not free. ``benchmarks/protect_overhead.py`` (one CPU run, a jitted step
    that computes its gradients): a step of ``protect`` around the standard recipe
    took 60.7 ms against 46.2 ms unprotected on one 20M-parameter leaf (63.4 ms
    without the update clip), and 13.9 ms against 10.5 ms on 300 small leaves (12.8
    ms without it), whose step compiled in 28.2 s against 17.9 s.
    Under ``jax.jit`` a skip is a ``lax.cond`` (a select inside ``shard_map``), so an
    accepted step writes the inner state in place; the update clip's factors are
    computed inside it and applied after it, so the scaling fuses into the caller's
    ``apply_updates``.

    The relative update clip (ρ = 0.1, s = 0.01) is on by default: a matrix moves
    by at most a tenth of its RMS per step, which an adaptive optimizer's step
    (about the learning rate per element) exceeds only past the rates that train
    well. In the benchmark's transformer sweep over peak rates 10⁻³…1 (steps of √10)
    it takes the LR sensitivity from 0.215 to 0.113 (0.53×): at rate 1, its best,
    the final loss is 2.655 against 3.269, at 0.1 2.682 against 3.045, at 0.01 2.747
    against 2.854 (the standard recipe's best rate ends at 2.805), and no rate ends
    worse; the RNN 2.334 against 2.336, the corrupted targets and float16 as above.
    Holding the cut (``hold_update_cut=True``) is what anneals the cut matrices:
    cutting each step alone, rate 1 ended at 2.817 and the best rate at 2.703.
    Vectors (biases, norm gains) are not bounded unless ``clip_vector_updates=True``:
    a bias starts at zero, so its bound is ρ·s = 10⁻³ per element per step until it
    has grown, which slowed healthy runs at ordinary rates (a teacher–student
    regression, eight seeds, at its best rate: 0.0699 with vectors bounded, 0.0665
    without, the standard recipe 0.0677), and on the transformer the vectors' bound
    changed nothing the matrices' did not (LR sensitivity 0.1132 with, 0.1133
    without). Bounded, they are cut each step alone: holding the cuts the deep
    MLP's biases needed in its first steps slowed them fivefold for the whole run
    (0.291 there, against 0.272 not held, on another machine). (The 16-layer MLP,
    over 32 seeds since its runs are chaotic, ends at 0.304 against 0.303; protect
    without the update clip, which skips 3 of its 9600 steps and so changes little
    but the compiled program's rounding, at 0.308.) On the earlier five-rate
    grid, without holding, ρ = 0.05 ended better at every rate from 0.01 on but 0.3%
    worse on the RNN; ρ = 0.03 0.6% worse at 10⁻³; ρ = 0.3 never acted. A matrix
    that starts at zero moves by at most ρ·s = 10⁻³ per element per step until it
    reaches RMS s; ``max_update_ratio=None`` switches the clip off.

    Args:
      inner: the optimizer to protect (a whole chain, gradflow's or optax's).
      skip_not_finite: skip steps whose gradient norm (or loss) is NaN or ±inf:
        a NaN/±inf element, or finite elements whose norm overflows float32 (float64 for
        float64 leaves; a float16 gradient whose norm is past float16's range is finite).
      watch_loss: judge the loss; ``update`` then needs ``value=loss``.
      watch_grad_norm: judge the global gradient norm.
      spike_rule: ``"either"`` skips when any watched statistic spikes, ``"both"``
        only when all watched ones do.
      threshold: k > 0, in robust standard deviations σ̂.
      margin: ρ ≥ 0, the smallest excess over the median, relative to |median|.
      window: accepted values kept per statistic (≥ 2).
      min_samples: values needed before any spike is judged (2 ≤ min_samples ≤ window).
      max_spike_rate: r in (0, 1]: spikes are let through while more than this share of
        recent steps were judged spikes; None skips every spike.
      max_consecutive_skips: spike-skips in a row before a step is let through (≥ 0), or None.
      clip_to_history: c > 0 to clip ‖g‖ to c times the median of recent accepted
        gradient norms (once ``min_samples`` are recorded), or None for no clipping.
      max_update_ratio: ρ > 0, the largest step of a tensor relative to its RMS, or
        None for no update clip (``update`` then needs no ``params``).
      min_weight_rms: s > 0, the RMS assumed for tensors smaller than it (0 is refused: a tensor
        that starts at zero would never move).
      hold_update_cut: keep each matrix's smallest update-clip factor so far (True), so the
        schedule still anneals a matrix once cut, or cut each step on its own (False); vectors
        are cut each step on their own either way.
      clip_vector_updates: bound the steps of vectors and scalars (biases, norm gains) too, each
        step on its own (True), or only matrices' (False).
      axis_name: inside ``jax.shard_map``, the mesh axis (or tuple of axes) that every
        leaf is split over; norms and finiteness are reduced across it. Leave ``None``
        under ``jax.jit``.

    Returns:
      A :class:`GradientTransformation` whose state is a :class:`ProtectState`;
      :func:`gradflow.stats` shows ``protect/num_skipped``, ``protect/loss_median``, ...

    Raises:
      ValueError: for a bad argument (naming it and its value).
      TypeError: at the first ``update`` when the loss is watched and no ``value=`` is given.
      ValueError: at the first ``update`` without ``params`` while the update clip is on.

    Parity: with every part switched off (``skip_not_finite=False, watch_loss=False,
    watch_grad_norm=False, max_update_ratio=None``) the updates and inner state are
    ``inner``'s exactly.
    ``spike_rule="either"`` is OLMo-core's ``SkipStepOptimizer``'s way of combining
    the two signals; its statistics differ (a mean ± 6σ band over the last 128
    values, skipped ones included, from the 64th step on).

    References:
      OLMo et al., 2 OLMo 2 Furious, 2024, https://arxiv.org/abs/2501.00656 (skipping
      steps whose loss or gradient norm spikes); Hampel, The influence curve and its
      role in robust estimation, 1974 (the median absolute deviation);
      Wortsman et al., Small-scale proxies for large-scale Transformer training
      instabilities, 2023, https://arxiv.org/abs/2309.14322 (learning-rate sensitivity);
      Tang et al., Improving Training Stability for Multitask Ranking Models in
      Recommender Systems, 2023, https://arxiv.org/abs/2302.09178 (bounding the update
      relative to the weights).

    Examples:
      >>> import jax.numpy as jnp
      >>> import gradflow as gf
      >>> tx = gf.protect(gf.sgd(0.1))
      >>> params = jnp.array([1.0])
      >>> state = tx.init(params)
      >>> for loss in [2.0, float("nan"), 1.9]:
      ...     updates, state = tx.update(jnp.array([1.0]), state, params, value=loss)
      ...     print(round(float(updates[0]), 4))
      -0.1
      0.0
      -0.1
      >>> int(gf.stats(state)["protect/num_not_finite"])
      1
    """
    fn = "protect"
    hparams.check_transform(fn, "inner", inner)
    if spike_rule not in _RULES:
        raise ValueError(f"{fn}: spike_rule must be one of {_RULES}, got {spike_rule!r}")
    hparams.check_positive(fn, "threshold", threshold)
    hparams.check_non_negative(fn, "margin", margin)
    check_window(fn, window, min_samples, max_consecutive_skips)
    if max_spike_rate is not None:
        hparams.check_range(fn, "max_spike_rate", max_spike_rate, 0.0, 1.0, low_open=True)
    if clip_to_history is not None:
        hparams.check_positive(fn, "clip_to_history", clip_to_history)
    if max_update_ratio is not None:
        relative_update.check_args(fn, "max_update_ratio", max_update_ratio, min_weight_rms)
    hparams.check_flags(fn, skip_not_finite=skip_not_finite, watch_loss=watch_loss, watch_grad_norm=watch_grad_norm,
                        hold_update_cut=hold_update_cut, clip_vector_updates=clip_vector_updates)
    size, need = int(window), int(min_samples)
    keep = extra_args_filter(inner.update)
    rules = dict(size=size, need=need, threshold=threshold, margin=margin, watch_loss=watch_loss,
                 watch_grad_norm=watch_grad_norm, both=watch_loss and watch_grad_norm and spike_rule == "both",
                 max_spike_rate=max_spike_rate, max_consecutive_skips=max_consecutive_skips,
                 skip_not_finite=skip_not_finite)

    def init_fn(params):
        dt = tree_lib.stat_dtype(params)
        zero, count = (lambda: jnp.zeros((), dt)), tree_lib.zero_count  # fresh buffers, so state can be donated
        no = lambda: jnp.zeros((), jnp.bool_)  # noqa: E731
        inner_state = inner.init(params)
        if skip_not_finite:
            check_sees_non_finite("protect", inner_state)
        return ProtectState(
            inner_state=inner_state, count=count(), loss=zero(), grad_norm=zero(),
            loss_median=zero(), loss_sigma=zero(), grad_norm_median=zero(), grad_norm_sigma=zero(),
            skipped=no(), clipped=no(), num_skipped=count(), num_not_finite=count(), num_loss_spikes=count(),
            num_grad_norm_spikes=count(), num_clipped=count(), num_consecutive_skips=count(), spike_rate=zero(),
            num_recorded=count(),
            loss_history=jnp.zeros((size,), dt), grad_norm_history=jnp.zeros((size,), dt),
            update_clip=relative_update.init_state(params),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        if watch_loss and value is None:
            raise TypeError(
                "protect: watch_loss=True needs the loss at every step: call "
                "update(grads, state, params, value=loss), or build protect(..., watch_loss=False)"
            )
        updates = tree_lib.as_arrays(updates)
        params = None if params is None else tree_lib.as_arrays(params)
        dt = state.grad_norm.dtype
        norm = tree_lib.global_norm(updates, axis_name).astype(dt)
        loss = hparams.scalar_value(fn, value).astype(dt) if value is not None else jnp.zeros((), dt)
        finite = jnp.isfinite(norm)  # NaN/±inf in any element, or an overflowing sum, makes ‖g‖ NaN or inf
        if value is not None:
            finite = finite & jnp.isfinite(loss)
        judged = _judge(state, loss, norm, finite, **rules)
        grads, clipped = _clip_to_history(updates, norm, finite, judged, clip_to_history, need)
        extra = extra_args if value is None else {**extra_args, "value": value}

        def step(grads):
            new_updates, new_inner = inner.update(grads, state.inner_state, params, **keep(extra))
            new_clip = _cut(new_updates, params, state.update_clip, max_update_ratio, min_weight_rms,
                            hold_update_cut, clip_vector_updates, axis_name)
            return new_updates, (new_inner, new_clip)

        old = (state.inner_state, state.update_clip)
        out_updates, (new_inner, new_clip) = step_unless_skipped(judged.accept, step, grads, old, axis_name)
        if max_update_ratio is not None:  # scaled after the cond, so the scaling fuses into the caller's apply
            out_updates = relative_update.apply_cut(out_updates, new_clip.factor)
        return out_updates, _new_state(state, judged, loss, norm, finite, clipped, new_inner, new_clip, size)

    return GradientTransformation(init_fn, update_fn)
