"""Cost accounting: parameters, MACs and FLOPs of a network, with the attention modules' cheap
work counted.

* :mod:`.rules`: what each ATen operator costs (the counting rules, stated once there);
* :mod:`.report`: :class:`CostReport` and its rows, :func:`overhead`, :func:`render_table`;
* :mod:`.counter`: :func:`profile`, which runs one forward pass and fills the report.

    >>> report = nlsam.cost.profile(nlsam.create_model("resnet50", attention="nlsam"))  # doctest: +SKIP
    >>> report.params, report.macs, report.flops
"""

from .counter import InputSize, profile
from .report import CostReport, ModuleCost, TypeCost, overhead, render_table
from .rules import COUNTING_RULES, count_op

__all__ = [
    "COUNTING_RULES",
    "CostReport",
    "InputSize",
    "ModuleCost",
    "TypeCost",
    "count_op",
    "overhead",
    "profile",
    "render_table",
]
