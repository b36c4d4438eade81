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
from gradflow.optimizers import adagrad
from gradflow.optimizers import adam
from gradflow.optimizers import adamw
from gradflow.optimizers import amsgrad
from gradflow.optimizers import lamb
from gradflow.optimizers import lars
from gradflow.optimizers import rmsprop
from gradflow.optimizers import sgd
from gradflow.scaling import AddDecayedWeightsState
from gradflow.scaling import ScaleByScheduleState
from gradflow.scaling import TraceState
from gradflow.scaling import add_decayed_weights
from gradflow.scaling import scale
from gradflow.scaling import scale_by_learning_rate
from gradflow.scaling import scale_by_schedule
from gradflow.scaling import trace
from gradflow.tree import global_norm
from gradflow.tree import safe_increment

__version__ = "0.1.0"

__all__ = [
    "AddDecayedWeightsState",
    "EmptyState",
    "GradientTransformation",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "ScaleByTrustRatioState",
    "TraceState",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "amsgrad",
    "apply_updates",
    "chain",
    "global_norm",
    "identity",
    "lamb",
    "lars",
    "rmsprop",
    "safe_increment",
    "scale",
    "scale_by_adam",
    "scale_by_amsgrad",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_trust_ratio",
    "sgd",
    "stateless",
    "trace",
]
