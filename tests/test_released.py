"""Released weights: nlsam.list_pretrained, loading by name (nlsam, timm, torch.hub), the
download path with its sha256 check, the Hub folder export, and the shipped weights' cards."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

import nlsam
from nlsam.data import DownloadError
from nlsam.models import released, torch_hub

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-jpg.zip"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _record(name: str, model: str, arch: str, attention, state, **extra) -> dict:
    data = save({k: v.contiguous() for k, v in state.items()})
    return dict(
        name=name,
        model=model,
        arch=arch,
        attention=attention,
        data="test data",
        data_file="test.zip",
        data_sha256="0" * 64,
        epochs=1,
        seed=0,
        top1=12.5,
        variant_top1_mean=12.5,
        variant_top1_std=None,
        variant_seeds=1,
        num_classes=10,
        classes=CLASSES,
        input_size=[3, 32, 32],
        mean=[0.5] * 3,
        std=[0.25] * 3,
        params=1,
        flops=1,
        recipe="r",
        precision="bfloat16",
        machine="m",
        study="s",
        file=f"{name}.safetensors",
        sha256=hashlib.sha256(data).hexdigest(),
        **extra,
    ), data


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """A weights folder of two test-made weights (GE and GE + NL-SAM ResNet-20), in place of the
    package's; torch.hub's cache in tmp_path too."""
    folder = tmp_path / "weights"
    folder.mkdir()
    records, states = [], {}
    for attention, model in (("ge", "ge_resnet20"), ("ge+nlsam", "ge_nlsam_resnet20")):
        torch.manual_seed(1)
        state = nlsam.create_model("resnet20", attention=attention).state_dict()
        record, data = _record(f"{model}.test", model, "resnet20", attention, state)
        (folder / record["file"]).write_bytes(data)
        records.append(record)
        states[record["name"]] = state
    (folder / "index.json").write_text(json.dumps(records))
    monkeypatch.setattr(released, "_weights_dir", lambda: folder)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    released._records.cache_clear()
    yield dict(folder=folder, records=records, states=states)
    released._records.cache_clear()


def test_list_pretrained_returns_one_record_per_weight(weights_dir):
    weights = nlsam.list_pretrained()
    assert [w.name for w in weights] == ["ge_nlsam_resnet20.test", "ge_resnet20.test"]
    assert [w.name for w in nlsam.list_pretrained("ge_resnet*")] == ["ge_resnet20.test"]
    w = weights[0]
    assert (w.arch, w.attention, w.epochs, w.top1, w.tag) == ("resnet20", "ge+nlsam", 1, 12.5, "test")
    assert w.classes == tuple(CLASSES) and w.input_size == (3, 32, 32)


def test_unknown_weight_names_the_released_ones(weights_dir):
    with pytest.raises(
        ValueError, match=r"no released weight 'nope'; released: ge_nlsam_resnet20.test, ge_resnet20.test"
    ):
        released.get_pretrained("nlsam:nope")


def test_create_model_loads_a_released_weight_exactly(weights_dir):
    model = nlsam.create_model("resnet20", attention="ge+nlsam", pretrained="nlsam:ge_nlsam_resnet20.test")
    expected = weights_dir["states"]["ge_nlsam_resnet20.test"]
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    assert not model.pretrained_report.missing and not model.pretrained_report.missing_attention


@pytest.mark.parametrize("arch, attention", [("resnet32", "ge+nlsam"), ("resnet20", "nlsam"), ("resnet20", None)])
def test_a_released_weight_of_another_network_is_refused_before_building(weights_dir, arch, attention, monkeypatch):
    import functools

    from nlsam.models import registry

    @functools.wraps(registry._MODELS[arch])
    def refuse(*args, **kwargs):
        raise AssertionError("built a network")

    monkeypatch.setitem(registry._MODELS, arch, refuse)
    with pytest.raises(ValueError, match=r"ge_nlsam_resnet20.test is resnet20 with attention 'ge\+nlsam'"):
        nlsam.create_model(arch, attention=attention, pretrained="nlsam:ge_nlsam_resnet20.test")


def test_create_released_is_what_torch_hub_entries_call(weights_dir):
    model = torch_hub.create_released("ge_resnet20", pretrained=True)
    expected = weights_dir["states"]["ge_resnet20.test"]
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"none is released for nlsam_resnet56"):
        torch_hub.create_released("nlsam_resnet56", pretrained=True)
    with pytest.raises(ValueError, match=r"no network 'resnet20'"):
        torch_hub.create_released("resnet20")
    assert torch_hub.create_released("nlsam_resnet56", num_classes=3).fc.out_features == 3


def test_a_weight_that_must_be_downloaded_is_checked_and_kept_in_the_hub_cache(weights_dir, tmp_path):
    source = tmp_path / "elsewhere"
    source.mkdir()
    torch.manual_seed(2)
    state = nlsam.create_model("resnet20", attention="ge").state_dict()
    record, data = _record(
        "ge_resnet20.remote", "ge_resnet20", "resnet20", "ge", state, url=(source / "w.safetensors").as_uri()
    )
    (source / "w.safetensors").write_bytes(data)
    index = weights_dir["folder"] / "index.json"
    index.write_text(json.dumps(weights_dir["records"] + [record]))
    released._records.cache_clear()

    weight = released.get_pretrained("ge_resnet20.remote")
    path = released.pretrained_file(weight)
    assert path == tmp_path / "hub" / "checkpoints" / "ge_resnet20.remote.safetensors"
    loaded = released.pretrained_state_dict("ge_resnet20.remote")
    assert all(torch.equal(v, state[k]) for k, v in loaded.items())

    # a corrupt download keeps nothing
    path.unlink()
    (source / "w.safetensors").write_bytes(data[:-8] + b"\0" * 8)
    with pytest.raises(DownloadError, match=r"is corrupt \(sha256 .*, expected .*\); nothing was kept"):
        released.pretrained_file(weight)
    assert not any((tmp_path / "hub" / "checkpoints").iterdir())

    # without the file (no network), one line: what to fetch and where to put it
    (source / "w.safetensors").unlink()
    with pytest.raises(DownloadError) as info:
        released.pretrained_file(weight)
    message = str(info.value)
    assert "\n" not in message and weight.url in message and str(path) in message


def test_a_weight_neither_shipped_nor_downloadable_says_where_to_put_it(weights_dir):
    (weights_dir["folder"] / "ge_resnet20.test.safetensors").unlink()
    with pytest.raises(
        DownloadError, match=r"put ge_resnet20.test.safetensors \(sha256 [0-9a-f]{64}\) in .*hub/checkpoints"
    ):
        released.pretrained_state_dict("ge_resnet20.test")


def test_a_released_weight_evaluates_as_a_checkpoint(weights_dir):
    from nlsam.engine.checkpoint import load_checkpoint
    from nlsam.engine.loading import model_from_checkpoint

    state = load_checkpoint("nlsam:ge_resnet20.test")  # what nlsam eval nlsam:NAME reads

    model = model_from_checkpoint(state)
    assert model.classes == CLASSES and model.data_config["mean"] == (0.5,) * 3
    assert state["precision"] == "float32"


# --- the weights shipped in the package ----------------------------------------------------


SHIPPED = released.list_pretrained()
needs_shipped = pytest.mark.skipif(not SHIPPED, reason="no weights are shipped in this checkout")


@needs_shipped
@pytest.mark.parametrize("weight", SHIPPED, ids=lambda w: w.name)
def test_shipped_weight_matches_its_record_and_card(weight):
    path = released.pretrained_file(weight)
    assert path.parent == released._weights_dir()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == weight.sha256
    card = weight.card
    assert card.startswith("---\n") and f"# Model card for {weight.name}" in card
    assert f"**Top-1:** {weight.top1:.2f}%" in card and weight.data_sha256 in card
    assert "shifted" in card  # what the JPEG copy's figures mean
    model = nlsam.create_model(weight.arch, attention=weight.attention, pretrained=f"nlsam:{weight.name}")
    report = model.pretrained_report
    assert not (report.missing or report.missing_attention or report.unexpected or report.skipped)
    cost = nlsam.profile(model, input_size=weight.input_size)
    assert (cost.params, cost.flops) == (weight.params, weight.flops)


@needs_shipped
def test_timm_lists_and_loads_the_shipped_weights():
    timm = pytest.importorskip("timm")
    listed = set(timm.list_pretrained())
    assert {w.name for w in SHIPPED} <= listed
    weight = SHIPPED[0]
    model = timm.create_model(weight.name, pretrained=True)
    assert model.pretrained_cfg["mean"] == weight.mean and model.pretrained_cfg["license"] == "mit"
    assert model.pretrained_cfg["input_size"] == weight.input_size
    expected = released.pretrained_state_dict(weight.name)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    default = timm.create_model(weight.model, pretrained=True)  # the release is the default tag
    assert default.pretrained_cfg["tag"] == weight.tag


@needs_shipped
def test_torch_hub_loads_the_shipped_weights_from_the_checkout(load_script):
    weight = SHIPPED[0]
    hubconf = load_script("hubconf.py")
    entries = [name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")]
    assert weight.model in entries and "nlsam_resnet110" in entries
    model = torch.hub.load(str(ROOT), weight.model, source="local", pretrained=True)
    expected = released.pretrained_state_dict(weight.name)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


@needs_shipped
@pytest.mark.skipif(not DATA.is_file(), reason=f"the CIFAR-10 JPEG copy is not at {DATA}")
@pytest.mark.parametrize("weight", SHIPPED, ids=[w.name for w in SHIPPED])
def test_nlsam_eval_reproduces_the_card_top1(weight, capsys):
    from nlsam.cli import main

    assert main(["eval", f"nlsam:{weight.name}", "--data", str(DATA), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 10000 and round(result["top1"], 2) == weight.top1


# --- nlsam export --format hub ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from nlsam.engine import TrainConfig, train

    root = tmp_path_factory.mktemp("hub")
    train(
        TrainConfig.from_dict(
            dict(
                data="builtin:128:32:0",
                model="resnet20",
                attention="ge+nlsam",
                epochs=1,
                batch_size=64,
                log_every=1000,
                out=str(root / "run"),
                model_options={"nlsam_pool": 2},
            )
        )
    )
    return root / "run"


def test_export_hub_folder_loads_in_timm_with_the_runs_logits(tiny_run, tmp_path, capsys):
    timm = pytest.importorskip("timm")
    from nlsam.cli import main

    out = tmp_path / "ge_nlsam_resnet20.mine"
    assert main(["export", str(tiny_run), "--format", "hub", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "checked: max |timm local-dir: - PyTorch|" in printed
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "ge_nlsam_resnet20" and config["model_args"]["nlsam_pool"] == 2
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    expected = nlsam.load_model(tiny_run).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), expected(x))
    card = (out / "README.md").read_text()
    assert (
        card.startswith("---\n") and "library_name: timm" in card and "# Model card for ge_nlsam_resnet20.mine" in card
    )
    # writing it again replaces nlsam's own folder
    assert main(["export", str(tiny_run), "--format", "hub", "--out", str(out)]) == 0


def test_export_hub_never_writes_into_someone_elses_folder(tiny_run, tmp_path):
    from nlsam.cli import main

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "README.md").write_text("my notes\n")
    assert main(["export", str(tiny_run), "--format", "hub", "--out", str(theirs)]) == 2
    assert sorted(os.listdir(theirs)) == ["README.md"] and (theirs / "README.md").read_text() == "my notes\n"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["export", str(tiny_run), "--format", "hub", "--out", str(a_file)]) == 2
    assert a_file.read_text() == "x"


def test_model_card_layout():
    from nlsam.analysis.hub import CardFacts, model_card

    card = model_card(
        CardFacts(
            name="nlsam_resnet20.x",
            model="nlsam_resnet20",
            arch="resnet20",
            attention="nlsam",
            num_classes=10,
            input_size=(3, 32, 32),
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            data="CIFAR-10, JPEG copy",
            top1=87.5,
            top1_how="fp32",
            params=272_474,
            flops=82_000_000,
        )
    )
    front = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert front and "license: mit" in front.group(1) and "library_name: timm" in front.group(1)
    assert "81.03%" in card and "**Params (M):** 0.272" in card and "doi.org/10.1177/1729881420938927" in card
    assert 'timm.create_model("nlsam_resnet20.x", pretrained=True)' in card
