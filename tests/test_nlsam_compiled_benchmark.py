"""benchmarks/nlsam_compiled.py, imported by path and run on a tiny setting (built-in data,
ResNet-20, one round of two batches) with ``torch.compile`` replaced by the identity, so the
test checks the script's measuring, arithmetic and tables, not the compiler (which the
benchmark itself runs, and tests/test_nlsam_compiled.py checks)."""

import re

import pytest
import torch

from nlsam.attention import nlsam as nlsam_module


def _cells(text, prefix):
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith(prefix)]


def test_nlsam_compiled_benchmark_tiny(load_script, run_script, tmp_path, monkeypatch, capsys):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compiled.append(fn) or fn)
    monkeypatch.setattr(nlsam_module, "_COMPILED_ATTEND", None)
    bench = load_script("benchmarks/nlsam_compiled.py")
    out = tmp_path / "nlsam_compiled.md"
    argv = [
        "--data",
        "builtin",
        "--models",
        "resnet20",
        "--amp",
        "off",
        "--rounds",
        "1",
        "--steps",
        "2",
        "--module-reps",
        "1",
        "--batch-size",
        "16",
        "--out",
        str(out),
    ]
    text = run_script(bench, argv)
    assert out.read_text() == text and text in capsys.readouterr().out
    assert compiled == [nlsam_module.NLSAM._attend]  # one compiled function, shared by every module
    assert f"Command: `python benchmarks/nlsam_compiled.py {' '.join(argv)}`" in text.splitlines()
    modules = _cells(text, "| resnet20 | ")
    shapes = [r[1] for r in modules if "x" in r[1] and r[1][0].isdigit()]
    assert shapes == ["32 x 16 x 16", "64 x 8 x 8"]  # ResNet-20's NL-SAM stages 2 and 3

    def interval(unit):
        return r"[+-]?\d+\.\d+" + unit + r" \[[+-]?\d+\.\d+, [+-]?\d+\.\d+\]"

    for row in modules:
        if row[1] in shapes:
            _, _, precision, eager, fast, speedup, compile_s = row
            assert precision == "fp32 (off)" and float(eager) > 0 and float(fast) > 0 and float(compile_s) >= 0
            assert re.fullmatch(interval("x"), speedup), speedup
    (network,) = [r for r in modules if r[1] == "fp32 (off)"]
    _, _, plain, eager, fast, over_eager, over_fast, gain, compile_s = network
    assert min(float(plain), float(eager), float(fast)) > 0 and float(compile_s) >= 0
    assert re.fullmatch(interval("%"), over_eager) and re.fullmatch(interval("%"), over_fast)
    assert re.fullmatch(interval("x"), gain)


@pytest.mark.parametrize("flag", ["--rounds", "--steps", "--module-reps", "--batch-size"])
def test_nlsam_compiled_benchmark_rejects_non_positive_counts(load_script, flag, capsys):
    bench = load_script("benchmarks/nlsam_compiled.py")
    with pytest.raises(SystemExit):
        bench.parse_args([flag, "0"])
    assert f"{flag} must be >= 1" in capsys.readouterr().err
