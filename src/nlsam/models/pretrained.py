"""Start nlsam's ResNets from torchvision or timm ImageNet weights, or from public CIFAR ResNet
weights (akamaster/pytorch_resnet_cifar10, chenyaofo/pytorch-cifar-models): :func:`load_pretrained`.

    >>> model = nlsam.create_model("resnet50", attention="nlsam", num_classes=10)
    >>> nlsam.attention.identity_init(model)          # the attention starts as the identity
    >>> print(nlsam.load_pretrained(model, "torchvision:resnet50.IMAGENET1K_V2"))  # doctest: +SKIP

Names are mapped by rule: torchvision's and timm's ``layer{i}.{j}.*`` are nlsam's
``stages.layer{i}.{j}.*``; the stem (``conv1``, ``bn1``), the shortcuts (``downsample.0/1``) and
the classifier (``fc``) keep their names. Attention parameters are left at their init, and a
classifier of another shape is skipped (left at its init, as timm does for a new number of
classes); the :class:`LoadReport` lists all of it.

akamaster's CIFAR ResNets (``akamaster:resnet20``, or their files by path) are recognised by
their keys and converted: renamed and their channels reordered, because their option-A shortcut
pads the new channels on both sides where nlsam's pads at the end (:mod:`._cifar_weights`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .._download import weights_download_error
from .._io import read_torch_file
from ..attention import attention_types
from ._cifar_weights import (
    akamaster_to_nlsam,
    check_model_fits,
    cifar_source,
    cifar_state_dict,
    is_akamaster_layout,
    is_cifar_name,
)
from .released import _PREFIX, pretrained_state_dict

__all__ = ["LoadReport", "Source", "load_pretrained"]

#: What :func:`load_pretrained` reads weights from: a weights name (``"torchvision:resnet50"``),
#: a file (a state dict or an nlsam checkpoint) or a state dict.
Source = Union[str, "os.PathLike[str]", Mapping[str, torch.Tensor]]

#: The prefixes of weight names ``load_pretrained`` downloads through the library's own mechanism.
_WEIGHT_PREFIXES = ("torchvision:", "timm:", "akamaster:", "chenyaofo:")

#: The name of the batch-norm step counters, which do not change a network's outputs.
_COUNTER = "num_batches_tracked"

_STAGE_KEY = re.compile(r"^layer\d+\.")


@dataclass
class LoadReport:
    """What :func:`load_pretrained` loaded into the model, and what it did not.

    ``str(report)`` is one line; it says plainly when the classifier or any backbone tensor was
    NOT loaded (left at its init), with the reason (not in the source, or another shape).
    """

    source: str
    loaded: List[str]  #: model keys filled from the source
    missing: List[str]  #: backbone keys of the model the source lacks (batch-norm counters aside)
    missing_attention: List[str]  #: attention keys of the model (left at their init)
    unexpected: List[str]  #: source keys the model has no place for
    skipped: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]]  #: key -> (source, model) shape
    classifier: List[str] = field(default_factory=list)  #: the model's classifier keys
    missing_counters: List[str] = field(default_factory=list)  #: ``num_batches_tracked`` the source lacks
    converted: str = ""  #: how the source was converted, e.g. from akamaster's layout

    @property
    def classifier_not_loaded(self) -> List[str]:
        """The model's classifier keys that were not loaded (left at their init)."""
        return [k for k in self.classifier if k not in self.loaded]

    @property
    def backbone_not_loaded(self) -> List[str]:
        """Backbone keys (not attention, not the classifier) that were not loaded."""
        head = set(self.classifier)
        return [k for k in self.missing if k not in head] + [k for k in self.skipped if k not in head]

    def _why(self, key: str) -> str:
        if key in self.skipped:
            src, dst = self.skipped[key]
            return f"{key} {'x'.join(map(str, src)) or 'scalar'} -> {'x'.join(map(str, dst)) or 'scalar'}"
        return f"{key} (not in the source)"

    def summary(self) -> str:
        via = f" ({self.converted})" if self.converted else ""
        parts = [f"loaded {len(self.loaded)} tensors from {self.source}{via}"]
        head = self.classifier_not_loaded
        if head:
            parts.append(
                f"classifier {', '.join(head)} NOT loaded (left at its init): " + ", ".join(self._why(k) for k in head)
            )
        body = self.backbone_not_loaded
        if body:
            parts.append(
                f"{_count(len(body), 'backbone tensor')} NOT loaded (left at their init): "
                + _listing([self._why(k) for k in body], 3)
            )
        if self.missing_attention:
            parts.append(f"{len(self.missing_attention)} attention tensors left at their init")
        if self.missing_counters:
            parts.append(
                f"{len(self.missing_counters)} batch-norm counters ({_COUNTER}) not in the source "
                "(they do not change the outputs)"
            )
        if self.unexpected:
            parts.append(f"{_count(len(self.unexpected), 'source tensor')} unused: {_listing(self.unexpected, 3)}")
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.summary()


