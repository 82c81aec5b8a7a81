"""Grad-CAM heat maps (``nlsam cam``) of trained networks, several side by side (the NL-SAM
paper's Figure 5 compares a baseline, NL-SAM and GE + NL-SAM this way).

Grad-CAM itself comes from the ``grad-cam`` package (``pytorch_grad_cam.GradCAM``), which
takes the activations and gradients of the target layer with hooks; the network is not
changed. The target layer is the last convolutional stage (``model.stages[-1]``, e.g.
``layer3`` of a CIFAR ResNet or ``layer4`` of ResNet-50), as in the Grad-CAM paper. The map
is the ReLU of the gradient-weighted activation sum, upsampled bilinearly to the input size and
scaled to [0, 1] per image (the package's convention), so that maps of different networks can
be compared by shape, not by magnitude.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, cast

import numpy as np
import torch
from torch import nn

from .._optional import require
from .figures import _display_image, _render_cam_figure, _short_name
from .predict import Inspected, resolve_target_class

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["cam_figure", "grad_cam", "target_layer"]


def target_layer(model: nn.Module) -> nn.Module:
    """The last convolutional stage of an nlsam ResNet."""
    stages = getattr(model, "stages", None)
    if not isinstance(stages, nn.Sequential) or len(stages) == 0:
        raise ValueError(f"cannot find the convolutional stages of {type(model).__name__} (no model.stages)")
    return stages[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, target: Optional[int] = None) -> Tuple[np.ndarray, torch.Tensor]:
    """Grad-CAM of the last stage for one input ``x`` (1 x 3 x H x W).

    Returns the H x W map in [0, 1] for class ``target`` (default: the predicted class) and the
    softmax probabilities (a tensor of ``num_classes``).
    """
    require("pytorch_grad_cam", "Grad-CAM")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    num_classes = cast(int, model.num_classes)  # an int; nn.Module's __getattr__ is annotated for tensors and modules
    if target is not None and not 0 <= target < num_classes:
        raise ValueError(f"target class {target} is out of range: valid indices are 0..{num_classes - 1}")
    targets = None if target is None else [ClassifierOutputTarget(int(target))]
    with torch.enable_grad(), GradCAM(model=model, target_layers=[target_layer(model)]) as cam:
        try:
            heat = cam(input_tensor=x, targets=targets)
        except RuntimeError as exc:
            raise ValueError(
                f"Grad-CAM failed on a {x.shape[-2]}x{x.shape[-1]} input: {str(exc).splitlines()[0]}"
            ) from None
        probs = cam.outputs.detach().float().softmax(dim=1)[0]
    model.zero_grad(set_to_none=True)
    return np.asarray(heat[0], dtype=np.float32), probs


def _column_labels(checkpoints: Sequence[Inspected]) -> List[str]:
    """Default column titles: model + attention, and where that repeats (e.g. two NL-SAM runs)
    the run directory, else the checkpoint path, else a column number after it."""
    base = [c.label for c in checkpoints]
    labels = base
    for where in (lambda i, c: c.path.parent.name, lambda i, c: str(c.path), lambda i, c: f"column {i + 1}"):
        if len(set(labels)) == len(labels):
            break
        labels = [
            f"{label} ({where(i, c)})" if base.count(label) > 1 else label
            for i, (label, c) in enumerate(zip(base, checkpoints))
        ]
    return labels


def cam_figure(
    checkpoints: Sequence[Inspected],
    images: Sequence[Tuple[Path, "Image.Image"]],
    target: Optional[str] = None,
    labels: Optional[Sequence[str]] = None,
    input_size: Optional[Tuple[int, int]] = None,
    cmap: str = "jet",
):
    """The Grad-CAM figure for ``images`` (one row each) and ``checkpoints`` (one column each)."""
    labels = list(labels) if labels else _column_labels(checkpoints)
    targets = [resolve_target_class(target, c.classes) for c in checkpoints]
    rows = []
    for path, img in images:
        panels = []
        for inspected, index in zip(checkpoints, targets):
            x = inspected.prepare(img, input_size)
            heat, probs = grad_cam(inspected.model, x, index)
            pred = int(probs.argmax())
            text = f"pred: {_short_name(inspected.classes[pred])} (P={probs[pred]:.2f})"
            if index is not None and index != pred:
                text = f"CAM of {_short_name(inspected.classes[index])} (P={probs[index]:.2f})\n" + text
            cfg = inspected.data_config
            panels.append(dict(image=_display_image(x, cfg["mean"], cfg["std"]), cam=heat, text=text))
        rows.append(dict(title=path.name, image=panels[0]["image"], panels=panels))
    return _render_cam_figure(rows, labels, cmap=cmap)
