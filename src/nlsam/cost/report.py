"""What the counter reports: :class:`CostReport` with its per-module (:class:`ModuleCost`) and
per-type (:class:`TypeCost`) rows, the :func:`overhead` of one network over another, and the
text / Markdown table renderer of every nlsam table (:func:`render_table`)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from .rules import COUNTING_RULES

__all__ = ["CostReport", "ModuleCost", "TypeCost", "overhead", "render_table"]


@dataclass
class ModuleCost:
    """Inclusive cost of one submodule (its children included) over the forward pass."""

    path: str
    type: str
    params: int
    macs: int
    flops: int
    calls: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class TypeCost:
    """Total cost of all the modules of one type (instances nested in another instance of the
    same type are not counted twice)."""

    type: str
    count: int
    params: int
    macs: int
    flops: int

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class CostReport:
    """What :func:`~nlsam.cost.profile` measured for one network at one input size (batch 1).

    ``flops = 2 * macs + extra_flops``, counted by the rules of :mod:`nlsam.cost.rules`.
    """

    model: str
    input_size: Tuple[int, int, int]
    params: int
    trainable_params: int
    macs: int
    flops: int
    flops_by_op: Dict[str, int] = field(default_factory=dict)
    macs_by_op: Dict[str, int] = field(default_factory=dict)
    uncounted_ops: Dict[str, int] = field(default_factory=dict)
    modules: List[ModuleCost] = field(default_factory=list)
    by_type: List[TypeCost] = field(default_factory=list)

    @property
    def matmul_flops(self) -> int:
        """FLOPs of convolutions and matmuls, ``2 * macs``."""
        return 2 * self.macs

    @property
    def extra_flops(self) -> int:
        """FLOPs of everything else: pointwise, reductions, pooling, upsampling, norms."""
        return self.flops - 2 * self.macs

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def module(self, path: str) -> ModuleCost:
        """The breakdown row of the module at ``path`` ("" is the whole network)."""
        for row in self.modules:
            if row.path == path:
                return row
        raise KeyError(f"no breakdown row for module {path!r}")

    def type_cost(self, type_name: str) -> TypeCost:
        """Aggregate over all modules of the class named ``type_name`` (zeros if none)."""
        for row in self.by_type:
            if row.type == type_name:
                return row
        return TypeCost(type_name, 0, 0, 0, 0)

    def to_dict(self) -> Dict[str, Any]:
        """Plain-JSON form: every field, the derived figures and the counting rules."""
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "batch_size": 1,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "flops": self.flops,
            "matmul_flops": self.matmul_flops,
            "extra_flops": self.extra_flops,
            "mparams": self.mparams,
            "gmacs": self.gmacs,
            "gflops": self.gflops,
            "flops_by_op": dict(self.flops_by_op),
            "macs_by_op": dict(self.macs_by_op),
            "uncounted_ops": dict(self.uncounted_ops),
            "modules": [row.to_dict() for row in self.modules],
            "by_type": [row.to_dict() for row in self.by_type],
            "convention": dict(COUNTING_RULES),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        """One line: params, MACs and FLOPs."""
        c, h, w = self.input_size
        return (
            f"{self.model} @ {c}x{h}x{w}: {self.mparams:.4f}M params, {self.gmacs:.4f} GMACs, "
            f"{self.gflops:.4f} GFLOPs (2 x MACs {2 * self.gmacs:.4f} + other "
            f"{self.extra_flops / 1e9:.4f})"
        )

    def breakdown_table(self, markdown: bool = False) -> str:
        """Per-module rows (path, type, params, MACs, FLOPs, share of the FLOPs)."""
        return self._cost_table(
            ["module", "type"], [([row.path or "(total)", row.type], row) for row in self.modules], markdown
        )

    def type_table(self, markdown: bool = False) -> str:
        """Aggregates by module type, most FLOPs first."""
        return self._cost_table(
            ["type", "count"], [([row.type, str(row.count)], row) for row in self.by_type], markdown
        )

    def _cost_table(self, headers: List[str], rows: Sequence[Tuple[List[str], Any]], markdown: bool) -> str:
        """``headers`` then params, MACs, FLOPs and share of the FLOPs, one line per ``(labels, cost)``."""
        return render_table(
            headers + ["Params (M)", "MMACs", "MFLOPs", "% FLOPs"],
            [
                labels
                + [
                    f"{cost.params / 1e6:.4f}",
                    f"{cost.macs / 1e6:.3f}",
                    f"{cost.flops / 1e6:.3f}",
                    f"{100.0 * cost.flops / self.flops:.2f}" if self.flops else "-",
                ]
                for labels, cost in rows
            ],
            markdown=markdown,
        )

    def table(self, markdown: bool = False, breakdown: bool = True) -> str:
        """The summary line, then (``breakdown``) the per-module and per-type tables."""
        parts = [self.summary()]
        if breakdown:
            parts += ["", self.breakdown_table(markdown), "", self.type_table(markdown)]
        if self.uncounted_ops:
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.uncounted_ops.items()))
            parts += ["", f"operators without a counting rule (counted as 0): {ops}"]
        return "\n".join(parts)

    def markdown(self, breakdown: bool = True) -> str:
        """:meth:`table` as Markdown."""
        return self.table(markdown=True, breakdown=breakdown)

    def __str__(self) -> str:
        return self.table()


def overhead(report: CostReport, baseline: CostReport) -> Dict[str, Any]:
    """Absolute and relative cost of ``report`` over ``baseline`` (the plain network)."""
    d_params = report.params - baseline.params
    d_macs = report.macs - baseline.macs
    d_flops = report.flops - baseline.flops
    return {
        "params": d_params,
        "macs": d_macs,
        "flops": d_flops,
        "mparams": d_params / 1e6,
        "gmacs": d_macs / 1e9,
        "gflops": d_flops / 1e9,
        "params_pct": _pct(d_params, baseline.params),
        "macs_pct": _pct(d_macs, baseline.macs),
        "flops_pct": _pct(d_flops, baseline.flops),
    }


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def render_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], markdown: bool = False, aligned: bool = True
) -> str:
    """Aligned text table, or Markdown: numeric columns right-aligned, text columns left.
    ``aligned=False`` (Markdown only) writes the cells as they are, unpadded."""
    rows = [list(map(str, r)) for r in rows]
    if markdown and not aligned:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(_NUMERIC.match(r[i]) for r in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(cells)]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded).rstrip()

    out = [line(headers)]
    if markdown:
        out.append(
            "|" + "|".join(("-" * (w + 1) + ":") if numeric[i] else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
        )
    else:
        out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in rows]
    return "\n".join(out)


_NUMERIC = re.compile(r"^(?:[+-]?\d[\d.,]*(?:e[+-]?\d+)?%?|-)$")
