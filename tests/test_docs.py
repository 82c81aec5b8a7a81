"""The documentation's own checks: its links lead somewhere, and results pages keep their files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _markdown_files():
    files = [ROOT / "README.md"]
    for folder in ("docs", "benchmarks"):
        files += sorted((ROOT / folder).rglob("*.md"))
    return [f for f in files if f.is_file()]


def _relative_links(text: str):
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        yield target.split("#")[0]


def test_link_finder_sees_relative_links_only():
    text = "[a](docs/x.md) [b](https://x.org/y) [c](#top) [d](y/z.png#frag) [e](mailto:a@b)"
    assert list(_relative_links(text)) == ["docs/x.md", "y/z.png"]


def test_every_relative_link_in_the_docs_leads_to_a_file():
    broken = [
        f"{md.relative_to(ROOT)}: {target}"
        for md in _markdown_files()
        for target in _relative_links(md.read_text(encoding="utf-8"))
        if not (md.parent / target).exists()
    ]
    assert not broken, "links to files that are not in the repository:\n" + "\n".join(broken)


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout of the repository"
)
def test_results_pages_keep_their_run_folders_but_not_checkpoints():
    run = "docs/results/some_study/runs/attention=nlsam,seed=0"
    unfinished = "docs/results/some_study/unfinished/runs/attention=nlsam,seed=1"
    kept = [
        f"{run}/metrics.jsonl",
        f"{run}/meta.json",
        f"{run}/config.yaml",
        f"{unfinished}/last.pt",
        f"{unfinished}/metrics.jsonl",
    ]  # an unfinished run's last checkpoint
    ignored = [
        f"{run}/last.pt",
        f"{run}/best.pt",
        f"{unfinished}/best.pt",
        "runs/my-run/metrics.jsonl",
        "studies/x/runs/a/metrics.jsonl",
        "studies/x/report.md",
        "studies/x/unfinished/runs/a/last.pt",
    ]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *kept, *ignored], cwd=ROOT, capture_output=True, text=True
    )
    assert sorted(result.stdout.split()) == sorted(ignored)
