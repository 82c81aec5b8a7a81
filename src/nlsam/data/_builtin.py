"""The built-in procedural dataset: which shape is the (one) large object in a cluttered image?

Every image has a textured, noisy background, several small distractors (blobs, bars and thin
line segments in random colours) and one large object whose shape is the class. The object has
a random position, size, small rotation and colour, so a model has to find it among the clutter:
spatial attention matters. Everything is generated with torch, vectorised over the images, from
a seed, so the same arguments always give the same pixels.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Tuple, TypeVar

import torch
import torch.nn.functional as F

from ._threads import one_thread

__all__ = ["BUILTIN_CLASSES", "BuiltinSplit", "generate_builtin"]

#: Class names of the built-in dataset, in label order.
BUILTIN_CLASSES = ("circle", "ring", "square", "frame", "triangle", "diamond", "plus", "cross")

_CHUNK = 2048  # images generated per step (bounds memory; part of the definition of the data)
_MAX_DISTRACTORS = 6


class BuiltinSplit(NamedTuple):
    """One split: ``images`` uint8 N x 3 x S x S, ``labels`` int64 N, ``boxes`` float32 N x 4
    (x0, y0, x1, y1 of the object in pixels, for checking where a model attends)."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor


def _shape_distance(label: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance-like field in object units: <= 0 inside the shape of class ``label``."""
    au, av = u.abs(), v.abs()
    name = BUILTIN_CLASSES[label]
    if name == "circle":
        return torch.sqrt(u * u + v * v) - 0.95
    if name == "ring":
        return (torch.sqrt(u * u + v * v) - 0.72).abs() - 0.26
    if name == "square":
        return torch.maximum(au, av) - 0.8
    if name == "frame":
        return (torch.maximum(au, av) - 0.66).abs() - 0.2
    if name == "triangle":  # apex up, base at v = 0.65
        side = (au - (v + 1.0) * (1.0 / 1.65)) * (1.0 / math.sqrt(1.0 + 1.0 / 1.65**2))
        return torch.maximum(v - 0.65, side)
    if name == "diamond":
        return (au + av - 1.05) * (1.0 / math.sqrt(2.0))
    if name in ("plus", "cross"):
        if name == "cross":
            u, v = (u + v) * (1.0 / math.sqrt(2.0)), (u - v) * (1.0 / math.sqrt(2.0))
            au, av = u.abs(), v.abs()
        bar1 = torch.maximum(au - 0.27, av - 1.0)
        bar2 = torch.maximum(av - 0.27, au - 1.0)
        return torch.minimum(bar1, bar2)
    raise AssertionError(name)


def _contrasting_colour(bg_level: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random colours (n x 3) that are clearly lighter or darker than the background level."""
    n = bg_level.shape[0]
    light = bg_level < 0.5
    level = torch.where(light, 0.72 + 0.28 * torch.rand(n, generator=g), 0.28 * torch.rand(n, generator=g))
    tint = (torch.rand(n, 3, generator=g) - 0.5) * 0.5
    return (level.unsqueeze(1) + tint).clamp(0.0, 1.0)


def _paint(img: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Alpha-blend ``colour`` (n x 3) into ``img`` (n x 3 x S x S) where ``mask`` (n x S x S) is 1."""
    return torch.lerp(img, colour.view(-1, 3, 1, 1).expand_as(img), mask.unsqueeze(1))


def _generate_chunk(n: int, size: int, g: torch.Generator, label_offset: int) -> BuiltinSplit:
    C = len(BUILTIN_CLASSES)
    S = size
    s = S / 32.0  # geometry is defined at 32 px and scaled
    coords = torch.arange(S, dtype=torch.float32) + 0.5
    yy = coords.view(1, S, 1)
    xx = coords.view(1, 1, S)

    labels = (torch.arange(n) + label_offset) % C
    labels = labels[torch.randperm(n, generator=g)]

    # Background: a level, a colour cast, a linear gradient and low-frequency texture.
    bg_level = 0.2 + 0.6 * torch.rand(n, generator=g)
    cast = (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 0.3
    grad = (torch.rand(n, 2, generator=g) - 0.5) * 0.4
    ramp = grad[:, 0].view(n, 1, 1) * (xx / S - 0.5) + grad[:, 1].view(n, 1, 1) * (yy / S - 0.5)
    interp = F.interpolate(torch.eye(5).unsqueeze(1), size=S, mode="linear", align_corners=False)[:, 0]  # 5 x S
    texture = torch.einsum("ys,ncst,tx->ncyx", interp.T, torch.rand(n, 3, 5, 5, generator=g) - 0.5, interp)
    img = (bg_level.view(n, 1, 1, 1) + cast + ramp.unsqueeze(1) + 0.25 * texture).clamp(0.0, 1.0)

    # Distractors: small blobs / bars and thin line segments, anywhere.
    k_count = torch.randint(3, _MAX_DISTRACTORS + 1, (n,), generator=g)
    for k in range(_MAX_DISTRACTORS):
        active = (k < k_count).float().view(n, 1, 1)
        kind = torch.randint(0, 3, (n,), generator=g)
        cx = (torch.rand(n, generator=g) * S).view(n, 1, 1)
        cy = (torch.rand(n, generator=g) * S).view(n, 1, 1)
        rad = ((1.0 + 1.4 * torch.rand(n, generator=g)) * s).view(n, 1, 1)
        dx, dy = xx - cx, yy - cy
        blob = torch.sqrt(dx * dx + dy * dy) - rad
        bar_w = ((0.6 + 0.6 * torch.rand(n, generator=g)) * s).view(n, 1, 1)
        horiz = (torch.rand(n, generator=g) < 0.5).view(n, 1, 1)
        bar = torch.where(
            horiz,
            torch.maximum(dx.abs() - 2.2 * rad, dy.abs() - bar_w),
            torch.maximum(dy.abs() - 2.2 * rad, dx.abs() - bar_w),
        )
        ang = (torch.rand(n, generator=g) * math.pi).view(n, 1, 1)
        half = ((4.0 + 8.0 * torch.rand(n, generator=g)) * s).view(n, 1, 1)
        ca, sa = torch.cos(ang), torch.sin(ang)
        along = (dx * ca + dy * sa).clamp(-half, half)
        line = torch.sqrt((dx - along * ca) ** 2 + (dy - along * sa) ** 2) - 0.45 * s
        dist = torch.where(kind.view(n, 1, 1) == 0, blob, torch.where(kind.view(n, 1, 1) == 1, bar, line))
        mask = (0.5 - dist).clamp(0.0, 1.0) * active
        img = _paint(img, mask, _contrasting_colour(bg_level, g))

    # The object.
    rad = (5.0 + 4.0 * torch.rand(n, generator=g)) * s
    margin = rad * 1.05
    cx = margin + torch.rand(n, generator=g) * (S - 2 * margin)
    cy = margin + torch.rand(n, generator=g) * (S - 2 * margin)
    theta = (torch.rand(n, generator=g) - 0.5) * (math.pi / 6.0)  # +-15 degrees
    colour = _contrasting_colour(bg_level, g)
    dist = torch.empty(n, S, S)
    for c in range(C):
        sel = (labels == c).nonzero(as_tuple=True)[0]
        if len(sel) == 0:
            continue
        r = rad[sel].view(-1, 1, 1)
        dx, dy = xx - cx[sel].view(-1, 1, 1), yy - cy[sel].view(-1, 1, 1)
        ct, st = torch.cos(theta[sel]).view(-1, 1, 1), torch.sin(theta[sel]).view(-1, 1, 1)
        u = (ct * dx + st * dy) / r
        v = (-st * dx + ct * dy) / r
        dist[sel] = _shape_distance(c, u, v) * r  # in pixels
    img = _paint(img, (0.5 - dist).clamp(0.0, 1.0), colour)

    noise_sd = 0.03 + 0.05 * torch.rand(n, 1, 1, 1, generator=g)
    img = img + noise_sd * torch.randn(n, 3, S, S, generator=g)
    images = (img.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)
    boxes = torch.stack([cx - rad, cy - rad, cx + rad, cy + rad], dim=1).clamp(0.0, float(S))
    return BuiltinSplit(images, labels.to(torch.int64), boxes)


def generate_builtin(n: int, *, image_size: int = 32, seed: int = 0, split: str = "train") -> BuiltinSplit:
    """Generate ``n`` images of the built-in dataset.

    Deterministic in ``(n, image_size, seed, split)``; ``split="train"`` and ``split="test"``
    use different random streams, so the splits never share images. Classes are balanced
    (the counts differ by at most one per 2048 images). About 10k 32x32 images per second and
    core.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n < 0 or image_size < 8:
        raise ValueError(f"need n >= 0 and image_size >= 8, got n={n}, image_size={image_size}")
    g = torch.Generator().manual_seed(2 * int(seed) + (0 if split == "train" else 1))
    S = image_size
    empty = BuiltinSplit(
        torch.empty(0, 3, S, S, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), torch.empty(0, 4)
    )
    return generate_in_chunks(n, _CHUNK, lambda count, start: _generate_chunk(count, image_size, g, start), empty)


#: A split: a NamedTuple of tensors, one row per image.
SplitT = TypeVar("SplitT", bound=Tuple[torch.Tensor, ...])


def generate_in_chunks(n: int, chunk: int, make_chunk: Callable[[int, int], SplitT], empty: SplitT) -> SplitT:
    """``n`` images made ``chunk`` at a time by ``make_chunk(count, start)`` (one intra-op
    thread), concatenated field by field into a split of ``empty``'s type (``empty`` when n = 0)."""
    with one_thread():
        parts = [make_chunk(min(chunk, n - start), start) for start in range(0, n, chunk)]
    if not parts:
        return empty
    return type(empty)(*(torch.cat(t) for t in zip(*parts)))
