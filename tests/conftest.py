"""Fixtures several test files share: the repository's scripts that live outside the package
(benchmarks/, docs/results/, hubconf.py), loaded by path and run in the test process."""

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_script(path: str) -> ModuleType:
    """The script at ``path`` (from the repository root) as a fresh module, registered in
    ``sys.modules`` under ``script_STEM`` (its dataclasses look their module up there)."""
    module_name = f"script_{Path(path).stem}"
    spec = importlib.util.spec_from_file_location(module_name, ROOT / path)
    assert spec is not None and spec.loader is not None, f"no script {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _run_script(module: ModuleType, argv: Sequence[str]) -> Any:
    """``module.main(argv)``, with torch's thread count put back afterwards (the scripts set it
    for the whole process)."""
    threads = torch.get_num_threads()
    try:
        return module.main(list(argv))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Loads a script by its path from the repository root:
    ``load_script("benchmarks/inference_latency.py")``."""
    return _load_script


@pytest.fixture(scope="session")
def run_script() -> Callable[[ModuleType, Sequence[str]], Any]:
    """Runs a loaded script's ``main(argv)`` and returns what it returns (a benchmark's page)."""
    return _run_script
