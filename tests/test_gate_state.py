"""The attention gate travels with the weights: a state dict restores the gate it was saved with."""

import pytest
import torch

import nlsam


def _perturbed_identity_network() -> torch.nn.Module:
    torch.manual_seed(0)
    model = nlsam.create_model("resnet20", attention="nlsam", attention_init="identity").eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "attention" in name:
                param.add_(0.5 * torch.randn_like(param))  # the gate now matters
    return model


def test_a_state_dict_restores_its_gate_in_a_network_built_with_the_other_gate():
    saved = _perturbed_identity_network()
    x = torch.randn(2, 3, 32, 32)
    default = nlsam.create_model("resnet20", attention="nlsam").eval()
    default.load_state_dict(saved.state_dict())
    assert torch.allclose(default(x), saved(x), atol=1e-6)
    assert "2 * sigmoid" in repr(default.get_submodule("stages.layer2.0.attention"))


def test_the_gate_survives_safetensors():
    safetensors = pytest.importorskip("safetensors.torch")
    saved = _perturbed_identity_network()
    blob = safetensors.save({k: v.contiguous() for k, v in saved.state_dict().items()})
    default = nlsam.create_model("resnet20", attention="nlsam").eval()
    default.load_state_dict(safetensors.load(blob))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(default(x), saved(x), atol=1e-6)


def test_a_state_dict_from_before_the_gate_was_saved_keeps_the_receiving_gate():
    saved = _perturbed_identity_network()
    old = {k: v for k, v in saved.state_dict().items() if not k.endswith("gate.scale")}
    model = nlsam.create_model("resnet20", attention="nlsam", attention_init="identity").eval()
    model.load_state_dict(old)  # strict: no missing key
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(x), saved(x), atol=1e-6)


def test_a_gate_scale_that_is_neither_gate_is_refused_naming_both():
    model = nlsam.create_model("resnet20", attention="nlsam")
    state = model.state_dict()
    key = next(k for k in state if k.endswith("gate.scale"))
    state[key] = torch.tensor(3.0)
    with pytest.raises(RuntimeError, match=r"must be 1.0 \(sigmoid gate\) or 2.0 \(2 \* sigmoid gate\)"):
        model.load_state_dict(state)
