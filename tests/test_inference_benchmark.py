"""benchmarks/inference_latency.py, imported by path and run on a tiny setting (resnet20 at its
native 32x32, batch 1, one round of one call): every row of its table is there and parses."""

import re

import pytest
import torch

from nlsam.engine import cpu_has_native_bf16

OVERHEAD = re.compile(r"^[+-]\d+\.\d% \[[+-]\d+\.\d, [+-]\d+\.\d\]$")
SPEEDUP = re.compile(r"^\d+\.\d\dx \[\d+\.\d\d, \d+\.\d\d\]$")


@pytest.mark.slow
def test_inference_latency_tiny(load_script, run_script, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="the benchmark runs the exported network in onnxruntime")
    pytest.importorskip("onnx", reason="nlsam export --format onnx needs onnx")
    pytest.importorskip("onnxscript", reason="nlsam export --format onnx needs onnxscript")
    bench = load_script("benchmarks/inference_latency.py")
    out = tmp_path / "docs" / "inference_latency.md"
    argv = [
        "--models",
        "resnet20",
        "--batch-sizes",
        "1",
        "--rounds",
        "1",
        "--reps",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    text = run_script(bench, argv)
    assert out.read_text() == text
    assert text in capsys.readouterr().out

    lines = text.splitlines()
    assert lines[0] == "# Inference latency, ResNet-20 with and without NL-SAM (CPU)"
    assert f"Command: `python benchmarks/inference_latency.py {' '.join(argv)}`" in lines
    machine = next(line for line in lines if line.startswith("Machine: "))
    assert ", 1 thread, " in machine and f"torch {torch.__version__}" in machine
    assert f"onnxruntime {ort.__version__}" in machine and "intra_op_num_threads 1" in machine

    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| resnet20 |")]
    rows = [r for r in cells if len(r) == 8]  # the latency table
    runtimes = [r for r in bench.RUNTIMES if r != bench.BF16_RUNTIME or cpu_has_native_bf16()]
    assert {(r[1], r[3]) for r in rows} == {(runtime, net) for runtime in runtimes for net in ("plain", "+ NL-SAM")}
    assert len(rows) == 2 * len(runtimes)
    for _model, _runtime, batch, network, ms, images_s, overhead, reps in rows:
        assert batch == "1" and reps == "1"
        ms, images_s = float(ms), float(images_s)
        assert ms > 0 and images_s > 0
        assert images_s == pytest.approx(1000 / ms, rel=0.02)  # both rounded for the table
        if network == "plain":
            assert overhead == "-"
        else:
            assert OVERHEAD.match(overhead), overhead

    # bf16 against float32: one row per network where the CPU has native bf16, else a reason
    speedups = [r for r in cells if len(r) == 6]
    if cpu_has_native_bf16():
        assert [r[2] for r in speedups] == ["plain", "+ NL-SAM"]
        for _model, batch, _network, fp32_ms, bf16_ms, speedup in speedups:
            assert batch == "1" and float(fp32_ms) > 0 and float(bf16_ms) > 0
            assert SPEEDUP.match(speedup), speedup
    else:
        assert not speedups
        assert any(line.startswith("bf16 autocast: not measured; this CPU has no native bf16") for line in lines)

    agree = next(line for line in lines if line.startswith("Outputs agree: "))
    diffs = re.findall(r"resnet20 (?:plain|\+ NL-SAM) (\d\.\de[+-]\d+)", agree)
    assert len(diffs) == 2 and all(float(d) < 1e-4 for d in diffs), agree
