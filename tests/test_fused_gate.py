"""The fused gate epilogue (``nlsam.attention.add_attended`` / ``apply_gate``) against each
paper's formulation: ``shortcut + attention(x)`` with NL-SAM's map upsampled by
``F.interpolate`` and multiplied in, values and gradients, fp32 and bf16, NCHW and channels_last."""

from __future__ import annotations

import copy
from typing import Dict, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nlsam
from nlsam.attention import (
    NLSAM,
    AttentionSequence,
    CBAMChannelGate,
    CBAMSpatialGate,
    GatherExcite,
    SqueezeExcite,
    add_attended,
    apply_gate,
    create_attention,
)


def _paper(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's output as the paper writes it (NL-SAM: x times its upsampled map)."""
    if isinstance(module, NLSAM):
        return module._attend(x)
    if isinstance(module, nn.Sequential):
        for part in module:
            x = _paper(part, x)
        return x
    return module(x)


def _reference_forward(model: nn.Module) -> nn.Module:
    """``model`` computing every block as ``attention(x) + shortcut`` in the paper's formulation."""
    for module in model.modules():
        if isinstance(module, NLSAM):
            module.forward = module._attend  # type: ignore[method-assign]
        if hasattr(module, "split_gate"):
            module.register_forward_hook(lambda *args: None)  # a watched module runs unfused
    return model


MODULES = {
    "nlsam": lambda: NLSAM((8, 8), pool=2, reduction=2),
    "nlsam-k1": lambda: NLSAM((8, 8), pool=1, reduction=8),
    "nlsam-bilinear": lambda: NLSAM((8, 8), pool=2, reduction=2, interpolation="bilinear"),
    "se": lambda: SqueezeExcite(16, reduction=4),
    "ge": lambda: GatherExcite(16, (8, 8), reduction=4),
    "cbam_channel": lambda: CBAMChannelGate(16, reduction=4),
    "cbam_spatial": lambda: CBAMSpatialGate(),
    "se+nlsam": lambda: create_attention("se+nlsam", 16, (8, 8), se_reduction=4, nlsam_reduction=2),
    "cbam+nlsam": lambda: create_attention("cbam+nlsam", 16, (8, 8), cbam_channel_reduction=4),
}


def _run(fn, module: nn.Module, x: torch.Tensor, shortcut: torch.Tensor, dtype) -> Tuple[torch.Tensor, Dict]:
    module.zero_grad()
    x = x.detach().requires_grad_()
    shortcut = shortcut.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is torch.bfloat16):
        out = fn(module, x, shortcut)
    (out.float() * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    grads = {"x": x.grad, "shortcut": shortcut.grad}
    grads.update({n: p.grad for n, p in module.named_parameters() if p.grad is not None})
    return out.detach().float(), grads


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [8, 12])  # 12: another input size, the adaptive path
def test_fused_epilogue_matches_the_paper(name, dtype, channels_last, size):
    torch.manual_seed(0)
    module = MODULES[name]().train()
    reference = copy.deepcopy(module)
    x = torch.randn(3, 16, size, size)
    shortcut = torch.randn(3, 16, size, size)
    if channels_last:
        x, shortcut = (t.contiguous(memory_format=torch.channels_last) for t in (x, shortcut))
    fused, fused_grads = _run(add_attended, module, x, shortcut, dtype)
    paper, paper_grads = _run(lambda m, x, s: _paper(m, x) + s, reference, x, shortcut, dtype)
    # bf16: the gate and the features round the same way in both paths; the sum once more
    atol, rtol = (1e-5, 1e-5) if dtype is torch.float32 else (3e-2, 2e-2)
    torch.testing.assert_close(fused, paper, atol=atol, rtol=rtol)
    assert fused_grads.keys() == paper_grads.keys()
    for key in paper_grads:
        scale = paper_grads[key].float().abs().max().item() + 1e-12
        torch.testing.assert_close(
            fused_grads[key].float() / scale, paper_grads[key].float() / scale, atol=atol * 4, rtol=0, msg=key
        )


