"""Loaders: rank sharding, the in-memory device loader, and the file-backed DataLoader wrapper.

Both loaders share one contract: ``len(loader)`` is the number of batches this rank yields per
epoch, ``loader.set_epoch(e)`` fixes the shuffle (and augmentation) of the next pass, and
iterating yields ``(images, labels)`` with float32 normalized images and int64 labels on the
target device. Without ``set_epoch`` each new pass uses the next epoch number (0, 1, 2, ...).
"""

from __future__ import annotations

from typing import Iterator, Tuple

import torch

from ._augment import Normalizer, random_crop_flip
from ._threads import one_thread

__all__ = ["InMemoryLoader", "ShardSampler", "TorchLoader", "shard_indices"]

Batch = Tuple[torch.Tensor, torch.Tensor]


def shard_indices(n: int, *, rank: int, world_size: int, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    """Indices of the ``n`` samples that ``rank`` of ``world_size`` visits in ``epoch``.

    ``shuffle=True`` (training): every rank draws the same permutation from a generator seeded
    with ``seed + epoch``, drops its last ``n % world_size`` entries so that every rank gets the
    same number of samples, and takes every ``world_size``-th entry starting at ``rank``. The
    shards are disjoint and differ between epochs.

    ``shuffle=False`` (evaluation): rank ``r`` takes samples ``r, r + world_size, ...`` of the
    unshuffled set, so the ranks together cover every sample exactly once (shard sizes may
    differ by one).
    """
    if shuffle:
        g = torch.Generator().manual_seed(int(seed) + int(epoch))
        perm = torch.randperm(n, generator=g)
        perm = perm[: (n // world_size) * world_size]
        return perm[rank::world_size]
    return torch.arange(rank, n, world_size)


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    if n == 0:
        return 0
    if drop_last:
        return max(n // batch_size, 1)  # a shard smaller than one batch still gives one batch
    return -(-n // batch_size)


def _aug_seed(seed: int, rank: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(rank) * 7919 + int(epoch) * 104_729 + 12345) % (2**63 - 1)


class InMemoryLoader:
    """Batches from uint8 ``N x 3 x H x W`` tensors, augmented and normalized on the device.

    ``train=True``: shuffled per epoch, sharded over ranks with equal shard sizes, the last
    incomplete batch is dropped (unless the shard is smaller than one batch), and, when
    ``augment``, every batch gets :func:`random_crop_flip` with ``pad`` pixels. ``train=False``:
    fixed order, every sample of this rank's shard exactly once, the last batch may be smaller.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        train: bool,
        device: torch.device,
        normalizer: Normalizer,
        augment: bool = True,
        pad: int = 4,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"expected uint8 N x C x H x W images, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        # channels_last output: store N x H x W x C once, so batches need no transposition
        self._nhwc = normalizer.channels_last
        self.images = images.contiguous(memory_format=torch.channels_last) if self._nhwc else images
        self.labels = labels.to(device=images.device, dtype=torch.int64)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.train = train
        self.augment = augment and train
        self.pad = pad
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.normalizer = normalizer
        self.drop_last = train
        self._epoch = 0
        n = len(images)
        self.num_samples = (n // world_size) if train else len(range(rank, n, world_size))

    @property
    def dataset_size(self) -> int:
        """Samples in the whole split (all ranks)."""
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the shuffle and augmentation of the next pass."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return _num_batches(self.num_samples, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self._epoch
        self._epoch += 1
        idx = shard_indices(
            len(self.images),
            rank=self.rank,
            world_size=self.world_size,
            shuffle=self.train,
            seed=self.seed,
            epoch=epoch,
        )
        data_dev = self.images.device
        idx = idx.to(data_dev)
        gen = None
        if self.augment:
            gen = torch.Generator(device=self.device).manual_seed(_aug_seed(self.seed, self.rank, epoch))
        bs = min(self.batch_size, len(idx)) if self.drop_last else self.batch_size
        for b in range(len(self)):
            with one_thread(self.device):
                sel = idx[b * bs : (b + 1) * bs]
                if self._nhwc:
                    x = self.images.permute(0, 2, 3, 1).index_select(0, sel).permute(0, 3, 1, 2)
                else:
                    x = self.images.index_select(0, sel)
                y = self.labels.index_select(0, sel)
                if data_dev != self.device:
                    if self.device.type == "cuda":
                        x, y = x.pin_memory(), y.pin_memory()
                    x = x.to(self.device, non_blocking=True)
                    y = y.to(self.device, non_blocking=True)
                if self.augment:
                    x = random_crop_flip(x, self.pad, gen)
                x = self.normalizer(x)
            yield x, y


class ShardSampler(torch.utils.data.Sampler):
    """A :class:`torch.utils.data.Sampler` yielding :func:`shard_indices` for the current epoch."""

    def __init__(self, n: int, *, rank: int, world_size: int, shuffle: bool, seed: int) -> None:
        self.n, self.rank, self.world_size, self.shuffle, self.seed = n, rank, world_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        idx = shard_indices(
            self.n,
            rank=self.rank,
            world_size=self.world_size,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
        )
        return iter(idx.tolist())

    def __len__(self) -> int:
        return (self.n // self.world_size) if self.shuffle else len(range(self.rank, self.n, self.world_size))


class TorchLoader:
    """Wraps a :class:`torch.utils.data.DataLoader` of uint8 batches (files decoded in workers).

    Moves every batch to the device, normalizes it there and skips batches in which every image
    was unreadable. ``len()`` counts the DataLoader's batches.
    """

    def __init__(
        self,
        loader: torch.utils.data.DataLoader,
        sampler: ShardSampler,
        *,
        device: torch.device,
        normalizer: Normalizer,
        train: bool,
    ) -> None:
        self.loader = loader
        self.sampler = sampler
        self.device = torch.device(device)
        self.normalizer = normalizer
        self.train = train
        self.drop_last = bool(loader.drop_last)
        self.batch_size = loader.batch_size
        self.num_samples = len(sampler)
        self._epoch = 0

    @property
    def dataset_size(self) -> int:
        """Samples in the whole split (all ranks)."""
        return self.sampler.n

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the shuffle of the next pass."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        self.sampler.set_epoch(self._epoch)
        if self.loader.generator is not None:  # worker seeds (augmentation) depend on the epoch too
            self.loader.generator.manual_seed(_aug_seed(self.sampler.seed, self.sampler.rank, self._epoch))
        self._epoch += 1
        for batch in self.loader:
            if batch is None:
                continue
            x, y = batch
            with one_thread(self.device):
                x = self.normalizer(x.to(self.device, non_blocking=True))
                y = y.to(self.device, non_blocking=True)
            yield x, y
