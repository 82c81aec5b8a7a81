"""Public CIFAR ResNet weights (akamaster/pytorch_resnet_cifar10, chenyaofo/pytorch-cifar-models)
into nlsam's CIFAR ResNets. Offline: the weights are random tensors saved in each publisher's key
layout, and the reference is a forward pass written here from the publisher's description
(option A: the new channels zero-padded ``planes // 4`` on each side)."""

import hashlib
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nlsam
from nlsam.data import DownloadError
from nlsam.models import _cifar_weights
from nlsam.models._cifar_weights import (
    CifarSource,
    _permutations,
    _Shape,
    is_akamaster_layout,
)


def _bn(x: torch.Tensor, state: dict, name: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        state[f"{name}.running_mean"],
        state[f"{name}.running_var"],
        state[f"{name}.weight"],
        state[f"{name}.bias"],
        training=False,
        eps=1e-5,
    )


def _reference_logits(state: dict, x: torch.Tensor, head: str = "linear") -> torch.Tensor:
    """A CIFAR ResNet of basic blocks computed straight from ``state``: option-A shortcuts pad the
    new channels on both sides (akamaster's), ``downsample.0/1`` keys mean a 1x1 projection."""
    out = F.relu(_bn(F.conv2d(x, state["conv1.weight"], padding=1), state, "bn1"))
    stage = 1
    while f"layer{stage}.0.conv1.weight" in state:
        block = 0
        while f"layer{stage}.{block}.conv1.weight" in state:
            p = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            h = F.relu(_bn(F.conv2d(out, state[f"{p}.conv1.weight"], stride=stride, padding=1), state, f"{p}.bn1"))
            h = _bn(F.conv2d(h, state[f"{p}.conv2.weight"], padding=1), state, f"{p}.bn2")
            shortcut = out
            if f"{p}.downsample.0.weight" in state:
                shortcut = _bn(
                    F.conv2d(out, state[f"{p}.downsample.0.weight"], stride=stride), state, f"{p}.downsample.1"
                )
            elif stride > 1:
                side = h.shape[1] // 4
                shortcut = F.pad(out[:, :, ::2, ::2], (0, 0, 0, 0, side, side))
            out = F.relu(h + shortcut)
            block += 1
        stage += 1
    return F.linear(out.mean((2, 3)), state[f"{head}.weight"], state[f"{head}.bias"])


