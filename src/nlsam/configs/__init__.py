"""The paper's training configs and study files, shipped with the package and reached by name.

The training configs (``*.yaml`` here: :class:`~nlsam.engine.TrainConfig` options) are given to
``nlsam train -c NAME``, the study files (``studies/*.yaml``: grids of runs, see
:mod:`nlsam.engine.study`) to ``nlsam study NAME``; ``nlsam list configs`` lists both, each with
the first line of its leading comment. A path is still accepted wherever a name is, and a path
that exists always wins: a file of your own called ``table5_depth.yaml`` in the current folder
is read, not the shipped one.

    >>> from nlsam.configs import config_path, list_studies
    >>> config_path("cifar10_resnet20_fast").name
    'cifar10_resnet20_fast.yaml'
    >>> "table5_depth" in list_studies()
    True

The files are read with :mod:`importlib.resources`, so they are found in an installed wheel as
in a checkout of the repository.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, List, Union

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

__all__ = ["config_path", "study_path", "list_configs", "list_studies", "description"]

#: The suffix of the shipped files; a name may be given with it or without.
_SUFFIX = ".yaml"

# files a zip-imported package had to extract to give them a path (removed at exit)
_EXTRACTED = contextlib.ExitStack()
atexit.register(_EXTRACTED.close)


def list_configs() -> List[str]:
    """The names of the shipped training configs, sorted: what ``nlsam train -c NAME`` accepts
    (``cifar10_resnet110_nlsam``, ...)."""
    return _names(_folder(study=False))


def list_studies() -> List[str]:
    """The names of the shipped study files, sorted: what ``nlsam study NAME`` accepts
    (``table5_depth``, ...)."""
    return _names(_folder(study=True))


def config_path(name_or_path: Union[str, "os.PathLike[str]"]) -> Path:
    """The training config file that ``name_or_path`` stands for.

    An existing path is returned as given; otherwise ``name_or_path`` is the name of a shipped
    training config, with or without ``.yaml`` (:func:`list_configs`).

    Raises:
        FileNotFoundError: neither a file nor a shipped config's name; the one-line message
            lists the valid names.
    """
    return _resolve(name_or_path, study=False)


def study_path(name_or_path: Union[str, "os.PathLike[str]"]) -> Path:
    """The study file that ``name_or_path`` stands for.

    An existing path is returned as given; otherwise ``name_or_path`` is the name of a shipped
    study file, with or without ``.yaml`` (:func:`list_studies`).

    Raises:
        FileNotFoundError: neither a file nor a shipped study's name; the one-line message
            lists the valid names.
    """
    return _resolve(name_or_path, study=True)


def description(path: Union[str, "os.PathLike[str]"]) -> str:
    """The first line of a YAML file's leading comment (what the file is for), without the
    ``#`` and the punctuation that ends it; ``""`` where the file does not start with a comment."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline().strip()
    if not first.startswith("#"):
        return ""
    return first.lstrip("#").strip().rstrip(" .:;,")


def _folder(study: bool) -> "Traversable":
    folder = resources.files(__name__)
    return folder / "studies" if study else folder


def _names(folder: "Traversable") -> List[str]:
    return sorted(
        item.name[: -len(_SUFFIX)] for item in folder.iterdir() if item.name.endswith(_SUFFIX) and item.is_file()
    )


def _resolve(name_or_path: Union[str, "os.PathLike[str]"], study: bool) -> Path:
    kind, command = ("study", "nlsam study NAME") if study else ("config", "nlsam train -c NAME")
    text = os.fspath(name_or_path)
    if not text.strip():
        raise FileNotFoundError(
            f"empty {kind} name; give a YAML file or the name of a shipped {kind} (`nlsam list configs`)"
        )
    path = Path(text)
    if path.exists():
        return path
    folder = _folder(study)
    names = _names(folder)
    name = text[: -len(_SUFFIX)] if text.endswith(_SUFFIX) else text
    if name in names:
        return _as_path(folder / (name + _SUFFIX))
    if any(sep and sep in text for sep in (os.sep, os.altsep)):  # a path: say that it is missing
        hint = (
            f"the shipped {kind} {path.stem!r} is given by its name: `{command.replace('NAME', path.stem)}`"
            if path.stem in names
            else f"give a YAML file, or the name of a shipped {kind} (`nlsam list configs`)"
        )
        raise FileNotFoundError(f"{kind} file not found: {text}; {hint}")
    raise FileNotFoundError(
        f"unknown {kind} {name!r}: no such file, and no shipped {kind} of that name; valid: "
        f"{', '.join(names)} (`nlsam list configs` describes them)"
    )


def _as_path(item: "Traversable") -> Path:
    """A file system path of a shipped file: the file itself, or a copy where the package is
    imported from a zip archive."""
    if isinstance(item, Path):
        return item
    return _EXTRACTED.enter_context(resources.as_file(item))
