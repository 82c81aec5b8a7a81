"""``python -m nlsam.cli``, the same as ``python -m nlsam`` and ``nlsam``."""

import sys

from . import main

sys.exit(main())
