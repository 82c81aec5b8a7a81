"""timm integration: the ``{attention}_{arch}`` entry points of nlsam.models.timm_models."""

import math
import subprocess
import sys
import textwrap

import pytest
import torch

timm = pytest.importorskip("timm")

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # noqa: E402

import nlsam  # noqa: E402
from nlsam import NLSAM, ResNet  # noqa: E402
from nlsam.models import timm_models  # noqa: E402
from nlsam.models.timm_models import (  # noqa: E402
    ATTENTION_TAGS,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR_ARCHS,
    IMAGENET_ARCHS,
    TIMM_MODEL_NAMES,
    timm_model_name,
)

ARCHS = IMAGENET_ARCHS + CIFAR_ARCHS


def _cifar_input(batch=2, chans=3, size=32):
    return torch.randn(batch, chans, size, size)


def _nlsam_modules(model):
    return [m for m in model.modules() if isinstance(m, NLSAM)]


# --- registration --------------------------------------------------------------------------------


def test_names_are_registered_and_listed():
    assert len(TIMM_MODEL_NAMES) == len(ATTENTION_TAGS) * len(ARCHS) == 117
    assert set(timm.list_models("nlsam_*")) == {f"nlsam_{a}" for a in ARCHS}
    assert set(timm.list_models("*nlsam_*")) == {
        f"{tag}_{a}" for tag in ("nlsam", "se_nlsam", "ge_nlsam", "cbam_nlsam") for a in ARCHS
    }
    assert set(timm.list_models(module="timm_models")) >= set(TIMM_MODEL_NAMES)
    for name in TIMM_MODEL_NAMES:
        # ours, not one of timm's own models of the same name
        assert timm.models.model_entrypoint(name).__module__ == "nlsam.models.timm_models"
        assert getattr(timm_models, name).__name__ == name
    # pretrained weights exactly where nlsam released some (nlsam.list_pretrained)
    released = {w.model for w in nlsam.list_pretrained()}
    assert set(timm.list_models(pretrained=True)) & set(TIMM_MODEL_NAMES) == released
    assert {w.name for w in nlsam.list_pretrained()} <= set(timm.list_pretrained())
    assert not timm.models.is_model_pretrained("nlsam_resnet50")
    assert timm_models.register_timm_models() is True  # idempotent


def test_timm_model_name():
    assert timm_model_name("resnet50") == "nlsam_resnet50"
    assert timm_model_name("resnet110", "se+nlsam") == "se_nlsam_resnet110"
    assert timm_model_name("preresnet164", "cbam") == "cbam_preresnet164"
    assert timm_model_name("resnet20", None) == "base_resnet20"
    with pytest.raises(ValueError, match="valid"):
        timm_model_name("resnet21")


