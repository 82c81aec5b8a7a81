"""ImageFolder trees, as a directory or inside a .zip file.

Layout: ``ROOT/train/<class>/<image>`` plus ``ROOT/val/<class>/<image>`` (or ``ROOT/test/...``),
where ROOT is the given directory / the zip's top level, or the only folder inside it. Classes
come from ``train/``. Small images (<= 64 px) are decoded once into uint8 tensors that are cached
on disk; large ones are read lazily by a DataLoader with torchvision transforms.
"""

from __future__ import annotations

import io
import logging
import os
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .._io import atomic_file
from .._optional import require
from . import _images
from ._cache import cache_dir, cache_key, load_cached
from ._threads import one_thread

__all__ = [
    "FolderIndex",
    "LazyImageDataset",
    "SmallFolderData",
    "channel_stats",
    "choose_size",
    "collate_skip",
    "index_folder",
    "load_small_folder",
    "torchvision_transforms",
]

_log = logging.getLogger("nlsam.data")

IMG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
EVAL_SPLITS = ("val", "test")
_CACHE_VERSION = 1
_MAX_REPORTED = 100  # unreadable files logged one by one, per split; the rest only counted
_SIZE_SAMPLE = 256  # images whose headers are read to choose the common size

Item = Tuple[str, int]  # (member: zip name or path relative to the root, label)

_LAYOUT = (
    "expected the ImageFolder layout ROOT/train/<class>/<image> and ROOT/val/<class>/<image> "
    "(or ROOT/test/<class>/<image>), where ROOT is the folder itself or its only subfolder"
)


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMG_EXTENSIONS


@dataclass
class FolderIndex:
    """The files of an ImageFolder dataset (not decoded)."""

    path: Path  # the directory or zip file
    is_zip: bool
    root: str  # zip: member prefix of ROOT ("" or "top/"); directory: absolute path of ROOT
    # members are full zip names, or paths relative to ROOT
    classes: List[str]
    train: List[Item]
    test: List[Item]
    eval_split: str

    def fingerprint(self) -> Tuple:
        """Identifies the content for the cache: path, size and mtime of the zip, or of every
        listed file of a directory (so added, removed, replaced or touched files count)."""
        if self.is_zip:
            st = self.path.stat()
            return ("zip", str(self.path.resolve()), st.st_size, st.st_mtime_ns)
        stats = []
        for member, label in self.train + self.test:
            try:
                st = os.stat(os.path.join(self.root, member))
                stats.append((member, label, st.st_size, st.st_mtime_ns))
            except OSError:
                stats.append((member, label, -1, -1))
        return ("dir", self.root, len(stats), cache_key(*stats))

    def display(self, member: str) -> str:
        """A path for messages."""
        return f"{self.path}:{member}" if self.is_zip else str(Path(self.root) / member)

    def reader(self) -> "_Reader":
        return _Reader(self)


class _Reader:
    """Reads members of a :class:`FolderIndex`; opens a zip lazily, once per process."""

    def __init__(self, index: FolderIndex) -> None:
        self.index = index
        self._zf: Optional[zipfile.ZipFile] = None
        self._pid = -1

    def read(self, member: str) -> bytes:
        if not self.index.is_zip:
            with open(os.path.join(self.index.root, member), "rb") as f:
                return f.read()
        if self._zf is None or self._pid != os.getpid():
            self._zf = zipfile.ZipFile(self.index.path)
            self._pid = os.getpid()
        return self._zf.read(member)

    def close(self) -> None:
        if self._zf is not None and self._pid == os.getpid():
            self._zf.close()
        self._zf = None

    def __getstate__(self) -> dict:
        return {"index": self.index, "_zf": None, "_pid": -1}

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _group(names: List[str], prefix: str) -> Dict[str, List[str]]:
    """Group zip member names under ``prefix`` (a split folder) by class folder."""
    out: Dict[str, List[str]] = {}
    n = len(prefix)
    for name in names:
        if not name.startswith(prefix):
            continue
        rest = name[n:]
        parts = rest.split("/")
        if len(parts) < 2 or not parts[0] or parts[0].startswith("."):
            continue  # a file directly in the split folder, or a hidden folder
        files = out.setdefault(parts[0], [])
        if not rest.endswith("/") and _is_image_name(rest):
            files.append(name)
    for v in out.values():
        v.sort()
    return out


def _index_zip(path: Path) -> Tuple[str, Dict[str, Dict[str, List[str]]]]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.startswith("__MACOSX/")]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable zip file ({e}); {_LAYOUT}") from e
    if any(n.startswith("train/") for n in names):
        base = ""
    else:
        tops = {n.split("/", 1)[0] for n in names if "/" in n}
        tops.discard("")
        if len(tops) == 1 and any(n.startswith(f"{next(iter(tops))}/train/") for n in names):
            base = f"{next(iter(tops))}/"
        else:
            raise FileNotFoundError(
                f"{path}: no train/ folder in the zip (top-level entries: {sorted(tops)[:10]}); {_LAYOUT}"
            )
    splits = {}
    for split in ("train",) + EVAL_SPLITS:
        prefix = f"{base}{split}/"
        if any(n.startswith(prefix) for n in names):
            splits[split] = _group(names, prefix)
    return base, splits


