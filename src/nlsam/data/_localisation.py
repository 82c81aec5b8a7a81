"""The ``locate`` dataset: which shape is in the frame? A built-in task where the class is
decided by one object among look-alike distractors, with a mask of that object in every image.

Every image (32 x 32 by default) has a textured, noisy background, a little clutter (dots and
thin line segments, under the shapes) and ``K + 1 = 5`` shapes of ``K = 4`` classes (circle,
ring, triangle, plus): one shape of *every* class, plus one extra shape of a random class. All
shapes have the same distributions of size (6 to 7 px across), rotation (+-15 degrees),
colour and texture (plain, or stripes at a random angle and phase), and they never touch. One
shape of the first group, the one whose class is the label, is enclosed by a thin square
frame (near white on a dark background, near black on a light one) 4 px outside the disc it
lies in; the label is that shape's class. The mask is that shape's pixels (anti-aliased
coverage at least one half), for every image of both splits; ``boxes`` its bounding square.

Why the class cannot be read from global statistics. Without the frame, an image is a
function of the background, the clutter, the layout and the sizes, colours and textures of
its shapes, none of which depends on the label, and of the *multiset* of the shapes' classes:
one of each class plus one drawn independently of the label, which does not depend on the
label either. So every statistic computed over the whole image (colour histograms,
per-channel moments, histograms of gradient orientation or magnitude, texture histograms, the
number and area of the shapes of each class) has the same distribution whatever the label.
The frame is a class-independent square drawn on background only: 4 px of background
separate it from the framed shape, 2.5 px from any other shape. Adding it changes those
statistics by the same amount whatever the label, except through patterns that see the frame
and the framed shape together, i.e. patterns of the deciding object itself. The label is in a
*relation*: which shape sits inside the frame. To classify, a network has to find the frame
and read the shape within it: localise. ``benchmarks/locate_shortcuts.py`` checks this. It
fits logistic regression, an MLP and nearest centroids on colour histograms and moments,
gradient orientation and magnitude histograms, and histograms of 3 x 3 and 5 x 5 local binary
patterns of 4000 images. All of them score chance (24 to 27% for 25%). The same features of
the framed square score up to 91%, and a small CNN trained for 40 s on the whole images 65%.
The gap is 4 px because a smaller one leaks: at 2.5 px, the 5 x 5 patterns that span both the
frame and the shape's edge read 35%. For the same reason every shape fits in a disc, so that
its rotation never brings it closer to the frame.

The stricter condition "the distractors include a shape of every class, the framed class
too" would need two shapes of every class in every image: eight shapes and a frame, which do
not fit into 32 x 32 without touching. The extra shape puts the framed class among the
distractors in a quarter of the images. The invariance of the multiset is what keeps the
shortcuts out.

Why not simpler designs. If all shapes were drawn independently and a random one marked,
the most frequent class in an image would predict the label above chance. If the deciding
shape were marked by its size, colour or texture, or by an outline along its own contour, the
amount of marking would grow with its class's area or perimeter and leak into global
histograms.

The deciding shape is never at the very border, where its frame would not fit, and the
others crowd around it, so its position is not uniform. ``nlsam locate`` therefore also
reports a position prior (the mean training mask as a fixed map) beside the chance level.

Everything is generated with torch, vectorised over the images, in chunks of 2048 images,
from a seed, so the same arguments always give the same pixels. The shapes are placed one
after the other, each at the first of a number of random candidates that touches nothing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._builtin import _contrasting_colour, _paint, generate_in_chunks

__all__ = ["LOCATE_CLASSES", "LocateSplit", "generate_locate"]

#: Class names of the locate dataset, in label order.
LOCATE_CLASSES = ("circle", "ring", "triangle", "plus")

_CHUNK = 2048  # images generated per step (bounds memory; part of the definition of the data)
_EXTRA = 1  # shapes of a random class besides one of every class
_MAX_CLUTTER = 5

# geometry at 32 px (scaled with the image size), in pixels
_R_MIN, _R_MAX = 3.0, 3.6  # radius of the disc a shape lies in (half-size of its bounding square)
_FRAME_GAP, _FRAME_WIDTH = 4.0, 1.0  # background between the shape's square and the frame; line width
_GAP = 2.0  # background between the squares of two shapes
_FRAME_CLEARANCE = 2.5  # background between the frame and any other shape
_TRIALS = 48  # candidate layouts per image and round


class LocateSplit(NamedTuple):
    """One split: ``images`` uint8 N x 3 x S x S, ``labels`` int64 N, ``masks`` bool N x S x S
    (the pixels of the deciding shape) and ``boxes`` float32 N x 4 (x0, y0, x1, y1 of the
    deciding shape's bounding square, in pixels)."""

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor


def _shape_distance(label: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Distance-like field in shape units: <= 0 inside. Every shape lies in the unit disc, so
    that a rotation keeps it inside its bounding square and its gap to the frame."""
    name = LOCATE_CLASSES[label]
    if name == "circle":
        return torch.sqrt(u * u + v * v) - 0.95
    if name == "ring":
        return (torch.sqrt(u * u + v * v) - 0.67).abs() - 0.31
    if name == "triangle":  # equilateral, apex up, inscribed in the unit circle
        side = (u.abs() - (v + 1.0) * (1.0 / math.sqrt(3.0))) * (math.sqrt(3.0) / 2.0)
        return torch.maximum(v - 0.5, side)
    if name == "plus":  # arms 0.95 long and 0.6 wide: the corners of their ends at radius 0.996
        au, av = u.abs(), v.abs()
        return torch.minimum(torch.maximum(au - 0.3, av - 0.95), torch.maximum(av - 0.3, au - 0.95))
    raise AssertionError(name)


def _frame_colour(bg_level: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Colours (n x 3) of the frames: near white on a dark background, near black on a light one."""
    n = bg_level.shape[0]
    level = torch.where(bg_level < 0.5, 0.9 + 0.1 * torch.rand(n, generator=g), 0.1 * torch.rand(n, generator=g))
    tint = (torch.rand(n, 3, generator=g) - 0.5) * 0.2
    return (level.unsqueeze(1) + tint).clamp(0.0, 1.0)


def _layout(rad: torch.Tensor, S: int, s: float, g: torch.Generator) -> torch.Tensor:
    """Centres (n x M x 2, pixels) of the M shapes of radii ``rad`` (n x M; shape 0 is framed)
    such that no two shapes, nor the frame and another shape, touch.

    The shapes are placed one after the other, the framed one first (uniformly where its frame
    fits), each at the first of ``_TRIALS`` uniform candidates that keeps clear of those placed
    before it; an image where a shape finds no place starts again in the next round."""
    n, M = rad.shape
    frame_out = rad[:, 0] + (_FRAME_GAP + _FRAME_WIDTH) * s  # the frame's outer half-size
    reach = rad.clone()
    reach[:, 0] = frame_out
    low = reach + 0.5 * s  # keep every shape (and the frame) inside the image
    span = (S - 2 * low).clamp_min(0.0)
    need = rad.unsqueeze(2) + rad.unsqueeze(1) + _GAP * s  # L-inf distance between centres
    need[:, 0, :] = frame_out.unsqueeze(1) + rad + _FRAME_CLEARANCE * s
    need[:, :, 0] = need[:, 0, :]
    centres = torch.empty(n, M, 2)
    todo = torch.arange(n)
    for _ in range(1000):
        k = len(todo)
        placed = torch.empty(k, M, 2)
        placed[:, 0] = low[todo, 0].unsqueeze(1) + torch.rand(k, 2, generator=g) * span[todo, 0].unsqueeze(1)
        ok = torch.ones(k, dtype=torch.bool)
        for m in range(1, M):
            trial = low[todo, m].view(k, 1, 1) + torch.rand(k, _TRIALS, 2, generator=g) * span[todo, m].view(k, 1, 1)
            dist = (trial.unsqueeze(2) - placed[:, :m].unsqueeze(1)).abs().amax(dim=-1)  # k x T x m
            fits = (dist >= need[todo, m, :m].unsqueeze(1)).all(dim=2)  # k x T
            ok &= fits.any(dim=1)
            placed[:, m] = trial[torch.arange(k), fits.float().argmax(dim=1)]
        centres[todo[ok]] = placed[ok]
        todo = todo[~ok]
        if len(todo) == 0:
            return centres
    raise AssertionError("no layout found")  # does not happen with the sizes above


def _generate_chunk(n: int, size: int, g: torch.Generator, label_offset: int) -> LocateSplit:
    K = len(LOCATE_CLASSES)
    M = K + _EXTRA
    S = size
    s = S / 32.0
    coords = torch.arange(S, dtype=torch.float32) + 0.5
    yy = coords.view(1, S, 1)
    xx = coords.view(1, 1, S)

    labels = (torch.arange(n) + label_offset) % K
    labels = labels[torch.randperm(n, generator=g)]
    # shape classes: the framed one (the label), the other classes, then the extra ones
    others = torch.arange(K).expand(n, K)
    others = others[others != labels.unsqueeze(1)].view(n, K - 1)
    extra = torch.randint(0, K, (n, _EXTRA), generator=g)
    kinds = torch.cat([labels.unsqueeze(1), others, extra], dim=1)  # n x M

    # Background: a level, a colour cast, a linear gradient and low-frequency texture.
    bg_level = 0.2 + 0.6 * torch.rand(n, generator=g)
    cast = (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 0.3
    grad = (torch.rand(n, 2, generator=g) - 0.5) * 0.4
    ramp = grad[:, 0].view(n, 1, 1) * (xx / S - 0.5) + grad[:, 1].view(n, 1, 1) * (yy / S - 0.5)
    interp = torch.nn.functional.interpolate(torch.eye(5).unsqueeze(1), size=S, mode="linear", align_corners=False)[
        :, 0
    ]  # 5 x S
    texture = torch.einsum("ys,ncst,tx->ncyx", interp.T, torch.rand(n, 3, 5, 5, generator=g) - 0.5, interp)
    img = (bg_level.view(n, 1, 1, 1) + cast + ramp.unsqueeze(1) + 0.25 * texture).clamp(0.0, 1.0)

    # Clutter under the shapes: small dots and thin line segments, anywhere.
    count = torch.randint(2, _MAX_CLUTTER + 1, (n,), generator=g)
    for k in range(_MAX_CLUTTER):
        active = (k < count).float().view(n, 1, 1)
        cx = (torch.rand(n, generator=g) * S).view(n, 1, 1)
        cy = (torch.rand(n, generator=g) * S).view(n, 1, 1)
        dx, dy = xx - cx, yy - cy
        dot = torch.sqrt(dx * dx + dy * dy) - ((0.5 + 0.7 * torch.rand(n, generator=g)) * s).view(n, 1, 1)
        ang = (torch.rand(n, generator=g) * math.pi).view(n, 1, 1)
        half = ((2.0 + 4.0 * torch.rand(n, generator=g)) * s).view(n, 1, 1)
        ca, sa = torch.cos(ang), torch.sin(ang)
        along = (dx * ca + dy * sa).clamp(-half, half)
        line = torch.sqrt((dx - along * ca) ** 2 + (dy - along * sa) ** 2) - 0.4 * s
        is_dot = (torch.rand(n, generator=g) < 0.5).view(n, 1, 1)
        dist = torch.where(is_dot, dot, line)
        img = _paint(img, (0.5 - dist).clamp(0.0, 1.0) * active, _contrasting_colour(bg_level, g))

    # The shapes: same distributions of size, rotation, colour and texture for all of them.
    rad = (_R_MIN + (_R_MAX - _R_MIN) * torch.rand(n, M, generator=g)) * s
    centres = _layout(rad, S, s, g)
    theta = (torch.rand(n, M, generator=g) - 0.5) * (math.pi / 6.0)  # +-15 degrees
    striped = torch.rand(n, M, generator=g) < 0.5
    stripe_angle = torch.rand(n, M, generator=g) * math.pi
    stripe_phase = torch.rand(n, M, generator=g) * (2 * math.pi)
    stripe_period = (2.5 + 1.5 * torch.rand(n, M, generator=g)) * s
    mask = torch.zeros(n, S, S, dtype=torch.bool)
    for m in range(M):
        colour = _contrasting_colour(bg_level, g)
        cx, cy = centres[:, m, 0].view(n, 1, 1), centres[:, m, 1].view(n, 1, 1)
        dx, dy = xx - cx, yy - cy
        r = rad[:, m].view(n, 1, 1)
        ct, st = torch.cos(theta[:, m]).view(n, 1, 1), torch.sin(theta[:, m]).view(n, 1, 1)
        u = (ct * dx + st * dy) / r
        v = (-st * dx + ct * dy) / r
        dist = torch.empty(n, S, S)
        for c in range(K):
            sel = (kinds[:, m] == c).nonzero(as_tuple=True)[0]
            if len(sel):
                dist[sel] = _shape_distance(c, u[sel], v[sel]) * r[sel]  # in pixels
        alpha = (0.5 - dist).clamp(0.0, 1.0)
        ca = torch.cos(stripe_angle[:, m]).view(n, 1, 1)
        sa = torch.sin(stripe_angle[:, m]).view(n, 1, 1)
        wave = torch.sin(
            2 * math.pi * (dx * ca + dy * sa) / stripe_period[:, m].view(n, 1, 1) + stripe_phase[:, m].view(n, 1, 1)
        )
        shade = 1.0 + 0.25 * wave * striped[:, m].float().view(n, 1, 1)
        fill = (colour.view(n, 3, 1, 1) * shade.unsqueeze(1)).clamp(0.0, 1.0)
        img = torch.lerp(img, fill, alpha.unsqueeze(1))
        if m == 0:
            mask = alpha >= 0.5

    # The frame around shape 0: a square line at a fixed gap outside its bounding square.
    r0 = rad[:, 0].view(n, 1, 1)
    dx, dy = xx - centres[:, 0, 0].view(n, 1, 1), yy - centres[:, 0, 1].view(n, 1, 1)
    middle = r0 + (_FRAME_GAP + 0.5 * _FRAME_WIDTH) * s
    frame = (torch.maximum(dx.abs(), dy.abs()) - middle).abs() - 0.5 * _FRAME_WIDTH * s
    img = _paint(img, (0.5 - frame).clamp(0.0, 1.0), _frame_colour(bg_level, g))

    noise_sd = 0.02 + 0.04 * torch.rand(n, 1, 1, 1, generator=g)
    img = img + noise_sd * torch.randn(n, 3, S, S, generator=g)
    images = (img.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)
    c0 = centres[:, 0]
    boxes = torch.stack([c0[:, 0] - rad[:, 0], c0[:, 1] - rad[:, 0], c0[:, 0] + rad[:, 0], c0[:, 1] + rad[:, 0]], dim=1)
    return LocateSplit(images, labels.to(torch.int64), mask, boxes)


def generate_locate(n: int, *, image_size: int = 32, seed: int = 0, split: str = "train") -> LocateSplit:
    """Generate ``n`` images of the locate dataset (see the module's docstring).

    Deterministic in ``(n, image_size, seed, split)``; ``split="train"`` and ``split="test"``
    use different random streams (and streams apart from the builtin dataset's), so the splits
    never share images. Classes are balanced (the counts differ by at most one per 2048
    images). The geometry is defined at 32 px and scaled with ``image_size`` (at least 16).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n < 0 or image_size < 16:
        raise ValueError(f"need n >= 0 and image_size >= 16, got n={n}, image_size={image_size}")
    g = torch.Generator().manual_seed(1_000_003 + 2 * int(seed) + (0 if split == "train" else 1))
    S = image_size
    empty = LocateSplit(
        torch.empty(0, 3, S, S, dtype=torch.uint8),
        torch.empty(0, dtype=torch.int64),
        torch.empty(0, S, S, dtype=torch.bool),
        torch.empty(0, 4),
    )
    return generate_in_chunks(n, _CHUNK, lambda count, start: _generate_chunk(count, image_size, g, start), empty)
