"""nlsam.insert: attention into torchvision, timm and nlsam ResNets and any other network."""

import pytest
import torch
from torch import nn

import nlsam
from nlsam.attention import NLSAM, SqueezeExcite
from nlsam.models.insert import InsertReport

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_torchvision_resnet50_identity_init_keeps_outputs_and_learns():
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.randn(2, 3, 64, 64)
    before = _outputs(model, x)
    report = nlsam.insert(model, "nlsam", input_size=64, init="identity")
    assert isinstance(report, InsertReport) and len(report) == 13  # stages 3, 4, 5: 4 + 6 + 3
    assert (_outputs(model, x) - before).abs().max() <= 1e-5
    model(x).logsumexp(1).sum().backward()
    for insertion in report:
        grads = [p.grad for p in insertion.module.parameters()]
        assert grads and all(g is not None for g in grads)
        assert any(g.abs().sum() > 0 for g in grads), insertion.path


def test_resnet18_paper_init_changes_outputs():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    before = _outputs(model, x)
    report = nlsam.insert(model, "nlsam", input_size=64)
    assert [i.path for i in report][:2] == ["layer2.0.bn2.1", "layer2.1.bn2.1"]
    assert (_outputs(model, x) - before).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["wide_resnet50_2", "resnext50_32x4d"])
