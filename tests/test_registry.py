"""A new attention module registered from outside nlsam works through every command, with no
change to nlsam's code; the paper's modules come from the same registry."""

import json
import sys
import textwrap

import pytest
import torch
import yaml

import nlsam
from nlsam.attention import (
    NLSAM,
    attention_option_keys,
    attention_parts,
    attention_types,
    create_attention,
    identity_init,
    list_attention,
    split_attention_options,
)
from nlsam.cli import main

TOY = textwrap.dedent('''
    """A toy spatial gate, registered from outside nlsam: a 3x3 convolution of the channel mean."""
    import torch
    from torch import nn

    import nlsam


    class ToySpatialGate(nn.Module):
        def __init__(self, channels, kernel_size=3, init="paper"):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, kernel_size, padding=kernel_size // 2)
            self.init, self.identity = init, False
            if init == "identity":
                self.reset_identity()

        def reset_identity(self):
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)
            self.identity = True

        def attention_map(self, x):
            gate = torch.sigmoid(self.conv(x.mean(dim=1, keepdim=True)))
            return 2 * gate if self.identity else gate

        def forward(self, x):
            return x * self.attention_map(x)


    nlsam.attention.register_attention("toy", ToySpatialGate, spatial_map=True)
''')

TINY = dict(data="builtin:256:64:0", model="resnet20", batch_size=64, log_every=1000, epochs=1)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_gate.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # for the study's trainer processes
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))
    yield "toy_gate"
    from nlsam.attention import registry

    registry._PARTS.pop("toy", None)
    registry._COMPOSITIONS.pop("toy", None)
    sys.modules.pop("toy_gate", None)


def test_an_outside_module_works_everywhere(toy, tmp_path, capsys):
    __import__(toy)
    assert "toy" in list_attention()
    model = nlsam.create_model("resnet20", attention="toy", toy_kernel_size=5)
    gates = [m for m in model.modules() if type(m).__name__ == "ToySpatialGate"]
    assert len(gates) == 9 and gates[0].conv.kernel_size == (5, 5)  # every block of every stage

    assert main(["profile", "resnet20", "--attention", "toy", "--import", toy, "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert cost["attention"] == "toy" and cost["overhead"]["params"] == 9 * 10

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--import",
                toy,
                "--attention",
                "toy",
                "--data",
                TINY["data"],
                "--epochs",
                "1",
                "--batch-size",
                "64",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert yaml.safe_load((run / "config.yaml").read_text())["imports"] == [toy]

    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(dict(base=dict(TINY, imports=[toy]), grid={"attention": [None, "toy"]}, seeds=[0])))
    assert main(["study", str(study), "--out", str(tmp_path / "study")]) == 0
    assert (tmp_path / "study" / "runs" / "attention=toy,seed=0" / "last.pt").is_file()

    pytest.importorskip("matplotlib")
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    assert main(["attention", str(run), str(tmp_path / "red.png"), "--out", str(tmp_path / "maps")]) == 0
    assert (tmp_path / "maps" / "red.png").is_file()


def test_unknown_import_is_one_clear_error(tmp_path, capsys):
    assert main(["train", "--import", "no_such_module_xyz", "--out", str(tmp_path / "r")]) == 2
    assert "cannot import module 'no_such_module_xyz'" in capsys.readouterr().err


def test_compositions_are_sequences_of_registered_parts():
    assert [p.name for p in attention_parts("cbam+nlsam")] == ["cbam_channel", "nlsam"]
    assert [p.name for p in attention_parts("cbam")] == ["cbam_channel", "cbam_spatial"]
    assert list_attention()[:5] == ["nlsam", "se", "ge", "cbam", "bam"]
    assert {"nlsam_pool", "nlsam_stages", "channel_reduction", "se_reduction", "attention_init"} <= set(
        attention_option_keys()
    )


def test_options_reach_parts_by_name_and_group():
    options = split_attention_options(dict(channel_reduction=4, se_reduction=2, nlsam_pool={2: 2, 3: 1}))
    assert options["se"] == {"reduction": 2} and options["ge"] == {"reduction": 4}
    assert options["nlsam"] == {"pool": {2: 2, 3: 1}} and options["cbam_spatial"] == {}
    module = create_attention(
        "se+nlsam", 32, (16, 16), stage=2, stage_ids=[1, 2, 3], se_reduction=2, nlsam_pool={2: 4, 3: 1}
    )
    assert module[0].fc1.out_channels == 16 and module[1].pool == 4
    with pytest.raises(ValueError, match="unknown attention option 'nlsam_poll' \\(did you mean 'nlsam_pool'\\?\\)"):
        split_attention_options(dict(nlsam_poll=2))
    with pytest.raises(TypeError):  # still a TypeError, as for any unexpected keyword argument
        nlsam.create_model("resnet20", attention="nlsam", se_kernel=3)


@pytest.mark.parametrize("attention", ["nlsam", "se", "ge", "cbam", "bam", "se+nlsam", "ge+nlsam", "cbam+nlsam"])
def test_identity_init_starts_as_the_identity_and_learns(attention):
    torch.manual_seed(0)
    plain = nlsam.create_model("resnet20", attention=None, num_classes=10).eval()
    model = nlsam.create_model("resnet20", attention=attention, num_classes=10, attention_init="identity")
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    prefixes = tuple(n + "." for n, m in model.named_modules() if isinstance(m, attention_types()))
    assert not unexpected and missing and all(k.startswith(prefixes) for k in missing)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - plain(x)).abs().max() <= 1e-5
    model.train()
    model(x).sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefixes)]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_identity_init_of_built_modules_equals_the_option():
    torch.manual_seed(0)
    a = identity_init(NLSAM((8, 8)))
    b = NLSAM((8, 8), init="identity")
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(a(x), x) and torch.equal(b(x), x)
    assert a.gate.identity and b.gate.identity
    with pytest.raises(ValueError, match="unknown attention init 'zero'; valid: paper, identity"):
        NLSAM((8, 8), init="zero")


