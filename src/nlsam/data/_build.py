"""``build_data``: one entry point from a dataset name or path to train/test loaders."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image

from .._normalisation import IMAGENET_MEAN, IMAGENET_STD
from .._sizes import to_2tuple
from ._augment import Normalizer
from ._datasets import (
    DATASET_NAMES,
    DatasetEntry,
    dataset_entry,
    default_data_dir,
    parse_procedural,
    procedural_name,
    procedural_size,
)
from ._folder import (
    FolderIndex,
    LazyImageDataset,
    channel_stats,
    choose_size,
    collate_skip,
    index_folder,
    load_small_folder,
    torchvision_transforms,
)
from ._images import SMALL_IMAGE_MAX, preprocess_image
from ._loaders import InMemoryLoader, ShardSampler, TorchLoader

__all__ = [
    "DATASET_NAMES",
    "DataBundle",
    "DataInfo",
    "LoaderOptions",
    "build_data",
    "check_data_source",
    "default_data_dir",
    "parse_procedural",
    "peek_data",
    "procedural_name",
    "procedural_size",
]

_log = logging.getLogger("nlsam.data")

#: The side of the square input of folders of large images when ``image_size`` is not given.
LARGE_IMAGE_SIZE = 224

# uint8 datasets up to this size are moved to an accelerator once and indexed there.
_MAX_DEVICE_BYTES = 4 << 30

Loader = Union[InMemoryLoader, TorchLoader]


@dataclass
class DataBundle:
    """Everything a trainer needs from a dataset.

    ``num_train`` / ``num_test`` count the whole splits (all ranks together, unreadable files
    excluded); ``len(train_loader)`` / ``len(test_loader)`` are this rank's batches per epoch.
    ``input_size`` is the (H, W) of the images the loaders yield, ``mean``/``std`` the per-channel
    normalization they applied, ``skipped`` the number of unreadable files left out when the
    dataset was decoded (large-image folders find unreadable files lazily: they are logged and
    dropped from their batch, and not counted here). ``cache_path`` is the on-disk cache of the
    decoded images that was read or written (folders of small images only; else None).
    """

    name: str
    classes: List[str]
    input_size: Tuple[int, int]
    in_chans: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    num_train: int
    num_test: int
    train_loader: Loader
    test_loader: Loader
    skipped: int = 0
    cache_path: Optional[str] = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def preprocess(self, img: Union[Image.Image, str, "os.PathLike[str]"]) -> torch.Tensor:
        """``preprocess_image(img, self.input_size, self.mean, self.std)``: a 1 x 3 x H x W input."""
        return preprocess_image(img, self.input_size, self.mean, self.std)


@dataclass(frozen=True)
class DataInfo:
    """What :func:`peek_data` tells of a dataset without loading it: the ``name``,
    ``input_size`` (H, W), ``num_classes`` and ``in_chans`` that the :class:`DataBundle` of
    ``build_data(data, image_size=None)`` has."""

    name: str
    input_size: Tuple[int, int]
    num_classes: int
    in_chans: int = 3


@dataclass(frozen=True)
class LoaderOptions:
    """How the loaders of :func:`build_data` batch, place, shard and augment the data (its
    arguments of those names; ``eval_batch_size`` resolved), passed down to every builder."""

    batch_size: int
    eval_batch_size: int
    device: torch.device
    seed: int
    rank: int
    world_size: int
    augment: bool
    channels_last: bool
    num_workers: int
    cache_dir: Optional[str]


def _check_args(
    batch_size: int,
    eval_batch_size: Optional[int],
    rank: int,
    world_size: int,
    num_workers: int,
    image_size: Optional[int],
) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if eval_batch_size is not None and eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if image_size is not None and image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")


def _check_classes(name: str, classes: Sequence[str], labels: Sequence[int]) -> None:
    """Refuse a training split with fewer than 2 classes (``labels``: those of its samples)."""
    present = sorted(set(labels))
    if len(present) < 2:
        found = f" ({', '.join(repr(classes[i]) for i in present)})" if present else ""
        raise ValueError(
            f"{name} has {len(present)} class{'' if len(present) == 1 else 'es'}{found}; "
            "classification needs at least 2"
        )


def _place(x: torch.Tensor, y: torch.Tensor, device: torch.device, total_bytes: int):
    if device.type == "cpu" or total_bytes > _MAX_DEVICE_BYTES:
        return x, y
    return x.to(device), y.to(device)


def _floats(values: Tuple[float, float, float]) -> Tuple[float, float, float]:
    """Plain floats (a cache may hold other numbers)."""
    a, b, c = values
    return float(a), float(b), float(c)


def _in_memory_bundle(
    name: str,
    classes: Sequence[str],
    train: Tuple[torch.Tensor, torch.Tensor],
    test: Tuple[torch.Tensor, torch.Tensor],
    mean: Tuple[float, float, float],
    std: Tuple[float, float, float],
    opts: LoaderOptions,
    *,
    skipped: int,
    out_size: Optional[Tuple[int, int]],
    cache_path: Optional[Path] = None,
) -> DataBundle:
    (tr_x, tr_y), (te_x, te_y) = train, test
    if len(tr_x) < opts.world_size:
        raise ValueError(f"{name}: {len(tr_x)} training samples cannot be sharded over {opts.world_size} ranks")
    _check_classes(name, classes, torch.unique(tr_y).tolist())
    total = tr_x.numel() + te_x.numel()
    tr_x, tr_y = _place(tr_x, tr_y, opts.device, total)
    te_x, te_y = _place(te_x, te_y, opts.device, total)
    H, W = tr_x.shape[-2:]
    size = out_size or (H, W)
    norm = Normalizer(
        mean, std, opts.device, out_size=size if size != (H, W) else None, channels_last=opts.channels_last
    )
    pad = max(1, round(min(H, W) / 8))  # 4 for 32 x 32 (He et al.)
    common: Dict[str, Any] = dict(
        device=opts.device, normalizer=norm, seed=opts.seed, rank=opts.rank, world_size=opts.world_size
    )
    return DataBundle(
        name=name,
        classes=list(classes),
        input_size=(int(size[0]), int(size[1])),
        in_chans=int(tr_x.shape[1]),
        mean=_floats(mean),
        std=_floats(std),
        num_train=len(tr_x),
        num_test=len(te_x),
        train_loader=InMemoryLoader(
            tr_x, tr_y, batch_size=opts.batch_size, train=True, augment=opts.augment, pad=pad, **common
        ),
        test_loader=InMemoryLoader(te_x, te_y, batch_size=opts.eval_batch_size, train=False, **common),
        skipped=skipped,
        cache_path=str(cache_path) if cache_path is not None else None,
    )


def _resolve_path(data: str, data_dir: Optional[str]) -> Optional[Path]:
    p = Path(data).expanduser()
    if p.exists():
        return p
    if data_dir is not None and not p.is_absolute():
        q = Path(data_dir).expanduser() / p
        if q.exists():
            return q
    return None


def _folder_path(data: str, data_dir: Optional[str]) -> Path:
    """The ImageFolder directory or zip ``data`` names, or the error for an unknown dataset."""
    path = _resolve_path(data.strip(), data_dir)
    if path is None:
        raise ValueError(
            f"unknown dataset {data!r}: expected one of {', '.join(DATASET_NAMES)} "
            f"(builtin and locate also as NAME:N_TRAIN:N_TEST), or a path to an ImageFolder directory "
            f"or .zip file (no such file or directory: {Path(data).expanduser()})"
        )
    return path


def check_data_source(data: str, *, data_dir: Optional[str] = None, download: bool = False) -> None:
    """Fail as :func:`build_data` would on a dataset that is not there, without loading it:
    a bad builtin or locate spec, CIFAR files missing (without ``download``), a path that does not exist."""
    entry = dataset_entry(data)
    if entry is not None:
        entry.check(entry, data, data_dir, download)
    else:
        _folder_path(data, data_dir)


def peek_data(data: str, data_dir: Optional[str] = None) -> DataInfo:
    """A dataset's native input size and class count, without loading or decoding its images.

    The ``input_size`` is exactly that of ``build_data(data, data_dir=data_dir,
    image_size=None).input_size``, so a caller can settle the image size (e.g. a network's
    own) before loading the data once. For ``builtin``, ``locate`` and CIFAR it comes from the
    dataset registry (nothing is generated or read; CIFAR's files need not be there yet, see
    :func:`check_data_source`). For an ImageFolder directory or ``.zip`` the files are listed
    and the headers of a sample of up to 256 training images are read, as ``build_data`` does
    to choose the size: their most common size when it is at most 64 px, else 224 x 224.

    Args:
        data: a dataset name or path, as :func:`build_data` takes it.
        data_dir: as :func:`build_data` takes it (relative paths are also tried under it).

    Returns:
        A :class:`DataInfo`: ``name``, ``input_size`` (H, W), ``num_classes`` and ``in_chans``.

    Raises:
        ValueError: unknown dataset name (lists the valid ones), a bad builtin or locate spec, a
            corrupt zip, an empty folder, fewer than 2 classes with training images, or none of
            the sampled training images readable.
        FileNotFoundError: an ImageFolder without train/ or without val/ and test/.
    """
    key = data.strip()
    entry = dataset_entry(key)
    if entry is not None:
        if entry.procedural is not None:
            parse_procedural(key)  # a bad spec fails here as in build_data
        return DataInfo(name=entry.name, input_size=entry.input_size, num_classes=entry.num_classes)
    path = _folder_path(data, data_dir)
    index = _indexed_folder(path)
    height, width = _folder_input_size(index, None)
    return DataInfo(name=_folder_name(path), input_size=(int(height), int(width)), num_classes=len(index.classes))


def build_data(
    data: str,
    *,
    data_dir: Optional[str] = None,
    batch_size: int = 128,
    eval_batch_size: Optional[int] = None,
    device: Union[torch.device, str] = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    download: bool = False,
    num_workers: int = 2,
    image_size: Optional[int] = None,
    augment: bool = True,
    channels_last: bool = False,
    cache_dir: Optional[str] = None,
) -> DataBundle:
    """Build train and test loaders for a dataset.

    Args:
        data: ``"builtin"`` (procedural shapes, no download; ``"builtin:N_TRAIN:N_TEST:DATA_SEED"``
            sets sizes / the data seed, default 10000 / 2000 / 0), ``"locate"`` (procedural:
            which shape is in the frame, :mod:`nlsam.data._localisation`; the same spec and
            defaults), ``"cifar10"``, ``"cifar100"``,
            or a path to an ImageFolder directory or ``.zip`` (relative paths are also tried
            under ``data_dir``).
        data_dir: folder holding (or receiving) the CIFAR files; default ``$NLSAM_DATA_DIR`` or
            ``./data``.
        batch_size: training batch size per rank.
        eval_batch_size: test batch size per rank (default: ``batch_size``).
        device: where batches are produced. Small datasets are moved there once (up to 4 GiB),
            so augmentation runs on the device.
        seed: seeds the per-epoch shuffle (``seed + epoch``) and the augmentation. The builtin
            and locate datasets' pixels do not depend on it (see ``DATA_SEED`` above).
        rank: this process's rank, for distributed sharding. Every rank must pass the same ``seed``.
        world_size: the number of ranks the data is sharded over.
        download: fetch CIFAR from the official site when it is missing.
        num_workers: DataLoader worker processes; used only for large-image folders.
        image_size: square size of the model input. Default: 32 for builtin/locate/CIFAR, the most
            common image size for folders of small images, 224 for folders of large images.
            Folders are decoded in memory if it (or the detected size) is <= 64, else read
            with torchvision transforms. For builtin/locate/CIFAR another size resizes batches on the
            device.
        augment: random crop (zero-pad by size/8, i.e. 4 px at 32) + horizontal flip on the train
            loader (RandomResizedCrop + flip for large images). The test loader never augments.
        channels_last: yield images in ``torch.channels_last`` memory format.
        cache_dir: folder for the on-disk cache of decoded small-image folders (CIFAR-10 as
            JPEGs takes about 185 MB); default ``$NLSAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/nlsam``,
            else ``~/.cache/nlsam``. The file used is logged and returned as ``cache_path``.

    Returns:
        A :class:`DataBundle`. Loader semantics: the train loader shuffles with ``seed + epoch``
        (call ``set_epoch(epoch)`` before each epoch; otherwise each pass uses the next epoch),
        gives every rank the same number of samples (``num_train // world_size``) and drops the
        last incomplete batch (unless the shard is smaller than one batch). The test loader is
        sharded as ``rank::world_size`` without padding or duplicates, so the ranks together
        visit every test sample exactly once and may differ by one sample (and one batch):
        under DDP the trainer must sum the correct-count and sample-count over ranks
        (``all_reduce``) after the loop and must not run collectives per test batch.

    Raises:
        ValueError: unknown dataset name (lists the valid ones), bad arguments, a corrupt zip,
            an empty folder, an eval class that train/ lacks, or fewer than 2 classes with
            training samples.
        DatasetNotFoundError: (a ``FileNotFoundError``) CIFAR files are missing and ``download``
            is False; the message names the folder and the command that downloads them.
        FileNotFoundError: an ImageFolder without train/ or without val/ and test/.
        DownloadError: the download failed or its checksum did not match.
    """
    _check_args(batch_size, eval_batch_size, rank, world_size, num_workers, image_size)
    opts = LoaderOptions(
        batch_size=batch_size,
        eval_batch_size=eval_batch_size or batch_size,
        device=torch.device(device),
        seed=seed,
        rank=rank,
        world_size=world_size,
        augment=augment,
        channels_last=channels_last,
        num_workers=num_workers,
        cache_dir=cache_dir,
    )
    key = data.strip()
    start = time.monotonic()
    entry = dataset_entry(key)
    if entry is not None:
        bundle = _named_bundle(entry, key, data_dir, download, image_size, opts)
    else:
        bundle = _folder_bundle(_folder_path(data, data_dir), image_size, opts)
    _log.info(
        "data %s: %d train / %d test images, %d classes, input %dx%d, %d train batches per epoch "
        "(rank %d of %d), ready in %.1f s",
        bundle.name,
        bundle.num_train,
        bundle.num_test,
        bundle.num_classes,
        *bundle.input_size,
        len(bundle.train_loader),
        rank,
        world_size,
        time.monotonic() - start,
    )
    return bundle


def _named_bundle(
    entry: DatasetEntry,
    spec: str,
    data_dir: Optional[str],
    download: bool,
    image_size: Optional[int],
    opts: LoaderOptions,
) -> DataBundle:
    """The bundle of a registered dataset: its splits held in memory, resized on the device
    to ``image_size`` when it is not the dataset's own size."""
    out_size = to_2tuple(image_size, "image_size") if image_size is not None else entry.input_size
    splits = entry.load(entry, spec, data_dir, download, out_size)
    if entry.mean is not None and entry.std is not None:
        mean, std = entry.mean, entry.std
    else:
        mean, std = channel_stats(splits.train[0])
    return _in_memory_bundle(
        entry.name, splits.classes, splits.train, splits.test, mean, std, opts, skipped=0, out_size=out_size
    )


def _folder_name(path: Path) -> str:
    """A folder dataset's name: the zip's stem, or the directory's name."""
    return path.stem if path.is_file() else path.name


def _indexed_folder(path: Path) -> FolderIndex:
    """The files of the folder or zip at ``path``, refused with fewer than 2 classes with training images."""
    index = index_folder(path)
    _check_classes(str(path), index.classes, [label for _, label in index.train])
    return index


def _folder_input_size(index: FolderIndex, image_size: Optional[int]) -> Tuple[int, int]:
    """The (H, W) a folder's loaders yield: ``image_size``, else the most common size of a
    sample of training images (their headers only) when it is at most 64 px (the images are
    then decoded into memory at that size), else :data:`LARGE_IMAGE_SIZE`."""
    with index.reader() as reader:
        size = choose_size(index, reader, image_size)
    if max(size) <= SMALL_IMAGE_MAX:
        return size
    side = int(image_size or LARGE_IMAGE_SIZE)
    return side, side


def _folder_bundle(path: Path, image_size: Optional[int], opts: LoaderOptions) -> DataBundle:
    index = _indexed_folder(path)
    name = _folder_name(path)
    size = _folder_input_size(index, image_size)
    if max(size) <= SMALL_IMAGE_MAX:
        d = load_small_folder(index, size, opts.cache_dir)
        return _in_memory_bundle(
            name,
            d.classes,
            (d.train_images, d.train_labels),
            (d.test_images, d.test_labels),
            d.mean,
            d.std,
            opts,
            skipped=d.skipped,
            out_size=None,
            cache_path=d.cache_path,
        )
    # Large images: decoded lazily by worker processes with torchvision transforms.
    side = size[0]
    if len(index.train) < opts.world_size:
        raise ValueError(f"{path}: {len(index.train)} training images cannot be sharded over {opts.world_size} ranks")
    norm = Normalizer(IMAGENET_MEAN, IMAGENET_STD, opts.device, channels_last=opts.channels_last)
    loaders = []
    for train, items, bs in ((True, index.train, opts.batch_size), (False, index.test, opts.eval_batch_size)):
        ds = LazyImageDataset(index, items, torchvision_transforms(side, train, opts.augment))
        sampler = ShardSampler(len(items), rank=opts.rank, world_size=opts.world_size, shuffle=train, seed=opts.seed)
        dl = torch.utils.data.DataLoader(
            ds,
            batch_size=min(bs, max(len(sampler), 1)) if train else bs,
            sampler=sampler,
            num_workers=opts.num_workers,
            collate_fn=collate_skip,
            pin_memory=opts.device.type == "cuda",
            drop_last=train,
            persistent_workers=opts.num_workers > 0,
            generator=torch.Generator().manual_seed(opts.seed),
        )
        loaders.append(TorchLoader(dl, sampler, device=opts.device, normalizer=norm, train=train))
    return DataBundle(
        name=name,
        classes=list(index.classes),
        input_size=(side, side),
        in_chans=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_train=len(index.train),
        num_test=len(index.test),
        train_loader=loaders[0],
        test_loader=loaders[1],
        skipped=0,
    )