def test_wide_and_resnext_get_modules_in_the_right_blocks(arch):
    model = getattr(torchvision.models, arch)()
    report = nlsam.insert(model, "se+nlsam", input_size=64)
    assert len(report) == 16  # SE in every block, NL-SAM in stages 3-5
    for stage, layer in zip((2, 3, 4, 5), (model.layer1, model.layer2, model.layer3, model.layer4)):
        for block in layer:
            assert isinstance(block.bn3, nn.Sequential) and isinstance(block.bn3[0], nn.BatchNorm2d)
            kinds = [type(m) for m in block.bn3[1].modules()]
            assert SqueezeExcite in kinds and (NLSAM in kinds) == (stage >= 3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_timm_resnet50_se_slot():
    torch.manual_seed(0)
    model = timm.create_model("resnet50").eval()
    x = torch.randn(1, 3, 64, 64)
    before = _outputs(model, x)
    report = nlsam.insert(model, "nlsam", input_size=64, init="identity")
    assert len(report) == 13 and all(i.path.endswith(".se") for i in report)
    assert isinstance(model.layer4[2].se, NLSAM) and model.layer1[0].se is None
    assert (_outputs(model, x) - before).abs().max() <= 1e-5


def test_timm_existing_se_is_kept_and_runs_first():
    model = timm.create_model("seresnet50")
    old = model.layer3[0].se
    nlsam.insert(model, "nlsam", stages=[4], input_size=64)
    assert isinstance(model.layer3[0].se, nn.Sequential)
    assert model.layer3[0].se[0] is old and isinstance(model.layer3[0].se[1], NLSAM)


@pytest.mark.parametrize("arch,attention", [("resnet20", "se+nlsam"), ("resnet20", "bam"), ("resnet50", "nlsam")])
def test_nlsam_resnet_gets_the_layout_of_create_model(arch, attention):
    built = nlsam.create_model(arch, attention=attention)
    model = nlsam.create_model(arch)
    report = nlsam.insert(model, attention)
    assert list(model.state_dict()) == list(built.state_dict())
    assert report.params == _params(built) - _params(nlsam.create_model(arch))


def test_default_pool_at_224_and_lowered_at_other_sizes():
    model = torchvision.models.resnet50()
    pools = {i.stage: i.module.pool for i in nlsam.insert(model, "nlsam")}
    assert pools == {3: 4, 4: 2, 5: 1}  # every stage pooled to 7 x 7, as nlsam's ResNet-50
    model = torchvision.models.resnet50()
    report = nlsam.insert(model, "nlsam", input_size=80)  # stages 3-5: 10x10, 5x5, 3x3
    assert {i.stage: (i.feature_size, i.module.pool) for i in report} == {
        3: ((10, 10), 2),
        4: ((5, 5), 1),
        5: ((3, 3), 1),
    }


def test_report_totals_and_table():
    model = torchvision.models.resnet18()
    before = _params(model)
    report = nlsam.insert(model, "cbam+nlsam", input_size=64)
    assert report.params == _params(model) - before == sum(i.params for i in report)
    assert report.params_before == before
    assert report.flops == sum(i.flops for i in report) > 0
    text = str(report)
    assert "CBAM + NL-SAM inserted in ResNet at 3x64x64" in text
    assert "layer4.1.bn2.1" in text and "512x2x2" in text and "total" in text.splitlines()[-1]


def test_train_mode_is_restored():
    model = torchvision.models.resnet18().train()
    nlsam.insert(model, "se", input_size=64)
    assert all(m.training for m in model.modules())


def test_vgg11_after_names():
    model = torchvision.models.vgg11().eval()
    report = nlsam.insert(model, "nlsam", after=["features.7", "features.12"], input_size=64)
    assert [(i.path, i.shape) for i in report] == [("features.7.1", "256x16x16"), ("features.12.1", "512x8x8")]
    assert isinstance(model.features[7], nn.Sequential) and isinstance(model.features[7][0], nn.ReLU)
    assert _outputs(model, torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_mobilenet_after_predicate_identity():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small().eval()
    x = torch.randn(1, 3, 64, 64)
    before = _outputs(model, x)
    report = nlsam.insert(
        model,
        "se+nlsam",
        after=lambda name, m: name in ("features.3", "features.8"),
        input_size=64,
        init="identity",
        nlsam_reduction=4,  # features.8: 4 x 4 pooled by 2, N = 4 positions
    )
    assert [(i.path, i.channels) for i in report] == [("features.3.1", 24), ("features.8.1", 48)]
    assert (_outputs(model, x) - before).abs().max() <= 1e-5


def test_error_unrecognised_network():
    with pytest.raises(ValueError, match=r"no residual block .* in VGG; .*after=\['features.0'\]"):
        nlsam.insert(torchvision.models.vgg11(), "nlsam")


def test_error_stage_that_does_not_exist():
    with pytest.raises(ValueError, match=r"stage\(s\) \[6\] do not exist .*valid stages: 2, 3, 4, 5"):
        nlsam.insert(torchvision.models.resnet18(), "nlsam", stages=[5, 6])
    with pytest.raises(ValueError, match="valid stages: 1, 2, 3"):
        nlsam.insert(nlsam.create_model("resnet20"), "nlsam", stages=[4])


class _Blocks(nn.Module):
    """A stage that holds its one block by name, not as a sequence."""

    def __init__(self):
        super().__init__()
        self.add_module("0", torchvision.models.resnet.BasicBlock(8, 8))

    def forward(self, x):
        return self._modules["0"](x)


class _TwoStages(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1, self.layer2 = _Blocks(), _Blocks()

    def forward(self, x):
        return self.layer2(self.layer1(self.conv(x)))


def test_error_stage_attention_in_a_stage_that_is_not_a_sequence():
    model = _TwoStages()
    keys = list(model.state_dict())
    with pytest.raises(ValueError, match=r"'layer1' holds its blocks in a _Blocks, not an nn.Sequential.*after="):
        nlsam.insert(model, "bam", input_size=32)
    assert list(model.state_dict()) == keys
    assert len(nlsam.insert(model, "se", input_size=32, channel_reduction=4)) == 2  # in the blocks: fine


def test_error_after_name_that_is_not_a_module():
    with pytest.raises(
        ValueError, match=r"'features.88' \(in after=\) is not a module of VGG; did you mean features.8"
    ):
        nlsam.insert(torchvision.models.vgg11(), "nlsam", after=["features.88"], input_size=64)


def test_error_pool_that_does_not_divide_leaves_the_model_unchanged():
    model = torchvision.models.resnet18()
    keys = list(model.state_dict())
    with pytest.raises(
        ValueError,
        match=r"does not fit layer4.0.bn2 \(stage 5\), a 512x2x2 feature map at input size 64x64.*valid nlsam_pool k here: 1, 2",
    ):
        # (r = 1: stage 4's 4 x 4 map pooled by 4 has one position, fewer than the default r)
        nlsam.insert(model, "nlsam", input_size=64, nlsam_pool=4, nlsam_reduction=1)
    assert list(model.state_dict()) == keys


def test_error_unknown_attention_option_and_init():
    model = torchvision.models.resnet18()
    with pytest.raises(ValueError, match="unknown attention 'nlsma'"):
        nlsam.insert(model, "nlsma")
    with pytest.raises(ValueError, match="unknown attention option 'nlsam_poll'"):
        nlsam.insert(model, "nlsam", nlsam_poll=2)
    with pytest.raises(ValueError, match="unknown init 'zero'; valid: paper, identity"):
        nlsam.insert(model, "nlsam", init="zero")
    with pytest.raises(ValueError, match="stages= chooses residual blocks"):
        nlsam.insert(model, "nlsam", stages=[3], after=["layer1"])
