"""--amp: which precision each mode resolves to, and how a CPU's native bf16 is detected."""

from pathlib import Path

import pytest
import torch

from nlsam.engine import precision
from nlsam.engine.precision import cpu_has_native_bf16, resolve_amp

CPU = torch.device("cpu")


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(
        f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    )
    return path


@pytest.fixture
def machine(monkeypatch):
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    cpu_has_native_bf16.cache_clear()
    yield lambda name: monkeypatch.setattr(precision.platform, "machine", lambda: name)
    cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize(
    "flags, native",
    [
        ("fpu sse2 avx2 avx512f avx512bw avx512_bf16", True),  # Zen 4, Cooper Lake
        ("fpu sse2 avx2 avx512f amx_tile amx_bf16", True),  # Sapphire Rapids
        ("fpu sse2 avx2 avx512f avx512bw", False),  # AVX-512 without bf16: emulated
        ("fpu sse2 avx2", False),
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(machine, tmp_path, flags, native):
    assert cpu_has_native_bf16(cpuinfo(tmp_path, flags)) is native


def test_other_architectures_and_unreadable_cpuinfo_count_as_not_native(machine, tmp_path):
    assert not cpu_has_native_bf16(tmp_path / "missing")
    machine("aarch64")
    assert not cpu_has_native_bf16(cpuinfo(tmp_path, "avx512_bf16"))


@pytest.mark.parametrize("native", [True, False])
def test_auto_uses_bf16_on_the_cpu_only_where_it_is_native(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_amp("auto", CPU) == (torch.bfloat16 if native else None)
    assert resolve_amp("off", CPU) is None
    assert resolve_amp("bf16", CPU) is torch.bfloat16
    assert resolve_amp("fp16", CPU) is torch.float16


def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown amp mode 'half'.*auto, off, bf16, fp16"):
        resolve_amp("half", CPU)


def test_a_checkpoint_is_evaluated_in_the_precision_it_trained_in(monkeypatch):
    from nlsam.engine.precision import trained_precision

    assert trained_precision({"precision": "bfloat16"}, CPU) is torch.bfloat16
    assert trained_precision({"precision": "float32"}, CPU) is None
    # written before the precision was recorded: its config's --amp, resolved here
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert trained_precision({"config": {"amp": "auto"}}, CPU) is None
    assert trained_precision({"config": {"amp": "bf16"}}, CPU) is torch.bfloat16


def test_eval_takes_the_run_precision_unless_told(tmp_path, monkeypatch, capsys):
    import json

    from nlsam.cli import main
    from nlsam.engine import TrainConfig, train

    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = dict(
        data="builtin:256:128:0",
        model="resnet20",
        attention="nlsam",
        batch_size=64,
        epochs=1,
        log_every=1000,
        amp="bf16",
        out=str(tmp_path / "run"),
    )
    summary = train(TrainConfig.from_dict(cfg))
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--json", "--device", "cpu", "--batch-size", "64"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(summary["test_top1"])
    assert main(["eval", str(tmp_path / "run"), "--json", "--device", "cpu", "--amp", "off"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 128
