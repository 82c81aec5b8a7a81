"""Networks that carry attention modules, and the registry behind :func:`create_model`."""
from .registry import create_model, is_model, list_models, register_model
from .resnet import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ResNet,
    ZeroPadShortcut,
)

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "ZeroPadShortcut",
    "create_model",
    "is_model",
    "list_models",
    "register_model",
]
