"""gradflow: composable JAX gradient transformations for training that blows up."""

from gradflow.adaptive import ScaleByAdamState
from gradflow.adaptive import ScaleByAmsgradState
from gradflow.adaptive import ScaleByRmsState
from gradflow.adaptive import ScaleByRssState
from gradflow.adaptive import ScaleByTrustRatioState
from gradflow.adaptive import scale_by_adam
from gradflow.adaptive import scale_by_amsgrad
from gradflow.adaptive import scale_by_rms
from gradflow.adaptive import scale_by_rss
from gradflow.adaptive import scale_by_trust_ratio
from gradflow.base import EmptyState
from gradflow.base import GradientTransformation
from gradflow.base import apply_updates
from gradflow.base import chain
from gradflow.base import identity
from gradflow.base import stateless
from gradflow.checkpoint import load_state
from gradflow.checkpoint import save_state
from gradflow.clipping import AdagcState
from gradflow.clipping import AdaptiveGradClipState
from gradflow.clipping import AutoclipState
from gradflow.clipping import ClipByBlockRmsState
from gradflow.clipping import ClipByGlobalNormState
from gradflow.clipping import ClipByNormState
from gradflow.clipping import ClipState
from gradflow.clipping import ClipUpdateNormState
from gradflow.clipping import ZclipState
from gradflow.clipping import adagc
from gradflow.clipping import adaptive_grad_clip
from gradflow.clipping import autoclip
from gradflow.clipping import clip
from gradflow.clipping import clip_by_block_rms
from gradflow.clipping import clip_by_global_norm
from gradflow.clipping import clip_by_norm
from gradflow.clipping import clip_update_norm
from gradflow.clipping import zclip
from gradflow.diagnostics import MonitorState
from gradflow.diagnostics import monitor
from gradflow.diagnostics import stats
from gradflow.flat import FlattenSmallState
from gradflow.flat import flatten_small
from gradflow.guards import ApplyIfFiniteState
from gradflow.guards import SkipSpikesState
from gradflow.guards import apply_if_finite
from gradflow.guards import skip_spikes
from gradflow.inject import InjectHyperparamsState
from gradflow.inject import current_hyperparams
from gradflow.inject import inject_hyperparams
from gradflow.inject import set_hyperparams
from gradflow.loss_scale import DynamicLossScaleState
from gradflow.loss_scale import dynamic_loss_scale
from gradflow.loss_scale import loss_scale
from gradflow.optimizers import adagrad
from gradflow.optimizers import adam
from gradflow.optimizers import adamw
from gradflow.optimizers import amsgrad
from gradflow.optimizers import lamb
from gradflow.optimizers import lars
from gradflow.optimizers import rmsprop
from gradflow.optimizers import sgd
from gradflow.plateau import ReduceOnPlateauState
from gradflow.plateau import RestartOnLossState
from gradflow.plateau import reduce_on_plateau
from gradflow.plateau import restart_on_loss
from gradflow.protect import ProtectState
from gradflow.relative_update import ClipRelativeUpdateState
from gradflow.relative_update import clip_relative_update
from gradflow.protect import protect
from gradflow.scaling import AddDecayedWeightsState
from gradflow.scaling import ScaleByScheduleState
from gradflow.scaling import TraceState
from gradflow.scaling import add_decayed_weights
from gradflow.scaling import scale
from gradflow.scaling import scale_by_learning_rate
from gradflow.scaling import scale_by_schedule
from gradflow.scaling import trace
from gradflow.schedules import constant_schedule
from gradflow.schedules import cosine_decay_schedule
from gradflow.schedules import cosine_onecycle_schedule
from gradflow.schedules import exponential_decay
from gradflow.schedules import inverse_sqrt_schedule
from gradflow.schedules import join_schedules
from gradflow.schedules import linear_onecycle_schedule
from gradflow.schedules import linear_schedule
from gradflow.schedules import piecewise_constant_schedule
from gradflow.schedules import piecewise_interpolate_schedule
from gradflow.schedules import plot_schedule
from gradflow.schedules import polynomial_schedule
from gradflow.schedules import sgdr_schedule
from gradflow.schedules import warm_restarts_schedule
from gradflow.schedules import warmup_constant_schedule
from gradflow.schedules import warmup_cosine_decay_schedule
from gradflow.schedules import warmup_exponential_decay_schedule
from gradflow.schedules import wsd_schedule
from gradflow.sharding import init_sharded
from gradflow.sharding import state_sharding
from gradflow.spikes import ScaleByAdamAtan2State
from gradflow.spikes import ScaleBySpamState
from gradflow.spikes import ScaleByStableAdamState
from gradflow.spikes import adam_atan2
from gradflow.spikes import scale_by_adam_atan2
from gradflow.spikes import scale_by_spam
from gradflow.spikes import scale_by_stable_adam
from gradflow.spikes import spam
from gradflow.spikes import stable_adamw
from gradflow.tree import global_norm
from gradflow.tree import safe_increment

__version__ = "0.1.0"

__all__ = [
    "adagc",
    "AdagcState",
    "adagrad",
    "adam",
    "adam_atan2",
    "adamw",
    "adaptive_grad_clip",
    "AdaptiveGradClipState",
    "add_decayed_weights",
    "AddDecayedWeightsState",
    "amsgrad",
    "apply_if_finite",
    "apply_updates",
    "ApplyIfFiniteState",
    "autoclip",
    "AutoclipState",
    "chain",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_relative_update",
    "clip_update_norm",
    "ClipByBlockRmsState",
    "ClipByGlobalNormState",
    "ClipByNormState",
    "ClipRelativeUpdateState",
    "ClipState",
    "ClipUpdateNormState",
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "current_hyperparams",
    "dynamic_loss_scale",
    "DynamicLossScaleState",
    "EmptyState",
    "exponential_decay",
    "flatten_small",
    "FlattenSmallState",
    "global_norm",
    "GradientTransformation",
    "identity",
    "init_sharded",
    "inject_hyperparams",
    "InjectHyperparamsState",
    "inverse_sqrt_schedule",
    "join_schedules",
    "lamb",
    "lars",
    "linear_onecycle_schedule",
    "linear_schedule",
    "load_state",
    "loss_scale",
    "monitor",
    "MonitorState",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "plot_schedule",
    "polynomial_schedule",
    "protect",
    "ProtectState",
    "reduce_on_plateau",
    "ReduceOnPlateauState",
    "restart_on_loss",
    "RestartOnLossState",
    "rmsprop",
    "safe_increment",
    "save_state",
    "scale",
    "scale_by_adam",
    "scale_by_adam_atan2",
    "scale_by_amsgrad",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_spam",
    "scale_by_stable_adam",
    "scale_by_trust_ratio",
    "ScaleByAdamAtan2State",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "ScaleBySpamState",
    "ScaleByStableAdamState",
    "ScaleByTrustRatioState",
    "set_hyperparams",
    "sgd",
    "sgdr_schedule",
    "skip_spikes",
    "SkipSpikesState",
    "spam",
    "stable_adamw",
    "state_sharding",
    "stateless",
    "stats",
    "trace",
    "TraceState",
    "warm_restarts_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "wsd_schedule",
    "zclip",
    "ZclipState",
]
