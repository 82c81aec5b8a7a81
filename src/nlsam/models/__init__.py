"""Networks that carry attention modules, and the registry behind :func:`create_model`."""
from .insert import InsertReport, Insertion, insert
from .pretrained import LoadReport, load_pretrained
from .factory import create_model
from .registry import is_model, list_models, register_model
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
    "InsertReport",
    "Insertion",
    "LoadReport",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "ZeroPadShortcut",
    "create_model",
    "insert",
    "is_model",
    "list_models",
    "load_pretrained",
    "register_model",
]
