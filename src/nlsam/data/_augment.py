"""Batched, vectorised augmentation and normalization of uint8 image batches on any device."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["Normalizer", "is_channels_last", "random_crop_flip"]

_CL = torch.channels_last


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-d tensor stored as N x H x W x C (and not also plain contiguous)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=_CL) and not x.is_contiguous()


def random_crop_flip(
    x: torch.Tensor, pad: int, generator: Optional[torch.Generator] = None, flip: bool = True
) -> torch.Tensor:
    """He et al. augmentation for a whole batch at once.

    Each image of the ``B x C x H x W`` batch is zero-padded by ``pad`` pixels on every side, an
    ``H x W`` window at a random offset in ``[0, 2 * pad]`` is cut out, and (if ``flip``) the
    window is mirrored horizontally with probability 1/2. There is no Python loop over the
    batch: the padded batch and its mirror image are viewed as all their windows
    (``unfold``) and one advanced-indexing copy picks each image's window. Works on any dtype
    and device and keeps the memory format (contiguous or channels_last); ``generator`` must
    live on ``x.device``.
    """
    if x.dim() != 4:
        raise ValueError(f"expected a B x C x H x W batch, got shape {tuple(x.shape)}")
    B, C, H, W = x.shape
    pad = max(int(pad), 0)
    if B == 0 or (pad == 0 and not flip):
        return x
    dev = x.device
    dy = torch.randint(0, 2 * pad + 1, (B,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (B,), device=dev, generator=generator)
    batch = torch.arange(B, device=dev)
    nhwc = is_channels_last(x)
    # work on B x H x W x C (channels_last storage) or B x C x H x W; h, w = the spatial dims
    xs = x.permute(0, 2, 3, 1) if nhwc else x
    h, w = (1, 2) if nhwc else (2, 3)
    if pad:
        xs = F.pad(xs, (0, 0, pad, pad, pad, pad) if nhwc else (pad, pad, pad, pad))
    if flip:
        mirror = torch.randint(0, 2, (B,), device=dev, generator=generator).bool()
        xs = torch.cat([xs, xs.flip(w)])
        batch = torch.where(mirror, batch + B, batch)
        dx = torch.where(mirror, 2 * pad - dx, dx)  # the window at dx, mirrored, starts at 2p - dx
    # all windows as a view: 2B x (2p+1) x (2p+1) x [C] x H x W (x C for channels_last)
    windows = xs.unfold(h, H, 1).unfold(w, W, 1)
    if nhwc:  # 2B x nY x nX x C x H x W -> 2B x nY x nX x H x W x C, then pick -> B x H x W x C
        return windows.permute(0, 1, 2, 4, 5, 3)[batch, dy, dx].permute(0, 3, 1, 2)
    return windows[batch, :, dy, dx]


class Normalizer:
    """uint8 ``B x 3 x H x W`` -> float32 ``(x / 255 - mean) / std``; optional resize and channels_last.

    With ``channels_last`` the output is stored N x H x W x C; the input should already be (then no
    transposition is needed, which is the expensive part on a CPU).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        out_size: Optional[Tuple[int, int]] = None,
        channels_last: bool = False,
    ) -> None:
        m = torch.tensor(list(mean), dtype=torch.float32)
        s = torch.tensor(list(std), dtype=torch.float32)
        self.scale = (1.0 / (255.0 * s)).to(device)
        self.shift = (m / s).to(device)
        self.out_size = out_size
        self.channels_last = channels_last
        self._rows: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}

    def _row(self, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
        # scale/shift repeated over one image row of channels_last pixels (W * C values): a
        # broadcast over a long inner dimension is much faster than one over C = 3
        if width not in self._rows:
            self._rows[width] = (self.scale.repeat(width), self.shift.repeat(width))
        return self._rows[width]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if self.channels_last:
            if not is_channels_last(x):
                x = x.contiguous(memory_format=_CL)
            scale, shift = self._row(W)
            rows = x.permute(0, 2, 3, 1).reshape(B, H, W * C).float().mul_(scale).sub_(shift)
            x = rows.view(B, H, W, C).permute(0, 3, 1, 2)
        else:
            x = x.contiguous().float().mul_(self.scale.view(1, C, 1, 1)).sub_(self.shift.view(1, C, 1, 1))
        if self.out_size is not None and tuple(x.shape[-2:]) != tuple(self.out_size):
            down = self.out_size[0] < x.shape[-2] or self.out_size[1] < x.shape[-1]
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False, antialias=down)
            if self.channels_last:
                x = x.contiguous(memory_format=_CL)
        return x
