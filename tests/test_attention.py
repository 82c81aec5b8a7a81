import pytest
import torch
import torch.nn.functional as F

import nlsam
from nlsam.attention import (
    ATTENTION_NAMES,
    BAM,
    NLSAM,
    CBAMChannelGate,
    CBAMSpatialGate,
    GatherExcite,
    SqueezeExcite,
    create_attention,
)


def nlsam_param_formula(n: int, r: int) -> int:
    hidden = n // r
    return n * hidden + hidden + hidden * n + n


@pytest.mark.parametrize("size,k,r", [(16, 2, 8), (8, 2, 8), (32, 1, 8), (32, 0, 16), (28, 4, 2), (12, 3, 4)])
def test_nlsam_parameter_count_matches_formula(size, k, r):
    module = NLSAM(size, pool=k, reduction=r)
    n = (size // max(k, 1)) ** 2
    assert sum(p.numel() for p in module.parameters()) == nlsam_param_formula(n, r)
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 and all(m.bias is not None for m in linears)


def test_nlsam_shape_range_and_gradients():
    torch.manual_seed(0)
    module = NLSAM((16, 12), pool=2, reduction=8)
    x = torch.randn(3, 5, 16, 12, requires_grad=True)
    out = module(x)
    assert out.shape == x.shape
    att = module.attention_map(x)
    assert att.shape == (3, 1, 16, 12)
    assert (att > 0).all() and (att < 1).all()
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_nlsam_matches_paper_steps_by_hand():
    torch.manual_seed(0)
    module = NLSAM(8, pool=2, reduction=4)
    x = torch.randn(2, 6, 8, 8)
    # context collecting: channel mean, 2x2 average pooling with stride 2
    pooled = F.avg_pool2d(x.mean(1, keepdim=True), 2).flatten(1)
    # transformation: fc -> ReLU -> fc -> sigmoid over all 16 positions
    hidden = torch.relu(pooled @ module.fc1.weight.T + module.fc1.bias)
    weights = torch.sigmoid(hidden @ module.fc2.weight.T + module.fc2.bias).view(2, 1, 4, 4)
    # distribution: nearest upsampling = each weight repeated over its 2x2 cell
    expected = x * weights.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(module(x), expected)


def test_nlsam_is_nonlocal():
    """Changing one corner of the input changes the map at the opposite corner."""
    torch.manual_seed(0)
    module = NLSAM(8, pool=1, reduction=2)
    x = torch.randn(1, 4, 8, 8)
    y = x.clone()
    y[..., 0, 0] += 5.0
    assert not torch.allclose(module.attention_map(x)[..., 7, 7], module.attention_map(y)[..., 7, 7])


def test_adaptive_path_equals_kxk_pooling_at_training_size():
    torch.manual_seed(0)
    module = NLSAM(16, pool=2, reduction=8)
    x = torch.randn(2, 8, 16, 16)
    # force the adaptive branch by pretending the module was trained at another size
    adaptive = NLSAM(16, pool=2, reduction=8)
    adaptive.load_state_dict(module.state_dict())
    adaptive.feature_size = (-1, -1)
    torch.testing.assert_close(module(x), adaptive(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("hw", [(24, 24), (10, 14), (7, 7), (33, 17)])
def test_nlsam_runs_at_any_input_size(hw):
    module = NLSAM(16, pool=2, reduction=8)
    x = torch.randn(2, 4, *hw)
    att = module.attention_map(x)
    assert att.shape == (2, 1, *hw)
    assert (att >= 0).all() and (att <= 1).all()


def test_nlsam_adaptive_pooling_at_double_size_averages_2x_larger_cells():
    torch.manual_seed(0)
    module = NLSAM(8, pool=2, reduction=4)
    x = torch.randn(1, 3, 16, 16)
    expected_context = F.avg_pool2d(x.mean(1, keepdim=True), 4).flatten(1)
    captured = {}
    module.fc1.register_forward_pre_hook(lambda m, inp: captured.update(context=inp[0].clone()))
    module(x)
    torch.testing.assert_close(captured["context"], expected_context)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic", "area"])
def test_interpolation_modes(mode):
    module = NLSAM(16, pool=4, reduction=4, interpolation=mode)
    att = module.attention_map(torch.randn(2, 3, 16, 16))
    assert att.shape == (2, 1, 16, 16)
    assert (att >= 0).all() and (att <= 1).all()


def test_nlsam_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="not divisible by the pooling kernel k=3"):
        NLSAM(16, pool=3)
    with pytest.raises(ValueError, match="valid: nearest, bilinear, bicubic, area"):
        NLSAM(16, interpolation="cubic")
    with pytest.raises(ValueError, match="reduction"):
        NLSAM(16, reduction=0)
    with pytest.raises(ValueError, match="feature_size"):
        NLSAM((16, 16, 3))


@pytest.mark.parametrize(
    "module",
    [
        SqueezeExcite(16, reduction=4),
        GatherExcite(16, 8, reduction=4),
        CBAMChannelGate(16, reduction=4),
        CBAMSpatialGate(),
        BAM(16, reduction=4),
    ],
    ids=["se", "ge", "cbam_channel", "cbam_spatial", "bam"],
)
def test_compared_modules_shape_and_gradients(module):
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    out = module(x)
    assert out.shape == x.shape
    out.sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, name


def test_se_parameter_count():
    # two 1x1 convolutions with bias: C*C/r + C/r + C/r*C + C
    assert sum(p.numel() for p in SqueezeExcite(64, reduction=4).parameters()) == 64 * 16 * 2 + 16 + 64


def test_ge_gather_is_global_depthwise_and_runs_at_other_sizes():
    module = GatherExcite(16, (8, 8), reduction=4)
    assert module.gather.groups == 16 and module.gather.kernel_size == (8, 8)
    module.eval()
    assert module(torch.randn(1, 16, 12, 10)).shape == (1, 16, 12, 10)


def test_cbam_spatial_gate_uses_max_and_mean():
    gate = CBAMSpatialGate().eval()
    x = torch.randn(1, 4, 6, 6)
    pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
    torch.testing.assert_close(gate.attention_map(x), torch.sigmoid(gate.norm(gate.conv(pooled))))


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_create_attention_compositions(name):
    module = create_attention(name, 32, 8, nlsam_pool=2, nlsam_reduction=4, channel_reduction=4)
    x = torch.randn(2, 32, 8, 8)
    assert module(x).shape == x.shape
    has_nlsam = any(isinstance(m, NLSAM) for m in module.modules())
    assert has_nlsam == ("nlsam" in name)
    if name == "cbam+nlsam":
        kinds = [type(m) for m in module]
        assert kinds == [CBAMChannelGate, NLSAM]


def test_create_attention_none_and_unknown():
    assert isinstance(create_attention(None, 8, 4), torch.nn.Identity)
    assert isinstance(create_attention("none", 8, 4), torch.nn.Identity)
    with pytest.raises(
        ValueError, match="unknown attention 'sam' \\(did you mean 'nlsam'\\?\\); valid: none, nlsam, se"
    ):
        create_attention("sam", 8, 4)


def test_top_level_exports():
    assert nlsam.NLSAM is NLSAM
    assert "se+nlsam" in nlsam.ATTENTION_NAMES
