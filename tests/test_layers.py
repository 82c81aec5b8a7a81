"""The package's architecture: its import contracts (layers, private modules, no cycles; the
[tool.importlinter] section of pyproject.toml) hold, and what each package offers is its
``__all__``: every name there exists, every other name of a public module starts with ``_``, and
code outside a package imports only names its ``__all__`` offers."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest

import nlsam

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "nlsam"

#: import-linter's contract types the contracts use: private_modules came with 2.17
IMPORT_LINTER_MIN = (2, 17)


def _is_public(module: str) -> bool:
    return not any(part.startswith("_") for part in module.split(".")[1:])


def _public_modules() -> List[str]:
    """nlsam and every module of it without a ``_`` in its path (``__main__`` modules aside)."""
    found = ["nlsam"] + [m.name for m in pkgutil.walk_packages(nlsam.__path__, "nlsam.")]
    return sorted(m for m in found if _is_public(m) and not m.endswith(".__main__"))


def _packages() -> List[str]:
    """nlsam's subpackages (nlsam.attention, nlsam.models, ...), the units of its layers."""
    return sorted(m.name for m in pkgutil.iter_modules(nlsam.__path__, "nlsam.") if m.ispkg and _is_public(m.name))


def _defined_names(module: str) -> Set[str]:
    """The names a module's own top-level statements define (not the names it imports)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    names: Set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


# ----------------------------------------------------------------------------- the contracts
def _lint_imports() -> str:
    if importlib.util.find_spec("importlinter") is None:
        pytest.skip("import-linter is not installed: pip install -e '.[dev]'")
    version = importlib.metadata.version("import-linter")
    if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < IMPORT_LINTER_MIN:
        pytest.skip(
            f"import-linter {version} lacks the private_modules contract; it needs "
            f"{'.'.join(map(str, IMPORT_LINTER_MIN))} or later"
        )
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    exe = shutil.which("lint-imports", path=path)
    if exe is None:
        pytest.skip("import-linter is installed but its lint-imports command is not on PATH")
    return exe


@pytest.mark.slow
def test_import_contracts_hold():
    result = subprocess.run(
        [_lint_imports(), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, "lint-imports found broken contracts:\n" + result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_layers_name_every_module_of_nlsam():
    """The layers contract is exhaustive; here without import-linter: every module and
    package directly in src/nlsam/ is a layer (or part of one)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")
    named = {part.strip() for layer in layers["layers"] for part in layer.replace(":", "|").split("|")}
    present = {m.name for m in pkgutil.iter_modules(nlsam.__path__)}
    assert present - named == set(), "modules without a layer in pyproject.toml [tool.importlinter]"
    assert named - present == set(), "layers of pyproject.toml that are no module of nlsam"


# ----------------------------------------------------------------------------- public names
def test_every_name_in_all_exists():
    missing = []
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            missing.append(f"{module_name} has no __all__")
            continue
        assert len(set(exported)) == len(exported), f"{module_name}.__all__ names a name twice"
        missing += [f"{module_name}.{name}" for name in exported if not hasattr(module, name)]
    assert not missing, "\n".join(missing)


#: public names of public modules that are not in their __all__, and why
NOT_IN_ALL = {
    # timm's register_model reads a model module's default_cfgs by this name
    "nlsam.models.timm_models": {"default_cfgs"},
}


def test_public_modules_declare_every_public_name():
    """A module's top-level name is in its ``__all__`` or starts with ``_``. The registered
    networks (resnet20, ...) are reached by name through create_model, as in timm."""
    undeclared = []
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        if not hasattr(module, "__all__"):
            continue  # (test_every_name_in_all_exists reports a missing __all__)
        extra = _defined_names(module_name) - set(module.__all__) - NOT_IN_ALL.get(module_name, set())
        extra = {n for n in extra if not nlsam.models.is_model(n)}
        undeclared += [f"{module_name}.{name}" for name in sorted(extra)]
    assert not undeclared, (
        "public names in no __all__ (add them to it, with a docstring, or start them with _):\n" + "\n".join(undeclared)
    )


def test_each_package_offers_the_names_of_its_modules():
    """``nlsam.X.__all__`` holds every name of its public modules' ``__all__``: one place lists
    what a package offers. The command modules of nlsam.cli share one protocol (add_parser and
    run, which nlsam.cli.main drives) and are left out."""
    missing = []
    for package_name in _packages():
        if package_name == "nlsam.cli":
            continue
        package = importlib.import_module(package_name)
        for module_name in _public_modules():
            if module_name.rsplit(".", 1)[0] != package_name:
                continue
            module = importlib.import_module(module_name)
            missing += [
                f"{package_name}: {module_name}.{n}" for n in getattr(module, "__all__", ()) if n not in package.__all__
            ]
    assert not missing, "names of a public module that its package's __all__ leaves out:\n" + "\n".join(missing)


# ----------------------------------------------------------------------------- imports
def _package_of(module: str) -> str:
    """``nlsam.engine.train`` -> ``nlsam.engine``; a module directly in nlsam/ -> ``nlsam``."""
    parts = module.split(".")
    if len(parts) > 1 and (SRC / parts[1]).is_dir():
        return ".".join(parts[:2])
    return "nlsam"


def _imports(path: Path, module: str, is_package: bool) -> Iterator[tuple]:
    """(line, imported module, name or None) of every ``from nlsam... import`` in a file."""
    own = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = own.split(".")[: len(own.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "nlsam" or target.startswith("nlsam."):
                for alias in node.names:
                    yield node.lineno, target, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("nlsam."):
                    yield node.lineno, alias.name, None


def _sources() -> Dict[Path, tuple]:
    files = {
        p: (".".join(p.relative_to(SRC.parent).with_suffix("").parts), p.name == "__init__.py")
        for p in SRC.rglob("*.py")
    }
    files = {p: (m[: -len(".__init__")] if m.endswith(".__init__") else m, pkg) for p, (m, pkg) in files.items()}
    files.update({p: ("benchmarks." + p.stem, False) for p in (ROOT / "benchmarks").glob("*.py")})
    return files


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def test_packages_import_each_other_through_public_names():
    """Code outside a package (another package of nlsam, or benchmarks/) imports no private
    module of it and only names of its ``__all__``: what one package needs of another is that
    package's public, documented API. (lint-imports checks the modules; this, the names.)"""
    wrong = []
    for path, (module, is_package) in sorted(_sources().items()):
        importer = _package_of(module) if module.startswith("nlsam") else "benchmarks"
        for line, target, name in _imports(path, module, is_package):
            owner = _package_of(target)
            if owner == "nlsam" or owner == importer:
                continue  # nlsam's own helper modules (_io, _ranges, ...) serve every package
            where = f"{path.relative_to(ROOT)}:{line}"
            if not _is_public(target):
                wrong.append(f"{where}: private module {target}")
            elif name is not None and not _is_module(f"{target}.{name}"):
                if name not in importlib.import_module(owner).__all__:
                    wrong.append(f"{where}: {target}.{name} is not in {owner}.__all__")
            elif name is not None and not _is_public(f"{target}.{name}"):
                wrong.append(f"{where}: private module {target}.{name}")
    assert not wrong, "\n".join(wrong)
