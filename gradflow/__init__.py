"""gradflow: composable JAX gradient transformations for training that blows up."""

from gradflow.base import EmptyState
from gradflow.base import GradientTransformation
from gradflow.base import apply_updates
from gradflow.base import chain
from gradflow.base import identity
from gradflow.base import stateless
from gradflow.optimizers import sgd
from gradflow.scaling import AddDecayedWeightsState
from gradflow.scaling import ScaleByScheduleState
from gradflow.scaling import TraceState
from gradflow.scaling import add_decayed_weights
from gradflow.scaling import scale
from gradflow.scaling import scale_by_learning_rate
from gradflow.scaling import scale_by_schedule
from gradflow.scaling import trace
from gradflow.sharding import init_sharded
from gradflow.sharding import state_sharding
from gradflow.tree import global_norm
from gradflow.tree import safe_increment

__version__ = "0.1.0"

__all__ = [
    "AddDecayedWeightsState",
    "EmptyState",
    "GradientTransformation",
    "ScaleByScheduleState",
    "TraceState",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "global_norm",
    "identity",
    "init_sharded",
    "safe_increment",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "sgd",
    "state_sharding",
    "stateless",
    "trace",
]