def test_one_init_mechanism_and_one_list_of_modes():
    from nlsam.attention import INITS, apply_init, gate, registry
    from nlsam.models import INIT_MODES, insert

    assert INIT_MODES is INITS is registry.INITS is gate.INITS
    module = identity_init(NLSAM((8, 8)))
    assert module.init == "identity" and module.gate.identity  # as if built with init="identity"
    assert apply_init(NLSAM((8, 8)), "paper") == "paper"
    model = nlsam.create_model("resnet20", attention="se+nlsam", nlsam_init="identity")
    assert {type(m).__name__: m.init for m in model.modules() if isinstance(m, attention_types())} == {
        "SqueezeExcite": "paper",
        "NLSAM": "identity",
    }
    report = insert(nlsam.create_model("resnet20"), "se", init="identity")
    assert all(i.module.init == "identity" and i.module.gate.identity for i in report)


def test_a_network_splits_its_options_once_and_reads_no_signature(monkeypatch):
    from collections import Counter

    from nlsam.attention import registry

    counts = Counter()
    for name in ("_parameters", "_part_stages", "split_attention_options"):
        original = getattr(registry, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(registry, name, counted)
    with torch.device("meta"):  # 54 blocks, built without memory or time
        nlsam.create_model("resnet110", attention="se+nlsam", nlsam_pool=1, se_reduction=8)
    assert counts["_parameters"] == 0  # each builder's signature was read when it was registered
    assert counts["_part_stages"] == 2  # once for SE, once for NL-SAM: not once per block
    assert counts["split_attention_options"] == 0  # split by create_model, not by the network


def test_train_init_from_a_plain_run_starts_as_that_network(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))
    base = tmp_path / "base"
    assert (
        main(
            [
                "train",
                "--data",
                TINY["data"],
                "--attention",
                "none",
                "--epochs",
                "1",
                "--batch-size",
                "64",
                "--out",
                str(base),
            ]
        )
        == 0
    )
    capsys.readouterr()
    run = tmp_path / "nlsam"
    assert (
        main(
            [
                "train",
                "--data",
                TINY["data"],
                "--attention",
                "nlsam",
                "--model-option",
                "attention_init=identity",
                "--init-from",
                str(base),
                "--epochs",
                "1",
                "--batch-size",
                "64",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"init from {base / 'best.pt'}: loaded" in out and "attention tensors left at their init" in out
    from nlsam.engine.checkpoint import load_checkpoint

    state = load_checkpoint(run / "last.pt")
    assert state["config"]["init_from"] == str(base)
    model = nlsam.load_model(run)
    assert any(getattr(m, "init", None) == "identity" for m in model.modules())
