import pytest
import torch

import nlsam
from nlsam import NLSAM, create_model, list_models
from nlsam.attention import ATTENTION_NAMES, BAM, SqueezeExcite
from nlsam.models import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResNet

CIFAR = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet164", "preresnet110", "preresnet164"]
IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def test_list_models():
    assert set(CIFAR + IMAGENET) <= set(list_models())


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_models_forward_backward(name):
    model = create_model(name, num_classes=100, attention="nlsam")
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 100)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_models_native_and_second_size(name):
    model = create_model(name, attention="nlsam")
    out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 160, 192)).shape == (1, 1000)


@pytest.mark.parametrize("attention", [None, *ATTENTION_NAMES])
def test_every_parameter_gets_a_gradient(attention):
    torch.manual_seed(0)
    model = create_model("resnet20", attention=attention)
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


@pytest.mark.parametrize("attention", [None, *ATTENTION_NAMES])
def test_compositions_at_other_input_sizes(attention):
    model = create_model("resnet20", attention=attention).eval()
    with torch.no_grad():
        for size in [(32, 32), (40, 24), (64, 64)]:
            assert model(torch.randn(2, 3, *size)).shape == (2, 10)


def test_parameter_counts_match_the_literature():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(create_model("resnet50")) == 25_557_032  # torchvision's ResNet-50
    assert abs(count(create_model("resnet110")) / 1e6 - 1.7) < 0.05  # He et al. 2015: 1.7M
    assert abs(count(create_model("resnet164", num_classes=10)) / 1e6 - 1.7) < 0.05
    assert abs(count(create_model("resnet20")) / 1e6 - 0.27) < 0.01


def test_nlsam_placement_follows_the_paper():
    model = create_model("resnet110", attention="nlsam")
    per_stage = {
        name: [m for m in stage.modules() if isinstance(m, NLSAM)] for name, stage in model.stages.named_children()
    }
    assert [len(v) for v in per_stage.values()] == [0, 18, 18]
    assert {(m.feature_size, m.pool, m.reduction) for m in per_stage["layer2"]} == {((16, 16), 2, 8)}
    assert {(m.feature_size, m.grid_size) for m in per_stage["layer3"]} == {((8, 8), (4, 4))}
    n2, n3 = 64, 16
    extra = 18 * (2 * n2 * (n2 // 8) + n2 // 8 + n2) + 18 * (2 * n3 * (n3 // 8) + n3 // 8 + n3)

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(model) - count(create_model("resnet110")) == extra


def test_resnet50_nlsam_overhead_matches_paper():
    model = create_model("resnet50", attention="nlsam")
    modules = [m for m in model.modules() if isinstance(m, NLSAM)]
    assert len(modules) == 4 + 6 + 3
    assert {m.grid_size for m in modules} == {(7, 7)}
    extra = sum(p.numel() for m in modules for p in m.parameters())
    assert 0.025e6 < extra < 0.035e6  # the paper: +0.03M


def test_channel_attention_everywhere_nlsam_only_in_its_stages():
    model = create_model("resnet20", attention="se+nlsam")
    se = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    nl = [m for m in model.modules() if isinstance(m, NLSAM)]
    assert len(se) == 9 and len(nl) == 6


def test_bam_sits_between_stages():
    model = create_model("resnet20", attention="bam")
    assert [type(stage[-1]) is BAM for stage in model.stages] == [True, True, False]


def test_per_stage_k_and_r_and_custom_stages():
    model = create_model(
        "resnet56", attention="nlsam", nlsam_stages=[1, 3], nlsam_pool={1: 4, 3: 1}, nlsam_reduction={1: 16, 3: 4}
    )
    found = {(m.feature_size, m.pool, m.reduction) for m in model.modules() if isinstance(m, NLSAM)}
    assert found == {((32, 32), 4, 16), ((8, 8), 1, 4)}


def test_feature_sizes_follow_input_size():
    model = create_model("resnet20", attention="nlsam", input_size=64, in_chans=1)
    assert {m.feature_size for m in model.modules() if isinstance(m, NLSAM)} == {(32, 32), (16, 16)}
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)


def test_timm_style_interface():
    model = create_model("resnet20", attention="nlsam")
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 8, 8)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
    assert [f["reduction"] for f in model.feature_info] == [1, 2, 4]
    assert [f["num_chs"] for f in model.feature_info] == [16, 32, 64]
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.num_classes == 7
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)
    imagenet = create_model("resnet50")
    assert [f["reduction"] for f in imagenet.feature_info] == [4, 8, 16, 32]
    assert imagenet.num_features == 2048


def test_grad_checkpointing_after_pruning_stages():
    """A stage that prune_intermediate_layers replaced (an nn.Identity, not a sequence of blocks)
    still runs when training with gradient checkpointing."""
    model = create_model("resnet20", attention="nlsam")
    assert model.prune_intermediate_layers([0]) == [0]
    x = torch.randn(2, 3, 32, 32)
    expected = model.forward_features(x)
    model.set_grad_checkpointing(True)
    torch.testing.assert_close(model.forward_features(x), expected)
    assert expected.shape == (2, 16, 32, 32)


SMALL_BLOCKS = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact_basic": PreActBasicBlock,
    "preact_bottleneck": PreActBottleneck,
}


@pytest.mark.parametrize("block", SMALL_BLOCKS)
@pytest.mark.parametrize("attention", ["nlsam", "cbam+nlsam", "ge+nlsam", "bam"])
def test_torchscript(block, attention):
    """Every block type and every kind of attention module scripts (one block per stage keeps it quick)."""
    model = ResNet(
        SMALL_BLOCKS[block], [1, 1, 1], [16, 32, 64], stem="cifar", input_size=32, num_classes=10, attention=attention
    ).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize("name", ["resnet20", "preresnet164-small"])
def test_torch_export_cifar(name):
    if name == "resnet20":
        model = create_model(name, attention="se+nlsam").eval()
    else:  # the pre-activation bottleneck of preresnet164, one block per stage
        model = ResNet(
            PreActBottleneck, [1, 1, 1], [16, 32, 64], stem="cifar", input_size=32, num_classes=10, attention="se+nlsam"
        ).eval()
    x = torch.randn(2, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    torch.testing.assert_close(exported.module()(x), model(x))
    x5 = torch.randn(5, 3, 32, 32)
    torch.testing.assert_close(exported.module()(x5), model(x5))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet111'.*valid: .*resnet110"):
        create_model("resnet111")
    with pytest.raises(ValueError, match="unknown attention 'eca'; valid"):
        create_model("resnet20", attention="eca")
    with pytest.raises(ValueError, match="not divisible by the pooling kernel k=3"):
        create_model("resnet20", attention="nlsam", nlsam_pool=3)
    with pytest.raises(ValueError, match=r"valid stages: \[1, 2, 3\]"):
        create_model("resnet20", attention="nlsam", nlsam_stages=[4])
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 3, H, W\), got \[2, 1, 32, 32\]"):
        create_model("resnet20")(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="nlsam_pool has no value for stage 3"):
        create_model("resnet20", attention="nlsam", nlsam_pool={2: 2})
    with pytest.raises(TypeError):
        create_model("resnet20", not_an_option=1)


def test_readme_example():
    model = nlsam.create_model("resnet110", num_classes=100, attention="nlsam")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
