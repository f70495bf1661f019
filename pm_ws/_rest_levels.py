"""A book given as integer levels (a REST snapshot): checked and put in wire order for ``BookStore.load_book``.

Both cores call :func:`wire_levels`, so they accept and refuse exactly the same books.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

from .row import PRICE_SCALE

INT64_MAX = 2**63 - 1

Level = tuple[int, int]


def wire_levels(bids: Iterable[Level], asks: Iterable[Level], tick: int) -> tuple[list[Level], list[Level]]:
    """``(bids ascending, asks descending)``, best last, from ``(price units, size units)`` pairs in any order.

    Raises
    ------
    ValueError
        A price outside 1 .. PRICE_SCALE - 1 or off the ``tick`` grid (when ``tick`` > 0), a size
        outside 1 .. 2**63 - 1, a price twice on one side, or a crossed book (best bid >= best ask).
    TypeError
        A level is not a pair of integers.
    """
    sides = []
    for name, levels in (("bids", bids), ("asks", asks)):
        side: dict[int, int] = {}
        for level in levels:
            price, size = (operator.index(value) for value in level)
            if not 0 < price < PRICE_SCALE or (tick > 0 and price % tick):
                raise ValueError(f"{name}: price {price} is outside 1..{PRICE_SCALE - 1} or off the tick {tick}")
            if not 0 < size <= INT64_MAX:
                raise ValueError(f"{name}: size {size} at price {price} is outside 1..2**63-1")
            if price in side:
                raise ValueError(f"{name}: price {price} appears twice")
            side[price] = size
        sides.append(side)
    bid_side, ask_side = sides
    if bid_side and ask_side and max(bid_side) >= min(ask_side):
        raise ValueError(f"crossed book: best bid {max(bid_side)} >= best ask {min(ask_side)}")
    return sorted(bid_side.items()), sorted(ask_side.items(), reverse=True)
