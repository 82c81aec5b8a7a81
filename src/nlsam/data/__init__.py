"""Datasets and loaders for training: ``build_data`` turns a dataset name or path into loaders.

Supported data:

* ``"builtin"``: a procedural 8-class "which shape is the large object" dataset among clutter
  (32 x 32, no download; ``"builtin:N_TRAIN:N_TEST:DATA_SEED"`` sets sizes and the data seed).
* ``"locate"``: a procedural 4-class "which shape is in the frame" dataset, where one shape
  among look-alike distractors decides the class, with a mask of that shape for every image
  (:func:`generate_locate`; the same ``"locate:N_TRAIN:N_TEST:DATA_SEED"`` spec).
* ``"cifar10"`` / ``"cifar100"``: the official python-format files, read with pickle + numpy;
  ``download=True`` fetches and verifies the official archives.
* A path to an ImageFolder tree (``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*`` or
  ``ROOT/test/<class>/*``) or the same layout in a ``.zip``. Images of at most 64 px are
  decoded once into memory and cached on disk (``build_data(cache_dir=...)``, else
  ``$NLSAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/nlsam``, else ``~/.cache/nlsam``; the file is
  logged and returned as ``DataBundle.cache_path``); larger images are read by DataLoader
  workers with torchvision transforms.

In-memory data is augmented in whole batches on the training device (zero-pad + random crop,
horizontal flip) and normalized there. Train loaders shard per rank with a per-epoch
deterministic shuffle; test loaders shard without duplicates (reduce metrics over ranks).

``peek_data`` tells the input size and class count that ``build_data`` would give, without
loading the images (e.g. to settle the image size before loading the data once).
"""

from __future__ import annotations

from .._download import ChecksumError, DatasetNotFoundError, DownloadError
from ._augment import Normalizer, random_crop_flip
from ._build import (
    DATASET_NAMES,
    DataBundle,
    DataInfo,
    build_data,
    check_data_source,
    default_data_dir,
    parse_procedural,
    peek_data,
    procedural_name,
    procedural_size,
)
from ._builtin import BUILTIN_CLASSES, BuiltinSplit, generate_builtin
from ._cache import cache_dir
from ._cifar import download_cifar
from ._images import preprocess_image, to_rgb
from ._loaders import shard_indices
from ._localisation import LOCATE_CLASSES, LocateSplit, generate_locate
from ._samples import sample_images

__all__ = [
    "BUILTIN_CLASSES",
    "BuiltinSplit",
    "ChecksumError",
    "DATASET_NAMES",
    "DataBundle",
    "DataInfo",
    "DatasetNotFoundError",
    "DownloadError",
    "LOCATE_CLASSES",
    "LocateSplit",
    "Normalizer",
    "build_data",
    "cache_dir",
    "check_data_source",
    "default_data_dir",
    "download_cifar",
    "generate_builtin",
    "generate_locate",
    "parse_procedural",
    "peek_data",
    "preprocess_image",
    "procedural_name",
    "procedural_size",
    "random_crop_flip",
    "sample_images",
    "shard_indices",
    "to_rgb",
]
