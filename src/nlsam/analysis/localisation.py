"""Where a network looks, measured against ground truth (``nlsam locate``, and the localisation
columns of ``nlsam report``) on the ``locate`` data, whose test images come with a mask of the
one shape that decides their class (:mod:`nlsam.data._localisation`).

Two scores of a map against a mask, per image:

* :func:`mass_in_mask`: the share of the map's mass that falls inside the mask. A map with no
  mass at all (all zeros) prefers no pixel and scores like a uniform map: the mask's area
  share.
* :func:`pointing_game`: whether the map's maximum falls inside the mask (Zhang et al., 2016,
  here without their 15-pixel tolerance). Ties: every pixel within ``1e-6`` (relative) of the
  maximum counts, and the score is the share of those pixels inside the mask, i.e. the hit
  rate of a random choice among them; so a constant (or all-zero) map scores the area share.

Maps of any size are upsampled to the mask's size first: bilinearly (half-pixel centres,
``align_corners=False``, as the Grad-CAM package does with OpenCV) for Grad-CAM, nearest for
the attention modules' own maps (each gate value then covers the block of input pixels of its
feature-map cell, as the module itself distributes it). The chance level of both scores is
the mask's area share (:func:`area_share`): what a map that knows nothing scores, on average.
A stronger baseline is the position prior: the mean mask of the training images used as the
map of every test image (the deciding shape is never at the very border, where its frame
would not fit), reported beside it.

The maps scored, on the test split, with each image prepared as the test loader prepares it:

* Grad-CAM of the last convolutional stage (as ``nlsam cam``), computed for a whole batch with
  plain forward hooks and ``torch.autograd.grad`` (:func:`grad_cam_maps`; the optional
  ``grad-cam`` package is not needed, and gives the same map, see the tests): the ReLU of the
  sum of the stage's activations weighted by the spatial mean of their gradients. The main
  figure is the map of the *true* class (what the network takes as evidence for the right
  answer, whether or not it wins); the map of the predicted class is reported beside it.
* The network's own spatial attention maps (NL-SAM, CBAM's spatial gate: the modules of
  :func:`nlsam.attention.spatial_attention_types`), each module's gate
  for every image (collected with forward hooks, as ``nlsam attention``), and their mean over
  modules (each module's map upsampled, shifted and scaled to unit mass first, so that every
  module counts the same).

Every map is shifted to a minimum of 0 per image before it is scored (the Grad-CAM package's
normalisation; a scale does not change a share). For a sigmoid gate this matters: its values
sit between 0 and 1 around a floor well above 0, and the raw share would mostly measure the
floor, near the area share whatever the module does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._io import atomic_write_bytes
from .._sizes import to_2tuple
from ..data import LOCATE_CLASSES, Normalizer, generate_locate, parse_procedural, procedural_name, procedural_size
from ..engine.checkpoint import load_checkpoint, peek_checkpoint, resolve_checkpoint_path
from ..engine.loading import model_from_checkpoint
from .attention_maps import _spatial_attention_modules
from .gradcam import target_layer
from .predict import _classes, _data_config

__all__ = [
    "CACHE_FILE",
    "LocateData",
    "area_share",
    "attention_maps_batch",
    "evaluate_localisation",
    "grad_cam_maps",
    "locate_data",
    "localisation_of_run",
    "mass_in_mask",
    "pointing_game",
    "prepare_maps",
    "run_localisation",
    "upsample",
]

#: The file in a run directory where :func:`localisation_of_run` caches its result.
CACHE_FILE = "localisation.json"
#: Bumped whenever the figures change meaning, so that older caches are recomputed.
_METRIC_VERSION = 1
_TIE_RTOL = 1e-6
_MODES = ("bilinear", "nearest")


# ------------------------------------------------------------------------------------------
# the scores
# ------------------------------------------------------------------------------------------


def _check(maps: torch.Tensor, masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    if maps.dim() != 3 or masks.dim() != 3:
        raise ValueError(
            f"need maps B x h x w and masks B x H x W, got maps of shape {tuple(maps.shape)} "
            f"and masks of shape {tuple(masks.shape)}"
        )
    if maps.shape[0] != masks.shape[0]:
        raise ValueError(f"{maps.shape[0]} maps but {masks.shape[0]} masks; need one mask per map")
    maps = maps.detach().float()
    if not torch.isfinite(maps).all():
        raise ValueError("maps must be finite (found nan or inf)")
    if len(maps) and maps.min() < 0:
        raise ValueError(
            f"maps must be non-negative (the smallest value is {maps.min().item():.4g}); "
            "shift them first, e.g. with prepare_maps"
        )
    masks = masks.to(maps.device) != 0
    if len(masks) and not masks.flatten(1).any(dim=1).all():
        raise ValueError("every mask needs at least one pixel (an empty mask has no chance level)")
    return maps, masks


def upsample(maps: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """``maps`` (B x h x w) at ``size`` (H, W): bilinear with half-pixel centres, or nearest."""
    if mode not in _MODES:
        raise ValueError(f"unknown upsampling mode {mode!r}; valid: {', '.join(_MODES)}")
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    kwargs = dict(align_corners=False) if mode == "bilinear" else {}
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode=mode, **kwargs)[:, 0]


def area_share(masks: torch.Tensor) -> torch.Tensor:
    """The share of the image each mask covers (B): the chance level of both scores."""
    masks = masks != 0
    return masks.flatten(1).float().mean(dim=1)


def mass_in_mask(maps: torch.Tensor, masks: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Per image, the share (in [0, 1]) of the map's total mass that lies inside the mask.

    ``maps``: B x h x w, non-negative, upsampled to the masks' B x H x W (bool or 0/1) with
    ``mode`` ("bilinear" or "nearest"). An all-zero map scores the mask's area share.
    """
    maps, masks = _check(maps, masks)
    up = upsample(maps, masks.shape[-2:], mode).flatten(1)
    flat = masks.flatten(1)
    total = up.sum(dim=1)
    inside = (up * flat).sum(dim=1)
    share = inside / total.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(total > 0, share, flat.float().mean(dim=1))


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Per image, whether the map's maximum lies inside the mask: 1 or 0, or with ties (values
    within a relative 1e-6 of the maximum) the share of the tied pixels inside the mask.

    ``maps``: B x h x w, non-negative, upsampled as in :func:`mass_in_mask`.
    """
    maps, masks = _check(maps, masks)
    up = upsample(maps, masks.shape[-2:], mode).flatten(1)
    flat = masks.flatten(1)
    top = up.amax(dim=1, keepdim=True)
    tied = up >= top - _TIE_RTOL * top.abs()
    return (tied & flat).sum(dim=1).float() / tied.sum(dim=1).float()


def prepare_maps(maps: torch.Tensor) -> torch.Tensor:
    """Shift each map (B x h x w) to a minimum of 0: the maps the scores are computed on."""
    maps = maps.detach().float()
    return maps - maps.flatten(1).amin(dim=1).view(-1, 1, 1)


# ------------------------------------------------------------------------------------------
# the maps of a batch
# ------------------------------------------------------------------------------------------


@dataclass
class _Maps:
    logits: torch.Tensor  # B x classes
    grad_cam: Dict[str, torch.Tensor]  # target name -> B x h x w (ReLU'd, not shifted)
    attention: List[Tuple[str, Optional[int], Optional[int], torch.Tensor]]  # (name, stage, block, B x h x w)


def _maps(model: nn.Module, x: torch.Tensor, targets: Dict[str, Optional[torch.Tensor]], own_maps: bool) -> _Maps:
    """One forward pass: the logits, Grad-CAM for each set of ``targets`` (None: the predicted
    classes) and the spatial attention maps (``own_maps``)."""
    layer = target_layer(model)
    acts: List[torch.Tensor] = []
    found: List[Tuple[str, Optional[int], Optional[int], torch.Tensor]] = []
    handles = [layer.register_forward_hook(lambda module, inputs, output: acts.append(output))]

    def hook_for(name, stage, block):
        def hook(module, inputs, output):
            with torch.no_grad():
                found.append((name, stage, block, module.attention_map(inputs[0]).detach()[:, 0].float()))

        return hook

    if own_maps:
        for name, stage, block, module in _spatial_attention_modules(model):
            handles.append(module.register_forward_hook(hook_for(name, stage, block)))
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # a graph even where the weights are frozen
            try:
                logits = model(x)
            except RuntimeError as exc:
                raise ValueError(
                    f"the network cannot run on a {x.shape[-2]}x{x.shape[-1]} input: {str(exc).splitlines()[0]}"
                ) from None
            if not acts:
                raise ValueError(f"the Grad-CAM layer of {type(model).__name__} did not run")
            activation = acts[-1]
            cams = {}
            names = list(targets)
            for i, name in enumerate(names):
                index = targets[name]
                index = logits.argmax(dim=1) if index is None else index.to(logits.device)
                score = logits.gather(1, index.view(-1, 1)).sum()
                (grad,) = torch.autograd.grad(score, activation, retain_graph=i < len(names) - 1)
                weights = grad.mean(dim=(2, 3), keepdim=True)
                cams[name] = (weights * activation).sum(dim=1).clamp_min(0.0).detach().float()
    finally:
        for handle in handles:
            handle.remove()
    return _Maps(logits.detach(), cams, found)


def grad_cam_maps(
    model: nn.Module, x: torch.Tensor, targets: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of the last convolutional stage for a batch ``x`` (B x 3 x H x W).

    Returns the maps (B x h x w at the stage's resolution, ReLU'd, not normalised) for the
    classes ``targets`` (B indices; default: the predicted ones) and the logits (B x classes).
    The model is not changed and keeps no gradients. With :func:`prepare_maps`, scaling to a
    maximum of 1 and bilinear upsampling to H x W, a map is the ``grad-cam`` package's.
    """
    if targets is not None:
        targets = torch.as_tensor(targets).view(-1)
        n = getattr(model, "num_classes", None)
        if len(targets) != len(x):
            raise ValueError(f"{len(targets)} target classes for {len(x)} images; need one per image")
        if n is not None and len(targets) and not (0 <= int(targets.min()) and int(targets.max()) < n):
            raise ValueError(f"target classes must be in 0..{n - 1}, got {targets.tolist()}")
    out = _maps(model, x, {"target": targets}, own_maps=False)
    return out.grad_cam["target"], out.logits


