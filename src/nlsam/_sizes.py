"""Image and input sizes: an ``int`` or ``(H, W)`` given by a caller, or ``--input-size H [W]``
given on a command line, as one ``(H, W)`` pair."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

from ._ranges import short_repr

SizeLike = Union[int, Sequence[int]]

#: The largest input side the commands that run a network (predict, cam, attention, profile)
#: accept. Activations grow with H x W: at 4096 x 4096 a ResNet's first feature map alone is
#: 1 GiB per image (64 channels at 2048 x 2048, float32), and the image 200 MB as a tensor.
MAX_INPUT_PIXELS = 4096


def check_max_side(height: int, width: int, what: str) -> None:
    """Raise a one-line ``ValueError`` when a side is over :data:`MAX_INPUT_PIXELS`, saying why."""
    if max(height, width) > MAX_INPUT_PIXELS:
        shown = " x ".join(str(v) if len(str(v)) <= 12 else "a number of more than 12 digits" for v in (height, width))
        raise ValueError(
            f"{what} takes at most {MAX_INPUT_PIXELS} pixels a side, got {shown}: the network's "
            f"memory grows with H x W (at {MAX_INPUT_PIXELS} x {MAX_INPUT_PIXELS} a ResNet's first "
            "feature map alone is 1 GiB per image)"
        )


def to_2tuple(size: SizeLike, name: str = "feature_size") -> Tuple[int, int]:
    """``(H, W)`` from an int or a pair of positive ints; anything else (bools, strings, a
    triple, zero) is a one-line ``ValueError`` naming ``name``."""
    if isinstance(size, int):
        pair: tuple = (size, size)
    elif isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        pair = ()
    else:
        pair = tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f"{name} must be a positive int or a pair (H, W) of positive ints, got {short_repr(size)}")
    return int(pair[0]), int(pair[1])


def parse_input_size(values: Optional[Sequence[int]], *, min_pixels: Optional[int] = None) -> Optional[Tuple[int, int]]:
    """``--input-size H [W]`` -> (H, W), or None (not given: the model's own size).

    ``min_pixels``: the smallest side accepted (the inspection commands ask for 8); without it
    only the count of numbers is checked (``nlsam profile`` leaves the rest to the counter).
    """
    if not values:
        return None
    values = [int(v) for v in values]
    if min_pixels is None:
        if len(values) > 2:
            raise ValueError(f"--input-size takes H or H W, got {len(values)} numbers: {values}")
    elif len(values) > 2 or any(v < min_pixels for v in values):
        raise ValueError(
            f"--input-size takes H [W], each at least {min_pixels} pixels; got {' '.join(map(str, values))}"
        )
    return values[0], values[-1]
