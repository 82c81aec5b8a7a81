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
    window is mirrored horizontally with probability 1/2. Crop and flip are one ``gather`` with
    per-image index arithmetic: there is no Python loop over the batch. Works on any dtype and
    device; ``generator`` must live on ``x.device``.
    """
    if x.dim() != 4:
        raise ValueError(f"expected a B x C x H x W batch, got shape {tuple(x.shape)}")
    B, C, H, W = x.shape
    if B == 0 or (pad <= 0 and not flip):
        return x
    dev = x.device
    pad = max(int(pad), 0)
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x
    Hp, Wp = H + 2 * pad, W + 2 * pad
    dy = torch.randint(0, 2 * pad + 1, (B, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (B, 1), device=dev, generator=generator)
    cols = torch.arange(W, device=dev).unsqueeze(0)
    if flip:
        mirror = torch.randint(0, 2, (B, 1), device=dev, generator=generator).bool()
        cols = torch.where(mirror, (W - 1) - cols, cols)
    rows = torch.arange(H, device=dev).unsqueeze(0) + dy  # B x H
    cols = cols + dx  # B x W
    idx = (rows.unsqueeze(2) * Wp + cols.unsqueeze(1)).view(B, 1, H * W).expand(B, C, H * W)
    return xp.reshape(B, C, Hp * Wp).gather(2, idx).view(B, C, H, W)


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