def _random_state(blocks: int, *, projection: bool = False, head: str = "linear", seed: int = 0) -> dict:
    """Random weights of a CIFAR ResNet (widths 16/32/64) under the publisher's names."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name, out, inp, k=3):
        state[f"{name}.weight"] = torch.randn(out, inp, k, k, generator=g) * (2 / (inp * k * k)) ** 0.5

    def bn(name, c):
        state[f"{name}.weight"] = 0.5 + 0.1 * torch.randn(c, generator=g)  # activations stay O(1)
        state[f"{name}.bias"] = 0.2 * torch.randn(c, generator=g)
        state[f"{name}.running_mean"] = 0.2 * torch.randn(c, generator=g)
        state[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=g)

    conv("conv1", 16, 3)
    bn("bn1", 16)
    width = 16
    for s, w in enumerate((16, 32, 64), start=1):
        for b in range(blocks):
            p = f"layer{s}.{b}"
            conv(f"{p}.conv1", w, width if b == 0 else w)
            bn(f"{p}.bn1", w)
            conv(f"{p}.conv2", w, w)
            bn(f"{p}.bn2", w)
            if projection and b == 0 and w != width:
                conv(f"{p}.downsample.0", w, width, k=1)
                bn(f"{p}.downsample.1", w)
        width = w
    state[f"{head}.weight"] = torch.randn(10, 64, generator=g) * 0.5
    state[f"{head}.bias"] = 0.1 * torch.randn(10, generator=g)
    return state


def _save_akamaster(state: dict, path) -> str:
    """``state`` as akamaster's files hold it: DataParallel names under "state_dict"."""
    torch.save({"best_prec1": 91.0, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    return str(path)


def _max_diff(model: torch.nn.Module, state: dict, head: str = "linear") -> float:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (model.eval()(x) - _reference_logits(state, x, head)).abs().max().item()


@pytest.mark.parametrize("arch,blocks", [("resnet20", 3), ("resnet32", 5)])
def test_akamaster_file_by_path_computes_akamaster_logits(tmp_path, arch, blocks):
    state = _random_state(blocks)
    path = _save_akamaster(state, tmp_path / f"{arch}-0000.th")
    model = nlsam.create_model(arch, pretrained=path)
    assert _max_diff(model, state) <= 1e-5
    report = model.pretrained_report
    assert len(report.loaded) == len(state) and not report.missing and not report.unexpected
    assert not report.classifier_not_loaded and len(report.missing_counters) == 6 * blocks + 1
    assert "akamaster/pytorch_resnet_cifar10 layout" in str(report) and "NOT loaded" not in str(report)


def test_layout_is_recognised_by_keys_not_file_name(tmp_path):
    state = _random_state(3)
    renamed = _save_akamaster(state, tmp_path / "my_weights.pt")
    assert _max_diff(nlsam.create_model("resnet20", pretrained=renamed), state) <= 1e-5
    model = nlsam.create_model("resnet20")
    nlsam.load_pretrained(model, state, strict_backbone=True)  # a state dict without module.
    assert _max_diff(model, state) <= 1e-5
    assert is_akamaster_layout(state) and not is_akamaster_layout(nlsam.create_model("resnet20").state_dict())
    assert not is_akamaster_layout(_random_state(3, projection=True))


def test_attention_network_loads_the_backbone_and_keeps_its_identity_init(tmp_path):
    state = _random_state(3)
    path = _save_akamaster(state, tmp_path / "r20.th")
    model = nlsam.create_model("resnet20", attention="nlsam", attention_init="identity", pretrained=path)
    report = model.pretrained_report
    assert report.missing_attention and all(".attention." in k for k in report.missing_attention)
    assert len(report.loaded) == len(state) and not report.missing
    assert _max_diff(model, state) <= 1e-5


def test_permutation_keeps_the_old_channels_where_akamaster_pads_them():
    perms = _permutations(_Shape(16, ((3, 16), (3, 32), (3, 64))))
    assert torch.equal(perms[0], torch.arange(16))
    assert perms[1].tolist() == list(range(8, 24)) + list(range(8)) + list(range(24, 32))
    assert perms[2][:32].tolist() == [c + 16 for c in perms[1].tolist()]
    assert sorted(perms[2].tolist()) == list(range(64))


def _fake_hub(monkeypatch, tmp_path, file_bytes: bytes):
    """torch.hub's folder in tmp_path and akamaster:resnet20 published as ``file_bytes``."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    digest = hashlib.sha256(file_bytes).hexdigest()[:8]
    source = CifarSource(
        "akamaster:resnet20", f"resnet20-{digest}.th", "https://example.org/resnet20.th", 3, "A", 10, True
    )
    monkeypatch.setitem(_cifar_weights.SOURCES, "akamaster:resnet20", source)
    return source


def test_named_source_downloads_into_the_torch_hub_cache_with_its_hash(monkeypatch, tmp_path):
    state = _random_state(3)
    published = _save_akamaster(state, tmp_path / "published.th")
    data = Path(published).read_bytes()
    source = _fake_hub(monkeypatch, tmp_path, data)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        with open(dst, "wb") as f:
            f.write(data)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = nlsam.create_model("resnet20", pretrained="akamaster:resnet20")
    assert calls == [(source.url, source.file_name[9:17])]
    assert (tmp_path / "hub" / "checkpoints" / source.file_name).is_file()
    assert model.pretrained_report.source == "akamaster:resnet20" and _max_diff(model, state) <= 1e-5
    nlsam.create_model("resnet20", pretrained="akamaster:resnet20")  # the second time: from the cache
    assert len(calls) == 1


def test_offline_is_one_line_naming_the_address_the_file_and_the_folder(monkeypatch, tmp_path):
    source = _fake_hub(monkeypatch, tmp_path, b"unused")

    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DownloadError) as caught:
        nlsam.create_model("resnet20", pretrained="akamaster:resnet20")
    text = str(caught.value)
    assert "\n" not in text and source.url in text and source.file_name in text
    assert str(tmp_path / "hub" / "checkpoints") in text and "Temporary failure in name resolution" in text


def test_a_cached_file_of_other_contents_is_refused(monkeypatch, tmp_path):
    source = _fake_hub(monkeypatch, tmp_path, b"the published bytes")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    _save_akamaster(_random_state(3), tmp_path / "hub" / "checkpoints" / source.file_name)
    with pytest.raises(ValueError, match="is not the published akamaster:resnet20 .*delete it"):
        nlsam.create_model("resnet20", pretrained="akamaster:resnet20")


def test_wrong_names_and_networks_are_one_clear_error_before_any_download(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)
    with pytest.raises(
        ValueError,
        match=r"akamaster:resnet56 holds a CIFAR ResNet-56 \(9 blocks per stage.*"
        r"the model is a ResNet-20.*use create_model\('resnet56'\)",
    ):
        nlsam.create_model("resnet20", pretrained="akamaster:resnet56")
    with pytest.raises(
        ValueError,
        match="unknown weights 'akamaster:resnet21'; valid: akamaster:resnet20, "
        "akamaster:resnet32, .*akamaster:resnet1202$",
    ):
        nlsam.create_model("resnet20", pretrained="akamaster:resnet21")
    with pytest.raises(ValueError, match=r"needs zero-padding \(option A\) shortcuts, the model has 1x1 projection"):
        nlsam.create_model("resnet20", shortcut="B", pretrained="akamaster:resnet20")
    with pytest.raises(ValueError, match="not an ImageNet ResNet"):
        nlsam.create_model("resnet18", pretrained="akamaster:resnet20")
    with pytest.raises(ValueError, match=r"needs 1x1 projection \(option B\).*shortcut='B'"):
        nlsam.create_model("resnet20", pretrained="chenyaofo:cifar10_resnet20")
    path = _save_akamaster(_random_state(5), tmp_path / "r32.th")
    with pytest.raises(ValueError, match=r"r32.th holds a CIFAR ResNet-32 .* the model is a ResNet-20"):
        nlsam.create_model("resnet20", pretrained=path)
    with pytest.raises(ValueError, match="akamaster:resnet20.*chenyaofo:cifar10_resnet20"):
        nlsam.create_model("resnet20", pretrained="no/such/weights.th")


def test_chenyaofo_layout_fits_projection_shortcuts():
    state = _random_state(3, projection=True, head="fc")
    model = nlsam.create_model("resnet20", shortcut="B")
    report = nlsam.load_pretrained(model, state, strict_backbone=True)
    assert len(report.loaded) == len(state) and not report.converted
    assert _max_diff(model, state, head="fc") <= 1e-5


def test_report_says_plainly_what_was_not_loaded(tmp_path):
    state = _random_state(3)
    model = nlsam.create_model("resnet20", num_classes=100)
    text = str(nlsam.load_pretrained(model, state))
    assert "\n" not in text
    assert "classifier fc.weight, fc.bias NOT loaded (left at its init): fc.weight 10x64 -> 100x64" in text
    # nlsam names but a classifier called linear, and a backbone tensor gone
    ours = nlsam.create_model("resnet20").state_dict()
    ours["linear.weight"], ours["linear.bias"] = ours.pop("fc.weight"), ours.pop("fc.bias")
    del ours["stages.layer2.0.conv1.weight"]
    report = nlsam.load_pretrained(nlsam.create_model("resnet20"), ours)
    assert report.classifier_not_loaded == ["fc.weight", "fc.bias"]
    assert report.backbone_not_loaded == ["stages.layer2.0.conv1.weight"]
    text = str(report)
    assert "classifier fc.weight, fc.bias NOT loaded (left at its init): fc.weight (not in the source)" in text
    assert "1 backbone tensor NOT loaded (left at their init): stages.layer2.0.conv1.weight (not in the source)" in text
    assert "2 source tensors unused: linear.weight, linear.bias" in text and "\n" not in text


def test_timm_loads_akamaster_files_through_the_same_conversion(tmp_path):
    timm = pytest.importorskip("timm")
    state = _random_state(3)
    path = _save_akamaster(state, tmp_path / "r20.th")
    model = timm.create_model(
        "nlsam_resnet20", pretrained=True, attention_init="identity", pretrained_cfg_overlay={"file": path}
    )
    assert _max_diff(model, state) <= 1e-5


# --------------------------------------------------------------------------- the benchmark

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _fake_their_code(tmp_path) -> Path:
    """A stand-in for akamaster's resnet.py: ``resnet20()`` whose ``load_state_dict`` keeps the
    weights and whose forward is this file's reference."""
    import inspect
    import textwrap

    text = "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\n"
    text += (
        inspect.getsource(_bn)
        + "\n\n"
        + inspect.getsource(_reference_logits)
        + textwrap.dedent("""

        class Reference(nn.Module):
            def load_state_dict(self, state, strict=True):
                self.state = dict(state)

            def forward(self, x):  # in x's precision (the benchmark's float64 check)
                return _reference_logits({k: v.to(x.dtype) for k, v in self.state.items()}, x)


        def resnet20():
            return Reference()
        """)
    )
    path = tmp_path / "resnet.py"
    path.write_text(text)
    return path


def _tiny_cifar_zip(tmp_path) -> Path:
    """CIFAR-10's classes, two 32 x 32 images each in train/ and test/, as a .zip."""
    import io
    import zipfile

    from PIL import Image

    g = torch.Generator().manual_seed(0)
    path = tmp_path / "tiny.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for split in ("train", "test"):
            for name in CIFAR10_CLASSES:
                for i in range(2):
                    pixels = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
                    data = io.BytesIO()
                    Image.fromarray(pixels).save(data, format="PNG")
                    zf.writestr(f"{split}/{name}/{i}.png", data.getvalue())
    return path


def test_benchmark_compares_their_network_with_ours(load_script, run_script, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))
    weights = _save_akamaster(_random_state(3), tmp_path / "resnet20-test.th")
    benchmark = load_script("benchmarks/akamaster_weights.py")
    assert (
        run_script(
            benchmark,
            [
                "--source-code",
                str(_fake_their_code(tmp_path)),
                "--weights",
                weights,
                "--data",
                str(_tiny_cifar_zip(tmp_path)),
                "--random-inputs",
                "4",
            ],
        )
        == 0
    )
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| resnet20-test.th |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[2].split()[0]) <= 1e-5 and float(cells[3]) <= 1e-5
    assert cells[4] == "0 of 20" and cells[5] == cells[6] and cells[7] == "91.00"
    rounding = next(line for line in out.splitlines() if line.startswith("| resnet20-test.th | 20 |"))
    assert all(float(c) <= 1e-5 for c in rounding.strip("|").split("|")[2:])
    assert str(tmp_path) not in out  # the page shows no machine paths
