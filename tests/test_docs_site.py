"""The documentation site: it builds with every warning an error, its API reference shows every
public name, the README stays a front page, and no text sends a user to the wrong package."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _api_modules():
    """nlsam, each of its packages, and each public module of those packages: every name of their
    ``__all__`` is in the API reference (the command modules of nlsam.cli aside: their add_parser
    and run are the protocol nlsam.cli.main drives, not API)."""
    import nlsam

    found = [m.name for m in pkgutil.walk_packages(nlsam.__path__, "nlsam.")]
    public = [m for m in found if not any(p.startswith("_") for p in m.split(".")[1:])]
    packages = [m for m in public if m.count(".") == 1 and hasattr(importlib.import_module(m), "__path__")]
    modules = [m for m in public if m.rsplit(".", 1)[0] in packages and m.rsplit(".", 1)[0] != "nlsam.cli"]
    return ["nlsam", *packages, *modules]


DOCS_PACKAGES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _docs_tools_missing():
    for name in DOCS_PACKAGES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ModuleNotFoundError:
            return name
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    missing = _docs_tools_missing()
    if missing:
        pytest.skip(f"{missing} is not installed: the site needs pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("docs") / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, "mkdocs build --strict failed:\n" + result.stdout + result.stderr
    return out


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(site):
    for page in (
        "index.html",
        "getting-started/index.html",
        "guides/training/index.html",
        "inspect/index.html",
        "results/index.html",
        "api/attention/index.html",
    ):
        assert (site / page).is_file(), page
    assert not list(site.rglob("*.pt")), "checkpoints kept for resuming a study are no part of the site"


@pytest.mark.slow
def test_api_reference_shows_every_public_name(site):
    ids = set()
    for page in (site / "api").glob("*/index.html"):
        ids.update(re.findall(r'id="([^"]+)"', page.read_text(encoding="utf-8")))
    missing = []
    for module_name in _api_modules():
        # a name is shown under its module or its package (the top-level names under the
        # packages that define them); a name that is also a submodule's (nlsam.engine.train, the
        # function) is rendered by the submodule's path
        package = module_name if module_name == "nlsam" else ".".join(module_name.split(".")[:2])
        for name in getattr(importlib.import_module(module_name), "__all__", ()):
            places = {f"{module_name}.{name}", f"{package}.{name}"}
            if not places & ids and not any(i.startswith(package + ".") and i.endswith("." + name) for i in ids):
                missing.append(f"{module_name}.{name}")
    assert not missing, "public names the API reference (docs/api/*.md) does not show:\n" + "\n".join(missing)


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; reference text belongs in docs/"


# "nlsam" on the package index is an unrelated project: the distribution is torch-nlsam
_PIP_INSTALL = re.compile(r"\bpip3?\s+install\b([^\n]*)")
_TAKEN = "nlsam"


def _installs_taken_name(line: str) -> bool:
    for args in _PIP_INSTALL.findall(line):
        args = re.split(r"&&|;|\||#|`", args)[0]
        for token in args.split():
            token = token.strip("'\"")
            if re.match(rf"^{_TAKEN}(\[|[=<>~!]|$)", token):
                return True
    return bool(re.search(rf"(?<![\w.\-/]){_TAKEN}\[[a-z]", line))


def test_taken_name_finder():
    name = _TAKEN
    assert _installs_taken_name(f"pip install {name}")
    assert _installs_taken_name(f"python -m pip install -U '{name}[inspect]'")
    assert _installs_taken_name(f"pip install {name}==1.0 && {name} train")
    assert _installs_taken_name(f'extras: "{name}[study]"')
    assert not _installs_taken_name(f"pip install torch-{name} && {name} train")
    assert not _installs_taken_name(f"pip install 'torch-{name}[inspect]'")
    assert not _installs_taken_name('pip install -e ".[test]"')
    assert not _installs_taken_name(f"[`{name}.NLSAM`][{name}.attention.NLSAM]")


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout of the repository"
)
def test_no_text_installs_the_taken_name():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    wrong = []
    for rel in filter(None, files.decode().split("\0")):
        path = ROOT / rel
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # not text
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if _installs_taken_name(line):
                wrong.append(f"{rel}:{number}: {line.strip()}")
    assert not wrong, "the package index's nlsam is another project; install torch-nlsam:\n" + "\n".join(wrong)
