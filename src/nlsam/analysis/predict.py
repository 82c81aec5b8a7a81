"""Top-k classes of images (``nlsam predict``), and the loading helpers all the inspection
commands share.

Everything that can be wrong with the inputs (a missing or unreadable image, a checkpoint that
is not one, a class that does not exist) is checked by :func:`load_images`,
:func:`load_inspected` and :func:`resolve_target_class` *before* any work is done, and raises a
``ValueError`` / ``FileNotFoundError`` naming the culprit, so that the commands fail with one
error line and write nothing.

Images of any size and mode are accepted: each is prepared as the model's test loader prepares
its data (:func:`nlsam.data.preprocess_image`: resized to cover the model's training size and
center-cropped; for inputs larger than 64 px the shorter side is first resized to
``size * 256 / 224``). ``input_size`` runs the network at another resolution instead (the
networks accept any size; NL-SAM pools adaptively away from its training size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn

from .._io import PathLike
from .._sizes import check_max_side
from .._sizes import parse_input_size as _parse_input_size
from ..data import preprocess_image, to_rgb
from ..engine.checkpoint import load_checkpoint, resolve_checkpoint_path
from ..engine.evaluate import check_finite_outputs
from ..engine.loading import model_from_checkpoint
from ..engine.precision import trained_precision

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Inspected",
    "load_images",
    "load_inspected",
    "output_names",
    "parse_input_size",
    "predict",
    "resolve_target_class",
]


# ------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------


def load_images(paths: Sequence[PathLike]) -> List[Tuple[Path, "Image.Image"]]:
    """Open and decode every image (to RGB) before anything else happens.

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for a directory or a file
    that is not a decodable image, naming the path.
    """
    from PIL import Image, UnidentifiedImageError

    if not paths:
        raise ValueError("no images given")
    images = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            raise ValueError(f"{path} is a directory, not an image file")
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        try:
            with Image.open(path) as handle:
                handle.load()
                img = to_rgb(handle)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            reason = "not an image file PIL can read" if isinstance(exc, UnidentifiedImageError) else str(exc)
            raise ValueError(f"cannot read image {path}: {reason}") from None
        images.append((path, img))
    return images


def output_names(paths: Sequence[Path], suffix: str = ".png") -> List[str]:
    """One distinct file name per input image: its stem, with ``-2``, ``-3``... for repeats."""
    names, seen = [], set()
    for path in paths:
        stem, name, n = path.stem, path.stem + suffix, 1
        while name in seen:
            n += 1
            name = f"{stem}-{n}{suffix}"
        seen.add(name)
        names.append(name)
    return names


#: the smallest input side the inspection commands accept
_MIN_INPUT_PIXELS = 8


#: at most this many input pixels go through the network at once in :func:`predict` (64 images
#: at 224 x 224; one image at a time from about 1800 x 1800 up)
_PIXELS_PER_BATCH = 64 * 224 * 224


def parse_input_size(values: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    """``--input-size H [W]`` -> (H, W), or None for the model's own size; each side from
    :data:`_MIN_INPUT_PIXELS` to :data:`nlsam._sizes.MAX_INPUT_PIXELS`."""
    size = _parse_input_size(values, min_pixels=_MIN_INPUT_PIXELS)
    if size is not None:
        check_max_side(*size, "--input-size")
    return size


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------


@dataclass
class Inspected:
    """A trained network with what the inspection commands need to know about it."""

    model: nn.Module
    path: Path
    config: Dict[str, Any]
    meta: Dict[str, Any]
    label: str
    classes: List[str] = field(default_factory=list)
    #: the autocast dtype the run trained in (None: fp32), :func:`nlsam.engine.trained_precision`
    precision: Optional[torch.dtype] = None

    @property
    def data_config(self) -> Dict[str, Any]:
        """The model's ``input_size`` (C, H, W), ``mean`` and ``std``."""
        return _data_config(self.model)

    @property
    def input_size(self) -> Tuple[int, int]:
        return tuple(self.data_config["input_size"][1:])

    def prepare(self, img: "Image.Image", input_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """One image -> the 1 x 3 x H x W tensor the model reads."""
        cfg = self.data_config
        return preprocess_image(img, input_size or self.input_size, cfg["mean"], cfg["std"])


def _data_config(model: nn.Module) -> Dict[str, Any]:
    """The ``data_config`` (``input_size`` C x H x W, ``mean``, ``std``) that
    :func:`nlsam.engine.loading.model_from_checkpoint` gives a network."""
    # a plain attribute; nn.Module's __getattr__ is annotated for tensors and modules only
    return cast(Dict[str, Any], model.data_config)


def _classes(model: nn.Module) -> List[Any]:
    """The ``classes`` that :func:`nlsam.engine.loading.model_from_checkpoint` gives a network."""
    return cast(List[Any], model.classes)  # a plain attribute, as in _data_config


def _model_label(config: Dict[str, Any]) -> str:
    """``resnet110 + nlsam``, ``resnet110 + ge+nlsam`` or ``resnet110 (no attention)``."""
    attention = config.get("attention")
    return f"{config.get('model')} + {attention}" if attention else f"{config.get('model')} (no attention)"


def load_inspected(path: PathLike) -> Inspected:
    """Load a checkpoint or run directory for inspection (eval mode, on the CPU)."""
    source = path if isinstance(path, str) else Path(path)
    state = load_checkpoint(source)  # one-line errors for corrupt files and pickled code
    model = model_from_checkpoint(state)
    classes = [str(c) for c in _classes(model)]
    if not classes:
        raise ValueError(f"checkpoint {path} names no classes (no meta.classes inside)")
    return Inspected(
        model,
        resolve_checkpoint_path(source),
        state["config"],
        state.get("meta", {}),
        _model_label(state["config"]),
        classes,
        trained_precision(state, torch.device("cpu")),
    )


def resolve_target_class(value: Union[None, int, str], classes: Sequence[str]) -> Optional[int]:
    """A class index or name -> its index; ``None`` stays None (use the predicted class)."""
    if value is None:
        return None
    n = len(classes)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < n:
            raise ValueError(
                f"target class {index} is out of range: valid indices are 0..{n - 1} ({n} classes), or a class name"
            )
        return index
    if text in classes:
        return list(classes).index(text)
    lowered = [c.lower() for c in classes]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    shown = ", ".join(classes[:20]) + (", ..." if n > 20 else "")
    raise ValueError(f"unknown target class {text!r}; valid: an index 0..{n - 1} or a name ({shown})")


def _forward_checked(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, with a failure for this input size turned into a one-line ValueError."""
    try:
        return model(x)
    except RuntimeError as exc:
        raise ValueError(
            f"the network cannot run on a {x.shape[-2]}x{x.shape[-1]} input: {str(exc).splitlines()[0]}"
        ) from None


# ------------------------------------------------------------------------------------------
# predict
# ------------------------------------------------------------------------------------------


@torch.no_grad()
def predict(
    inspected: Inspected,
    images: Sequence["Image.Image"],
    topk: int = 5,
    input_size: Optional[Tuple[int, int]] = None,
    batch_size: int = 64,
    amp_dtype: Optional[torch.dtype] = None,
) -> List[List[Dict[str, Any]]]:
    """Top-k predictions per image: ``[[{"rank", "index", "class", "score"}, ...], ...]``,
    sorted by decreasing softmax score. ``topk`` is clipped to the number of classes. Images are
    prepared and run ``batch_size`` at a time, fewer at large input sizes (:data:`_PIXELS_PER_BATCH`),
    under CPU autocast to ``amp_dtype`` when given (``nlsam predict`` passes the run's precision).
    Raises ``ValueError`` when the network's outputs are not finite (broken weights)."""
    if topk < 1:
        raise ValueError(f"--topk must be at least 1, got {topk}")
    k = min(topk, len(inspected.classes))
    height, width = input_size or inspected.input_size
    batch_size = max(1, min(batch_size, _PIXELS_PER_BATCH // (height * width)))
    results = []
    for start in range(0, len(images), batch_size):
        x = torch.cat([inspected.prepare(img, input_size) for img in images[start : start + batch_size]])
        with torch.autocast("cpu", dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            logits = _forward_checked(inspected.model, x)
        where = "on the first batch" if start == 0 else f"on images {start + 1}-{start + len(logits)}"
        check_finite_outputs(inspected.model, logits, where)
        probs = logits.float().softmax(dim=1)
        scores, indices = probs.topk(k, dim=1)
        for row_scores, row_indices in zip(scores.tolist(), indices.tolist()):
            results.append(
                [
                    dict(rank=r + 1, index=i, **{"class": inspected.classes[i]}, score=s)
                    for r, (s, i) in enumerate(zip(row_scores, row_indices))
                ]
            )
    return results
