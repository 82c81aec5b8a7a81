"""nlsam: the nonlocal spatial attention module (NL-SAM) for PyTorch CNNs.

>>> import torch, nlsam
>>> model = nlsam.create_model("resnet110", num_classes=100, attention="nlsam")
>>> model(torch.randn(2, 3, 32, 32)).shape
torch.Size([2, 100])
"""

from .attention import (
    ATTENTION_NAMES,
    BAM,
    NLSAM,
    CBAMChannelGate,
    CBAMSpatialGate,
    GatherExcite,
    SqueezeExcite,
    create_attention,
)
from .cost import profile
from .engine import load_model
from .models import (  # (registers them with timm too)
    ResNet,
    create_model,
    insert,
    list_models,
    list_pretrained,
    load_pretrained,
)
from .version import __version__ as __version__

__all__ = [
    "ATTENTION_NAMES",
    "BAM",
    "CBAMChannelGate",
    "CBAMSpatialGate",
    "GatherExcite",
    "NLSAM",
    "ResNet",
    "SqueezeExcite",
    "create_attention",
    "create_model",
    "insert",
    "list_models",
    "list_pretrained",
    "load_model",
    "load_pretrained",
    "profile",
]
