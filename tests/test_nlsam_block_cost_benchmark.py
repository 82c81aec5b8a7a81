"""benchmarks/nlsam_block_cost.py, imported by path: it finds the blocks NL-SAM sits in, and a
tiny run gives a row per block shape and a total per network."""

import re

import pytest

EXTRA = re.compile(r"^[+-]\d+ \[[+-]\d+, [+-]\d+\]$")


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/nlsam_block_cost.py")


def test_finds_the_blocks_nlsam_sits_in(bench):
    cifar = bench.nlsam_blocks("resnet110", 32, 128, True)
    assert [(s.layer, s.blocks, s.channels, s.size) for s in cifar] == [(2, 18, 32, 16), (3, 18, 64, 8)]
    imagenet = bench.nlsam_blocks("resnet50", 224, 1, False)
    assert [(s.layer, s.blocks, s.channels, s.size, s.pool) for s in imagenet] == [
        (2, 4, 512, 28, 4),
        (3, 6, 1024, 14, 2),
        (4, 3, 2048, 7, 1),
    ]


def test_tiny_run(bench, run_script, tmp_path):
    out = tmp_path / "cost.md"
    argv = ["--shapes", "train:resnet20", "--rounds", "2", "--calls", "1", "--threads", "1", "--out", str(out)]
    text = run_script(bench, argv)
    assert out.read_text() == text
    rows = [
        [c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| train:")
    ]
    blocks = [r for r in rows if len(r) == 10]
    assert [r[0] for r in blocks] == ["train:resnet20:layer2:b128", "train:resnet20:layer3:b128"]
    for row in blocks:
        assert all(float(v) > 0 for v in row[4:7])
        assert EXTRA.match(row[7]) and EXTRA.match(row[8]), row
    totals = [r for r in rows if len(r) == 3]
    assert [r[0] for r in totals] == ["train:resnet20"]