def attention_maps_batch(
    model: nn.Module, x: torch.Tensor
) -> Tuple[torch.Tensor, List[Tuple[str, Optional[int], Optional[int], torch.Tensor]]]:
    """The logits of a batch ``x`` and the map of every spatial attention module:
    ``(name, stage, block, B x h x w)`` in forward order (the batch version of
    :func:`~nlsam.analysis.attention_maps.attention_maps`)."""
    if not _spatial_attention_modules(model):
        raise ValueError("this network has no attention module with a spatial map")
    found: List[Tuple[str, Optional[int], Optional[int], torch.Tensor]] = []
    handles = []

    def hook_for(name, stage, block):
        def hook(module, inputs, output):
            found.append((name, stage, block, module.attention_map(inputs[0]).detach()[:, 0].float()))

        return hook

    try:
        for name, stage, block, module in _spatial_attention_modules(model):
            handles.append(module.register_forward_hook(hook_for(name, stage, block)))
        with torch.no_grad():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, found


def _unit_mass(maps: torch.Tensor) -> torch.Tensor:
    total = maps.flatten(1).sum(dim=1).view(-1, 1, 1)
    return torch.where(total > 0, maps / total.clamp_min(torch.finfo(torch.float32).tiny), maps)


# ------------------------------------------------------------------------------------------
# evaluation on the locate test split
# ------------------------------------------------------------------------------------------


