"""Which floating-point precision a run trains in: ``--amp auto|off|bf16|fp16``.

``auto`` turns mixed precision on where it pays and the hardware computes it natively:

* CUDA: bf16 where the GPU supports it, else fp16 (with loss scaling);
* CPU: bf16 on processors with native bf16 arithmetic, which oneDNN uses for convolutions and
  matrix products (x86 AVX512-BF16 or AMX-BF16); fp32 elsewhere, where bf16 would be emulated
  and slower than fp32.

Autocast keeps the weights, the optimizer and batch-norm statistics in fp32; convolutions and
matrix products run in bf16.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Mapping, Optional

import torch

from .config import AMP_MODES

__all__ = [
    "cpu_has_native_bf16",
    "listed_precisions",
    "machine_name",
    "precision_name",
    "resolve_amp",
    "trained_precision",
]

#: /proc/cpuinfo flags of x86 processors that compute bf16 natively
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_field(cpuinfo: Path, name: str) -> Optional[str]:
    """The value of field ``name`` (``flags``, ``model name``) of the first processor in
    ``cpuinfo``; None where it is unreadable or has no such field."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name):
            return line.partition(":")[2].strip()
    return None


def _cpu_flags(cpuinfo: Path) -> set:
    """The ``flags`` of the first processor in ``cpuinfo`` (empty where unreadable)."""
    return set((_cpuinfo_field(cpuinfo, "flags") or "").split())


_PROC_CPUINFO = Path("/proc/cpuinfo")


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16(cpuinfo: Path = _PROC_CPUINFO) -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512-BF16 or AMX-BF16, read from
    ``/proc/cpuinfo``). Other CPUs, and systems without ``/proc/cpuinfo``, count as not: there
    ``--amp auto`` trains in fp32 and ``--amp bf16`` still forces bf16."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return any(flag in _cpu_flags(cpuinfo) for flag in _NATIVE_BF16_FLAGS)


def _cpu_model(cpuinfo: Path) -> str:
    """The ``model name`` of the first processor in ``cpuinfo``, else the platform's name."""
    return _cpuinfo_field(cpuinfo, "model name") or platform.processor() or platform.machine() or "unknown CPU"


def machine_name(device: torch.device, cpuinfo: Path = _PROC_CPUINFO) -> str:
    """What a run trained on, as its ``meta.json`` records it: the GPU's name on CUDA, else the
    CPU's model with its native-bf16 flags and torch's thread count, e.g.
    ``AMD EPYC (avx512_bf16), 2 threads``. A study's report names each seed block's machines."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    flags = sorted(flag for flag in _cpu_flags(cpuinfo) if flag in _NATIVE_BF16_FLAGS)
    threads = torch.get_num_threads()
    return f"{_cpu_model(cpuinfo)} ({', '.join(flags) or 'no native bf16'}), {threads} thread{'s' * (threads != 1)}"


def resolve_amp(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``mode`` on ``device``, or None for full fp32.

    ``auto``: bf16 (fp16 where bf16 is missing) on CUDA; bf16 on a CPU with native bf16
    (:func:`cpu_has_native_bf16`); fp32 on any other device. ``bf16`` and ``fp16`` are used as
    asked; ``off`` is fp32.
    """
    if mode not in AMP_MODES:
        raise ValueError(f"unknown amp mode {mode!r}; valid: {', '.join(AMP_MODES)}")
    if mode == "off":
        return None
    if mode == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return None
    return torch.bfloat16 if mode == "bf16" else torch.float16


_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def precision_name(dtype: Optional[torch.dtype]) -> str:
    """The name a run records for an autocast dtype (None: ``float32``), as in ``meta.json``."""
    return str(dtype or torch.float32).replace("torch.", "")


def listed_precisions(counts: Mapping[str, int]) -> str:
    """``bfloat16 (4 runs), float32 (1 run)``: how many runs trained in each precision."""
    return ", ".join(f"{name} ({n} run{'s' * (n != 1)})" for name, n in sorted(counts.items()))


def trained_precision(state: dict, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype a checkpoint's run trained in (its ``precision``), or None for fp32.

    Checkpoints written before the precision was recorded resolve their config's ``amp`` on
    ``device``."""
    name = state.get("precision")
    if name in _DTYPES:
        return _DTYPES[name]
    return resolve_amp(state.get("config", {}).get("amp", "auto"), device)
