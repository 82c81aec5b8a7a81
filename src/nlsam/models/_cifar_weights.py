"""Public CIFAR ResNet weights for nlsam's CIFAR ResNets: named sources, and the akamaster layout.

Two public sets are named (``load_pretrained(model, "akamaster:resnet20")``):

* ``akamaster:resnet20|32|44|56|110|1202``: akamaster/pytorch_resnet_cifar10, CIFAR-10, option-A
  (zero-padding) shortcuts like nlsam's default CIFAR ResNets. Their shortcut pads the new
  channels on both sides (``planes // 4`` each) where nlsam's pads at the end, so the weights are
  renamed (``linear`` -> ``fc``, ``layerN`` -> ``stages.layerN``) *and* their channels reordered
  (:func:`akamaster_to_nlsam`): the network then computes what akamaster's code computes. The
  layout is recognised from the keys, so the same files given by path (or renamed) load the same.
* ``chenyaofo:cifar10_resnet20|32|44|56`` and ``chenyaofo:cifar100_...``:
  chenyaofo/pytorch-cifar-models, 1x1 projection shortcuts (torchvision's names): they fit nlsam's
  CIFAR ResNets built with ``shortcut="B"`` by the usual ``layerN`` -> ``stages.layerN`` rule.

Files are downloaded into torch.hub's cache (``torch.hub.get_dir()/checkpoints``), checked
against the sha256 prefix in their names where the publisher follows torch.hub's convention,
and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .._download import weights_download_error
from .._io import file_sha256, read_torch_file
from ..attention import attention_types
from .registry import is_model
from .resnet import BasicBlock, ResNet, ZeroPadShortcut

__all__ = [
    "CIFAR_PREFIXES",
    "CifarSource",
    "akamaster_to_nlsam",
    "check_model_fits",
    "cifar_source",
    "cifar_state_dict",
    "is_akamaster_layout",
    "is_cifar_name",
]

_AKAMASTER_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{}"
_CHENYAOFO_URL = "https://github.com/chenyaofo/pytorch-cifar-models/releases/download/resnet/{}"

#: The prefixes of the CIFAR weight names (see :data:`SOURCES`).
CIFAR_PREFIXES = ("akamaster:", "chenyaofo:")


@dataclass(frozen=True)
class CifarSource:
    """One published file of CIFAR ResNet weights."""

    name: str  #: e.g. ``"akamaster:resnet20"``
    file_name: str  #: the published file name, e.g. ``"resnet20-12fca82f.th"``
    url: str
    blocks: int  #: basic blocks per stage (3 for ResNet-20: depth 6 n + 2)
    shortcut: str  #: "A" (zero-padding) or "B" (1x1 projection), the ``shortcut`` it needs
    num_classes: int
    check_hash: bool  #: whether the file name's 8 hex digits are its sha256 prefix (torch.hub's rule)

    @property
    def arch(self) -> str:
        """The nlsam network it fits, e.g. ``"resnet20"``."""
        return f"resnet{6 * self.blocks + 2}"

    @property
    def hash_prefix(self) -> Optional[str]:
        found = re.search(r"-([0-9a-f]{8,})\.", self.file_name)
        return found.group(1) if found and self.check_hash else None


def _akamaster_sources() -> Dict[str, CifarSource]:
    files = {
        20: "resnet20-12fca82f.th",
        32: "resnet32-d509ac18.th",
        44: "resnet44-014dd654.th",
        56: "resnet56-4bfd9763.th",
        110: "resnet110-1d1ed7c2.th",
        1202: "resnet1202-f3b1deed.th",
    }
    return {
        f"akamaster:resnet{depth}": CifarSource(
            f"akamaster:resnet{depth}", file, _AKAMASTER_URL.format(file), (depth - 2) // 6, "A", 10, True
        )
        for depth, file in files.items()
    }


def _chenyaofo_sources() -> Dict[str, CifarSource]:
    # the 8 hex digits of these names could not be checked against the files (no download here),
    # and chenyaofo's own loader does not check them: the files are read without a hash check
    files = {
        "cifar10_resnet20": "4118986f",
        "cifar10_resnet32": "ef93fc4d",
        "cifar10_resnet44": "2a3cabcb",
        "cifar10_resnet56": "187c023a",
        "cifar100_resnet20": "23dac2f1",
        "cifar100_resnet32": "84213ce6",
        "cifar100_resnet44": "ffe32858",
        "cifar100_resnet56": "f2eff4c8",
    }
    sources = {}
    for model, digits in files.items():
        dataset, _, arch = model.partition("_")
        file = f"{model}-{digits}.pt"
        sources[f"chenyaofo:{model}"] = CifarSource(
            f"chenyaofo:{model}",
            file,
            _CHENYAOFO_URL.format(file),
            (int(arch[6:]) - 2) // 6,
            "B",
            10 if dataset == "cifar10" else 100,
            False,
        )
    return sources


#: Every named source, by name.
SOURCES: Dict[str, CifarSource] = {**_akamaster_sources(), **_chenyaofo_sources()}


def is_cifar_name(name: Any) -> bool:
    """Whether ``name`` is meant as one of :data:`SOURCES` (``akamaster:...``, ``chenyaofo:...``)."""
    return isinstance(name, str) and name.startswith(CIFAR_PREFIXES)


def cifar_source(name: str) -> CifarSource:
    """The source named ``name``; an unknown name is a ``ValueError`` listing the valid ones."""
    if name not in SOURCES:
        library = name.partition(":")[0]
        valid = ", ".join(n for n in SOURCES if n.startswith(library + ":"))
        raise ValueError(f"load_pretrained: unknown weights {name!r}; valid: {valid}")
    return SOURCES[name]


def _checkpoint_dir() -> str:
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _download(source: CifarSource, path: str) -> None:
    """Download ``source`` to ``path`` with torch.hub (hash prefix checked); one-line errors."""
    import torch.hub

    hint = (
        f"fetch that file on a machine with a connection and put it in {os.path.dirname(path)} as "
        f"{source.file_name} (torch.hub's cache), or pass its path as the weights"
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(source.url, path, hash_prefix=source.hash_prefix, progress=True)
    except OSError as exc:  # offline, a proxy, an HTTP error (URLError is an OSError)
        raise weights_download_error(source.name, source.url, exc, hint) from None
    except RuntimeError as exc:  # torch.hub: 'invalid hash value (expected ..., got ...)'
        raise weights_download_error(source.name, source.url, OSError(str(exc)), hint) from None


def cifar_state_dict(source: CifarSource) -> Mapping[str, Any]:
    """The contents of ``source``'s file: from torch.hub's cache, else downloaded there; its
    sha256 prefix checked (when published) and read with ``torch.load(weights_only=True)``."""
    path = os.path.join(_checkpoint_dir(), source.file_name)
    if not os.path.isfile(path):
        _download(source, path)
    prefix = source.hash_prefix
    if prefix and not file_sha256(path).startswith(prefix):
        raise ValueError(
            f"load_pretrained: {path} is not the published {source.name} (its sha256 does "
            f"not start with {prefix}); delete it and load {source.name} again to download it"
        )
    return read_torch_file(path)


# ---------------------------------------------------------------------------------------------
# The akamaster layout


def _strip(state: Mapping[str, Any]) -> Dict[str, Any]:
    """``state`` without DataParallel's ``module.`` prefix."""
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def is_akamaster_layout(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` holds an akamaster/pytorch_resnet_cifar10 option-A ResNet: a classifier
    called ``linear``, stages ``layerN`` at the top level, and no shortcut parameters."""
    keys = set(_strip(state))
    return {"conv1.weight", "layer1.0.conv1.weight", "linear.weight"} <= keys and not any(
        ".shortcut." in k or ".downsample." in k or k.startswith("fc.") for k in keys
    )


@dataclass(frozen=True)
class _Shape:
    """The structure of a CIFAR ResNet of basic blocks: stem width, (blocks, width) per stage."""

    stem: int
    stages: Tuple[Tuple[int, int], ...]

    @property
    def depth(self) -> int:
        return 2 + 2 * sum(blocks for blocks, _ in self.stages)

    def describe(self) -> str:
        blocks = sorted({b for b, _ in self.stages})
        per_stage = f"{blocks[0]} blocks per stage" if len(blocks) == 1 else f"{[b for b, _ in self.stages]} blocks"
        return f"ResNet-{self.depth} ({per_stage}, widths {'/'.join(str(w) for _, w in self.stages)})"


def _akamaster_shape(state: Mapping[str, Any]) -> _Shape:
    """The structure the (stripped) akamaster ``state`` describes, read from its tensors."""
    stages: List[Tuple[int, int]] = []
    while f"layer{len(stages) + 1}.0.conv1.weight" in state:
        s = len(stages) + 1
        blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(rf"layer{s}\.(\d+)\.", k)))
        stages.append((blocks, int(state[f"layer{s}.0.conv1.weight"].shape[0])))
    return _Shape(int(state["conv1.weight"].shape[0]), tuple(stages))


def _model_shape(model: nn.Module) -> Tuple[Optional[_Shape], Optional[str]]:
    """(structure, shortcut "A"/"B") of an nlsam CIFAR ResNet of post-activation basic blocks,
    or (None, None) for any other network."""
    stem = getattr(model, "conv1", None)
    if not isinstance(model, ResNet) or not isinstance(stem, nn.Conv2d) or stem.kernel_size != (3, 3):
        return None, None
    stages: List[Tuple[int, int]] = []
    shortcut: Optional[str] = None
    for stage in model.stages.children():
        blocks = [b for b in stage.children() if isinstance(b, BasicBlock)]
        if not blocks or len(blocks) != len([b for b in stage.children() if not _is_attention(b)]):
            return None, None
        stages.append((len(blocks), blocks[0].conv1.out_channels))
        if blocks[0].downsample is not None:
            shortcut = "A" if isinstance(blocks[0].downsample, ZeroPadShortcut) else "B"
    return _Shape(stem.out_channels, tuple(stages)), shortcut


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, attention_types())


def _describe_other(model: nn.Module) -> str:
    """What ``model`` is, for a network that is no CIFAR ResNet of basic blocks."""
    if not isinstance(model, ResNet):
        return f"a {type(model).__name__}"
    if not isinstance(model.maxpool, nn.Identity):
        return "an ImageNet ResNet"
    blocks = {type(b).__name__ for stage in model.stages.children() for b in stage.children() if not _is_attention(b)}
    return f"a ResNet of {', '.join(sorted(blocks))} blocks"


def _create_call(shape: _Shape, shortcut: str, classes: int) -> str:
    """How to build the nlsam network that ``shape`` fits."""
    option = ", shortcut='B'" if shortcut == "B" else ""
    if is_model(f"resnet{shape.depth}") and len({w for _, w in shape.stages}) > 1 and shape.stem == 16:
        return f"create_model('resnet{shape.depth}'{option})"
    return (
        f"ResNet(BasicBlock, {[b for b, _ in shape.stages]}, {[w for _, w in shape.stages]}, stem='cifar', "
        f"shortcut='{shortcut}', num_classes={classes}, input_size=32"
        + ("" if shape.stem == shape.stages[0][1] else f", stem_width={shape.stem}")
        + ")"
    )


def _fits_message(label: str, model: nn.Module, shape: _Shape, shortcut: str, classes: int) -> Optional[str]:
    """Why weights of ``shape`` with ``shortcut`` do not fit ``model`` (None when they do)."""
    own, own_shortcut = _model_shape(model)
    kind = {"A": "zero-padding (option A)", "B": "1x1 projection (option B)"}
    create = _create_call(shape, shortcut, classes)
    if own is None:
        return (
            f"{label} holds a CIFAR {shape.describe()}, which fits only nlsam's CIFAR ResNets of basic "
            f"blocks, not {_describe_other(model)}; use {create}"
        )
    if own != shape:
        return f"{label} holds a CIFAR {shape.describe()}, the model is a {own.describe()}; use {create}"
    if own_shortcut is not None and own_shortcut != shortcut:
        return f"{label} needs {kind[shortcut]} shortcuts, the model has {kind[own_shortcut]} ones; use {create}"
    return None


def check_model_fits(model: nn.Module, source: CifarSource) -> None:
    """Raise a one-line ``ValueError`` when ``source``'s weights do not fit ``model`` (another
    depth, another shortcut, not a CIFAR basic-block ResNet); checked before any download."""
    shape = _Shape(16, ((source.blocks, 16), (source.blocks, 32), (source.blocks, 64)))
    problem = _fits_message(source.name, model, shape, source.shortcut, source.num_classes)
    if problem:
        raise ValueError(f"load_pretrained: {problem}")


def _permutations(shape: _Shape) -> List[torch.Tensor]:
    """Per stage, ``p`` such that nlsam's channel ``i`` is akamaster's channel ``p[i]``.

    nlsam's option-A shortcut appends the new channels after the old ones; akamaster's pads
    ``w // 4`` on each side. So the old channels sit ``w // 4`` further on in akamaster's order,
    and nlsam's new (zero-padded) channels take the remaining indices in order.
    """
    perms, previous, width = [], torch.arange(shape.stem), shape.stem
    for s, (_, w) in enumerate(shape.stages, start=1):
        if w != width:
            if w != 2 * width:
                raise ValueError(
                    f"load_pretrained: akamaster layout with stage {s} of {w} channels after "
                    f"{width}: its zero-padding shortcut needs exactly twice as many"
                )
            head = previous + w // 4
            taken = set(head.tolist())
            previous = torch.cat([head, torch.tensor([c for c in range(w) if c not in taken], dtype=torch.long)])
        perms.append(previous)
        width = w
    return perms


def _convert_key(
    key: str, value: torch.Tensor, stem: torch.Tensor, perms: List[torch.Tensor]
) -> Tuple[str, torch.Tensor]:
    """One akamaster tensor under nlsam's name, its channels in nlsam's order."""
    if key.startswith("linear."):
        return "fc" + key[len("linear") :], value[:, perms[-1]] if value.dim() == 2 else value
    found = re.match(r"layer(\d+)\.(\d+)\.(conv|bn)(\d)\.", key)
    if not found:
        return key, value  # the stem: nlsam's channel order is akamaster's
    stage, block, kind, index = int(found[1]), int(found[2]), found[3], int(found[4])
    out = perms[stage - 1]
    if kind == "conv":
        first_conv = index == 1 and block == 0
        inputs = (perms[stage - 2] if stage > 1 else stem) if first_conv else out
        return "stages." + key, value[out][:, inputs]
    return "stages." + key, value[out] if value.dim() == 1 else value  # num_batches_tracked: a scalar


def akamaster_to_nlsam(
    state: Mapping[str, Any], model: Optional[nn.Module] = None, label: str = "the weights"
) -> Dict[str, Any]:
    """akamaster/pytorch_resnet_cifar10 weights under nlsam's names and channel order: the nlsam
    network (``shortcut="A"``) then computes exactly what akamaster's computes. The widths are
    read from the weights; given ``model``, a one-line ``ValueError`` says when they do not fit it."""
    state = _strip(state)
    shape = _akamaster_shape(state)
    if model is not None:
        problem = _fits_message(label, model, shape, "A", int(state["linear.weight"].shape[0]))
        if problem:
            raise ValueError(f"load_pretrained: {problem}")
    perms = _permutations(shape)
    stem = torch.arange(shape.stem)
    converted = {}
    for key, value in state.items():
        name, tensor = _convert_key(key, value, stem, perms) if isinstance(value, torch.Tensor) else (key, value)
        converted[name] = tensor.contiguous() if isinstance(tensor, torch.Tensor) else tensor
    return converted
