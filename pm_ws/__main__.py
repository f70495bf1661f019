"""``python -m pm_ws``: the same as the ``pm-ws`` console script."""

import sys

from .cli import main

sys.exit(main())
