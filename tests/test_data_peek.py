"""peek_data (a dataset's input size and class count without loading it), the dataset registry,
and the one home of the normalisation constants and of size normalisation."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nlsam.data as D
from nlsam import _normalisation, _sizes
from nlsam._optional import optional_module
from nlsam.data import _build, _datasets, _folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's cache or data folders."""
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NLSAM_DATA_DIR", str(tmp_path / "nodata"))


def _png(size_hw, seed: int) -> bytes:
    h, w = size_hw
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _png_folder(root: Path, size_hw, classes=("cat", "dog", "emu"), odd=None) -> Path:
    """An ImageFolder tree of PNGs of ``size_hw`` = (H, W); ``odd``: one more train image of that size."""
    for c, cls in enumerate(classes):
        for i in range(3):
            p = root / "train" / cls / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(_png(size_hw, 10 * c + i))
        p = root / "val" / cls / "0.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(_png(size_hw, 100 + c))
    if odd is not None:
        (root / "train" / classes[0] / "odd.png").write_bytes(_png(odd, 7))
    return root


def _same_as_build(data: str, **build_kwargs) -> D.DataInfo:
    info = D.peek_data(data, data_dir=build_kwargs.get("data_dir"))
    bundle = D.build_data(data, batch_size=4, num_workers=0, image_size=None, **build_kwargs)
    assert info.input_size == bundle.input_size
    assert (info.name, info.num_classes, info.in_chans) == (bundle.name, bundle.num_classes, bundle.in_chans)
    assert all(isinstance(v, int) for v in info.input_size)
    return info


@pytest.mark.parametrize("spec", ["builtin:64:16", "locate:64:16", " Builtin:40:8:3 "])
def test_peek_procedural_is_what_build_data_gives(spec):
    info = _same_as_build(spec)
    assert info.input_size == (32, 32)


def test_peek_plain_names_need_no_data():
    assert D.peek_data("builtin") == D.DataInfo("builtin", (32, 32), 8, 3)
    assert D.peek_data("locate").num_classes == len(D.LOCATE_CLASSES)
    # CIFAR's files need not be there yet (check_data_source says whether they are)
    assert D.peek_data("CIFAR-10") == D.DataInfo("cifar10", (32, 32), 10, 3)
    assert D.peek_data("cifar100").num_classes == 100


def test_peek_folder_of_28px_pngs(tmp_path):
    root = _png_folder(tmp_path / "digits", (28, 28), odd=(20, 24))
    info = _same_as_build(str(root))
    assert info == D.DataInfo("digits", (28, 28), 3, 3)


def test_peek_folder_of_non_square_small_pngs_as_a_zip(tmp_path):
    root = _png_folder(tmp_path / "tree", (24, 40), classes=("a", "b"))
    z = tmp_path / "wide.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(root.rglob("*.png")):
            zf.writestr("top/" + p.relative_to(root).as_posix(), p.read_bytes())
    info = _same_as_build(str(z))
    assert info == D.DataInfo("wide", (24, 40), 2, 3)


def test_peek_folder_of_large_pngs(tmp_path):
    root = _png_folder(tmp_path / "big", (96, 80), classes=("a", "b"))
    info = _same_as_build(str(root))
    assert info.input_size == (224, 224)


def test_peek_relative_to_data_dir(tmp_path):
    _png_folder(tmp_path / "digits", (28, 28), classes=("a", "b"))
    assert D.peek_data("digits", data_dir=str(tmp_path)).input_size == (28, 28)


def test_peek_decodes_no_image(tmp_path, monkeypatch):
    root = _png_folder(tmp_path / "digits", (28, 28))

    def refuse(data: bytes):
        raise AssertionError("peek_data decoded an image")

    monkeypatch.setattr(_folder, "_decode_image", refuse)
    assert D.peek_data(str(root)).input_size == (28, 28)
    assert not (tmp_path / "cache").exists()


def test_peek_fails_as_build_data_does(tmp_path):
    with pytest.raises(ValueError) as peeked:
        D.peek_data("imagenet-21k")
    with pytest.raises(ValueError) as built:
        D.build_data("imagenet-21k")
    assert str(peeked.value) == str(built.value)
    assert all(n in str(peeked.value) for n in D.DATASET_NAMES)
    with pytest.raises(ValueError, match="bad builtin dataset spec"):
        D.peek_data("builtin:0:5")
    root = _png_folder(tmp_path / "one", (8, 8), classes=("cat",))
    with pytest.raises(ValueError, match="classification needs at least 2"):
        D.peek_data(str(root))


def test_registry_lists_the_dataset_names():
    assert D.DATASET_NAMES == ("builtin", "locate", "cifar10", "cifar100")
    assert D.DATASET_NAMES == tuple(_datasets._DATASETS)
    for spec, name in [
        ("builtin", "builtin"),
        ("LOCATE:10:5", "locate"),
        (" cifar-100 ", "cifar100"),
        ("Cifar10", "cifar10"),
    ]:
        entry = _datasets.dataset_entry(spec)
        assert entry is not None and entry.name == name
    # a spec only for the procedural datasets, dashes only for the others: anything else is a path
    for spec in ("cifar10:5", "built-in", "builtins", "./builtin", ""):
        assert _datasets.dataset_entry(spec) is None
    with pytest.raises(ValueError, match="already registered"):
        _datasets._register_dataset(_datasets._DATASETS["builtin"])


def test_normalisation_constants_have_one_home():
    from nlsam.models import CIFAR10_MEAN, CIFAR10_STD

    assert (CIFAR10_MEAN, CIFAR10_STD) == (_normalisation.CIFAR10_MEAN, _normalisation.CIFAR10_STD)
    assert _build.IMAGENET_MEAN is _normalisation.IMAGENET_MEAN
    assert _datasets._DATASETS["cifar100"].mean is _normalisation.CIFAR100_MEAN
    assert _normalisation.IMAGENET_STD == (0.229, 0.224, 0.225)


def test_one_size_normalisation():
    assert _sizes.to_2tuple(32) == (32, 32) and _sizes.to_2tuple((24, 40)) == (24, 40)
    assert not hasattr(_sizes, "size_pair")
    with pytest.raises(ValueError, match="input_size must be a positive int or a pair"):
        _sizes.to_2tuple((1, 2, 3), "input_size")
    with pytest.raises(ValueError, match="input_size must be a positive int or a pair"):
        D.preprocess_image(Image.new("RGB", (8, 8)), 0, (0.5,) * 3, (0.5,) * 3)


def test_optional_module():
    assert optional_module("nlsam_no_such_module_here") is None
    assert optional_module("json") is not None
