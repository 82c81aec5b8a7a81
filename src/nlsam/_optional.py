"""Optional packages: imported only by the paths that need them, with a one-line error naming
the ``pip install`` that fixes a missing one (:func:`require`), or as None where the code works
without them (:func:`optional_module`)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

from .version import DISTRIBUTION

#: module -> (the package that provides it, the nlsam extra that installs it)
_PACKAGES = {
    "pytorch_grad_cam": ("grad-cam", "inspect"),
    "matplotlib": ("matplotlib", "inspect"),
    "onnx": ("onnx", "inspect"),
    "onnxruntime": ("onnxruntime", "inspect"),
    "onnxscript": ("onnxscript", "inspect"),
    "safetensors": ("safetensors", "inspect"),
    "torchvision": ("torchvision", "imagenet"),
}

#: extra -> what it installs the packages for
_EXTRAS = {
    "inspect": "everything the inspection commands use",
    "imagenet": "folders of large images such as ImageNet",
}


class MissingDependencyError(ImportError, ValueError):
    """An optional package is not installed (the message says which ``pip install`` fixes it)."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` with the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package, extra = _PACKAGES.get(module.split(".")[0], (module, "inspect"))
        raise MissingDependencyError(
            f"{purpose} needs the '{package}' package: pip install {package} "
            f"(or pip install '{DISTRIBUTION}[{extra}]' for {_EXTRAS[extra]})"
        ) from None


def optional_module(module: str) -> Optional[ModuleType]:
    """Import ``module``, or None when it is not installed (or too old to have it), for code
    that works without it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
