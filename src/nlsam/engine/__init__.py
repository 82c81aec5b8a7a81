"""Training, evaluation, checkpoints and distributed set-up."""
from .config import TrainConfig, resolve_config
from .evaluate import evaluate
from .train import train

__all__ = ["TrainConfig", "evaluate", "resolve_config", "train"]
