"""Exact decimal text for pm_ws integer units (prices in 1e-4, sizes in 1e-6), integers only.

The table printers use these instead of ``f"{x / 10_000:.4f}"``: dividing by the scale in float
would print some values one unit off, and the whole point of pm_ws is that it never does.
"""

from __future__ import annotations

from .row import PRICE_DECIMALS, SIZE_DECIMALS

__all__ = ["PRICE_DECIMALS", "SIZE_DECIMALS", "price_text", "size_text", "units_text"]


def units_text(value: int, decimals: int, min_decimals: int = 0) -> str:
    """Write ``value / 10**decimals`` exactly, dropping trailing fractional zeros.

    Parameters
    ----------
    value : int
        Fixed-point value (may be negative).
    decimals : int
        Number of fractional digits the value carries (4 for prices, 6 for sizes).
    min_decimals : int
        Keep at least this many fractional digits (trailing zeros beyond it are dropped).

    Returns
    -------
    str
        For example ``units_text(5140, 4, 2) == "0.514"`` and ``units_text(5000, 4, 2) == "0.50"``.
    """
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 10**decimals)
    digits = str(fraction).rjust(decimals, "0")
    keep = max(min_decimals, len(digits.rstrip("0")))
    return f"{sign}{whole}.{digits[:keep]}" if keep else f"{sign}{whole}"


def price_text(units: int, tick: int = 0) -> str:
    """Write a price exactly, with as many decimals as its tick size (at least 2).

    Parameters
    ----------
    units : int
        Price in units of 1e-4.
    tick : int
        The token's tick size in price units (0 when unknown); a 0.001 tick shows 3 decimals.

    Returns
    -------
    str
        ``price_text(5140) == "0.514"``, ``price_text(5100, tick=10) == "0.510"``.
    """
    return units_text(units, PRICE_DECIMALS, max(2, _decimals_of(tick, PRICE_DECIMALS)))


def size_text(units: int) -> str:
    """Write a size exactly, with at least 2 decimals: ``size_text(1304720000) == "1304.72"``."""
    return units_text(units, SIZE_DECIMALS, 2)


def _decimals_of(step: int, decimals: int) -> int:
    # fractional digits a step needs: 100 (0.01) -> 2, 10 (0.001) -> 3, 25 (0.0025) -> 4
    if step <= 0:
        return 0
    trailing_zeros = len(str(step)) - len(str(step).rstrip("0"))
    return max(0, decimals - trailing_zeros)
