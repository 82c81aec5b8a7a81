"""CIFAR-10 / CIFAR-100 in the official "python version" format, read with pickle + numpy."""

from __future__ import annotations

import logging
import os
import pickle
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np
import torch

from .._download import DatasetNotFoundError, download_url, file_md5, safe_extract_tar

__all__ = ["CIFAR_SPECS", "CifarSpec", "download_cifar", "find_cifar", "load_cifar"]

_log = logging.getLogger("nlsam.data")


@dataclass(frozen=True)
class CifarSpec:
    name: str
    folder: str  # folder inside the archive / data_dir
    url: str
    md5: str
    train_files: Tuple[str, ...]
    test_files: Tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def files(self) -> Tuple[str, ...]:
        return self.train_files + self.test_files + (self.meta_file,)


#: The official archives. Tests point ``url``/``md5`` elsewhere with ``dataclasses.replace``.
CIFAR_SPECS = {
    "cifar10": CifarSpec(
        name="cifar10",
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
    ),
    "cifar100": CifarSpec(
        name="cifar100",
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
    ),
}

# The official pickles hold dicts of str/bytes/lists and numpy arrays; nothing else is let in.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR file")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path} is not a valid CIFAR python pickle ({e}); delete it and download again") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a valid CIFAR python pickle (expected a dict, got {type(obj).__name__})")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _download_command(name: str, data_dir: Path) -> str:
    return f"nlsam train --data {name} --data-dir {shlex.quote(str(data_dir))} --download"


def find_cifar(name: str, data_dir: Path) -> Optional[Path]:
    """The extracted CIFAR folder under ``data_dir`` (or ``data_dir`` itself), if complete."""
    spec = CIFAR_SPECS[name]
    for cand in (data_dir / spec.folder, data_dir):
        if all((cand / f).is_file() for f in spec.files):
            return cand
    return None


def download_cifar(name: str, data_dir: Path) -> Path:
    """Download (if needed), verify and extract the official archive into ``data_dir``.

    An archive already in ``data_dir`` with the right checksum is reused. Extraction goes to a
    temporary folder that is renamed into place, so a crash never leaves a half-extracted
    dataset behind. Returns the extracted folder.
    """
    spec = CIFAR_SPECS[name]
    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    archive = data_dir / spec.archive
    if archive.is_file() and file_md5(archive) == spec.md5:
        _log.info("using the archive already at %s", archive)
    else:
        hint = (
            f"without network access, get {spec.archive} by other means and extract it into {data_dir} "
            f"(it holds {spec.folder}/); it is then found without --download"
        )
        download_url(spec.url, archive, spec.md5, hint=hint)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=data_dir))
    try:
        _log.info("extracting %s", archive)
        safe_extract_tar(archive, tmp)
        src = tmp / spec.folder
        if not all((src / f).is_file() for f in spec.files):
            raise ValueError(f"{archive} does not contain the expected {spec.folder}/ files {list(spec.files)}")
        dest = data_dir / spec.folder
        if dest.exists():  # incomplete earlier copy (a complete one is never re-downloaded)
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.replace(src, dest)
        except OSError:
            if find_cifar(name, data_dir) is None:  # not a concurrent process that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data_dir / spec.folder


def _read_batch(path: Path, label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path)
    if "data" not in d or label_key not in d:
        raise ValueError(f"{path} lacks the keys 'data' and '{label_key}' of the official CIFAR format")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"{path}: expected 'data' of shape N x 3072 and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def cifar_not_found(name: str, data_dir: Path) -> DatasetNotFoundError:
    """The error for CIFAR files missing from ``data_dir``: where it looked, how to get them."""
    spec = CIFAR_SPECS[name]
    data_dir = Path(data_dir).expanduser().absolute()
    return DatasetNotFoundError(
        f"{name} not found: looked for {data_dir / spec.folder}/ "
        f"(files {', '.join(spec.files)}). Download it with:\n"
        f"    {_download_command(name, data_dir)}\n"
        f"or download {spec.url} and extract it into {data_dir}"
    )


def load_cifar(
    name: str, data_dir: Path, download: bool = False
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, List[str]]:
    """Load CIFAR-10/100 as uint8 ``N x 3 x 32 x 32`` tensors plus int64 labels and class names.

    Raises :class:`DatasetNotFoundError` (a ``FileNotFoundError``) naming the folder it looked in
    and the command that downloads it when the files are absent and ``download`` is False.
    """
    spec = CIFAR_SPECS[name]
    data_dir = Path(data_dir).expanduser().absolute()
    root = find_cifar(name, data_dir)
    if root is None:
        if not download:
            raise cifar_not_found(name, data_dir)
        root = download_cifar(name, data_dir)
    start = time.monotonic()
    xs, ys = zip(*(_read_batch(root / f, spec.label_key) for f in spec.train_files))
    train_x, train_y = np.concatenate(xs), np.concatenate(ys)
    test_x, test_y = _read_batch(root / spec.test_files[0], spec.label_key)
    meta = _load_pickle(root / spec.meta_file)
    classes = [str(c) for c in meta.get(spec.names_key, [])]
    num_classes = 10 if name == "cifar10" else 100
    if len(classes) != num_classes:
        raise ValueError(f"{root / spec.meta_file}: expected {num_classes} names under '{spec.names_key}'")
    for split, y in (("train", train_y), ("test", test_y)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{root}: {split} labels outside 0..{num_classes - 1}")
    _log.info("loaded %s from %s in %.2f s", name, root, time.monotonic() - start)
    return (
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
        classes,
    )
