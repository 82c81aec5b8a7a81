"""nlsam's released weights: networks trained by the project's studies, found by
:func:`list_pretrained` and loaded by name.

    >>> import nlsam
    >>> [w.name for w in nlsam.list_pretrained("*ge*")]                    # doctest: +SKIP
    ['ge_nlsam_resnet20.c10jpg_30ep', 'ge_resnet20.c10jpg_30ep']
    >>> model = nlsam.create_model("resnet20", attention="ge+nlsam",
    ...                            pretrained="nlsam:ge_nlsam_resnet20.c10jpg_30ep")  # doctest: +SKIP

The same weights load through timm (``timm.create_model("ge_nlsam_resnet20", pretrained=True)``,
``timm.list_pretrained()`` lists them) and torch.hub (the repository's ``hubconf.py``).

A weight is named timm's way, ``MODEL.TAG``: ``MODEL`` is the network's timm name
(:func:`nlsam.models.timm_models.timm_model_name`, e.g. ``ge_nlsam_resnet20``) and ``TAG`` says
what it was trained on and how long (``c10jpg_30ep``: the CIFAR-10 JPEG copy, 30 epochs). Each
comes with a card (``card``: the Hugging Face model-card layout) that gives its recipe, the
machine and precision it trained in, its top-1 and the seed mean of its variant.

The weights ship inside the package (``nlsam/weights/``), so loading needs no network. A
weight listed with a ``url`` but not shipped is downloaded once into torch.hub's cache
(``torch.hub.get_dir()/checkpoints``) and checked against its sha256; without a network the
error names the file to fetch and the folder to put it in.

**What the data means.** The ``c10jpg`` weights trained and were measured on a JPEG copy of
CIFAR-10 whose test split is shifted from the official one: akamaster's ResNet-20, 91.78% on the
official test set, scores 81.03% on the copy's. Their top-1 compares with other networks
measured on the copy, not with published CIFAR-10 figures.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from .._download import DownloadError
from .._io import file_sha256

__all__ = [
    "PretrainedWeight",
    "get_pretrained",
    "is_released_name",
    "list_pretrained",
    "pretrained_file",
    "pretrained_state_dict",
    "shipped_file",
    "weight_checkpoint",
]

#: The prefix that names a released weight wherever weights are given by name.
_PREFIX = "nlsam:"
_INDEX = "index.json"


@dataclass(frozen=True)
class PretrainedWeight:
    """One released weight: what network it is, what it was trained on, and how well it does.

    ``top1`` is this weight's own top-1 (%) on ``data``'s test split, evaluated in fp32;
    ``variant_top1_mean`` / ``_std`` / ``variant_seeds`` summarise the final top-1 of every
    finished seed of its variant in the study it comes from (``None`` with one seed).
    """

    name: str  #: ``MODEL.TAG``, e.g. ``ge_nlsam_resnet20.c10jpg_30ep``
    model: str  #: the timm name, e.g. ``ge_nlsam_resnet20``
    arch: str  #: the nlsam architecture, e.g. ``resnet20``
    attention: Optional[str]  #: the nlsam attention, e.g. ``ge+nlsam`` (None: none)
    data: str  #: what it trained and was measured on
    data_file: str  #: the data's file name, as ``nlsam train --data`` takes it
    data_sha256: str  #: the sha256 of the data file
    epochs: int
    seed: int
    top1: float  #: this weight's top-1 (%) on the test split, fp32 eval
    variant_top1_mean: Optional[float]
    variant_top1_std: Optional[float]
    variant_seeds: int
    num_classes: int
    classes: Tuple[str, ...]  #: the class names, in the classifier's order
    input_size: Tuple[int, int, int]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    params: int
    flops: int  #: FLOPs of one forward pass at ``input_size`` (``nlsam profile``)
    recipe: str  #: the training config's name
    precision: str  #: the precision it trained in (``bf16`` or ``fp32``)
    machine: str  #: the CPU(s) it trained on
    study: str  #: the study it comes from
    file: str  #: the file name (safetensors)
    sha256: str  #: the file's sha256
    license: str = "MIT"
    url: Optional[str] = None  #: where to download it when it is not shipped

    @property
    def tag(self) -> str:
        """The part of the name after the dot, e.g. ``c10jpg_30ep``."""
        return self.name.partition(".")[2]

    @property
    def card(self) -> str:
        """The weight's model card (markdown, the Hugging Face layout), as shipped."""
        path = _weights_dir() / (self.name + ".md")
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def as_dict(self) -> Dict[str, Any]:
        """The record as plain data (what ``index.json`` holds)."""
        return asdict(self)


def _weights_dir() -> Path:
    return Path(str(resources.files("nlsam") / "weights"))


