"""torch.hub entry points: every network of nlsam under its timm name, with the released weights.

    >>> import torch
    >>> model = torch.hub.load("REPO", "ge_nlsam_resnet20", pretrained=True)   # doctest: +SKIP
    >>> torch.hub.list("REPO")                                                 # doctest: +SKIP

``REPO`` is the repository (``OWNER/NAME`` on GitHub, or a checkout with ``source="local"``).
``pretrained=True`` loads the network's released weights (``nlsam.list_pretrained()``; pick one
with ``tag=``); other keyword arguments go to ``nlsam.create_model``.
"""

import os
import sys

dependencies = ["torch", "numpy", "yaml", "PIL", "safetensors"]

# the checkout's own package, not another installed version of it
_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(os.path.join(_SRC, "nlsam")) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from nlsam.models.timm_models import TIMM_MODEL_NAMES as _NAMES  # noqa: E402
from nlsam.models.torch_hub import hub_entrypoint as _hub_entrypoint  # noqa: E402

globals().update({_name: _hub_entrypoint(_name) for _name in _NAMES})