@dataclass
class LocateData:
    """The test split of a run's locate data, with the masks and the position prior."""

    spec: str
    images: torch.Tensor  # uint8 N x 3 x S x S
    labels: torch.Tensor  # int64 N
    masks: torch.Tensor  # bool N x S x S
    prior: torch.Tensor  # float S x S: the mean mask of (up to 2048 of) the training images


def locate_data(spec: str, image_size: Optional[int] = None, n: Optional[int] = None) -> LocateData:
    """The test split (its first ``n`` images; default all) of the locate dataset ``spec``
    (``locate[:N_TRAIN[:N_TEST[:DATA_SEED]]]``), generated at the size the data of a run with
    ``image_size`` was generated at; ValueError for another dataset."""
    if procedural_name(str(spec)) != "locate":
        raise ValueError(
            f"data {spec!r} is not the locate data: localisation needs its masks "
            f"(train on it with `nlsam train --data locate`)"
        )
    _, n_train, n_test, data_seed = parse_procedural(str(spec))
    if n is not None and n < 1:
        raise ValueError(f"the number of images (--n) must be at least 1, got {n}")
    size = procedural_size("locate", int(image_size or 32))
    test = generate_locate(n_test, image_size=size, seed=data_seed, split="test")
    k = n_test if n is None else min(n, n_test)
    # the first chunk of the training split: generate_locate draws it the same way for any n >= 2048
    train = generate_locate(min(n_train, 2048), image_size=size, seed=data_seed, split="train")
    return LocateData(str(spec), test.images[:k], test.labels[:k], test.masks[:k], train.masks.float().mean(dim=0))