@pytest.mark.parametrize("grid", [(1, 1), (4, 4), (2, 4), (8, 8)])
def test_apply_gate_is_nearest_upsampling_times_x(grid):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, 8).contiguous(memory_format=torch.channels_last)
    gate = torch.rand(2, 1, *grid)
    shortcut = torch.randn(2, 5, 8, 8)
    upsampled = F.interpolate(gate, size=(8, 8), mode="nearest")
    torch.testing.assert_close(apply_gate(x, gate), x * upsampled, rtol=0, atol=0)
    torch.testing.assert_close(apply_gate(x, gate, shortcut), shortcut + x * upsampled, rtol=1e-6, atol=1e-6)


def test_apply_gate_keeps_channels_last_and_says_which_gates_tile():
    x = torch.randn(2, 5, 8, 8).contiguous(memory_format=torch.channels_last)
    out = apply_gate(x, torch.rand(2, 1, 4, 4), torch.randn(2, 5, 8, 8).contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"a 3x3 gate does not tile a 8x8 feature map; valid gates are 1x1"):
        apply_gate(x, torch.rand(2, 1, 3, 3))


def test_nlsam_hands_out_its_gate_at_the_pooled_grid():
    module = NLSAM((8, 8), pool=2, reduction=2)
    x = torch.randn(2, 16, 8, 8)
    features, gate = module.split_gate(x)
    assert features is x and gate.shape == (2, 1, 4, 4)
    # another size that the grid does not tile, and an interpolation that is not a broadcast
    assert module.split_gate(torch.randn(2, 16, 10, 10))[1].shape == (2, 1, 10, 10)
    bilinear = NLSAM((8, 8), pool=2, reduction=2, interpolation="bilinear")
    assert bilinear.split_gate(x)[1].shape == (2, 1, 8, 8)
    assert module.split_gate(torch.randn(0, 16, 8, 8))[1].shape == (0, 1, 8, 8)


def test_composition_hands_out_its_last_parts_gate():
    sequence = create_attention("se+nlsam", 16, (8, 8), se_reduction=4, nlsam_reduction=2)
    assert isinstance(sequence, AttentionSequence) and isinstance(sequence, nn.Sequential)
    assert [k.split(".")[0] for k in sequence.state_dict()][:1] == ["0"]  # the layout of before
    x = torch.randn(2, 16, 8, 8)
    features, gate = sequence.split_gate(x)
    torch.testing.assert_close(features, sequence[0](x))
    assert gate.shape == (2, 1, 4, 4)


def test_a_watched_module_runs_its_own_forward():
    module = NLSAM((8, 8), pool=2, reduction=2)
    seen = []
    module.register_forward_hook(lambda mod, inputs, output: seen.append(output.shape))
    x, shortcut = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    out = add_attended(module, x, shortcut)
    assert seen == [torch.Size([2, 16, 8, 8])]
    torch.testing.assert_close(out, module._attend(x) + shortcut)


def test_a_module_without_a_gate_is_called_as_it_is():
    block = nn.Conv2d(4, 4, 1)
    x, shortcut = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(add_attended(block, x, shortcut), block(x) + shortcut)
    torch.testing.assert_close(add_attended(nn.Identity(), x, shortcut), x + shortcut)


@pytest.mark.parametrize(
    "arch, attention, size",
    [
        ("resnet20", "nlsam", 32),
        ("resnet20", "se+nlsam", 32),
        ("resnet20", "ge+nlsam", 32),
        ("resnet20", "cbam+nlsam", 40),
        ("preresnet110", "nlsam", 32),
        ("resnet50", "nlsam", 64),
    ],
)
def test_networks_fused_equal_the_paper_in_float64(arch, attention, size):
    """Whole networks, training mode: in float64 the fused and the paper's sum agree to 1e-9
    (in fp32 a deep network's gradients are ill-conditioned: fused and unfused differ from the
    float64 result alike)."""
    torch.manual_seed(0)
    model = nlsam.create_model(arch, attention=attention, num_classes=10, input_size=min(size, 64)).double().train()
    model = model.to(memory_format=torch.channels_last)
    reference = _reference_forward(copy.deepcopy(model))
    x = torch.randn(2, 3, size, size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    results = []
    for net in (model, reference):
        out = net(x)
        out.square().sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in net.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-9, atol=1e-9)
    for name, grad in results[1][1].items():
        assert results[0][1][name] is not None, name
        torch.testing.assert_close(results[0][1][name], grad, rtol=1e-7, atol=1e-9, msg=name)