@lru_cache(maxsize=1)
def _records() -> Tuple[PretrainedWeight, ...]:
    """Every released weight, from ``nlsam/weights/index.json`` (none if it is absent)."""
    index = _weights_dir() / _INDEX
    if not index.is_file():
        return ()
    known = {f.name for f in fields(PretrainedWeight)}
    out = []
    for entry in json.loads(index.read_text(encoding="utf-8")):
        entry = {k: v for k, v in entry.items() if k in known}
        for key in ("input_size", "mean", "std", "classes"):
            entry[key] = tuple(entry[key])
        out.append(PretrainedWeight(**entry))
    return tuple(sorted(out, key=lambda w: w.name))


def list_pretrained(pattern: str = "*") -> List[PretrainedWeight]:
    """The released weights whose name matches ``pattern`` (shell-style, e.g. ``"*resnet20*"``),
    sorted by name; ``[w.name for w in nlsam.list_pretrained()]`` are the names to load."""
    return [w for w in _records() if fnmatch.fnmatchcase(w.name, pattern)]


def is_released_name(source: Any) -> bool:
    """Whether ``source`` names a released weight, ``"nlsam:NAME"`` (the name may be unknown)."""
    return isinstance(source, str) and source.startswith(_PREFIX)


def get_pretrained(name: str) -> PretrainedWeight:
    """The record of released weight ``name`` (``MODEL.TAG``, with or without ``nlsam:``); a
    ``ValueError`` naming the released weights for any other name."""
    bare = name[len(_PREFIX) :] if isinstance(name, str) and name.startswith(_PREFIX) else name
    for weight in _records():
        if weight.name == bare:
            return weight
    valid = ", ".join(w.name for w in _records()) or "none in this installation"
    raise ValueError(f"no released weight {bare!r}; released: {valid} (nlsam.list_pretrained())")


def _cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def shipped_file(weight: PretrainedWeight) -> Optional[Path]:
    """The weight's file in the installed package, None when it is not shipped."""
    path = _weights_dir() / weight.file
    return path if path.is_file() else None


def pretrained_file(weight: PretrainedWeight) -> Path:
    """The weight's file on this machine: shipped in the package, else in torch.hub's cache,
    else downloaded there from ``weight.url`` and checked against ``weight.sha256``.

    Raises:
        nlsam.data.DownloadError: it is not here and could not be downloaded (one line: what to
            fetch, from where, and the folder to put it in), or the download's sha256 differs.
    """
    for folder in (_weights_dir(), _cache_dir()):
        path = folder / weight.file
        if path.is_file():
            return path
    dest = _cache_dir() / weight.file
    if not weight.url:
        raise DownloadError(
            f"the weight {weight.name} is not in this installation ({_weights_dir()}); "
            f"put {weight.file} (sha256 {weight.sha256}) in {dest.parent}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{weight.file}.", dir=dest.parent)
    os.close(fd)
    try:
        try:
            torch.hub.download_url_to_file(weight.url, tmp, progress=False)
        except OSError as exc:  # offline, a proxy, an HTTP error (URLError is an OSError)
            reason = getattr(exc, "reason", None) or exc.strerror or exc
            raise DownloadError(
                f"could not download the weight {weight.name} from {weight.url} ({reason}); "
                f"fetch it on a machine with a connection and put it in {dest}"
            ) from None
        got = file_sha256(tmp)
        if got != weight.sha256:
            raise DownloadError(
                f"the download of {weight.name} from {weight.url} is corrupt (sha256 {got}, "
                f"expected {weight.sha256}); nothing was kept, try again"
            )
        shutil.move(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def pretrained_state_dict(name: str) -> Dict[str, torch.Tensor]:
    """The state dict of released weight ``name`` (see :func:`get_pretrained`), on the CPU."""
    from safetensors.torch import load_file

    return load_file(str(pretrained_file(get_pretrained(name))), device="cpu")


def weight_checkpoint(name: str) -> Dict[str, Any]:
    """Released weight ``name`` in the layout of an nlsam checkpoint (``model``, ``config``,
    ``meta``), so that ``nlsam eval nlsam:NAME`` and :func:`nlsam.load_model` take it like a run.
    Its ``precision`` is ``float32``: ``nlsam eval`` evaluates it in fp32 by default, as its
    ``top1`` was measured."""
    weight = get_pretrained(name)
    return {
        "model": pretrained_state_dict(weight.name),
        "config": {
            "model": weight.arch,
            "attention": weight.attention,
            "model_options": {},
            "data": weight.data_file,
            "seed": weight.seed,
            "epochs": weight.epochs,
        },
        "meta": {
            "classes": list(weight.classes),
            "in_chans": weight.input_size[0],
            "input_size": list(weight.input_size[1:]),
            "mean": list(weight.mean),
            "std": list(weight.std),
            "data": weight.data_file,
        },
        "precision": "float32",
        "epoch": weight.epochs - 1,
    }
