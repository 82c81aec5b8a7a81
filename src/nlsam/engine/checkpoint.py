"""Checkpoints: written atomically (temporary file, then rename), read as data only.

A checkpoint is a dict of tensors and plain Python values (``torch.load(weights_only=True)``
reads it; no pickled code). Training checkpoints hold the model, optimizer, scheduler and
gradient-scaler states, the epoch, all RNG states and the resolved config.
"""
from __future__ import annotations

import io
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

FORMAT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(state: Dict[str, Any], path: Union[str, Path]) -> None:
    """Serialise ``state`` with ``torch.save`` and write it atomically."""
    buffer = io.BytesIO()
    torch.save(dict(state, format_version=FORMAT_VERSION), buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    ``path`` may be a run directory (its ``best.pt``, else ``last.pt``, is used).
    """
    path = resolve_checkpoint_path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, truncated or not a checkpoint at all
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path} is not an nlsam checkpoint (no model state and config inside)")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {version}; this nlsam reads version {FORMAT_VERSION}"
        )
    return state


def resolve_checkpoint_path(path: Union[str, Path]) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no checkpoint in run directory {path} (looked for best.pt, last.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def rng_state() -> Dict[str, Any]:
    """All RNG states, as tensors and plain values (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
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