def _summary(values: List[torch.Tensor]) -> float:
    return 100.0 * float(torch.cat(values).double().mean()) if values else math.nan


def evaluate_localisation(
    model: nn.Module,
    data: LocateData,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    input_size: Optional[Tuple[int, int]] = None,
    batch_size: int = 100,
    device: Union[str, torch.device] = "cpu",
) -> Dict[str, Any]:
    """Accuracy, Grad-CAM scores (true and predicted class) and, for a network with spatial
    attention modules, the scores of their own maps (per module and their mean), with the
    chance levels; every figure in percent, averaged over the images of ``data``.

    The images are normalised with ``mean``/``std`` and resized to ``input_size`` (default:
    their size) as the test loader does, and the network runs in float32 (so ``top1`` can
    differ a little from a bf16 evaluation); the scores are computed at the masks' size.
    ``grad_cam.zero_maps`` counts the all-zero Grad-CAM maps (scored as the area share).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device)
    model = model.to(device).eval()
    S = tuple(data.masks.shape[-2:])
    norm = Normalizer(mean, std, device, out_size=to_2tuple(input_size, "input_size") if input_size else None)
    has_own = bool(_spatial_attention_modules(model))
    correct = 0
    scores: Dict[str, List[torch.Tensor]] = {}
    modules: Dict[str, Dict[str, Any]] = {}
    zero = {"grad_cam_true": 0, "grad_cam_predicted": 0}
    prior = data.prior.unsqueeze(0)
    for start in range(0, len(data.labels), batch_size):
        images = data.images[start : start + batch_size].to(device)
        labels = data.labels[start : start + batch_size].to(device)
        masks = data.masks[start : start + batch_size].to(device)
        out = _maps(model, norm(images), {"true": labels, "predicted": None}, own_maps=has_own)
        correct += int((out.logits.argmax(dim=1) == labels).sum())

        # this batch's masks bound as a default: a closure would see a later batch's
        def add(key: str, maps: torch.Tensor, mode: str, masks: torch.Tensor = masks) -> None:
            maps = prepare_maps(maps)
            scores.setdefault(key + ".mass", []).append(mass_in_mask(maps, masks, mode).cpu())
            scores.setdefault(key + ".pointing", []).append(pointing_game(maps, masks, mode).cpu())

        for target, cam in out.grad_cam.items():
            zero["grad_cam_" + target] += int((cam.flatten(1).amax(dim=1) <= 0).sum())
            add("grad_cam." + target, cam, "bilinear")
        add("chance.prior", prior.expand(len(masks), *prior.shape[1:]).to(device), "nearest")
        scores.setdefault("chance.area", []).append(area_share(masks).cpu())
        if out.attention:
            mean_map = torch.zeros(len(masks), *S, device=device)
            for name, stage, block, gate in out.attention:
                modules.setdefault(name, dict(name=name, stage=stage, block=block, size=list(gate.shape[-2:])))
                add("module." + name, gate, "nearest")
                mean_map += _unit_mass(prepare_maps(upsample(gate.float(), S, "nearest")))
            add("own_mean", mean_map / len(out.attention), "nearest")

    n = len(data.labels)

    def pair(key: str) -> Dict[str, Any]:
        return dict(
            mass_in_mask=_summary(scores.get(key + ".mass", [])), pointing=_summary(scores.get(key + ".pointing", []))
        )

    result: Dict[str, Any] = dict(
        n=n,
        top1=100.0 * correct / max(n, 1),
        chance=dict(
            area_share=_summary(scores.get("chance.area", [])),
            prior_mass_in_mask=pair("chance.prior")["mass_in_mask"],
            prior_pointing=pair("chance.prior")["pointing"],
        ),
        grad_cam=dict(
            layer=_layer_name(model), true=pair("grad_cam.true"), predicted=pair("grad_cam.predicted"), zero_maps=zero
        ),
        own_maps=None,
    )
    if modules:
        result["own_maps"] = dict(
            modules=[dict(info, **pair("module." + name)) for name, info in modules.items()],
            mean=pair("own_mean"),
        )
    return result


def _layer_name(model: nn.Module) -> str:
    layer = target_layer(model)
    return next((name for name, module in model.named_modules() if module is layer), type(layer).__name__)


def run_localisation(
    checkpoint: Union[str, Path],
    *,
    n: Optional[int] = None,
    batch_size: int = 100,
    device: Union[str, torch.device] = "cpu",
) -> Dict[str, Any]:
    """:func:`evaluate_localisation` of a checkpoint or run directory (its best.pt, else
    last.pt) on the test split of the locate data it was trained on, with what was evaluated
    (checkpoint, epoch, data, model, attention, input size)."""
    path = resolve_checkpoint_path(checkpoint)
    state = load_checkpoint(path)
    cfg = state["config"]
    spec = str(cfg.get("data"))
    if procedural_name(spec) != "locate":
        raise ValueError(
            f"{path} was trained on {spec!r}, not on the locate data: localisation needs its masks "
            f"(train with `nlsam train --data locate`)"
        )
    model = model_from_checkpoint(state)
    classes = _classes(model)
    if [str(c) for c in classes] != list(LOCATE_CLASSES):
        raise ValueError(
            f"{path} has the classes {classes}, not those of the locate data ({', '.join(LOCATE_CLASSES)})"
        )
    data = locate_data(spec, cfg.get("image_size"), n)
    dc = _data_config(model)
    result = evaluate_localisation(
        model, data, dc["mean"], dc["std"], input_size=tuple(dc["input_size"][1:]), batch_size=batch_size, device=device
    )
    epoch = state.get("epoch")
    head = dict(
        version=_METRIC_VERSION,
        checkpoint=str(path),
        epoch=None if epoch is None else epoch + 1,
        data=spec,
        model=cfg.get("model"),
        attention=cfg.get("attention"),
        input_size=list(dc["input_size"][1:]),
    )
    return dict(head, **result)


def localisation_of_run(
    run_dir: Union[str, Path],
    *,
    checkpoint: str = "last.pt",
    n: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
) -> Dict[str, Any]:
    """:func:`run_localisation` of ``run_dir/checkpoint`` (default the final network, whose
    accuracy ``nlsam report`` reports), read from ``run_dir/localisation.json`` when that was
    computed for the same checkpoint epoch, image count and metric version, else computed and
    written there (atomically)."""
    run_dir = Path(run_dir)
    path = run_dir / checkpoint
    state = peek_checkpoint(path)
    if state is None:
        raise FileNotFoundError(f"no readable checkpoint {path}")
    epoch = state.get("epoch")
    key = dict(version=_METRIC_VERSION, checkpoint=checkpoint, epoch=None if epoch is None else epoch + 1, n=n)
    cache = run_dir / CACHE_FILE
    try:
        cached = json.loads(cache.read_text())
        if isinstance(cached, dict) and cached.get("key") == key:
            return cached["result"]
    except (OSError, ValueError, KeyError):
        pass
    result = run_localisation(path, n=n, device=device)
    atomic_write_bytes(cache, json.dumps(dict(key=key, result=result), indent=1).encode())
    return result
