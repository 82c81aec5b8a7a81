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
from .released import (
    PretrainedWeight,
    get_pretrained,
    is_released_name,
    list_pretrained,
    pretrained_file,
    pretrained_state_dict,
    shipped_file,
    weight_checkpoint,
)
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
    model_of_timm_name,
    register_timm_models,
    timm_model_name,
)
from .torch_hub import create_released, hub_entrypoint

__all__ = [
    "ATTENTION_TAGS",
    "After",
    "BasicBlock",
    "Block",
    "Bottleneck",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR_ARCHS",
    "IMAGENET_ARCHS",
    "INIT_MODES",
    "InsertReport",
    "Insertion",
    "LoadReport",
    "PreActBasicBlock",
    "PreActBottleneck",
    "PretrainedWeight",
    "ResNet",
    "Source",
    "TIMM_MODEL_NAMES",
    "ZeroPadShortcut",
    "create_model",
    "create_released",
    "get_pretrained",
    "hub_entrypoint",
    "insert",
    "is_model",
    "list_models",
    "is_released_name",
    "list_pretrained",
    "load_pretrained",
    "model_of_timm_name",
    "pretrained_file",
    "pretrained_state_dict",
    "register_model",
    "register_timm_models",
    "shipped_file",
    "timm_model_name",
    "weight_checkpoint",
]
