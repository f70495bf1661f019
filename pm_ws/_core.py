"""Choose the core implementation (and the shared table's reader): compiled (default) or the pure-Python twin.

``PM_WS_NO_EXTENSIONS=1`` selects the twin on purpose. Otherwise the compiled module must
import: a build that lost its extension fails loudly instead of silently running ~100x slower.
"""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

# Same rule as setup.py: unset, empty or "0" means compiled
NO_EXTENSIONS = os.environ.get("PM_WS_NO_EXTENSIONS", "") not in ("", "0") or (
    platform.python_implementation() != "CPython"
)

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._core_py import BookStore, Dispatcher, parse_price, parse_size, price_to_cents
    from ._shared_py import TopReader

    IMPLEMENTATION = "python"
else:
    try:
        from ._core_c import BookStore, Dispatcher, parse_price, parse_size, price_to_cents
        from ._shared_c import TopReader
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "pm_ws: the compiled core (pm_ws._core_c) is missing or broken; reinstall with "
            "`pip install .` on a machine with a C compiler, or set PM_WS_NO_EXTENSIONS=1 "
            "to run the pure-Python core on purpose"
        ) from exc

    IMPLEMENTATION = "cython"

__all__ = ["IMPLEMENTATION", "BookStore", "Dispatcher", "TopReader", "parse_price", "parse_size", "price_to_cents"]