def test_import_is_lazy_and_works_without_timm():
    """Importing nlsam neither needs nor imports timm; importing timm later registers them."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["timm"] = None  # timm "not installed"
        import nlsam
        import nlsam.models.timm_models as tm
        assert tm.register_timm_models() is False
        del sys.modules["timm"]     # now "installed": registration follows its import
        import timm
        assert timm.list_models("nlsam_resnet50") == ["nlsam_resnet50"]
        assert timm.create_model("se_nlsam_resnet20").num_classes == 10
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


@pytest.mark.parametrize("name", TIMM_MODEL_NAMES)
def test_pretrained_cfg_of_every_name(name):
    cfg = timm.models.get_pretrained_cfg(name)
    arch = next(a for a in ARCHS if name.endswith("_" + a))
    assert name[: -len(arch) - 1] in ATTENTION_TAGS
    released = [w for w in nlsam.list_pretrained() if w.model == name]
    assert cfg.architecture == name and bool(cfg.has_weights) == bool(released)
    if released:  # the release is the network's default tag, described by its record
        weight = released[0]
        assert cfg.tag == weight.tag and cfg.file.endswith(weight.file) and cfg.license == "mit"
        assert (cfg.input_size, cfg.mean, cfg.std, cfg.num_classes) == (weight.input_size, weight.mean, weight.std, 10)
        return
    assert (cfg.first_conv, cfg.classifier, cfg.interpolation) == ("conv1", "fc", "bilinear")
    if arch in IMAGENET_ARCHS:
        assert cfg.input_size == (3, 224, 224) and cfg.pool_size == (7, 7)
        assert cfg.num_classes == 1000 and cfg.crop_pct == 0.875
        assert (cfg.mean, cfg.std) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    else:
        assert cfg.input_size == (3, 32, 32) and cfg.pool_size == (8, 8)
        assert cfg.num_classes == 10
        assert (cfg.mean, cfg.std) == (CIFAR10_MEAN, CIFAR10_STD)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_matches_nlsam_create_model(arch):
    """The timm entry point builds exactly nlsam.create_model(arch, attention=...)."""
    with torch.device("meta"):
        ours = timm.create_model(f"se_nlsam_{arch}")
        ref = nlsam.create_model(arch, attention="se+nlsam")
    assert type(ours) is ResNet and ours.attention_name == "se+nlsam"
    assert list(ours.state_dict()) == list(ref.state_dict())
    shapes = [v.shape for v in ours.state_dict().values()]
    assert shapes == [v.shape for v in ref.state_dict().values()]
    assert len(ours.feature_info) == (4 if arch in IMAGENET_ARCHS else 3)


@pytest.mark.parametrize("tag", list(ATTENTION_TAGS))
def test_every_attention_tag_builds_and_runs(tag):
    torch.manual_seed(0)
    model = timm.create_model(f"{tag}_resnet20")
    assert model.attention_name == ATTENTION_TAGS[tag]
    assert bool(_nlsam_modules(model)) == ("nlsam" in tag)
    torch.manual_seed(0)
    ref = nlsam.create_model("resnet20", attention=ATTENTION_TAGS[tag])
    assert list(model.state_dict()) == list(ref.state_dict())
    for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)  # same seed, same network, same weights
    out = model(_cifar_input())
    assert out.shape == (2, 10)
    out.sum().backward()


# --- forward -------------------------------------------------------------------------------------


def test_imagenet_forward_native_and_second_size():
    model = timm.create_model("nlsam_resnet18").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
        assert model(torch.randn(1, 3, 160, 192)).shape == (1, 1000)


def test_resnet50_forward():
    model = timm.create_model("nlsam_resnet50").eval()
    assert len(_nlsam_modules(model)) == 4 + 6 + 3  # stages 3, 4 and 5
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


# --- features_only -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size, channels, reductions",
    [
        ("nlsam_resnet18", 128, [64, 128, 256, 512], [4, 8, 16, 32]),
        ("se_nlsam_resnet20", 32, [16, 32, 64], [1, 2, 4]),
        ("nlsam_preresnet110", 32, [16, 32, 64], [1, 2, 4]),
        ("bam_resnet20", 32, [16, 32, 64], [1, 2, 4]),
    ],
)
def test_features_only(name, size, channels, reductions):
    model = timm.create_model(name, features_only=True).eval()
    assert model.feature_info.channels() == channels
    assert model.feature_info.reduction() == reductions
    modules = [f"stages.layer{i + 1}" for i in range(len(channels))]
    assert model.feature_info.module_name() == modules
    with torch.no_grad():
        feats = model(torch.randn(1, 3, size, size))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, math.ceil(size / r), math.ceil(size / r)) for c, r in zip(channels, reductions)
    ]
    assert model.pretrained_cfg["architecture"] == name


def test_features_only_out_indices_and_matches_full_model():
    torch.manual_seed(0)
    full = timm.create_model("nlsam_resnet20").eval()
    x = _cifar_input()
    with torch.no_grad():
        reference = full.forward_features(x)
    for out_indices, expected in [((0, 2), [16, 64]), ((-1,), [64]), (2, [32, 64])]:
        torch.manual_seed(0)
        model = timm.create_model("nlsam_resnet20", features_only=True, out_indices=out_indices)
        model.eval()
        assert model.feature_info.channels() == expected
        with torch.no_grad():
            feats = model(x)
        assert [f.shape[1] for f in feats] == expected
        torch.testing.assert_close(feats[-1], reference)  # the last stage is forward_features


@pytest.mark.parametrize("feature_cls", ["hook", "dict"])
def test_features_only_other_wrappers(feature_cls):
    model = timm.create_model("nlsam_resnet20", features_only=True, feature_cls=feature_cls)
    feats = model(_cifar_input())
    feats = list(feats.values()) if isinstance(feats, dict) else feats
    assert [f.shape[1:] for f in feats] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]


# --- keyword arguments ---------------------------------------------------------------------------


def test_num_classes_in_chans_and_nlsam_overrides():
    model = timm.create_model("nlsam_resnet20", num_classes=5, in_chans=1, nlsam_reduction=4, drop_rate=0.25)
    assert model.num_classes == 5 and model.fc.out_features == 5
    assert model.conv1.in_channels == 1 and model.in_chans == 1
    assert model.head_drop.p == 0.25
    assert {m.reduction for m in _nlsam_modules(model)} == {4}
    assert model(_cifar_input(chans=1)).shape == (2, 5)

    model = timm.create_model(
        "nlsam_resnet18", num_classes=3, nlsam_stages=(5,), nlsam_pool={5: 7}, nlsam_reduction=1
    )  # k = 7 pools the 7 x 7 map to one position: r = 1 is the only reduction that leaves a unit
    assert [m.pool for m in _nlsam_modules(model)] == [7, 7]


@pytest.mark.parametrize("key", ["input_size", "img_size"])
def test_input_size(key):
    model = timm.create_model("nlsam_resnet20", **{key: 64})
    assert model.input_size == (64, 64)
    assert {m.feature_size for m in _nlsam_modules(model)} == {(32, 32), (16, 16)}
    assert model.pretrained_cfg["input_size"] == (3, 64, 64)
    assert model.pretrained_cfg["pool_size"] == (16, 16)
    assert timm.data.resolve_data_config(model=model)["input_size"] == (3, 64, 64)
    assert model(_cifar_input(size=64)).shape == (2, 10)
    # the registry's cfg is untouched
    assert timm.models.get_pretrained_cfg("nlsam_resnet20").input_size == (3, 32, 32)


def test_bad_keyword_arguments():
    with pytest.raises(ValueError, match="fixed by its name.*se_resnet20"):
        timm.create_model("nlsam_resnet20", attention="se")
    assert timm.create_model("nlsam_resnet20", attention="nlsam").attention_name == "nlsam"
    with pytest.raises(TypeError, match="drop_path_rate"):
        timm.create_model("nlsam_resnet20", drop_path_rate=0.1)
    with pytest.raises(ValueError, match="disagree"):
        timm.create_model("nlsam_resnet20", img_size=64, input_size=32)
    with torch.device("meta"):  # a timm-style (C, H, W) input_size sets in_chans too
        model = timm.create_model("nlsam_resnet20", input_size=(1, 48, 48))
    assert (model.in_chans, model.input_size) == (1, (48, 48))
    with pytest.raises(ValueError, match="disagree"):
        timm.create_model("nlsam_resnet20", input_size=(1, 48, 48), in_chans=3)
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("nlsam_resnet20", global_pool="max")
    with pytest.raises(ValueError, match="num_classes=0"):
        timm.create_model("nlsam_resnet20", global_pool="")


def test_device_and_dtype():
    model = timm.create_model("nlsam_resnet20", device="cpu", dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float64
    assert model(_cifar_input().double()).dtype == torch.float64


# --- head ----------------------------------------------------------------------------------------


def test_reset_classifier_and_pre_logits():
    model = timm.create_model("nlsam_resnet20").eval()
    x = _cifar_input()
    assert model.get_classifier() is model.fc
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pooled.shape == (2, model.num_features) == (2, 64)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled)
        model.reset_classifier(7)
        assert model(x).shape == (2, 7) and model.num_classes == 7


def test_unpooled_features():
    """timm's convention: no classifier and no pooling gives the B x C x H x W feature map."""
    model = timm.create_model("nlsam_resnet20", num_classes=0, global_pool="").eval()
    with torch.no_grad():
        out = model(_cifar_input())
    if out.dim() == 2:
        pytest.xfail("ResNet.forward_head flattens the feature map when global_pool=''")
    assert out.shape == (2, 64, 8, 8)