def _count(n: int, noun: str) -> str:
    """``"1 backbone tensor"``, ``"3 backbone tensors"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _listing(items: List[str], limit: int = 5) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _parse_weight_name(name: str) -> Tuple[str, str, Optional[str]]:
    """``"torchvision:resnet50.IMAGENET1K_V2"`` -> ("torchvision", "resnet50", "IMAGENET1K_V2");
    ``"timm:resnet50.a1_in1k"`` -> ("timm", "resnet50.a1_in1k", None) (timm reads its own tags)."""
    library, _, rest = name.partition(":")
    if not rest:
        raise ValueError(f"load_pretrained: {name!r} names no model after {library}:")
    if library == "torchvision":
        arch, _, tag = rest.partition(".")
        return library, arch, tag or None
    return library, rest, None


def _torchvision_state_dict(arch: str, tag: Optional[str]) -> Dict[str, torch.Tensor]:
    """Weights ``tag`` (default ``DEFAULT``) of torchvision model ``arch``, through torchvision's
    own download and cache."""
    import torchvision.models

    try:
        weights_enum = torchvision.models.get_model_weights(arch)
    except ValueError:
        raise ValueError(f"load_pretrained: torchvision has no model {arch!r}") from None
    try:
        weights = weights_enum[tag or "DEFAULT"]
    except KeyError:
        valid = ", ".join([w.name for w in weights_enum] + ["DEFAULT"])
        raise ValueError(f"load_pretrained: torchvision has no weights {tag!r} for {arch}; valid: {valid}") from None
    try:
        return weights.get_state_dict(progress=True)
    except OSError as exc:  # offline, a proxy, an HTTP error (URLError is an OSError)
        raise weights_download_error(
            f"torchvision:{arch}.{weights.name}", weights.url, exc, _torch_hub_hint()
        ) from None


def _torch_hub_hint() -> str:
    import torch.hub

    return (
        f"torchvision keeps downloaded weights in {os.path.join(torch.hub.get_dir(), 'checkpoints')}; "
        "copy the file there from a machine with a connection, or give --init-from a weights file"
    )


def _timm_state_dict(name: str) -> Dict[str, torch.Tensor]:
    """The pretrained weights of timm model ``name`` (``arch.tag``), through timm's own download
    and cache."""
    import timm

    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except OSError as exc:  # offline: the Hugging Face hub's errors are OSErrors too
        raise weights_download_error(
            f"timm:{name}",
            "the Hugging Face hub",
            exc,
            "timm keeps downloaded weights in the Hugging Face cache ($HF_HOME); fill it "
            "from a machine with a connection, or give --init-from a weights file",
        ) from None


def _read_source(source: Source) -> Tuple[Mapping[str, Any], str]:
    """The state dict ``source`` holds or names, and a label for the report."""
    content: Mapping[str, Any]
    if isinstance(source, Mapping):
        content, label = source, "state dict"
    elif isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
        content, label = read_torch_file(source), os.fspath(source)  # weights_only=True, one-line errors
    elif isinstance(source, str) and source.startswith(_PREFIX):  # one of nlsam's released weights
        return pretrained_state_dict(source), source
    elif isinstance(source, str) and source.startswith(_WEIGHT_PREFIXES):
        library, arch, tag = _parse_weight_name(source)
        if library == "torchvision":
            return _torchvision_state_dict(arch, tag), source
        if library == "timm":
            return _timm_state_dict(arch), source
        content, label = cifar_state_dict(cifar_source(source)), source  # a file as published
    else:
        raise ValueError(
            f"load_pretrained: {source!r} is no file, state dict or weights name; name weights "
            f"as nlsam:<released weight> (nlsam.list_pretrained()), torchvision:<arch>[.<weights>] (e.g. torchvision:resnet50.IMAGENET1K_V2), "
            f"timm:<arch>[.<tag>] (e.g. timm:resnet50.a1_in1k), akamaster:resnet20|32|44|56|110|1202 "
            f"or chenyaofo:cifar10_resnet20|32|44|56 (cifar100_ too)"
        )
    # an nlsam (or timm training) checkpoint keeps the network's weights under one key
    for key in ("model", "state_dict"):
        inner = content.get(key)
        if isinstance(inner, Mapping):
            return inner, label
    return content, label


def _model_keys(key: str) -> Iterator[str]:
    """The names a source key may have in an nlsam model, most likely first."""
    if key.startswith("module."):  # saved from DistributedDataParallel
        key = key[len("module.") :]
    yield key
    if _STAGE_KEY.match(key):  # torchvision / timm layer{i}.{j}.* -> nlsam stages.layer{i}.{j}.*
        yield "stages." + key


def _prefixes(model: nn.Module) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(attention module prefixes, classifier prefixes) of ``model``'s state-dict keys."""
    kinds = attention_types()
    attention = tuple(f"{n}." for n, m in model.named_modules() if n and isinstance(m, kinds))
    get_classifier = getattr(model, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else getattr(model, "fc", None)
    heads = tuple(f"{n}." for n, m in model.named_modules() if n and m is classifier)
    return attention, heads


def _match(own: Mapping[str, torch.Tensor], state: Mapping[str, Any]):
    """``(to_load, unexpected, skipped)``: the source tensors under the model's names, the source
    keys with no place in the model, and the model keys whose source tensor has another shape."""
    to_load: Dict[str, torch.Tensor] = {}
    unexpected: List[str] = []
    skipped: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {}
    for key, value in state.items():
        target = next((k for k in _model_keys(key) if k in own), None)
        if target is None or not isinstance(value, torch.Tensor):
            unexpected.append(key)
        elif value.shape != own[target].shape:
            skipped[target] = (tuple(value.shape), tuple(own[target].shape))
        else:
            to_load[target] = value
    return to_load, unexpected, skipped


def _full_state_dict(model: nn.Module, state: Mapping[str, Any]) -> Dict[str, Any]:
    """``state`` under ``model``'s names (torchvision / timm ``layer1.0.conv1`` becomes
    ``stages.layer1.0.conv1``), completed with the model's own tensors for the keys it lacks:
    what timm's ``pretrained_filter_fn`` returns, so attention keeps its init under strict loading
    (timm then adapts ``conv1`` and drops a classifier of another size itself)."""
    own = model.state_dict()
    state, _ = _from_known_layout(model, state, "the weights")
    renamed = {next((k for k in _model_keys(key) if k in own), key): value for key, value in state.items()}
    return {**{k: v for k, v in own.items() if k not in renamed}, **renamed}


def _from_known_layout(model: nn.Module, state: Mapping[str, Any], label: str) -> Tuple[Mapping[str, Any], str]:
    """``(state, how)``: akamaster's CIFAR ResNet weights converted to nlsam's names and channel
    order (a one-line ``ValueError`` when they do not fit ``model``), any other ``state`` as it is."""
    if not is_akamaster_layout(state):
        return state, ""
    return (
        akamaster_to_nlsam(state, model, label),
        "akamaster/pytorch_resnet_cifar10 layout: linear -> fc, channels reordered for nlsam's zero-padding",
    )


def load_pretrained(model: nn.Module, source: Source, *, strict_backbone: bool = False) -> LoadReport:
    """Load torchvision, timm or public CIFAR ResNet weights into one of nlsam's ResNets (in place).

    Args:
        model: an nlsam ResNet (with or without attention), e.g. ``create_model("resnet50",
            attention="nlsam")``.
        source: a state dict; a file holding one or an nlsam checkpoint (its ``"model"``),
            read with ``torch.load(weights_only=True)``; or a weights name: one of nlsam's
            released weights, ``"nlsam:<name>"`` (:func:`nlsam.list_pretrained`; attention
            included), ``"torchvision:<arch>[.<weights>]"`` (``torchvision:resnet50.IMAGENET1K_V2``;
            default ``DEFAULT``) or ``"timm:<arch>[.<tag>]"`` (``timm:resnet50.a1_in1k``),
            downloaded through torchvision's or timm's own mechanism and cache; or a CIFAR-10
            ResNet of akamaster/pytorch_resnet_cifar10, ``"akamaster:resnet20"`` (``resnet32``,
            ``44``, ``56``, ``110``, ``1202``; into the nlsam network of the same depth), or of
            chenyaofo/pytorch-cifar-models, ``"chenyaofo:cifar10_resnet20"`` (``cifar100_`` too;
            into a network built with ``shortcut="B"``), downloaded into torch.hub's cache
            (``torch.hub.get_dir()/checkpoints``). akamaster's files are recognised by their
            keys however they are given (a name, a path, a state dict) and converted so that
            the network computes what akamaster's code computes.
        strict_backbone: raise instead of loading when a backbone tensor of the model is
            missing from the source or of another shape, or the source has tensors the model
            has no place for. Attention tensors, a classifier of another shape and batch-norm
            step counters (``num_batches_tracked``) are always allowed.

    Returns:
        a :class:`LoadReport`. Attention parameters stay at their init (use
        :func:`nlsam.attention.identity_init` first for a network that starts out computing
        exactly what the pretrained one computes); a classifier of another shape is skipped.

    Raises:
        ValueError: an unreadable source, an unknown weights name, CIFAR weights of another
            depth or shortcut than the model's, ``strict_backbone`` violations, or a source of
            which not one backbone tensor fits the model.
        nlsam.data.DownloadError: named weights that could not be downloaded (one line: the
            address, the file name and the folder to put it in).
    """
    if is_cifar_name(source):
        check_model_fits(model, cifar_source(str(source)))  # before any download
    state, label = _read_source(source)
    state, converted = _from_known_layout(model, state, label)
    own = model.state_dict()
    attention, heads = _prefixes(model)
    attention_keys = {k for k in own if k.startswith(attention)}
    to_load, unexpected, skipped = _match(own, state)
    absent = [k for k in own if k not in to_load and k not in skipped and k not in attention_keys]
    missing = [k for k in absent if not k.endswith(_COUNTER)]
    backbone_skipped = [k for k in skipped if not k.startswith(heads)]

    if not set(to_load) - attention_keys:
        raise ValueError(
            f"load_pretrained: no tensor of {label} fits {type(model).__name__} (source keys "
            f"such as {', '.join(list(state)[:3])}); is it weights of another architecture?"
        )
    if strict_backbone and (missing or unexpected or backbone_skipped):
        problems = [
            f"{what}: {_listing(keys)}"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape differs", backbone_skipped),
            )
            if keys
        ]
        raise ValueError(f"load_pretrained (strict_backbone): {label} does not match; " + "; ".join(problems))

    model.load_state_dict(to_load, strict=False)
    return LoadReport(
        source=label,
        loaded=list(to_load),
        missing=missing,
        missing_attention=[k for k in own if k in attention_keys and k not in to_load and k not in skipped],
        unexpected=unexpected,
        skipped=skipped,
        classifier=[k for k in own if k.startswith(heads)] if heads else [],
        missing_counters=[k for k in absent if k.endswith(_COUNTER)],
        converted=converted,
    )
