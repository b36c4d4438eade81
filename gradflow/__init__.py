"""gradflow: composable JAX gradient transformations for training that blows up."""

from gradflow.base import EmptyState
from gradflow.base import GradientTransformation
from gradflow.base import apply_updates
from gradflow.base import chain
from gradflow.base import identity
from gradflow.base import stateless
from gradflow.inject import InjectHyperparamsState
from gradflow.inject import current_hyperparams
from gradflow.inject import inject_hyperparams
from gradflow.inject import set_hyperparams
from gradflow.optimizers import sgd
from gradflow.plateau import ReduceOnPlateauState
from gradflow.plateau import RestartOnLossState
from gradflow.plateau import reduce_on_plateau
from gradflow.plateau import restart_on_loss
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
from gradflow.tree import global_norm
from gradflow.tree import safe_increment

__version__ = "0.1.0"

__all__ = [
    "AddDecayedWeightsState",
    "EmptyState",
    "GradientTransformation",
    "InjectHyperparamsState",
    "ReduceOnPlateauState",
    "RestartOnLossState",
    "ScaleByScheduleState",
    "TraceState",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "current_hyperparams",
    "exponential_decay",
    "global_norm",
    "identity",
    "inject_hyperparams",
    "inverse_sqrt_schedule",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "plot_schedule",
    "polynomial_schedule",
    "reduce_on_plateau",
    "restart_on_loss",
    "safe_increment",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "set_hyperparams",
    "sgd",
    "sgdr_schedule",
    "stateless",
    "trace",
    "warm_restarts_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "wsd_schedule",
]
