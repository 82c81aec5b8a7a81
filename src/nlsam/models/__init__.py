"""Networks that carry attention modules, and the registry behind :func:`create_model`.

* :mod:`.resnet`: the paper's ResNets (:class:`ResNet` and its blocks), registered by name;
* :mod:`.registry` and :mod:`.factory`: :func:`register_model`, :func:`list_models` and
  :func:`create_model`, the one way to build a network by name;
* :mod:`.insert`: :func:`insert`, attention modules in a network you already have;
* :mod:`.pretrained`: :func:`load_pretrained`, torchvision, timm or nlsam weights into a network;
* :mod:`.released`: :func:`list_pretrained`, nlsam's released weights, loaded by name;
* :mod:`.timm_models`: the networks under timm's names, registered with timm once it is imported;
* :mod:`.torch_hub`: the entry points of the repository's ``hubconf.py``.
"""
from .factory import create_model
from .insert import INIT_MODES, After, Insertion, InsertReport, insert
from .pretrained import LoadReport, Source, load_pretrained
from .registry import is_model, list_models, register_model
from .released import PretrainedWeight, list_pretrained
from .resnet import (
    BasicBlock,
    Block,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ResNet,
    ZeroPadShortcut,
)
from .timm_models import (
    ATTENTION_TAGS,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR_ARCHS,
    IMAGENET_ARCHS,
    TIMM_MODEL_NAMES,
    register_timm_models,
    timm_model_name,
)

__all__ = [
    "ATTENTION_TAGS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR_ARCHS",
    "IMAGENET_ARCHS",
    "INIT_MODES",
    "TIMM_MODEL_NAMES",
    "After",
    "BasicBlock",
    "Block",
    "Bottleneck",
    "InsertReport",
    "Insertion",
    "LoadReport",
    "PreActBasicBlock",
    "PreActBottleneck",
    "PretrainedWeight",
    "ResNet",
    "Source",
    "ZeroPadShortcut",
    "create_model",
    "insert",
    "is_model",
    "list_models",
    "list_pretrained",
    "load_pretrained",
    "register_model",
    "register_timm_models",
    "timm_model_name",
]
