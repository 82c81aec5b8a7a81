"""The cost counter's former import path, kept so that ``from nlsam.analysis.cost import
profile, overhead`` keeps working; the counter lives in :mod:`nlsam.cost`."""
from ..cost import COUNTING_RULES, CostReport, ModuleCost, TypeCost, count_op, overhead, profile, render_table  # noqa: F401
