"""benchmarks/compile_payoff.py, imported by path and run on a tiny setting (built-in data,
ResNet-20, one round of two batches) with ``torch.compile`` replaced by the identity, so the
test checks the script's measuring, arithmetic and table, not the compiler (which the
benchmark itself runs)."""

import re

import pytest
import torch


def test_compile_payoff_tiny(load_script, run_script, tmp_path, monkeypatch, capsys):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: compiled.append(model) or model)
    bench = load_script("benchmarks/compile_payoff.py")
    out = tmp_path / "compile_payoff.md"
    argv = [
        "--data",
        "builtin",
        "--models",
        "resnet20",
        "--attention",
        "none",
        "nlsam",
        "--amp",
        "off",
        "--rounds",
        "1",
        "--steps",
        "2",
        "--epochs",
        "3",
        "--out",
        str(out),
    ]
    text = run_script(bench, argv)
    assert out.read_text() == text and text in capsys.readouterr().out
    assert len(compiled) == 2  # one compiled copy per network
    lines = text.splitlines()
    assert f"Command: `python benchmarks/compile_payoff.py {' '.join(argv)}`" in lines
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| resnet20 |")]
    assert [(r[1], r[2]) for r in rows] == [("none", "fp32"), ("nlsam", "fp32")]
    for _, _, _, eager, fast, speedup, compile_s, eager_run, compiled_run, run_speedup in rows:
        assert float(eager) > 0 and float(fast) > 0 and float(compile_s) >= 0
        assert re.fullmatch(r"\d+\.\d\dx \[\d+\.\d\d, \d+\.\d\d\]", speedup), speedup
        assert eager_run.endswith(" min") and compiled_run.endswith(" min")
        assert re.fullmatch(r"\d+\.\d\dx", run_speedup)


@pytest.mark.parametrize("flag", ["--rounds", "--steps", "--epochs", "--batch-size"])
def test_compile_payoff_rejects_non_positive_counts(load_script, flag, capsys):
    bench = load_script("benchmarks/compile_payoff.py")
    with pytest.raises(SystemExit):
        bench.parse_args([flag, "0"])
    assert f"{flag} must be >= 1" in capsys.readouterr().err
