"""Analysis tools: the cost accounting of :mod:`nlsam.analysis.cost` (params, MACs, FLOPs)."""
from .cost import (
    COUNTING_RULES,
    CostReport,
    ModuleCost,
    TypeCost,
    count_op,
    overhead,
    profile,
    render_table,
)

__all__ = [
    "COUNTING_RULES",
    "CostReport",
    "ModuleCost",
    "TypeCost",
    "count_op",
    "overhead",
    "profile",
    "render_table",
]
