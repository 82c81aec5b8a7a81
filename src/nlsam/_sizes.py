"""Image and input sizes: an ``int`` or ``(H, W)`` given by a caller, or ``--input-size H [W]``
given on a command line, as one ``(H, W)`` pair."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

SizeLike = Union[int, Sequence[int]]


def size_pair(size: SizeLike) -> Tuple[int, int]:
    """``32`` -> ``(32, 32)``; ``(H, W)`` -> ``(H, W)`` as ints."""
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


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
        raise ValueError(f"--input-size takes H [W], each at least {min_pixels} pixels; "
                         f"got {' '.join(map(str, values))}")
    return values[0], values[-1]