def test_a_compiled_module_runs_its_compiled_forward(monkeypatch):
    module = NLSAM((8, 8), pool=2, reduction=2)
    calls = []

    def compiled(x):
        calls.append(x.shape)
        return module._attend(x)

    monkeypatch.setattr(module, "_forward_compiled", compiled)
    nlsam.attention.set_compiled_forward(module)
    x, shortcut = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(add_attended(module, x, shortcut), module._attend(x) + shortcut)
    assert calls == [torch.Size([2, 16, 8, 8])]


def test_apply_gate_exports_as_mul_and_add_and_no_resize():
    """The TorchScript-based ONNX exporter writes ``addcmul`` as three nodes; the export path
    writes ``shortcut + x * gate`` instead, and the nearest upsampling is no Resize node."""
    onnx = pytest.importorskip("onnx")
    import io

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = NLSAM((8, 8), pool=2, reduction=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return add_attended(self.attention, x, x)

    buffer = io.BytesIO()
    x = torch.randn(2, 16, 8, 8)
    torch.onnx.export(Block().eval(), (x,), buffer, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "b"}})
    ops = [node.op_type for node in onnx.load_from_string(buffer.getvalue()).graph.node]
    assert "Resize" not in ops and ops[-2:] == ["Mul", "Add"]  # the gate applied once, then the shortcut


@pytest.mark.parametrize("existing", [None, "se"])
def test_inserted_into_nlsam_blocks_the_gate_is_fused(existing):
    """nlsam.insert into nlsam's own ResNet: the slot hands out its gate (after an attention
    already there too), so the block fuses it, with the same values as the paper's sum."""
    torch.manual_seed(0)
    model = nlsam.create_model("resnet20", attention=existing, num_classes=10).double().train()
    nlsam.insert(model, "nlsam")
    slot = model.stages.layer3[0].attention
    assert hasattr(slot, "split_gate") and isinstance(slot[-1] if existing else slot, NLSAM)
    if existing:
        assert isinstance(slot, AttentionSequence) and set(k.split(".")[0] for k in slot.state_dict()) == {"0", "1"}
    calls = []
    slot.split_gate = lambda x, _split=slot.split_gate: calls.append(1) or _split(x)  # type: ignore[method-assign]
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    out = model(x)
    assert calls  # the block took the fused path
    del slot.split_gate
    torch.testing.assert_close(out, _reference_forward(copy.deepcopy(model))(x), rtol=1e-9, atol=1e-9)


def test_hooks_on_a_compositions_parts_fire_on_the_fused_path():
    """A hook on the part whose forward the fused path would skip (the composition's last)
    makes the module run its own forward; hooks on modules it calls anyway (an fc layer, an
    earlier part) fire on the fused path."""
    sequence = create_attention("se+nlsam", 16, (8, 8), se_reduction=4, nlsam_reduction=2)
    x, shortcut = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    seen = []
    handles = [
        sequence[0].register_forward_hook(lambda *args: seen.append("se")),
        sequence[1].fc1.register_forward_hook(lambda *args: seen.append("fc1")),
    ]
    expected = _paper(sequence, x) + shortcut
    seen.clear()
    torch.testing.assert_close(add_attended(sequence, x, shortcut), expected)
    assert seen == ["se", "fc1"]
    for handle in handles:
        handle.remove()
    sequence[1].register_forward_hook(lambda *args: seen.append("nlsam"))
    seen.clear()
    torch.testing.assert_close(add_attended(sequence, x, shortcut), expected)
    assert seen == ["nlsam"]
