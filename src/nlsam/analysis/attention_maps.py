"""``nlsam attention``: the spatial maps NL-SAM computes, per block, overlaid on the image.

The maps are taken with forward hooks on the attention modules that make a spatial map (those
registered with ``spatial_map=True``: NL-SAM, CBAM's spatial gate, or a module of your own; the
network is not changed): the hook re-applies the module's ``attention_map`` to its input, which
gives exactly the gate that multiplied the feature map. Each map has the size of its stage's
feature map (e.g. 16 x 16 and 8 x 8 in stages 2 and 3 of a CIFAR ResNet) but only as many
distinct values as the module's gate: NL-SAM pools the feature map k x k before its FC layers
(an 8 x 8 and a 4 x 4 gate there with k = 2), so the map is made of k x k blocks of equal value
(with the default nearest upsampling). The figure labels each stage with both sizes and shows
the maps with nearest-neighbour upsampling, so the blocks stay visible.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .._optional import require
from ..attention import NLSAM, attention_parts, list_attention, spatial_attention_types
from .figures import _display_image, _render_attention_figure, check_cmap, png_bytes, write_files
from .predict import (
    Inspected,
    _forward_checked,
    load_images,
    load_inspected,
    output_names,
    parse_input_size,
)

__all__ = ["AttentionMap", "attention_figure", "attention_maps", "main_attention"]


@dataclass
class AttentionMap:
    name: str  # module name, e.g. "stages.layer2.0.attention"
    stage: Optional[int]  # the paper's stage number (1-3 on CIFAR, 2-5 on ImageNet)
    block: Optional[int]  # block index in the stage, from 0
    map: torch.Tensor  # H x W, values in (0, 1)
    gate_size: Optional[Tuple[int, int]] = None  # the module's (H/k, W/k) grid of distinct gate values
    pooling: str = ""  # how the map was pooled to the gate: "k=2", "adaptive pooling" or "" (none)


def _pooling(module: nn.Module, size: Tuple[int, int]) -> str:
    """How ``module`` pooled a feature map of ``size`` to its gate (see NLSAM.attention_map);
    ``""`` for modules whose gate has the size of the map."""
    if not isinstance(module, NLSAM) or tuple(size) == tuple(module.grid_size):
        return ""
    pooling = f"k={module.pool}" if tuple(size) == tuple(module.feature_size) else "adaptive pooling"
    return pooling if module.interpolation == "nearest" else f"{pooling}, {module.interpolation}"


def _map_label(m: AttentionMap) -> str:
    """``16x16 map, 8x8 gate (k=2)``: the size shown and the grid of distinct gate values."""
    h, w = m.map.shape
    if m.gate_size is None or not m.pooling:
        return f"{h}x{w} map"
    return f"{h}x{w} map, {m.gate_size[0]}x{m.gate_size[1]} gate ({m.pooling})"


def _spatial_attention_modules(model: nn.Module) -> List[Tuple[str, Optional[int], Optional[int], nn.Module]]:
    """``(name, stage, block, module)`` of every attention module of ``model`` that makes a
    spatial map, in forward order."""
    stage_of = {info["module"]: info.get("stage") for info in getattr(model, "feature_info", [])}
    kinds = spatial_attention_types()
    found: List[Tuple[str, Optional[int], Optional[int], nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, kinds):
            match = re.match(r"(.*?stages\.layer\d+)\.(\d+)\.", name)
            stage = stage_of.get(match.group(1)) if match else None
            found.append((name, stage, int(match.group(2)) if match else None, module))
    return found


def _spatial_names() -> List[str]:
    """The attention names whose networks have spatial maps to show."""
    return [name for name in list_attention() if any(p.spatial_map for p in attention_parts(name))]


def attention_maps(
    model: nn.Module, x: torch.Tensor, stage: Optional[int] = None
) -> Tuple[torch.Tensor, List[AttentionMap]]:
    """Run ``model`` on ``x`` (1 x 3 x H x W) and return its logits and the NL-SAM maps of every
    block (or of the blocks of ``stage``), collected with forward hooks."""
    modules = _spatial_attention_modules(model)
    if not modules:
        raise ValueError(
            f"this network has no attention module with a spatial map (trained without "
            f"one of {', '.join(_spatial_names())})"
        )
    stages = sorted({s for _, s, _, _ in modules if s is not None})
    if stage is not None:
        if stage not in stages:
            raise ValueError(f"stage {stage} has no spatial attention modules; valid: {', '.join(map(str, stages))}")
        modules = [m for m in modules if m[1] == stage]
    maps: List[AttentionMap] = []
    handles = []

    def hook_for(name, stage_id, block):
        def hook(module, inputs, output):
            gate = module.attention_map(inputs[0]).detach()[0, 0]
            grid = getattr(module, "grid_size", None)  # NL-SAM's grid of distinct gate values
            maps.append(
                AttentionMap(
                    name, stage_id, block, gate, tuple(grid) if grid else None, _pooling(module, tuple(gate.shape))
                )
            )

        return hook

    try:
        for name, stage_id, block, module in modules:
            handles.append(module.register_forward_hook(hook_for(name, stage_id, block)))
        with torch.no_grad():
            logits = _forward_checked(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, maps


def attention_figure(
    inspected: Inspected,
    path: Path,
    img,
    stage: Optional[int] = None,
    input_size: Optional[Tuple[int, int]] = None,
    cmap: str = "jet",
    vrange: Optional[Tuple[float, float]] = None,
):
    """The figure of the NL-SAM maps of one image."""
    x = inspected.prepare(img, input_size)
    logits, maps = attention_maps(inspected.model, x, stage)
    probs = logits.float().softmax(dim=1)[0]
    pred = int(probs.argmax())
    groups: dict = {}
    for m in maps:
        groups.setdefault(m.stage, []).append(m)
    stages = []
    for stage_id, items in groups.items():
        label = _map_label(items[0]).replace(", ", ",\n", 1)
        label = f"stage {stage_id}\n{label}" if stage_id is not None else label
        blocks = [
            (f"block {m.block + 1}" if m.block is not None else m.name, m.map.numpy().astype(np.float32)) for m in items
        ]
        stages.append((label, blocks))
    cfg = inspected.data_config
    size = x.shape[-2:]
    title = (
        f"{path.name}: {inspected.label} ({size[0]}x{size[1]} input), "
        f"pred: {inspected.classes[pred]} (P={probs[pred]:.2f})"
    )
    return _render_attention_figure(_display_image(x, cfg["mean"], cfg["std"]), stages, title, cmap, vrange)


def main_attention(args: argparse.Namespace) -> int:
    """What ``nlsam attention`` does with its parsed arguments (``checkpoint``, ``images``,
    ``out``, ``stage``, ``input_size``, ``cmap``, ``range``): one figure of every block's NL-SAM
    map per image, written into ``out``; returns the exit status."""
    require("matplotlib", "nlsam attention")
    check_cmap(args.cmap)
    images = load_images(args.images)
    input_size = parse_input_size(args.input_size)
    vrange = tuple(args.range) if args.range else None
    if vrange is not None and not vrange[0] < vrange[1]:
        raise ValueError(f"--range needs LOW < HIGH, got {vrange[0]} {vrange[1]}")
    inspected = load_inspected(args.checkpoint)
    if not _spatial_attention_modules(inspected.model):
        raise ValueError(
            f"{inspected.path} ({inspected.label}) has no spatial attention maps to show "
            f"(attention with one: {', '.join(_spatial_names())})"
        )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    files = {}
    for name, (path, img) in zip(output_names([p for p, _ in images]), images):
        fig = attention_figure(inspected, path, img, args.stage, input_size, args.cmap, vrange)
        files[out / name] = png_bytes(fig)
    write_files(files)
    return 0
