"""PIL helpers: decoding to RGB, resizing to a fixed size, and single-image preprocessing."""

from __future__ import annotations

import io
import os
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from .._sizes import SizeLike, to_2tuple

__all__ = ["SMALL_IMAGE_MAX", "decode_image", "fit_image", "preprocess_image", "resize_shorter", "to_rgb"]

#: The bilinear filter: Image.Resampling.BILINEAR since Pillow 9.1, Image.BILINEAR before (a name
#: that newer Pillow still has but leaves out of its type hints).
_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR

#: Images whose (target) side is at most this many pixels are decoded once into memory;
#: larger ones are read lazily with torchvision transforms.
SMALL_IMAGE_MAX = 64


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, ...) to 8-bit RGB.

    Alpha is dropped (as torchvision's loader does). 16-bit grayscale is rescaled to 8 bits by
    its mode, whatever its values: ``I;16*`` and ``I`` (how PIL opens 16-bit PNG, TIFF and PGM
    files, PGM scaled to 0..65535) as 0..65535, so a near-black 16-bit image stays near black.
    A float image (``F``) has no bit depth: values up to 255 read as 0..255, larger as 0..65535.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode == "I" or mode.startswith("I;16") or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F":
            top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        else:
            top = 65535.0
        arr = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    return img.convert("RGB")


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image; raises on corrupt data."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return to_rgb(img)


def fit_image(img: Image.Image, size: SizeLike) -> Image.Image:
    """Resize so that the image covers ``size`` = (H, W), then center-crop to it.

    For an image with the target aspect ratio this is a plain resize; an image that already
    has the target size is returned unchanged.
    """
    h, w = to_2tuple(size, "size")
    iw, ih = img.size
    if (iw, ih) == (w, h):
        return img
    scale = max(h / ih, w / iw)
    nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
    img = img.resize((nw, nh), _BILINEAR)
    left, top = (nw - w) // 2, (nh - h) // 2
    return img.crop((left, top, left + w, top + h))


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` keeping the aspect ratio (as torchvision's Resize(int))."""
    iw, ih = img.size
    if iw <= ih:
        nw, nh = size, int(size * ih / iw)
    else:
        nw, nh = int(size * iw / ih), size
    if (nw, nh) == (iw, ih):
        return img
    return img.resize((nw, nh), _BILINEAR)


def _center_crop(img: Image.Image, h: int, w: int) -> Image.Image:
    iw, ih = img.size
    left, top = int(round((iw - w) / 2.0)), int(round((ih - h) / 2.0))
    return img.crop((left, top, left + w, top + h))


def preprocess_image(
    img: Union[Image.Image, str, "os.PathLike[str]"],
    input_size: SizeLike,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Turn one image into a normalized model input of shape ``1 x 3 x H x W`` (float32, CPU).

    It applies the same geometry as the test loader of :func:`build_data`: for small inputs
    (side <= 64, e.g. CIFAR) the image is resized to cover ``input_size`` and center-cropped
    (an image of the training size is used as is); for larger inputs it is resized so that its
    shorter side is ``size * 256 / 224`` and center-cropped to ``input_size``. Then it is scaled
    to [0, 1] and normalized with ``mean``/``std``. Use it with a bundle's fields, e.g.
    ``preprocess_image(img, bundle.input_size, bundle.mean, bundle.std)`` or
    ``bundle.preprocess(img)``.
    """
    if not isinstance(img, Image.Image):
        with Image.open(img) as f:
            f.load()
            img = to_rgb(f)
    else:
        img = to_rgb(img)
    h, w = to_2tuple(input_size, "input_size")
    if max(h, w) <= SMALL_IMAGE_MAX:
        img = fit_image(img, (h, w))
    else:
        img = _center_crop(resize_shorter(img, int(min(h, w) * 256 / 224)), h, w)
    x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)
    return ((x - m) / s).unsqueeze(0).contiguous()