def _unlistable(exc: OSError) -> ValueError:
    """The one-line error for a folder of a dataset that cannot be listed (no read permission)."""
    return ValueError(
        f"cannot list the folder {exc.filename or '(unknown)'}: {exc.strerror or exc}; every folder of an "
        "image dataset must be readable (chmod -R u+rX the dataset if it is yours, or ask its owner)"
    )


def _raise_unlistable(exc: OSError) -> None:
    raise _unlistable(exc) from None


def _scan_split_dir(split_dir: Path, root: Path) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    try:
        entries = sorted(os.scandir(split_dir), key=lambda e: e.name)
    except OSError as exc:
        raise _unlistable(exc) from None
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        files: List[str] = []
        # a class folder that cannot be listed is an error, not a class without images
        for dirpath, dirnames, filenames in os.walk(entry.path, onerror=_raise_unlistable, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            files.extend(f"{rel_dir}/{fn}" for fn in sorted(filenames) if _is_image_name(fn))
        out[entry.name] = files
    return out


def _index_dir(path: Path) -> Tuple[str, Dict[str, Dict[str, List[str]]]]:
    if (path / "train").is_dir():
        root = path
    else:
        try:
            subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
        except OSError as exc:
            raise _unlistable(exc) from None
        if len(subdirs) == 1 and (subdirs[0] / "train").is_dir():
            root = subdirs[0]
        else:
            raise FileNotFoundError(f"{path}: no train/ folder found; {_LAYOUT}")
    splits = {}
    for split in ("train",) + EVAL_SPLITS:
        if (root / split).is_dir():
            splits[split] = _scan_split_dir(root / split, root)
    return str(root.resolve()), splits


def index_folder(path: Path) -> FolderIndex:
    """List an ImageFolder directory or zip; raises with the path and the expected layout."""
    path = Path(path).expanduser()
    if path.is_dir():
        is_zip = False
        root, splits = _index_dir(path)
    elif path.is_file():
        try:
            open(path, "rb").close()
        except OSError as exc:  # is_zipfile would call it "not a zip file"
            raise ValueError(
                f"cannot read {path}: {exc.strerror or exc}; chmod u+r it if it is yours, or ask its owner"
            ) from None
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is neither a directory nor a valid zip file; {_LAYOUT}")
        is_zip = True
        root, splits = _index_zip(path)
    else:
        raise FileNotFoundError(f"{path} does not exist")
    train = splits.get("train", {})
    classes = sorted(train)
    if not classes:
        raise ValueError(f"{path}: train/ has no class folders; {_LAYOUT}")
    eval_split = next((s for s in EVAL_SPLITS if s in splits), None)
    if eval_split is None:
        raise FileNotFoundError(f"{path}: found train/ but neither val/ nor test/; {_LAYOUT}")
    to_idx = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(splits[eval_split]) - set(classes))
    if unknown:
        raise ValueError(
            f"{path}: class folder(s) {unknown} in {eval_split}/ are not in train/ (train classes: "
            f"{classes[:20]}{' ...' if len(classes) > 20 else ''})"
        )
    empty = [c for c in classes if not train[c]]
    if len(empty) == len(classes):
        raise ValueError(f"{path}: no image files under train/<class>/ (extensions {sorted(IMG_EXTENSIONS)})")
    if empty:
        _log.warning("%s: class folder(s) %s in train/ have no images", path, empty)
    train_items = [(m, to_idx[c]) for c in classes for m in train[c]]
    test_items = [(m, to_idx[c]) for c in sorted(splits[eval_split]) for m in splits[eval_split][c]]
    if not test_items:
        raise ValueError(f"{path}: no image files under {eval_split}/<class>/")
    return FolderIndex(path, is_zip, root, classes, train_items, test_items, eval_split)


# --------------------------------------------------------------------------- small images