# --- data config and pretrained ------------------------------------------------------------------


def test_data_config_and_transform():
    from PIL import Image

    model = timm.create_model("nlsam_resnet18")
    config = timm.data.resolve_data_config(model=model)
    assert config["input_size"] == (3, 224, 224)
    assert config["crop_pct"] == 0.875 and config["interpolation"] == "bilinear"
    assert tuple(config["mean"]) == IMAGENET_DEFAULT_MEAN
    transform = timm.data.create_transform(**config)
    assert transform(Image.new("RGB", (300, 260))).shape == (3, 224, 224)

    config = timm.data.resolve_model_data_config(timm.create_model("ge_nlsam_resnet56"))
    assert config["input_size"] == (3, 32, 32) and tuple(config["mean"]) == CIFAR10_MEAN
    assert tuple(config["std"]) == CIFAR10_STD
    transform = timm.data.create_transform(**config, is_training=True)
    assert transform(Image.new("RGB", (32, 32))).shape == (3, 32, 32)


def test_pretrained_true_raises_without_download(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download weights")

    import timm.models._builder as builder

    for name in ("load_state_dict_from_url", "load_state_dict_from_hf", "download_cached_file"):
        monkeypatch.setattr(builder, name, no_network, raising=False)
    for name in ("nlsam_resnet50", "base_resnet56"):  # networks with no released weights
        with pytest.raises(RuntimeError, match="no pretrained weights.*pretrained=False"):
            timm.create_model(name, pretrained=True)


def test_pretrained_from_own_file(tmp_path):
    """With a weight file timm loads it, dropping ``fc`` and adapting ``conv1`` as configured."""
    torch.manual_seed(0)
    source = timm.create_model("nlsam_resnet20").eval()
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    overlay = dict(file=str(path))

    loaded = timm.create_model("nlsam_resnet20", pretrained=True, pretrained_cfg_overlay=overlay)
    x = _cifar_input()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), source(x))

    adapted = timm.create_model(
        "nlsam_resnet20",
        pretrained=True,
        pretrained_cfg_overlay=overlay,
        num_classes=4,
        in_chans=1,
    )
    assert adapted.fc.out_features == 4
    torch.testing.assert_close(adapted.conv1.weight, source.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(adapted.stages.layer3[0].conv1.weight, source.stages.layer3[0].conv1.weight)


# --- timm helpers that need methods ResNet may not have yet --------------------------------------


@pytest.mark.skipif(not hasattr(ResNet, "group_matcher"), reason="ResNet has no group_matcher")
def test_layer_decay_optimizer():
    from timm.optim import create_optimizer_v2

    model = timm.create_model("nlsam_resnet20")
    optimizer = create_optimizer_v2(model, "sgd", lr=0.1, weight_decay=1e-4, layer_decay=0.7)
    scales = {group["lr_scale"] for group in optimizer.param_groups}
    assert len(scales) == 1 + 9 + 1  # stem, nine blocks, head
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters()
    )


@pytest.mark.skipif(not hasattr(ResNet, "set_grad_checkpointing"), reason="ResNet has no set_grad_checkpointing")
def test_grad_checkpointing_gives_the_same_gradients():
    model = timm.create_model("se_nlsam_resnet20")
    x = _cifar_input()
    model(x).sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not hasattr(ResNet, "forward_intermediates"), reason="ResNet has no forward_intermediates")
def test_forward_intermediates_and_getter_features():
    model = timm.create_model("nlsam_resnet20").eval()
    x = _cifar_input()
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [f.shape[1] for f in intermediates] == [16, 32, 64]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [f.shape[1] for f in last_two] == [32, 64]
    getter = timm.create_model("nlsam_resnet20", features_only=True, feature_cls="getter", out_indices=(0, 1))
    assert getter.feature_info.channels() == [16, 32]
    assert [f.shape[1:] for f in getter(x)] == [(16, 32, 32), (32, 16, 16)]
