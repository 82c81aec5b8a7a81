"""nlsam.load_pretrained: torchvision / timm ResNet weights into nlsam's ResNets (offline: the
weights are the state dicts of randomly initialised models)."""

import pytest
import torch

import nlsam
from nlsam.attention import identity_init
from nlsam.models.pretrained import _parse_weight_name

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")


def _max_diff(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a.eval()(x) - b.eval()(x)).abs().max().item()


@pytest.mark.parametrize("arch,attention", [("resnet18", None), ("resnet50", None), ("resnet50", "nlsam")])
def test_torchvision_weights_give_torchvision_outputs(tmp_path, arch, attention):
    torch.manual_seed(0)
    source = getattr(torchvision.models, arch)()
    path = tmp_path / f"{arch}.pth"
    torch.save(source.state_dict(), path)
    model = nlsam.create_model(arch, attention=attention)
    if attention:
        identity_init(model)
    report = nlsam.load_pretrained(model, path, strict_backbone=True)
    assert len(report.loaded) == len(source.state_dict())
    assert not report.missing and not report.unexpected and not report.skipped
    assert bool(report.missing_attention) == bool(attention)
    assert all(".attention." in k for k in report.missing_attention)
    assert _max_diff(model, source, torch.randn(1, 3, 224, 224)) <= 1e-5


def test_timm_weights_give_timm_outputs(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet50", zero_init_last=False)  # branches that count
    torch.save(source.state_dict(), tmp_path / "timm.pth")
    model = identity_init(nlsam.create_model("resnet50", attention="se+nlsam"))
    report = nlsam.load_pretrained(model, str(tmp_path / "timm.pth"))
    assert not report.missing and not report.unexpected and report.missing_attention
    assert _max_diff(model, source, torch.randn(1, 3, 224, 224)) <= 1e-5


def test_resnet20_plain_into_se_nlsam_via_checkpoint(tmp_path):
    torch.manual_seed(0)
    plain = nlsam.create_model("resnet20")
    # an nlsam checkpoint keeps the weights under "model"; DataParallel-style names work too
    state = {"module." + k: v for k, v in plain.state_dict().items()}
    torch.save({"model": state, "config": {"model": "resnet20"}, "epoch": 3}, tmp_path / "last.pt")
    model = identity_init(nlsam.create_model("resnet20", attention="se+nlsam"))
    report = nlsam.load_pretrained(model, tmp_path / "last.pt", strict_backbone=True)
    assert len(report.loaded) == len(state) and report.missing_attention
    assert report.source == str(tmp_path / "last.pt")
    assert _max_diff(model, plain, torch.randn(2, 3, 32, 32)) <= 1e-5


def test_classifier_of_another_shape_is_skipped_and_reported():
    source = torchvision.models.resnet18()
    model = nlsam.create_model("resnet18", attention="se", num_classes=10)
    fc = model.fc.weight.detach().clone()
    report = nlsam.load_pretrained(model, source.state_dict(), strict_backbone=True)
    assert report.skipped == {"fc.weight": ((1000, 512), (10, 512)), "fc.bias": ((1000,), (10,))}
    assert torch.equal(model.fc.weight, fc)
    assert torch.equal(model.stages.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    text = str(report)
    assert text.startswith("loaded 120 tensors from state dict; ")
    assert "attention tensors left at their init" in text and "fc.weight 1000x512 -> 10x512" in text


def test_other_architecture_strict_and_not():
    model = nlsam.create_model("resnet50")
    weights = torchvision.models.resnet18().state_dict()
    with pytest.raises(ValueError, match=r"strict_backbone.*missing: stages.layer1.0.conv3.weight.*shape differs"):
        nlsam.load_pretrained(model, weights, strict_backbone=True)
    report = nlsam.load_pretrained(model, weights)  # the stem and the fitting tensors
    assert "conv1.weight" in report.loaded and report.missing and report.skipped
    with pytest.raises(ValueError, match="no tensor of state dict fits ResNet"):
        nlsam.load_pretrained(model, torchvision.models.vgg11().state_dict())


def test_weight_names_parse():
    assert _parse_weight_name("torchvision:resnet50.IMAGENET1K_V2") == ("torchvision", "resnet50", "IMAGENET1K_V2")
    assert _parse_weight_name("torchvision:wide_resnet50_2") == ("torchvision", "wide_resnet50_2", None)
    assert _parse_weight_name("timm:resnet50.a1_in1k") == ("timm", "resnet50.a1_in1k", None)
    with pytest.raises(ValueError, match="names no model"):
        _parse_weight_name("timm:")


def test_torchvision_name_uses_torchvision_weights(monkeypatch):
    calls = []
    weights = torchvision.models.resnet18().state_dict()

    def fake_get_state_dict(self, *args, **kwargs):
        calls.append(self)
        return weights

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", fake_get_state_dict)
    model = nlsam.create_model("resnet18")
    report = nlsam.load_pretrained(model, "torchvision:resnet18.IMAGENET1K_V1")
    assert calls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1]
    assert report.source == "torchvision:resnet18.IMAGENET1K_V1" and len(report.loaded) == len(weights)
    nlsam.load_pretrained(model, "torchvision:resnet18")
    assert calls[-1] == torchvision.models.ResNet18_Weights.DEFAULT
    with pytest.raises(ValueError, match="no weights 'V9' for resnet18; valid: IMAGENET1K_V1, DEFAULT"):
        nlsam.load_pretrained(model, "torchvision:resnet18.V9")
    with pytest.raises(ValueError, match="torchvision has no model 'resnet5'"):
        nlsam.load_pretrained(model, "torchvision:resnet5")


def test_timm_name_uses_timm_create_model(monkeypatch):
    calls = []
    create = timm.create_model

    def fake_create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        return create("resnet18")

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    report = nlsam.load_pretrained(nlsam.create_model("resnet18"), "timm:resnet18.a1_in1k")
    assert calls == [("resnet18.a1_in1k", True)]
    assert report.source == "timm:resnet18.a1_in1k" and not report.missing


def test_bad_source():
    model = nlsam.create_model("resnet20")
    with pytest.raises(ValueError, match="is no file, state dict or weights name"):
        nlsam.load_pretrained(model, "no/such/file.pth")


def test_create_model_and_timm_start_from_a_torchvision_state_dict(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18().eval()
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    x = torch.randn(1, 3, 224, 224)
    model = nlsam.create_model(
        "resnet18", attention="se+nlsam", attention_init="identity", pretrained=str(tmp_path / "r18.pth")
    ).eval()
    assert model.pretrained_report.missing == [] and model.pretrained_report.missing_attention
    with torch.no_grad():
        assert (model(x) - source(x)).abs().max() <= 1e-5
    timm = pytest.importorskip("timm")
    from_timm = timm.create_model(
        "nlsam_resnet18",
        pretrained=True,
        attention_init="identity",
        pretrained_cfg_overlay=dict(file=str(tmp_path / "r18.pth")),
    ).eval()
    with torch.no_grad():
        assert (from_timm(x) - source(x)).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="no published weights for resnet20"):
        nlsam.create_model("resnet20", pretrained=True)
