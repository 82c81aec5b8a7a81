"""benchmarks/train_speed.py on a tiny setting, against a fake reference trainer with the
contract of akamaster/pytorch_resnet_cifar10's (a ``parser`` and ``train(...)`` that calls
``.cuda()`` on its inputs)."""

import multiprocessing
import sys
import textwrap

import pytest
import torch

FAKE_RESNET = """
import torch.nn as nn


class Tiny(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.linear = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.linear(self.bn(self.conv(x)).relu().mean((2, 3)))


def resnet20():
    return Tiny()
"""

FAKE_TRAINER = """
import argparse

import resnet

print(sorted(n for n in resnet.__dict__ if n.startswith("resnet")))  # the real one prints at import

parser = argparse.ArgumentParser()
parser.add_argument("--arch", "-a", default="resnet20", choices=["resnet20"])
parser.add_argument("-j", "--workers", default=2, type=int)
parser.add_argument("-b", "--batch-size", default=128, type=int)
parser.add_argument("--lr", default=0.1, type=float)
parser.add_argument("--momentum", default=0.9, type=float)
parser.add_argument("--weight-decay", default=1e-4, type=float)
parser.add_argument("--print-freq", "-p", default=50, type=int)
parser.add_argument("--half", action="store_true")
CALLS = []


def train(train_loader, model, criterion, optimizer, epoch):
    model.train()
    for i, (input, target) in enumerate(train_loader):
        target = target.cuda()
        input_var = input.cuda()
        if args.half:
            input_var = input_var.half()
        output = model(input_var)
        loss = criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        CALLS.append((epoch, tuple(input.shape)))
        if i % args.print_freq == 0:
            print("Epoch: [{0}][{1}/{2}] loss {3:.4f}".format(epoch, i, len(train_loader), loss.item()))
"""


@pytest.fixture
def reference_dir(tmp_path):
    ref = tmp_path / "pytorch_resnet_cifar10"
    ref.mkdir()
    (ref / "resnet.py").write_text(textwrap.dedent(FAKE_RESNET))
    (ref / "trainer.py").write_text(textwrap.dedent(FAKE_TRAINER))
    return ref


def test_tiny_benchmark_table(load_script, run_script, tmp_path, reference_dir, monkeypatch, capsys):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))
    bench = load_script("benchmarks/train_speed.py")
    loaded = []
    load_reference = bench.load_reference
    monkeypatch.setattr(bench, "load_reference", lambda d: loaded.append(load_reference(d)) or loaded[-1])
    out = tmp_path / "train_speed.md"
    # as on a machine with a GPU: the reference must still build and train on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda = (torch.Tensor.cuda, torch.nn.Module.cuda, torch.cuda.is_available)
    # the fake reference's loader workers get our dataset class by fork only (the test loads the
    # script under a name that spawned workers could not import)
    workers = "2" if multiprocessing.get_start_method() == "fork" else "0"
    text = run_script(
        bench,
        [
            "--reference-dir",
            str(reference_dir),
            "--data",
            "builtin:512:64:0",
            "--models",
            "resnet20",
            "--rounds",
            "1",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--amp",
            "off",
            "--batch-size",
            "32",
            "--pipeline-batches",
            "2",
            "--reference-workers",
            workers,
            "--out",
            str(out),
        ],
    )
    assert out.read_text() == text
    assert (torch.Tensor.cuda, torch.nn.Module.cuda, torch.cuda.is_available) == cuda  # restored
    rows = [line for line in text.splitlines() if line.startswith("| resnet20 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 7
    model, mode, reference, plain, nlsam_ips, overhead, ratio = cells
    assert mode == "fp32 (off)"
    assert float(reference) > 0 and float(plain) > 0 and float(nlsam_ips) > 0
    assert overhead.endswith("]") and "%" in overhead
    # the ratio of the medians, rounded to 2 decimals; the speeds shown are rounded to whole img/s
    expected = float(plain) / float(reference)
    rounding = expected * (0.5 / float(plain) + 0.5 / float(reference)) + 0.005
    assert abs(float(ratio) - expected) <= rounding * 1.001
    # the reference dir is hidden, the command is the one that was run
    assert "PATH/TO/pytorch_resnet_cifar10" in text and str(reference_dir) not in text
    assert "--data builtin:512:64:0" in text
    assert f"({workers} workers, PIL transforms)" in text
    # the reference's own train() ran: 1 warm-up batch (epoch 0), then 2 (round 1), and its
    # pipeline gave PIL-transformed float batches of 32
    (trainer,) = loaded
    assert [epoch for epoch, _ in trainer.CALLS] == [0, 1, 1]
    assert {shape for _, shape in trainer.CALLS} == {(32, 3, 32, 32)}
    assert "resnet" not in sys.modules  # its resnet module is not left behind under that name
    assert "Epoch:" not in capsys.readouterr().out  # its prints are silenced


def test_reference_dir_without_trainer(load_script, tmp_path, reference_dir):
    bench = load_script("benchmarks/train_speed.py")
    (reference_dir / "trainer.py").unlink()
    with pytest.raises(SystemExit) as exc:
        bench.main(["--reference-dir", str(reference_dir), "--data", "builtin:64:16:0"])
    message = str(exc.value.code)
    assert "\n" not in message
    assert "lacks trainer.py" in message and "pytorch_resnet_cifar10" in message

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exc:
        bench.main(["--reference-dir", str(empty)])
    assert "lacks trainer.py and resnet.py" in str(exc.value.code)
