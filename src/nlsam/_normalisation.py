"""Per-channel means and standard deviations (in [0, 1] units, RGB order) of the datasets
nlsam's networks are trained on: the one home of these constants, for :mod:`nlsam.data` (which
normalises the data with them) and :mod:`nlsam.models` (whose configs record them)."""

from __future__ import annotations

from typing import Tuple

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ChannelStats",
]

#: One value per channel, (R, G, B).
ChannelStats = Tuple[float, float, float]

CIFAR10_MEAN: ChannelStats = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: ChannelStats = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: ChannelStats = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: ChannelStats = (0.2673, 0.2564, 0.2762)
#: = timm.data.IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD; also used for folders of large images.
IMAGENET_MEAN: ChannelStats = (0.485, 0.456, 0.406)
IMAGENET_STD: ChannelStats = (0.229, 0.224, 0.225)
