"""The Python API and the inference paths meet bad input with one clear error naming what was
wrong and what is valid: insert, profile, the attention registry, NL-SAM's inputs and size,
non-finite networks in eval / predict / export, input sizes, 16-bit images."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import nlsam
from nlsam.attention import NLSAM, SqueezeExcite, list_attention, register_attention, register_composition, registry
from nlsam.cli import main
from nlsam.cost import profile


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def clean_registry():
    """Whatever a test registers is gone afterwards; the built-in parts are as they were."""
    parts, compositions = dict(registry._PARTS), dict(registry._COMPOSITIONS)
    yield
    registry._PARTS.clear()
    registry._PARTS.update(parts)
    registry._COMPOSITIONS.clear()
    registry._COMPOSITIONS.update(compositions)


def _one_line_error(capsys, argv):
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# insert and profile
# ---------------------------------------------------------------------------------------------


def test_insert_twice_is_refused_naming_the_blocks():
    model = nlsam.create_model("resnet20")
    nlsam.insert(model, "nlsam")
    before = _params(model)
    with pytest.raises(ValueError) as info:
        nlsam.insert(model, "nlsam")
    message = str(info.value)
    assert "already hold" in message and "stages.layer2.0.attention" in message and "NLSAM" in message
    assert _params(model) == before  # nothing added
    # another attention in the same blocks is fine: it runs after the one already there
    report = nlsam.insert(model, "se")
    assert len(report) == 9


def test_insert_twice_after_named_modules_is_refused():
    def net():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))

    model = net()
    nlsam.insert(model, "nlsam", after=["0"], input_size=16)
    with pytest.raises(ValueError, match="already hold"):
        nlsam.insert(model, "nlsam", after=["0"], input_size=16)
    with pytest.raises(ValueError, match="already hold"):  # a predicate picking the same conv
        nlsam.insert(model, "nlsam", after=lambda name, m: name == "0.0", input_size=16)
    nlsam.insert(model, "nlsam", after=["2"], input_size=16)  # another place is fine
    assert sum(isinstance(m, NLSAM) for m in model.modules()) == 2


def test_insert_and_profile_take_a_module_not_a_name():
    with pytest.raises(TypeError, match=r"create_model\('resnet18'\)"):
        nlsam.insert("resnet18", "nlsam")
    with pytest.raises(TypeError, match=r"create_model\('resnet20'\)"):
        profile("resnet20")
    with pytest.raises(TypeError, match="nn.Module"):
        nlsam.insert(None, "nlsam")


# ---------------------------------------------------------------------------------------------
# the attention registry
# ---------------------------------------------------------------------------------------------


class _Gate(nn.Module):
    def __init__(self, channels, init="paper"):
        super().__init__()
        self.init = init

    def forward(self, x):
        return x


class _Shrink(nn.Module):
    """A broken attention module: it halves the feature map."""

    def __init__(self, channels, init="paper"):
        super().__init__()
        self.init = init

    def forward(self, x):
        return x[:, :, ::2, ::2]


def test_registering_over_a_builtin_needs_overwrite(clean_registry):
    with pytest.raises(ValueError, match="overwrite=True") as info:
        register_attention("nlsam", _Gate)
    assert "built-in" in str(info.value)
    assert registry._PARTS["nlsam"].builder is NLSAM  # unchanged
    nlsam.create_model("resnet20", attention="nlsam")  # still builds
    with pytest.raises(ValueError, match="overwrite=True"):
        register_attention("cbam", _Gate)  # a built-in composition's name
    with pytest.raises(ValueError, match="overwrite=True"):
        register_composition("se+nlsam", ("se",))
    register_attention("nlsam", _Gate, overwrite=True)
    assert registry._PARTS["nlsam"].builder is _Gate


@pytest.mark.parametrize("name", ["none", "null", "attention", "channel"])
def test_reserved_names_are_refused_always(clean_registry, name):
    with pytest.raises(ValueError, match="reserved"):
        register_attention(name, _Gate, overwrite=True)
    assert name not in list_attention()


def test_a_users_own_part_can_be_registered_again(clean_registry):
    register_attention("mygate", _Gate)
    register_attention("mygate", SqueezeExcite)  # replaces the user's own part, as documented
    assert registry._PARTS["mygate"].builder is SqueezeExcite


def test_a_part_that_changes_the_feature_size_is_named(clean_registry):
    register_attention("shrink", _Shrink)
    with pytest.raises(ValueError) as info:
        nlsam.create_model("resnet20", attention="shrink")
    message = str(info.value)
    assert "'shrink'" in message and "_Shrink" in message
    assert "16x32x32" in message and "16x16x16" in message
    # on the meta device too (how training checks a configuration before building it)
    with torch.device("meta"), pytest.raises(ValueError, match="'shrink'"):
        nlsam.create_model("resnet20", attention="shrink")


# ---------------------------------------------------------------------------------------------
# NL-SAM's inputs and size
# ---------------------------------------------------------------------------------------------


def test_nlsam_refuses_a_3d_tensor_naming_its_shape():
    module = NLSAM(8)
    with pytest.raises(ValueError, match=r"B x C x H x W.*\[4, 8, 8\]"):
        module(torch.randn(4, 8, 8))
    with pytest.raises(ValueError, match=r"\[4, 8, 8\]"):
        module.attention_map(torch.randn(4, 8, 8))
    with pytest.raises(ValueError, match=r"SqueezeExcite.*\[4, 8, 8\]"):
        SqueezeExcite(4, reduction=2)(torch.randn(4, 8, 8))


def test_nlsam_on_an_empty_batch_returns_an_empty_output():
    module = NLSAM(8)
    x = torch.randn(0, 4, 8, 8)
    assert module(x).shape == (0, 4, 8, 8)
    assert module.attention_map(x).shape == (0, 1, 8, 8)
    assert module(torch.randn(0, 4, 16, 12)).shape == (0, 4, 16, 12)  # another size too


def test_nlsam_refuses_a_huge_fc_layer_before_allocating():
    with pytest.raises(ValueError) as info:
        NLSAM(1024, pool=1, reduction=1)  # N = 1,048,576 positions: 10^12 weights
    message = str(info.value)
    assert "1,048,576" in message and "at most" in message
    with pytest.raises(ValueError, match="NL-SAM"):  # stage 2: a 1024 x 1024 grid
        nlsam.create_model("resnet20", attention="nlsam", input_size=4096)
    NLSAM(64, pool=1, reduction=8)  # 4096 x 512: fine


# ---------------------------------------------------------------------------------------------
# input sizes
# ---------------------------------------------------------------------------------------------


def test_input_size_is_bounded(tmp_path, capsys):
    from nlsam._sizes import MAX_INPUT_PIXELS
    from nlsam.analysis.predict import parse_input_size

    with pytest.raises(ValueError, match=f"at most {MAX_INPUT_PIXELS}"):
        parse_input_size([100000])
    assert parse_input_size([MAX_INPUT_PIXELS]) == (MAX_INPUT_PIXELS, MAX_INPUT_PIXELS)
    image = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(image)
    for command in ("predict", "cam", "attention"):
        err = _one_line_error(capsys, [command, tmp_path / "no-run", image, "--input-size", "100000"])
        assert "--input-size" in err and str(MAX_INPUT_PIXELS) in err, err
    with pytest.raises(ValueError, match="at most"):
        profile(nlsam.create_model("resnet20"), input_size=100000)
    with pytest.raises(ValueError, match="insert: input_size takes at most"):
        nlsam.insert(nlsam.create_model("resnet20"), "nlsam", input_size=100000)
    err = _one_line_error(capsys, ["profile", "resnet20", "--input-size", "100000"])
    assert str(MAX_INPUT_PIXELS) in err


# ---------------------------------------------------------------------------------------------
# networks whose outputs are not finite
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory):
    """A resnet20 + NL-SAM checkpoint for the built-in data, every parameter NaN."""
    from nlsam.data._builtin import BUILTIN_CLASSES
    from nlsam.engine import TrainConfig
    from nlsam.engine.checkpoint import save_checkpoint

    config = TrainConfig.from_dict(dict(data="builtin:256:64:0", model="resnet20", attention="nlsam")).to_dict()
    model = nlsam.create_model("resnet20", attention="nlsam", num_classes=len(BUILTIN_CLASSES))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    state = model.state_dict()
    meta = dict(
        classes=list(BUILTIN_CLASSES),
        in_chans=3,
        input_size=[32, 32],
        mean=[0.5] * 3,
        std=[0.25] * 3,
        data="builtin:256:64:0",
    )
    path = tmp_path_factory.mktemp("nan") / "nan.pt"
    save_checkpoint(dict(model=state, config=config, meta=meta, epoch=0), path)
    return path


def test_check_finite_outputs_names_the_broken_weights():
    from nlsam.engine.evaluate import check_finite_outputs

    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    check_finite_outputs(model, torch.ones(3, 2))  # finite: nothing to say
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with pytest.raises(ValueError) as info:
        check_finite_outputs(model, model(torch.ones(3, 2)))
    assert str(info.value) == (
        "the network's outputs are not finite (NaN/inf) on the first batch: "
        "its weights are broken (1 of 4 tensors hold NaN/inf)"
    )
    with pytest.raises(ValueError, match="weights are all finite"):
        check_finite_outputs(nn.Linear(2, 2), torch.tensor([[float("inf"), 0.0]]))


def test_eval_predict_export_say_the_outputs_are_not_finite(nan_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (120, 30, 200)).save(image)
    out = tmp_path / "model.torchscript.pt"
    for argv in (
        ["eval", nan_checkpoint, "--batch-size", "32"],
        ["predict", nan_checkpoint, image],
        ["export", nan_checkpoint, "--format", "torchscript", "--out", out],
    ):
        err = _one_line_error(capsys, argv)
        assert "outputs are not finite" in err and "tensors hold NaN" in err, err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# 16-bit images
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [200, 40000])
def test_a_16_bit_png_decodes_by_its_bit_depth(tmp_path, value):
    from nlsam.data._images import decode_image

    path = tmp_path / "gray16.png"
    Image.fromarray(np.full((8, 8), value, dtype=np.uint16)).save(path)
    with Image.open(path) as img:
        assert img.mode == "I;16"
    rgb = np.asarray(decode_image(path.read_bytes()))
    assert rgb.shape == (8, 8, 3)
    assert np.all(rgb == round(value * 255 / 65535)), rgb[0, 0]
