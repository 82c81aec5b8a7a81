"""Sample images of a dataset: the first test images of every class, as image files to try a
trained network on (``nlsam predict``, ``cam``, ``attention``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, Union

import numpy as np
from PIL import Image

from .._download import DatasetNotFoundError
from ._builtin import BUILTIN_CLASSES, generate_builtin
from ._cifar import CIFAR_SPECS, _load_pickle, _read_batch, find_cifar
from ._datasets import default_data_dir
from ._folder import index_folder

__all__ = ["sample_images"]


def sample_images(data: str, per_class: int = 1, data_dir: Union[str, Path, None] = None) -> Dict[str, bytes]:
    """The first ``per_class`` test images of every class of a dataset, as files: a dict of
    file names, ``NN_CLASS.png`` (``NN_CLASS_K.png`` with more than one per class), to their
    contents, in class order.

    ``data``: ``builtin``, ``cifar10`` / ``cifar100`` (the official python files under
    ``data_dir``, default :func:`default_data_dir`) or the path of an ImageFolder directory or
    ``.zip``, whose ``test/`` or ``val/`` images are given byte for byte, under their own
    extension.

    Raises:
        ValueError: ``per_class`` below 1, or ``data`` none of the above.
        DatasetNotFoundError: the CIFAR files are not under ``data_dir``.
    """
    if per_class < 1:
        raise ValueError(f"--per-class must be at least 1, got {per_class}")
    files: Dict[str, bytes] = {}

    def name(label: int, cls: str, n: int, suffix: str) -> str:
        return f"{label:02d}_{cls}{'' if per_class == 1 else f'_{n + 1}'}{suffix}"

    if data not in ("builtin", *CIFAR_SPECS) and (Path(data).is_dir() or Path(data).is_file()):
        index = index_folder(Path(data))
        with index.reader() as reader:
            for label, cls in enumerate(index.classes):
                members = [m for m, y in index.test if y == label][:per_class]
                for n, member in enumerate(members):
                    files[name(label, cls, n, Path(member).suffix.lower())] = reader.read(member)
        return files
    if data == "builtin":
        split = generate_builtin(64 * per_class, split="test")
        images, labels, classes = split.images.numpy(), split.labels.numpy(), list(BUILTIN_CLASSES)
    elif data in CIFAR_SPECS:
        spec = CIFAR_SPECS[data]
        folder = Path(data_dir) if data_dir else default_data_dir()
        root = find_cifar(data, folder)
        if root is None:
            raise DatasetNotFoundError(f"{data} not found under {folder}")
        images, labels = _read_batch(root / spec.test_files[0], spec.label_key)
        classes = [str(c) for c in _load_pickle(root / spec.meta_file)[spec.names_key]]
    else:
        raise ValueError(
            f"unknown data {data!r}; valid: builtin, cifar10, cifar100 or an ImageFolder directory or .zip"
        )
    for label, cls in enumerate(classes):
        for n, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(images[index].transpose(1, 2, 0))).save(buffer, format="PNG")
            files[name(label, cls, n, ".png")] = buffer.getvalue()
    return files