@dataclass
class SmallFolderData:
    """Decoded small-image dataset (uint8 N x 3 x H x W tensors)."""

    classes: List[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    skipped: int
    eval_split: str
    cache_path: Optional[Path] = None  # the cache file it was loaded from or saved to


def peek_sizes(index: FolderIndex, reader: "_Reader", limit: int = _SIZE_SAMPLE) -> Counter:
    """(H, W) of up to ``limit`` train images spread over the set (headers only)."""
    items = index.train
    step = max(1, len(items) // limit)
    sizes: Counter = Counter()
    for member, _ in items[::step][:limit]:
        try:
            with Image.open(io.BytesIO(reader.read(member))) as im:
                w, h = im.size
            sizes[(h, w)] += 1
        except Exception:  # reported when the file is decoded
            continue
    return sizes


def _decode_image(data: bytes):
    """Decode bytes to an RGB PIL image (module-level so tests can replace it)."""
    return _images.decode_image(data)


def _decode_member(reader: _Reader, member: str, size: Tuple[int, int]) -> np.ndarray:
    """One image as an H x W x 3 uint8 array of ``size`` = (H, W); raises when it cannot be read."""
    h, w = size
    img = _decode_image(reader.read(member))
    if img.size != (w, h):
        img = _images.fit_image(img, (h, w))
    return np.asarray(img)


def _decode_items(
    index: FolderIndex, reader: _Reader, items: List[Item], size: Tuple[int, int], split: str
) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """``(images, labels, skipped)``: the images that could be decoded, and the members that could not."""
    h, w = size
    out = np.empty((len(items), h, w, 3), dtype=np.uint8)
    labels = np.empty(len(items), dtype=np.int64)
    k = 0
    bad: List[str] = []
    for member, label in items:
        try:
            out[k] = _decode_member(reader, member, size)
        except Exception as e:  # corrupt, truncated, unsupported, unreadable: report and go on
            bad.append(member)
            skipped = len(bad)
            if skipped <= _MAX_REPORTED:
                _log.warning("skipping unreadable image %s (%s: %s)", index.display(member), type(e).__name__, e)
            elif skipped == _MAX_REPORTED + 1:
                _log.warning("more unreadable images in %s/; only counting them from now on", split)
            continue
        labels[k] = label
        k += 1
    if bad:
        _log.warning("%s: skipped %d unreadable file(s) of %d in %s/", index.path, len(bad), len(items), split)
    return out[:k], labels[:k], bad


def _readable_now(index: FolderIndex, members: List[str], size: Tuple[int, int]) -> List[str]:
    """Those of ``members`` (skipped when a cache was built) that can be decoded now: a file
    repaired, or given read permission, since. Its size and time need not have changed (a chmod
    changes neither; a copy may keep both), so the file itself is tried."""
    readable = []
    with index.reader() as reader:
        for member in members:
            try:
                _decode_member(reader, member, size)
            except Exception:  # still unreadable
                continue
            readable.append(member)
    return readable


def _cache_is_current(cached: dict, index: FolderIndex, size: Tuple[int, int]) -> bool:
    """Whether a cache whose key matches still holds what decoding would give: no file it skipped
    can be read now (a cache of an older nlsam, which did not list them, is rebuilt)."""
    if not cached["skipped"]:
        return True
    members = cached.get("skipped_members")
    if members is None:
        _log.info(
            "the cache of %s does not list the %d file(s) it skipped; decoding again", index.path, cached["skipped"]
        )
        return False
    readable = _readable_now(index, list(members), size)
    if readable:
        _log.warning(
            "%s: %d file(s) the cache skipped can be read now (%s%s); decoding again",
            index.path,
            len(readable),
            index.display(readable[0]),
            ", ..." if len(readable) > 1 else "",
        )
        return False
    return True


def channel_stats(
    images: torch.Tensor, chunk: int = 4096
) -> Tuple[Tuple[float, float, float], Tuple[float, float, float]]:
    """Per-channel mean and std (in [0, 1] units) of uint8 N x 3 x H x W images."""
    s = torch.zeros(3, dtype=torch.float64)
    ss = torch.zeros(3, dtype=torch.float64)
    n = 0
    with one_thread():
        for i in range(0, len(images), chunk):
            x = images[i : i + chunk].to(torch.float64).div_(255.0)
            s += x.sum(dim=(0, 2, 3))
            ss += (x * x).sum(dim=(0, 2, 3))
            n += x.shape[0] * x.shape[2] * x.shape[3]
    if n == 0:
        return (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    mean = s / n
    std = (ss / n - mean * mean).clamp_min(1e-12).sqrt().clamp_min(1e-3)
    m, d = [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]
    return (m[0], m[1], m[2]), (d[0], d[1], d[2])


def choose_size(index: FolderIndex, reader: _Reader, image_size: Optional[int]) -> Tuple[int, int]:
    """Requested ``image_size`` (square), else the most common size of a sample of train images."""
    if image_size is not None:
        return int(image_size), int(image_size)
    sizes = peek_sizes(index, reader)
    if not sizes:
        raise ValueError(f"{index.path}: none of the sampled train images could be read")
    return sizes.most_common(1)[0][0]


def load_small_folder(
    index: FolderIndex, size: Tuple[int, int], cache_root: Optional[Union[str, "os.PathLike[str]"]] = None
) -> SmallFolderData:
    """Decode (or load from the cache) every image at ``size`` = (H, W).

    The cache goes under ``cache_dir(cache_root)`` (default ``$NLSAM_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/nlsam``, else ``~/.cache/nlsam``); the result's ``cache_path`` names the file.
    """
    key = cache_key(_CACHE_VERSION, index.fingerprint(), tuple(size))
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in index.path.stem)[:40]
    cache_path = cache_dir(cache_root) / "imagefolder" / f"{stem}-{size[0]}x{size[1]}-{key}.pt"
    cached = load_cached(cache_path)
    if (
        cached is not None
        and cached.get("version") == _CACHE_VERSION
        and cached.get("key") == key
        and _cache_is_current(cached, index, size)
    ):
        _log.info("loaded decoded images of %s from the cache %s", index.path, cache_path)
        if cached["skipped"]:
            _log.warning(
                "%s: %d unreadable file(s) were skipped when the cache was built", index.path, cached["skipped"]
            )
        return SmallFolderData(
            classes=list(cached["classes"]),
            train_images=cached["train_images"],
            train_labels=cached["train_labels"],
            test_images=cached["test_images"],
            test_labels=cached["test_labels"],
            mean=tuple(cached["mean"]),
            std=tuple(cached["std"]),
            skipped=int(cached["skipped"]),
            eval_split=str(cached["eval_split"]),
            cache_path=cache_path,
        )
    start = time.monotonic()
    with index.reader() as reader:
        tr_x, tr_y, bad_train = _decode_items(index, reader, index.train, size, "train")
        te_x, te_y, bad_test = _decode_items(index, reader, index.test, size, index.eval_split)
    if len(tr_x) == 0:
        raise ValueError(f"{index.path}: none of the {len(index.train)} train images could be decoded")
    if len(te_x) == 0:
        raise ValueError(f"{index.path}: none of the {len(index.test)} {index.eval_split} images could be decoded")
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    data = SmallFolderData(
        classes=list(index.classes),
        train_images=to_t(tr_x),
        train_labels=torch.from_numpy(tr_y),
        test_images=to_t(te_x),
        test_labels=torch.from_numpy(te_y),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        skipped=len(bad_train) + len(bad_test),
        eval_split=index.eval_split,
    )
    data.mean, data.std = channel_stats(data.train_images)
    _log.info(
        "decoded %d + %d images of %s at %dx%d in %.1f s",
        len(tr_x),
        len(te_x),
        index.path,
        size[0],
        size[1],
        time.monotonic() - start,
    )
    try:
        with atomic_file(cache_path) as handle:
            torch.save(
                {
                    "version": _CACHE_VERSION,
                    "key": key,
                    "source": str(index.path),
                    "classes": data.classes,
                    "train_images": data.train_images,
                    "train_labels": data.train_labels,
                    "test_images": data.test_images,
                    "test_labels": data.test_labels,
                    "mean": list(data.mean),
                    "std": list(data.std),
                    "skipped": data.skipped,
                    "skipped_members": bad_train + bad_test,  # tried again when the cache is read
                    "eval_split": data.eval_split,
                },
                handle,
            )
        data.cache_path = cache_path
        _log.info(
            "cached decoded images at %s (%.0f MB; the cache_dir argument or $NLSAM_CACHE_DIR moves it)",
            cache_path,
            cache_path.stat().st_size / 1e6,
        )
    except OSError as e:  # a read-only or full disk only costs the next run time
        _log.warning("could not write the cache %s (%s); the next run decodes again", cache_path, e)
    return data


# --------------------------------------------------------------------------- large images


class LazyImageDataset(torch.utils.data.Dataset):
    """Decodes one file per item and applies ``transform`` (PIL -> uint8 tensor).

    An unreadable file is logged with its path and yields None, which :func:`collate_skip` drops.
    """

    def __init__(self, index: FolderIndex, items: List[Item], transform: Callable) -> None:
        self.index = index
        self.items = items
        self.transform = transform
        self.reader = _Reader(index)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        member, label = self.items[i]
        try:
            img = _decode_image(self.reader.read(member))
            x = self.transform(img)
        except Exception as e:
            _log.warning("skipping unreadable image %s (%s: %s)", self.index.display(member), type(e).__name__, e)
            return None
        return x, label


def collate_skip(batch):
    """Stack ``(uint8 tensor, label)`` pairs, dropping None (unreadable) items; None if all are."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    xs, ys = zip(*batch)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def torchvision_transforms(size: int, train: bool, augment: bool) -> Callable:
    """RandomResizedCrop + flip (train) or Resize(size * 256 / 224) + CenterCrop (eval), to uint8."""
    T = require("torchvision.transforms", "reading folders of images larger than 64 px")  # only for them

    if train and augment:
        ops = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(int(size * 256 / 224)), T.CenterCrop(size)]
    return T.Compose(ops + [T.PILToTensor()])
