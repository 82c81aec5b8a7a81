"""Batched, vectorised augmentation and normalization of uint8 image batches on any device."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["Normalizer", "random_crop_flip"]


def random_crop_flip(
    x: torch.Tensor, pad: int, generator: Optional[torch.Generator] = None, flip: bool = True
) -> torch.Tensor:
    """He et al. augmentation for a whole batch at once.

    Each image of the ``B x C x H x W`` batch is zero-padded by ``pad`` pixels on every side, an
    ``H x W`` window at a random offset in ``[0, 2 * pad]`` is cut out, and (if ``flip``) the
    window is mirrored horizontally with probability 1/2. There is no Python loop over the
    batch: the padded batch and its mirror image are viewed as all their windows
    (``unfold``) and one advanced-indexing copy picks each image's window. Works on any dtype
    and device; ``generator`` must live on ``x.device``.
    """
    if x.dim() != 4:
        raise ValueError(f"expected a B x C x H x W batch, got shape {tuple(x.shape)}")
    B, C, H, W = x.shape
    pad = max(int(pad), 0)
    if B == 0 or (pad == 0 and not flip):
        return x
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x
    dy = torch.randint(0, 2 * pad + 1, (B,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (B,), device=dev, generator=generator)
    batch = torch.arange(B, device=dev)
    if flip:
        mirror = torch.randint(0, 2, (B,), device=dev, generator=generator).bool()
        xp = torch.cat([xp, xp.flip(3)])
        batch = torch.where(mirror, batch + B, batch)
        dx = torch.where(mirror, 2 * pad - dx, dx)  # the window at dx, mirrored, starts at 2p - dx
    windows = xp.unfold(2, H, 1).unfold(3, W, 1)  # 2B x C x (2p+1) x (2p+1) x H x W (a view)
    return windows[batch, :, dy, dx]


class Normalizer:
    """uint8 ``B x 3 x H x W`` -> float32, ``(x / 255 - mean) / std``, optional resize and channels_last."""

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
        self.scale = (1.0 / (255.0 * s)).view(1, -1, 1, 1).to(device)
        self.shift = (m / s).view(1, -1, 1, 1).to(device)
        self.out_size = out_size
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.float().mul_(self.scale).sub_(self.shift)
        if self.out_size is not None and tuple(x.shape[-2:]) != tuple(self.out_size):
            down = self.out_size[0] < x.shape[-2] or self.out_size[1] < x.shape[-1]
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False, antialias=down)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return x
