"""Training: the recipe, the (sharpness-aware) steps, the loop, and run directories."""

from edgefault.train.config import SHARPNESS_METHODS, TrainConfig
from edgefault.train.loop import evaluate, train
from edgefault.train.run_dir import LoadedRun, load_model, load_run

__all__ = ["SHARPNESS_METHODS", "LoadedRun", "TrainConfig", "evaluate", "load_model", "load_run", "train"]
