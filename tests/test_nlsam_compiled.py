"""NL-SAM's compiled forward (``set_compiled_forward``) against the paper's eager formulation.

Each test compiles for real (torch.compile with the default inductor backend), so a fall-back to
the eager path is turned into a failure: a test that compared eager with eager could not fail.
"""

import copy
import warnings

import pytest
import torch
from torch._dynamo.utils import counters

import nlsam
from nlsam.attention import NLSAM, set_compiled_forward


@pytest.fixture(autouse=True)
def _fresh_compiler():
    torch._dynamo.reset()
    counters.clear()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="NL-SAM's compiled forward failed")
        yield
    torch._dynamo.reset()


def _values_and_gradients(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor, amp: bool):
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        y = module(x)
    y.backward(grad.to(y.dtype))
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return y.detach().float(), x.grad.detach().float(), grads


@pytest.mark.parametrize(
    "amp,init,size,tolerance",
    [(False, "paper", 16, 1e-5), (False, "identity", 12, 1e-5), (True, "paper", 16, 2e-2)],
    ids=["fp32", "fp32-identity-other-size", "bf16"],
)
def test_compiled_forward_matches_the_formulation(amp, init, size, tolerance):
    torch.manual_seed(0)
    eager = NLSAM(16, pool=2, reduction=8, init=init)
    if init == "identity":  # move off the all-ones start so the gradients say something
        torch.nn.init.normal_(eager.fc2.weight, std=0.5)
    compiled = copy.deepcopy(eager)
    assert set_compiled_forward(compiled) == 1
    x = torch.randn(4, 8, size, size).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)

    y_ref, gx_ref, g_ref = _values_and_gradients(eager, x, grad, amp)
    y, gx, g = _values_and_gradients(compiled, x, grad, amp)

    assert counters["stats"]["unique_graphs"] >= 1, "the compiled path did not compile"
    scale = y_ref.abs().max().item()
    assert (y - y_ref).abs().max().item() <= tolerance * scale
    assert (gx - gx_ref).abs().max().item() <= tolerance * gx_ref.abs().max().item()
    assert g.keys() == g_ref.keys()
    for name in g_ref:
        ref = g_ref[name].float()
        assert (g[name].float() - ref).abs().max().item() <= tolerance * max(ref.abs().max().item(), 1e-6), name


def test_modules_of_one_configuration_share_one_graph_and_switch_back():
    torch.manual_seed(0)
    model = nlsam.create_model("resnet20", attention="nlsam")
    reference = copy.deepcopy(model)
    assert set_compiled_forward(model) == 6  # stages 2 and 3, three blocks each
    model.eval()
    reference.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5, rtol=1e-4)
    # one graph per feature size (16 x 16 and 8 x 8), not one per module
    assert counters["stats"]["unique_graphs"] == 2
    assert set_compiled_forward(model, enabled=False) == 6
    assert not any(m.compiled_forward for m in model.modules() if isinstance(m, NLSAM))
    assert set_compiled_forward(torch.nn.Linear(2, 2)) == 0


def test_a_compiler_failure_warns_once_and_falls_back_to_eager(monkeypatch):
    from nlsam.attention import nlsam as nlsam_module

    def broken(module, x):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(nlsam_module, "_COMPILED_ATTEND", broken)
    monkeypatch.setattr(nlsam_module, "_COMPILE_FAILED", False)
    torch.manual_seed(0)
    module = NLSAM(8)
    x = torch.randn(2, 4, 8, 8)
    expected = module(x)
    set_compiled_forward(module)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found.*eager formulation"):
        assert torch.equal(module(x), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(module(x), expected)  # once failed, eager without a second warning


def test_compiled_modules_still_script():
    model = nlsam.create_model("resnet20", attention="nlsam").eval()
    set_compiled_forward(model)
    x = torch.randn(1, 3, 32, 32)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5, rtol=1e-4)
