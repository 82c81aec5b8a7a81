"""Checkpoints: written atomically (:mod:`nlsam._io`), read as data only.

A checkpoint is a dict of tensors and plain Python values (``torch.load(weights_only=True)``
reads it; no pickled code). Training checkpoints hold the model, optimizer, scheduler and
gradient-scaler states, the epoch, all RNG states and the resolved config.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch

from .._io import atomic_write_bytes, read_torch_file
from ..models import is_released_name, weight_checkpoint

__all__ = [
    "best_checkpoint",
    "best_epoch",
    "load_checkpoint",
    "peek_checkpoint",
    "resolve_checkpoint_path",
    "save_checkpoint",
]

_FORMAT_VERSION = 1


def save_checkpoint(state: Dict[str, Any], path: Union[str, Path]) -> None:
    """Serialise ``state`` with ``torch.save`` and write it atomically."""
    buffer = io.BytesIO()
    torch.save(dict(state, format_version=_FORMAT_VERSION), buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    ``path`` may be a run directory (its ``best.pt``, else ``last.pt``, is used), or name one of
    nlsam's released weights, ``"nlsam:NAME"`` (:func:`nlsam.list_pretrained`): its weights,
    network and data in a checkpoint's layout.
    """
    if isinstance(path, str) and is_released_name(path):
        return weight_checkpoint(path)
    path = resolve_checkpoint_path(path)
    state = read_torch_file(path, map_location=map_location)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path} is not an nlsam checkpoint (no model state and config inside)")
    version = state.get("format_version")
    if version != _FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {version}; this nlsam reads version {_FORMAT_VERSION}")
    problem = _checkpoint_problem(state)
    if problem:
        raise ValueError(
            f"{path} is not an nlsam checkpoint: {problem}; it was not written by nlsam train, or was changed since"
        )
    return state


def _checkpoint_problem(state: Dict[str, Any]) -> Optional[str]:
    """What is wrong with the parts of a checkpoint that every reader relies on (``None``:
    nothing): ``model`` a mapping of tensors, ``config`` a mapping of settings that names the
    model, ``meta`` (where present) a mapping."""
    for key, holds in (("model", "tensor names to tensors"), ("config", "settings"), ("meta", "data facts")):
        if key in state and not isinstance(state[key], Mapping):
            return f"its {key} is {_kind(state[key])}, not a mapping of {holds}"
    if not isinstance(state["config"].get("model"), str):
        return "its config names no model (no 'model' setting)"
    return None


def _kind(value: Any) -> str:
    """``a list``, ``an int``, ``None``: what a value is, for messages (never the value itself)."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _state_dict_mismatch(model: torch.nn.Module, weights: Mapping[str, Any], limit: int = 3) -> Optional[str]:
    """How the ``weights`` of a checkpoint differ from ``model``'s own tensors, in one line:
    those it lacks, those the model has no place for, and those of another shape (``None``: they
    fit). What ``load_state_dict``'s error says over many lines, cut to the first ``limit`` of each."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [
        f"{k} ({_shape(weights[k])} in the checkpoint, {_shape(own[k])} in the network)"
        for k in own
        if k in weights and _shape(weights[k]) != _shape(own[k])
    ]
    parts = [
        f"{len(keys)} {what}: {', '.join(keys[:limit])}{', ...' if len(keys) > limit else ''}"
        for what, keys in (
            ("tensor(s) of the network missing from the checkpoint", missing),
            ("tensor(s) the network has no place for", unexpected),
            ("tensor(s) of another shape", shapes),
        )
        if keys
    ]
    return "; ".join(parts) or None


def _shape(value: Any) -> str:
    return "x".join(map(str, value.shape)) if hasattr(value, "shape") else type(value).__name__


def peek_checkpoint(path: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """A checkpoint's contents, memory-mapped (cheap: tensors are read only when touched);
    ``None`` when the file is absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = read_torch_file(path, mmap=True)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def resolve_checkpoint_path(path: Union[str, Path]) -> Path:
    """A checkpoint file, or for a run directory the checkpoint to evaluate (:func:`best_checkpoint`)."""
    if isinstance(path, str) and is_released_name(path) and not Path(path).exists():
        raise ValueError(
            f"{path} is a released weight, not a checkpoint file: nlsam eval takes it as it is; "
            f"elsewhere load it with nlsam.create_model(ARCH, attention=..., pretrained={path!r})"
        )
    path = Path(path)
    if path.is_dir():
        return best_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def best_epoch(state: Dict[str, Any]) -> Optional[int]:
    """The (0-based) epoch of the best test top-1 that a training checkpoint has seen.

    Checkpoints written before ``best_epoch`` was stored tell it only when their own epoch
    was the best one."""
    if "best_epoch" in state:
        return state["best_epoch"]
    metrics = state.get("metrics") or {}
    if (
        "epoch" in state
        and metrics.get("test_top1") is not None
        and metrics["test_top1"] >= state.get("best_top1", 0.0)
    ):
        return state["epoch"]
    return None


def best_checkpoint(run_dir: Union[str, Path]) -> Path:
    """The checkpoint of a run directory that holds its best network.

    ``last.pt`` is written first at the end of an epoch and is the run's commit point; ``best.pt``
    follows on a new best. A kill between the two leaves ``best.pt`` one best behind: then
    ``last.pt`` holds the best network and is returned (``--resume`` rewrites ``best.pt``).
    """
    run_dir = Path(run_dir)
    best, last = run_dir / "best.pt", run_dir / "last.pt"
    if not best.is_file() and not last.is_file():
        raise FileNotFoundError(f"no checkpoint in run directory {run_dir} (looked for best.pt, last.pt)")
    if not last.is_file():
        return best
    if _best_is_stale(run_dir):
        return last
    return best if best.is_file() else last


def _best_is_stale(run_dir: Union[str, Path], last_state: Optional[Dict[str, Any]] = None) -> bool:
    """True when ``last.pt`` says its own epoch was the best and ``best.pt`` lacks that epoch
    (``last_state``: ``last.pt``'s contents where the caller has read them already)."""
    if last_state is None:
        last_state = peek_checkpoint(Path(run_dir) / "last.pt")
    if last_state is None or best_epoch(last_state) != last_state.get("epoch"):
        return False
    best_state = peek_checkpoint(Path(run_dir) / "best.pt")
    return best_state is None or best_state.get("epoch") != last_state.get("epoch")


def _rng_state() -> Dict[str, Any]:
    """All RNG states, as tensors and plain values (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # legacy=True: a tuple for numpy's global MT19937 generator
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    """``random.setstate`` needs tuples where a round trip may give lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value
