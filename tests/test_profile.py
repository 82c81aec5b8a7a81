"""Cost accounting (nlsam.cost): hand-computed counts, agreement with fvcore and the
published ResNet figures, the NL-SAM overhead on ResNet-50, and the `nlsam profile` command."""

import json

import pytest
import torch
from torch import nn

from nlsam import NLSAM, create_model
from nlsam.cli import main
from nlsam.cost import CostReport, overhead, profile


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The counts need one forward pass, not speed; a single intra-op thread keeps these tests
    fast when other processes compete for the cores (OpenMP spinning otherwise dominates)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# (a) hand-computed figures
# ---------------------------------------------------------------------------------------------


def test_one_nlsam_block_matches_the_hand_formula():
    C, H, W, k, r = 32, 16, 16, 2, 8
    N = (H // k) * (W // k)  # 64 positions after 2x2 pooling
    h = N // r  # 8 hidden units
    report = profile(NLSAM(feature_size=H, pool=k, reduction=r), (C, H, W))

    # fc1 (N -> N/r) and fc2 (N/r -> N), weights and biases
    assert report.params == N * h + h + h * N + N == 1096
    assert report.trainable_params == report.params
    # the two fc layers are the only multiply-accumulates
    assert report.macs == N * h + h * N == 2 * N * h == 1024
    expected_by_op = {
        "addmm": 2 * (2 * N * h),  # 2 FLOPs per MAC
        "sum": C * H * W,  # channel mean, as a sum (1 per input element) ...
        "div": H * W,  # ... divided by C on the one-channel map
        "avg_pool2d": N * k * k,  # 1 per element read = output elements x kernel area
        "relu": h,  # 1 per output element
        "sigmoid": N,  # 1 per output element
        # nearest upsampling by k: a broadcast of the pooled map over k x k blocks (0, no upsample op)
        "mul": C * H * W,  # x * map, 1 per output element
    }
    assert report.flops_by_op == expected_by_op
    extra = C * H * W + H * W + N * k * k + h + N + C * H * W
    assert report.extra_flops == extra == 16968
    assert report.flops == 2 * 2 * N * h + extra == 19016
    assert report.uncounted_ops == {}


def test_interpolation_modes_and_adaptive_path():
    C, H = 4, 16
    N = (H // 2) ** 2
    bilinear = profile(NLSAM(H, pool=2, reduction=8, interpolation="bilinear"), (C, H, H))
    assert bilinear.flops_by_op["upsample_bilinear2d"] == 4 * H * H  # 4 taps per output
    bicubic = profile(NLSAM(H, pool=2, reduction=8, interpolation="bicubic"), (C, H, H))
    assert bicubic.flops_by_op["upsample_bicubic2d"] == 16 * H * H
    assert bicubic.flops_by_op["clamp"] == H * H
    # area upsampling is an adaptive average pooling to H x H: 1 read per output element
    area = profile(NLSAM(H, pool=2, reduction=8, interpolation="area"), (C, H, H))
    assert area.flops_by_op["_adaptive_avg_pool2d"] == H * H
    # nearest by an integer factor is a broadcast over k x k blocks: no upsampling op at all
    nearest = profile(NLSAM(H, pool=2, reduction=8), (C, H, H))
    assert not any(op.startswith(("upsample", "_upsample")) for op in nearest.flops_by_op)
    assert bilinear.flops == nearest.flops + 4 * H * H and bicubic.flops == nearest.flops + 17 * H * H
    # another input size: adaptive pooling of a 20x20 map to the trained 8x8 grid
    other = profile(NLSAM(H, pool=2, reduction=8), (C, 20, 20))
    # windows along one side: [floor(i*20/8), ceil((i+1)*20/8)) = [0,3), [2,5), [5,8), [7,10),
    # [10,13), [12,15), [15,18), [17,20): eight windows of 3, 24 reads (> 20: they overlap)
    assert other.flops_by_op["_adaptive_avg_pool2d"] == 24 * 24  # on the 1-channel mean map
    # the 8x8 grid does not tile 20x20: nearest upsampling still runs, 1 tap per output element
    assert other.flops_by_op["upsample_nearest2d"] == 20 * 20
    assert other.macs == 2 * N * (N // 8)
    # a 24x24 map is tiled by the 8x8 grid (3x3 blocks): the broadcast again, no upsampling
    tiled = profile(NLSAM(H, pool=2, reduction=8), (C, 24, 24))
    assert "upsample_nearest2d" not in tiled.flops_by_op and tiled.flops_by_op["mul"] == C * 24 * 24


def test_elementary_rules():
    # overlapping max pooling: output elements x kernel area
    assert profile(nn.MaxPool2d(3, stride=2, padding=1), (4, 8, 8)).flops == 4 * 4 * 4 * 9
    # non-divisible adaptive pooling: 5 -> 3 has windows of 2, 3, 2
    assert profile(nn.AdaptiveAvgPool2d(3), (2, 5, 5)).flops == 2 * 7 * 7
    # batch norm with running statistics: 2 per element
    assert profile(nn.BatchNorm2d(3), (3, 4, 4)).flops == 2 * 3 * 16
    # convolution: output elements x C_in/groups x kernel area MACs, bias not counted
    conv = profile(nn.Conv2d(4, 6, 3, padding=1, groups=2), (4, 5, 5))
    assert conv.macs == 6 * 25 * 2 * 9 and conv.flops == 2 * conv.macs
    # data movement is free
    assert profile(nn.Flatten(), (3, 4, 4)).flops == 0
    # activations PyTorch does not tag pointwise still cost 1 per element
    assert profile(nn.Hardswish(), (3, 4, 4)).flops == 3 * 16
    # scaled dot-product attention: L x S x (E + E_v) MACs per head
    report = profile(_SelfAttention(), (8, 4, 4))
    assert report.macs == 16 * 16 * (8 + 8) and report.uncounted_ops == {}


class _SelfAttention(nn.Module):
    """Parameter-free self-attention over the positions of a feature map (for the rule test)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2).unsqueeze(1)  # B x 1 x HW x C
        return nn.functional.scaled_dot_product_attention(tokens, tokens, tokens)


def test_breakdown_attribution_and_state_restored():
    model = create_model("resnet20", attention="se+nlsam").train()
    report = profile(model)
    assert isinstance(report, CostReport)
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    root = report.module("")
    assert (root.params, root.macs, root.flops) == (report.params, report.macs, report.flops)
    stages = [report.module(f"stages.layer{i}") for i in (1, 2, 3)]
    assert all(row.type == "Sequential" for row in stages)
    nlsam_rows = [row for row in report.modules if row.type == "NLSAM"]
    assert len(nlsam_rows) == 6  # blocks of stages 2 and 3
    total = report.type_cost("NLSAM")
    assert total.count == 6
    assert total.flops == sum(row.flops for row in nlsam_rows)
    assert total.params == sum(row.params for row in nlsam_rows)
    assert report.type_cost("SqueezeExcite").count == 9
    assert report.type_cost("BAM").count == 0
    d = report.to_dict()
    json.dumps(d)
    assert {"params", "macs", "flops", "modules", "by_type", "convention"} <= set(d)
    text, md = report.table(), report.markdown()
    assert "stages.layer2.0.attention.1" in text and "| NLSAM" in md


# ---------------------------------------------------------------------------------------------
# (b) agreement with fvcore and the published figures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50():
    """The plain ImageNet ResNet-50 (eval mode) and its report, built once for this file."""
    model = create_model("resnet50").eval()
    return model, profile(model)


@pytest.mark.parametrize("name,size", [("resnet20", 32), ("resnet56", 32), ("resnet50", 224)])
def test_conv_linear_macs_match_fvcore(name, size, request):
    fvcore_nn = pytest.importorskip("fvcore.nn")
    if name == "resnet50":
        model, report = request.getfixturevalue("resnet50")
    else:
        model = create_model(name).eval()
        report = profile(model)
    analysis = fvcore_nn.FlopCountAnalysis(model, torch.randn(1, 3, size, size))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = analysis.by_operator()
    fv_macs = by_op["conv"] + by_op.get("linear", 0) + by_op.get("addmm", 0)
    assert report.macs == fv_macs
    assert report.macs_by_op["convolution"] == by_op["conv"]
    # fvcore also counts eval-mode batch norm as 2 per element, as we do
    assert report.flops_by_op["native_batch_norm"] == by_op["batch_norm"]


def test_published_resnet_figures(resnet50):
    r50 = resnet50[1]
    assert r50.params == 25_557_032  # torchvision ResNet-50
    assert r50.macs == 4_089_184_256  # the usual "4.09 GFLOPs" (MACs) at 224
    assert r50.flops == 2 * r50.macs + r50.extra_flops
    assert 8.2e9 < r50.flops < 8.25e9
    r110 = profile(create_model("resnet110"))
    assert 1.72e6 < r110.params < 1.74e6  # "1.7M"
    assert 252.5e6 < r110.macs < 253.5e6  # "253M"


def test_torchvision_resnet50_counts_the_same(resnet50):
    torchvision = pytest.importorskip("torchvision")
    ours = resnet50[1]
    theirs = profile(torchvision.models.resnet50(), 224)
    assert (theirs.params, theirs.macs, theirs.flops) == (ours.params, ours.macs, ours.flops)


# ---------------------------------------------------------------------------------------------
# (c) the paper's overhead of NL-SAM on ResNet-50: "+0.03M params, +0.007 GFLOPs"
# ---------------------------------------------------------------------------------------------


def test_resnet50_nlsam_overhead(resnet50):
    base = resnet50[1]
    with_nlsam = profile(create_model("resnet50", attention="nlsam"))
    extra = overhead(with_nlsam, base)
    assert extra["params"] == 31_525  # 13 modules x (49*24 + 24 + 24*49 + 49)
    assert 0.025 < extra["mparams"] < 0.035
    assert 0.005 < extra["gflops"] < 0.009
    # the channel sums (1 per element), their division by C (1 per position: 4 x 28^2 + 6 x 14^2
    # + 3 x 7^2 = 4,459), pooling, the two fc layers, sigmoid and the multiply (the nearest
    # upsampling of the 7 x 7 grid is a broadcast over k x k blocks: 0)
    assert extra["flops"] == 6_292_696
    # the overhead is exactly the cost of the NL-SAM modules
    nlsam_total = with_nlsam.type_cost("NLSAM")
    assert nlsam_total.count == 13
    assert (nlsam_total.params, nlsam_total.macs, nlsam_total.flops) == (extra["params"], extra["macs"], extra["flops"])


# ---------------------------------------------------------------------------------------------
# (d) the command line
# ---------------------------------------------------------------------------------------------


def test_cli_table(capsys):
    assert main(["profile", "resnet20", "--attention", "nlsam"]) == 0
    out = capsys.readouterr().out
    assert "Params (M)" in out and "GFLOPs" in out and "+GFLOPs (%)" in out
    lines = [line for line in out.splitlines() if line.startswith("resnet20")]
    assert len(lines) == 2 and "none" in lines[0] and "nlsam" in lines[1] and "+" in lines[1]


def test_cli_breakdown(capsys):
    assert main(["profile", "resnet20", "--attention", "cbam+nlsam", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "stages.layer3" in out and "NLSAM" in out and "CBAMChannelGate" in out


def test_cli_json(capsys):
    assert (
        main(["profile", "resnet20", "--attention", "nlsam", "--json", "--num-classes", "100", "--input-size", "32"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert {"params", "flops", "macs", "baseline", "overhead"} <= set(data)
    assert data["input_size"] == [3, 32, 32]
    assert data["overhead"]["params"] == data["params"] - data["baseline"]["params"] > 0
    assert data["overhead"]["flops"] == data["flops"] - data["baseline"]["flops"] > 0
    assert 0 < data["overhead"]["flops_pct"] < 1


def test_cli_no_attention(capsys):
    assert main(["profile", "resnet20", "--attention", "none", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["attention"] == "none" and data["overhead"]["flops"] == 0


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["profile", "resnet9000"], "resnet20"),
        (["profile", "resnet20", "--attention", "nonlocal"], "nlsam"),
        (["profile", "resnet20", "--input-size", "32", "32", "32"], "--input-size"),
    ],
)
def test_cli_errors(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err and needle in err
