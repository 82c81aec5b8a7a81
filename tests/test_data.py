"""Tests of nlsam.data: every dataset is written by the tests themselves in tmp_path."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import pickle
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import nlsam.data as D
from nlsam.data import _cifar, _folder

REAL_ZIP = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10-jpg.zip"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's cache or data folders."""
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NLSAM_DATA_DIR", str(tmp_path / "nodata"))


# --------------------------------------------------------------------------- helpers


def _pickle_official(obj: dict, path: Path, bytes_keys: bool = False) -> None:
    """Write a pickle like the official (Python 2 / numpy 1) CIFAR files."""
    if bytes_keys:
        obj = {k.encode(): v for k, v in obj.items()}
    data = pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(data)


def _write_cifar10(root: Path, per_batch: int = 6, n_test: int = 10) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        _pickle_official(
            {
                "batch_label": f"training batch {i} of 5",
                "labels": labels,
                "data": data,
                "filenames": [f"f{j}.png" for j in range(per_batch)],
            },
            folder / f"data_batch_{i}",
            bytes_keys=(i == 1),
        )
    data = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    _pickle_official(
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [j % 10 for j in range(n_test)],
            "data": data,
            "filenames": [],
        },
        folder / "test_batch",
    )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle_official({"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072}, folder / "batches.meta")
    return folder


def _write_cifar100(root: Path, n_train: int = 20, n_test: int = 8) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("test", n_test)):
        _pickle_official(
            {
                "filenames": [],
                "batch_label": split,
                "fine_labels": [(7 * j) % 100 for j in range(n)],
                "coarse_labels": [j % 20 for j in range(n)],
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            },
            folder / split,
        )
    _pickle_official(
        {
            "fine_label_names": [f"class{i:02d}" for i in range(100)],
            "coarse_label_names": [f"super{i}" for i in range(20)],
        },
        folder / "meta",
    )
    return folder


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _rgb(seed: int, size=(16, 16)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _folder_files(size=(16, 16)) -> dict:
    """relative path -> bytes of a small ImageFolder tree with odd modes and a corrupt file."""
    files = {}
    for c, cls in enumerate(["cat", "dog", "emu"]):
        for i in range(4):
            files[f"train/{cls}/{i}.png"] = _png(_rgb(10 * c + i, size))
        files[f"val/{cls}/0.png"] = _png(_rgb(100 + c, size))
    files["train/cat/gray.png"] = _png(Image.new("L", size, 128))
    files["train/dog/rgba.png"] = _png(Image.new("RGBA", size, (255, 0, 0, 10)))
    pal = Image.new("P", size, 0)
    pal.putpalette([0, 255, 0] * 256)
    files["train/emu/palette.png"] = _png(pal)
    files["train/emu/broken.jpg"] = b"\xff\xd8\xff\xe0 this is not a jpeg"
    files["train/emu/notes.txt"] = b"not an image, ignored"
    files["val/dog/odd.png"] = _png(_rgb(7, (20, 24)))  # another size: resized to the common one
    return files


def _write_tree(root: Path, files: dict) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _write_zip(path: Path, files: dict, top: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(top + rel, data)
    return path


def _collect(loader):
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------------- builtin


def test_builtin_deterministic_balanced_and_varied():
    a = D.generate_builtin(400, seed=3)
    b = D.generate_builtin(400, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (400, 3, 32, 32) and a.images.dtype == torch.uint8
    counts = torch.bincount(a.labels, minlength=len(D.BUILTIN_CLASSES))
    assert counts.max() - counts.min() <= 1
    flat = a.images.view(400, -1)
    assert len({hash(r.numpy().tobytes()) for r in flat}) == 400  # no duplicates
    assert a.images.float().std() > 20  # not blank
    t = D.generate_builtin(400, seed=3, split="test")
    assert not torch.equal(t.images, a.images)
    assert not torch.equal(D.generate_builtin(400, seed=4).images, a.images)
    assert ((a.boxes[:, 2] > a.boxes[:, 0]) & (a.boxes[:, 3] > a.boxes[:, 1])).all()


def test_build_builtin_shapes_and_normalization():
    b = D.build_data("builtin:1000:500", batch_size=64, eval_batch_size=100)
    assert b.name == "builtin" and b.classes == list(D.BUILTIN_CLASSES)
    assert (b.num_train, b.num_test, b.input_size, b.in_chans, b.skipped) == (1000, 500, (32, 32), 3, 0)
    assert len(b.train_loader) == 1000 // 64 and len(b.test_loader) == 5
    x, y = next(iter(b.train_loader))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    tx, ty = _collect(b.test_loader)
    assert tx.shape == (500, 3, 32, 32) and len(ty) == 500
    # normalized with the train statistics: the test set is close to zero mean, unit std
    assert tx.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert (tx.std(dim=(0, 2, 3)) - 1).abs().max() < 0.1
    # pixels do not depend on the training seed
    b2 = D.build_data("builtin:1000:500", seed=5, eval_batch_size=100)
    assert torch.equal(_collect(b2.test_loader)[0], tx)


def test_builtin_spec_errors():
    with pytest.raises(ValueError, match="builtin"):
        D.build_data("builtin:abc")


# --------------------------------------------------------------------------- augmentation


def test_random_crop_flip_is_shifted_window_of_padded_image():
    torch.manual_seed(0)
    B, pad = 64, 4
    x = torch.randint(1, 256, (B, 3, 8, 10), dtype=torch.uint8)  # no zeros: padding is recognisable
    g = torch.Generator().manual_seed(0)
    out = D.random_crop_flip(x, pad, g)
    assert out.shape == x.shape and out.dtype == x.dtype
    xp = F.pad(x, (pad, pad, pad, pad))

    def window(i, dy, dx, fl):
        w = xp[i, :, dy : dy + 8, dx : dx + 10]
        return w.flip(2) if fl else w

    seen = set()
    for i in range(B):
        match = [
            (dy, dx, fl)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            for fl in (False, True)
            if torch.equal(out[i], window(i, dy, dx, fl))
        ]
        assert match, f"image {i} is not a (flipped) window of its padded image"
        seen.update(match)
    assert {fl for _, _, fl in seen} == {False, True}
    assert len({(dy, dx) for dy, dx, _ in seen}) > 10
    # channels_last input: the same crops (same random draws), channels_last output
    out_cl = D.random_crop_flip(x.contiguous(memory_format=torch.channels_last), pad, torch.Generator().manual_seed(0))
    assert torch.equal(out_cl, out) and out_cl.is_contiguous(memory_format=torch.channels_last)
    # flip only (pad 0): each image is itself or its mirror image
    out = D.random_crop_flip(x, 0, torch.Generator().manual_seed(1))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_train_loader_augments_and_test_loader_does_not():
    b = D.build_data("builtin:256:64", batch_size=64, eval_batch_size=64)
    b_plain = D.build_data("builtin:256:64", batch_size=64, eval_batch_size=64, augment=False)
    for loader in (b.train_loader, b_plain.train_loader):
        loader.set_epoch(0)
    xa, _ = _collect(b.train_loader)
    xp, _ = _collect(b_plain.train_loader)
    assert not torch.equal(xa, xp)  # same order (same seed), different pixels
    assert torch.equal(_collect(b.test_loader)[0], _collect(b_plain.test_loader)[0])


def test_set_epoch_controls_the_shuffle():
    b = D.build_data("builtin:512:64", batch_size=64, augment=False)
    b.train_loader.set_epoch(3)
    _, y1 = _collect(b.train_loader)
    b.train_loader.set_epoch(3)
    _, y2 = _collect(b.train_loader)
    b.train_loader.set_epoch(4)
    _, y3 = _collect(b.train_loader)
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)


def test_channels_last_and_image_size():
    b = D.build_data("builtin:128:32", batch_size=32, channels_last=True, image_size=40)
    x, _ = next(iter(b.train_loader))
    assert b.input_size == (40, 40) and x.shape == (32, 3, 40, 40)
    assert x.is_contiguous(memory_format=torch.channels_last)
    # channels_last changes the layout only, not the values
    plain = D.build_data("builtin:128:32", batch_size=32, image_size=40)
    for loader in (b.train_loader, plain.train_loader, b.test_loader, plain.test_loader):
        loader.set_epoch(1)
    assert torch.equal(_collect(b.train_loader)[0], _collect(plain.train_loader)[0])
    xt, _ = _collect(b.test_loader)
    assert torch.equal(xt, _collect(plain.test_loader)[0]) and xt.is_contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- sharding


def test_shard_indices_disjoint_and_complete():
    n, w = 103, 2
    for epoch in range(2):
        shards = [D.shard_indices(n, rank=r, world_size=w, shuffle=True, seed=1, epoch=epoch) for r in range(w)]
        assert len(shards[0]) == len(shards[1]) == n // w
        assert not set(shards[0].tolist()) & set(shards[1].tolist())
    e0 = D.shard_indices(n, rank=0, world_size=w, shuffle=True, seed=1, epoch=0)
    e1 = D.shard_indices(n, rank=0, world_size=w, shuffle=True, seed=1, epoch=1)
    assert not torch.equal(e0, e1)
    test = [D.shard_indices(n, rank=r, world_size=w, shuffle=False, seed=1, epoch=0) for r in range(w)]
    assert sorted(torch.cat(test).tolist()) == list(range(n))


def test_loaders_shard_over_two_ranks():
    ranks = [
        D.build_data("builtin:300:101", batch_size=32, eval_batch_size=16, rank=r, world_size=2, augment=False, seed=7)
        for r in range(2)
    ]
    full = D.build_data("builtin:300:101", eval_batch_size=1000)
    key = lambda x: x.numpy().tobytes()  # noqa: E731
    train_sets = []
    for b in ranks:
        b.train_loader.set_epoch(2)
        x, _ = _collect(b.train_loader)
        assert len(b.train_loader) == 150 // 32 and len(x) == 4 * 32
        train_sets.append({key(i) for i in x})
    assert not train_sets[0] & train_sets[1]
    # the test shards cover the test set exactly once
    xs = [_collect(b.test_loader)[0] for b in ranks]
    assert len(xs[0]) + len(xs[1]) == 101 and len(ranks[0].test_loader) == 4 and len(ranks[1].test_loader) == 4
    all_x, _ = _collect(full.test_loader)
    assert sorted(key(i) for i in torch.cat(xs)) == sorted(key(i) for i in all_x)


def test_tiny_shard_still_gives_one_batch():
    b = D.build_data("builtin:10:5", batch_size=64)
    assert len(b.train_loader) == 1 and len(next(iter(b.train_loader))[0]) == 10


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_official_format(tmp_path):
    _write_cifar10(tmp_path)
    b = D.build_data("cifar10", data_dir=str(tmp_path), batch_size=8, eval_batch_size=4)
    assert b.name == "cifar10" and b.classes[0] == "airplane" and len(b.classes) == 10
    assert (b.num_train, b.num_test, b.input_size) == (30, 10, (32, 32))
    assert b.mean == pytest.approx((0.4914, 0.4822, 0.4465))
    x, y = _collect(b.test_loader)
    assert x.shape == (10, 3, 32, 32) and y.tolist() == [j % 10 for j in range(10)]
    # the test loader yields (pixel / 255 - mean) / std of the row-major 3072-byte records
    raw = _cifar._load_pickle(tmp_path / "cifar-10-batches-py" / "test_batch")["data"]
    ref = torch.from_numpy(raw[0].reshape(3, 32, 32)).float() / 255
    ref = (ref - torch.tensor(b.mean).view(3, 1, 1)) / torch.tensor(b.std).view(3, 1, 1)
    assert torch.allclose(x[0], ref, atol=1e-5)
    # the extracted folder itself also works as data_dir; other sizes are resized on the device
    b2 = D.build_data("cifar10", data_dir=str(tmp_path / "cifar-10-batches-py"), image_size=48, batch_size=8)
    assert b2.num_train == 30 and b2.input_size == (48, 48)
    assert next(iter(b2.train_loader))[0].shape == (8, 3, 48, 48)


def test_cifar100_official_format(tmp_path):
    _write_cifar100(tmp_path)
    b = D.build_data("cifar100", data_dir=str(tmp_path), batch_size=4)
    assert len(b.classes) == 100 and b.classes[7] == "class07"
    assert (b.num_train, b.num_test) == (20, 8)
    _, y = _collect(b.test_loader)
    assert y.tolist() == [(7 * j) % 100 for j in range(8)]


def test_cifar_missing_gives_one_clear_error(tmp_path):
    with pytest.raises(D.DatasetNotFoundError) as ei:
        D.build_data("cifar100", data_dir=str(tmp_path / "here"))
    assert isinstance(ei.value, FileNotFoundError)
    msg = str(ei.value)
    assert str(tmp_path / "here" / "cifar-100-python") in msg
    assert f"nlsam train --data cifar100 --data-dir {tmp_path / 'here'} --download" in msg


def test_cifar_rejects_foreign_pickles(tmp_path):
    folder = _write_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": os.system, "labels": []}))  # code, not data
    with pytest.raises(ValueError, match="test_batch"):
        D.build_data("cifar10", data_dir=str(tmp_path))


def _fake_cifar_archive(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    _write_cifar10(src)
    archive = tmp_path / "served" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive


def test_download_from_file_url(tmp_path, monkeypatch):
    archive = _fake_cifar_archive(tmp_path)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    spec = dataclasses.replace(_cifar.CIFAR_SPECS["cifar10"], url=archive.as_uri(), md5=md5)
    monkeypatch.setitem(_cifar.CIFAR_SPECS, "cifar10", spec)
    dest = tmp_path / "data"
    b = D.build_data("cifar10", data_dir=str(dest), download=True)
    assert b.num_train == 30 and b.num_test == 10
    assert (dest / "cifar-10-python.tar.gz").is_file()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    # present now: no second download
    monkeypatch.setattr(_cifar, "download_url", lambda *a, **k: pytest.fail("downloaded twice"))
    assert D.build_data("cifar10", data_dir=str(dest), download=True).num_train == 30


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    archive = _fake_cifar_archive(tmp_path)
    spec = dataclasses.replace(_cifar.CIFAR_SPECS["cifar10"], url=archive.as_uri(), md5="0" * 32)
    monkeypatch.setitem(_cifar.CIFAR_SPECS, "cifar10", spec)
    dest = tmp_path / "data"
    with pytest.raises(D.ChecksumError, match="checksum"):
        D.build_data("cifar10", data_dir=str(dest), download=True)
    assert list(dest.iterdir()) == []  # neither the archive nor a partial file nor a folder


def test_download_network_error(tmp_path, monkeypatch):
    spec = dataclasses.replace(_cifar.CIFAR_SPECS["cifar10"], url=(tmp_path / "absent.tar.gz").as_uri())
    monkeypatch.setitem(_cifar.CIFAR_SPECS, "cifar10", spec)
    with pytest.raises(D.DownloadError, match="could not download"):
        D.build_data("cifar10", data_dir=str(tmp_path / "data"), download=True)


def test_tar_extraction_refuses_path_traversal(tmp_path):
    from nlsam._download import safe_extract_tar

    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("ok/a.txt", "../evil.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unsafe"):
        safe_extract_tar(archive, out)
    assert not (tmp_path / "evil.txt").exists() and not (out / "ok" / "a.txt").exists()


# --------------------------------------------------------------------------- ImageFolder


def _check_folder_bundle(b, caplog=None):
    assert b.classes == ["cat", "dog", "emu"]
    assert b.num_train == 15 and b.num_test == 4 and b.skipped == 1
    assert b.input_size == (16, 16) and b.in_chans == 3
    x, y = _collect(b.test_loader)
    assert x.shape == (4, 3, 16, 16) and y.tolist() == [0, 1, 1, 2]
    xt, yt = next(iter(b.train_loader))
    assert xt.dtype == torch.float32 and yt.dtype == torch.int64 and xt.shape[1:] == (3, 16, 16)
    if caplog is not None:
        assert "broken.jpg" in caplog.text


def test_image_folder_directory(tmp_path, caplog):
    root = _write_tree(tmp_path / "ds", _folder_files())
    with caplog.at_level(logging.WARNING, logger="nlsam.data"):
        b = D.build_data(str(root), batch_size=4)
    assert b.name == "ds"
    _check_folder_bundle(b, caplog)
    # cached; a changed file gives a new cache entry
    cache = tmp_path / "cache"
    D.build_data(str(root))
    assert len(list(cache.rglob("*.pt"))) == 1
    (root / "train" / "cat" / "0.png").write_bytes(_png(_rgb(12345)))
    os.utime(root / "train" / "cat" / "0.png", ns=(1, 1))
    D.build_data(str(root))
    assert len(list(cache.rglob("*.pt"))) == 2


@pytest.mark.parametrize("top", ["", "mydata/"])
def test_image_folder_zip(tmp_path, caplog, top):
    z = _write_zip(tmp_path / "ds.zip", _folder_files(), top=top)
    with caplog.at_level(logging.WARNING, logger="nlsam.data"):
        b = D.build_data(str(z), batch_size=4)
    assert b.name == "ds"
    _check_folder_bundle(b, caplog)


def test_image_folder_relative_to_data_dir(tmp_path):
    _write_zip(tmp_path / "ds.zip", _folder_files())
    assert D.build_data("ds.zip", data_dir=str(tmp_path)).num_train == 15


def test_image_folder_modes_are_rgb(tmp_path):
    root = _write_tree(tmp_path / "ds", _folder_files())
    b = D.build_data(str(root))
    raw = b.train_loader.images  # uint8 N x 3 x H x W, train order: class, then file name
    members = [m for m, _ in _folder.index_folder(root).train if "broken" not in m]
    gray = raw[members.index("train/cat/gray.png")]
    rgba = raw[members.index("train/dog/rgba.png")]
    pal = raw[members.index("train/emu/palette.png")]
    assert (gray == 128).all()
    assert (rgba[0] == 255).all() and (rgba[1:] == 0).all()
    assert (pal[1] == 255).all() and (pal[0] == 0).all()


def test_image_folder_cache_is_reused(tmp_path, monkeypatch):
    z = _write_zip(tmp_path / "ds.zip", _folder_files())
    first = D.build_data(str(z))
    cache_files = list((tmp_path / "cache").rglob("*.pt"))
    assert len(cache_files) == 1

    def boom(data):
        raise AssertionError("decoded again")

    monkeypatch.setattr(_folder, "_decode_image", boom)
    second = D.build_data(str(z))
    assert second.skipped == 1 and second.mean == first.mean
    assert torch.equal(_collect(second.test_loader)[0], _collect(first.test_loader)[0])
    # a changed source is decoded again (the patched decoder now fails on every file)
    time.sleep(0.01)
    files = _folder_files()
    files["train/cat/extra.png"] = _png(_rgb(999))
    _write_zip(z, files)
    with pytest.raises(ValueError, match="could be decoded"):
        D.build_data(str(z))


def test_image_folder_requested_size(tmp_path):
    root = _write_tree(tmp_path / "ds", _folder_files())
    b = D.build_data(str(root), image_size=24)
    assert b.input_size == (24, 24) and next(iter(b.test_loader))[0].shape[-2:] == (24, 24)


def test_image_folder_errors(tmp_path):
    files = _folder_files()
    bad = dict(files, **{"val/yak/0.png": files["val/cat/0.png"]})
    with pytest.raises(ValueError, match="yak"):
        D.build_data(str(_write_tree(tmp_path / "a", bad)))
    no_train = {k.replace("train/", "training/"): v for k, v in files.items()}
    with pytest.raises(FileNotFoundError, match="train/"):
        D.build_data(str(_write_tree(tmp_path / "b", no_train)))
    no_val = {k: v for k, v in files.items() if k.startswith("train/")}
    with pytest.raises(FileNotFoundError, match="val/"):
        D.build_data(str(_write_tree(tmp_path / "c", no_val)))
    (tmp_path / "d" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "val" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files"):
        D.build_data(str(tmp_path / "d"))
    (tmp_path / "corrupt.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ValueError, match="corrupt.zip"):
        D.build_data(str(tmp_path / "corrupt.zip"))


def test_unknown_dataset_name():
    with pytest.raises(ValueError) as ei:
        D.build_data("imagenet-21k")
    assert all(n in str(ei.value) for n in ("builtin", "cifar10", "cifar100"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        D.build_data("builtin:100:10", rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        D.build_data("builtin:100:10", batch_size=0)


def test_large_images_use_torchvision_loader(tmp_path, caplog):
    files = {}
    for c, cls in enumerate(["a", "b"]):
        for i in range(3):
            files[f"train/{cls}/{i}.jpg"] = _png(_rgb(c * 10 + i, (96, 80)))
        files[f"test/{cls}/0.png"] = _png(_rgb(50 + c, (80, 80)))
    files["train/b/bad.png"] = b"\x89PNG\r\n\x1a\n broken"
    z = _write_zip(tmp_path / "big.zip", files, top="big/")
    with caplog.at_level(logging.WARNING, logger="nlsam.data"):
        b = D.build_data(str(z), batch_size=7, num_workers=0, image_size=72)
        assert b.input_size == (72, 72) and b.mean == pytest.approx((0.485, 0.456, 0.406))
        assert len(b.train_loader) == 1
        x, y = _collect(b.train_loader)
    assert x.shape == (6, 3, 72, 72) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert "bad.png" in caplog.text  # dropped from its batch, reported
    tx, ty = _collect(b.test_loader)
    assert tx.shape == (2, 3, 72, 72) and ty.tolist() == [0, 1]
    # the eval transform is what preprocess_image does
    img = Image.open(io.BytesIO(files["test/a/0.png"]))
    assert torch.allclose(b.preprocess(img)[0], tx[0], atol=1e-5)


def test_large_images_with_worker_processes(tmp_path):
    files = {f"{s}/{c}/{i}.png": _png(_rgb(i, (70, 70))) for s in ("train", "val") for c in "xy" for i in range(4)}
    z = _write_zip(tmp_path / "big.zip", files)
    b = D.build_data(str(z), batch_size=4, num_workers=1, image_size=66)
    x, y = _collect(b.test_loader)
    assert x.shape == (8, 3, 66, 66) and sorted(y.tolist()) == [0] * 4 + [1] * 4


# --------------------------------------------------------------------------- preprocess_image


def test_preprocess_image_matches_test_loader(tmp_path):
    files = _folder_files()
    root = _write_tree(tmp_path / "ds", files)
    b = D.build_data(str(root), eval_batch_size=10)
    x, _ = _collect(b.test_loader)
    img = Image.open(io.BytesIO(files["val/cat/0.png"]))
    p = D.preprocess_image(img, b.input_size, b.mean, b.std)
    assert p.shape == (1, 3, 16, 16) and p.dtype == torch.float32
    assert torch.allclose(p[0], x[0], atol=1e-5)
    # the 20 x 24 image was resized (cover + center crop) the same way in the dataset
    odd = Image.open(io.BytesIO(files["val/dog/odd.png"]))
    assert torch.allclose(b.preprocess(odd)[0], x[2], atol=1e-5)
    # any mode, any size, or a path
    gray = tmp_path / "g.png"
    Image.new("L", (300, 200), 50).save(gray)
    assert D.preprocess_image(gray, 224, (0.5,) * 3, (0.5,) * 3).shape == (1, 3, 224, 224)


# --------------------------------------------------------------------------- the real CIFAR-10 JPEGs


def test_real_cifar10_jpg_zip(tmp_path, monkeypatch):
    if not REAL_ZIP.is_file():
        pytest.skip(f"real CIFAR-10 JPEG zip not available at {REAL_ZIP}")
    b = D.build_data(str(REAL_ZIP), batch_size=256)
    assert b.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert (b.num_train, b.num_test, b.input_size, b.skipped) == (50000, 10000, (32, 32), 0)
    assert torch.bincount(b.test_loader.labels).tolist() == [1000] * 10
    assert b.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=0.01)

    def decode_again(data):
        raise AssertionError("the second build should come from the cache, not decode again")

    monkeypatch.setattr(_folder, "_decode_image", decode_again)
    again = D.build_data(str(REAL_ZIP), batch_size=256)
    assert again.num_train == 50000
    assert torch.equal(again.test_loader.labels, b.test_loader.labels)


def test_large_images_without_torchvision_say_what_to_install(tmp_path, monkeypatch):
    files = {f"{s}/{c}/0.png": _png(_rgb(0, (70, 70))) for s in ("train", "val") for c in "xy"}
    z = _write_zip(tmp_path / "big.zip", files)
    monkeypatch.setitem(sys.modules, "torchvision.transforms", None)  # makes the import fail
    with pytest.raises(ValueError, match=r"pip install torchvision \(or pip install 'torch-nlsam\[imagenet\]'"):
        D.build_data(str(z), batch_size=2, num_workers=0, image_size=66)


def test_torchvision_is_not_imported_for_small_data():
    import subprocess
    import sys

    code = (
        "import sys; from nlsam.data import build_data; b = build_data('builtin:64:16', batch_size=16); "
        "next(iter(b.train_loader)); assert 'torchvision' not in sys.modules, 'torchvision imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- hardening


def test_download_offline_error_is_one_line_without_chain(tmp_path, monkeypatch):
    import socket
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dest = tmp_path / "data"
    with pytest.raises(D.DownloadError) as ei:
        D.build_data("cifar10", data_dir=str(dest), download=True)
    msg = str(ei.value)
    spec = _cifar.CIFAR_SPECS["cifar10"]
    assert "\n" not in msg
    assert spec.url in msg and "Temporary failure in name resolution" in msg
    assert "urlopen error" not in msg and "Errno" not in msg
    assert "cifar-10-python.tar.gz" in msg and str(dest) in msg and "without --download" in msg
    assert ei.value.__cause__ is None and ei.value.__suppress_context__
    assert not list(dest.iterdir())  # no partial file left behind


def test_download_error_reasons(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def not_found(url, *args, **kwargs):
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)

    monkeypatch.setattr(urllib.request, "urlopen", not_found)
    with pytest.raises(D.DownloadError) as ei:
        D.build_data("cifar100", data_dir=str(tmp_path), download=True)
    assert "HTTP 404 Not Found" in str(ei.value) and "cifar-100-python.tar.gz" in str(ei.value)
    assert ei.value.__cause__ is None and ei.value.__suppress_context__


def _tiny_folder(root: Path, classes=("cat", "dog")) -> Path:
    files = {}
    for c, cls in enumerate(classes):
        for i in range(2):
            files[f"train/{cls}/{i}.png"] = _png(_rgb(10 * c + i, (8, 8)))
        files[f"val/{cls}/0.png"] = _png(_rgb(100 + c, (8, 8)))
    return _write_tree(root, files)


def test_cache_dir_argument_and_bundle_cache_path(tmp_path, caplog):
    root = _tiny_folder(tmp_path / "ds")
    with caplog.at_level(logging.INFO, logger="nlsam.data"):
        b = D.build_data(str(root), cache_dir=str(tmp_path / "c"))
    files = list((tmp_path / "c").rglob("*.pt"))
    assert len(files) == 1 and b.cache_path == str(files[0])
    assert str(files[0]) in caplog.text
    assert not (tmp_path / "cache").exists()  # $NLSAM_CACHE_DIR is overridden by the argument
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nlsam.data"):
        again = D.build_data(str(root), cache_dir=str(tmp_path / "c"))
    assert again.cache_path == b.cache_path and str(files[0]) in caplog.text
    # no cache for data that is not decoded from files
    assert D.build_data("builtin:64:16").cache_path is None


def test_cache_honours_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("NLSAM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    b = D.build_data(str(_tiny_folder(tmp_path / "ds")))
    assert b.cache_path is not None
    assert Path(b.cache_path).parent.parent == tmp_path / "xdg" / "nlsam"
    assert Path(b.cache_path).is_file()


@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_single_class_dataset_is_refused(tmp_path, kind):
    root = _tiny_folder(tmp_path / "one", classes=("cat",))
    if kind == "zip":
        files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.png")}
        root = _write_zip(tmp_path / "one.zip", files)
    with pytest.raises(ValueError) as ei:
        D.build_data(str(root))
    assert str(ei.value).startswith(f"{root} has 1 class ('cat'); classification needs at least 2")
    assert not (tmp_path / "cache").exists()  # refused before anything is decoded


def test_class_without_train_images_does_not_count(tmp_path):
    root = _tiny_folder(tmp_path / "ds", classes=("cat",))
    (root / "train" / "dog").mkdir()
    with pytest.raises(ValueError, match=r"has 1 class \('cat'\)"):
        D.build_data(str(root))


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_written_files_follow_the_umask(tmp_path, monkeypatch, umask_027):
    archive = _fake_cifar_archive(tmp_path)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    spec = dataclasses.replace(_cifar.CIFAR_SPECS["cifar10"], url=archive.as_uri(), md5=md5)
    monkeypatch.setitem(_cifar.CIFAR_SPECS, "cifar10", spec)
    D.build_data("cifar10", data_dir=str(tmp_path / "data"), download=True)
    assert (tmp_path / "data" / "cifar-10-python.tar.gz").stat().st_mode & 0o777 == 0o640
    b = D.build_data(str(_tiny_folder(tmp_path / "ds")))
    assert os.stat(b.cache_path).st_mode & 0o777 == 0o640
