"""Text laid out in terminal cells: widths, cuts and padding that a wide (CJK) character cannot misalign.

A terminal gives a wide character (East Asian Wide or Fullwidth) two cells and a combining mark or a
format character none, so ``len`` is the wrong measure of a label. These helpers count cells with
``unicodedata`` alone, and ``fit_rows`` chooses which rows of a table a short screen shows.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from typing import TypeVar

Row = TypeVar("Row")


def char_width(char: str) -> int:
    """Cells one character takes: 2 for a wide one, 0 for a combining mark or a format character, else 1."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    """Cells ``text`` takes on a terminal."""
    return len(text) if text.isascii() else sum(char_width(char) for char in text)


def cut(text: str, width: int, ellipsis: str = "…") -> str:
    """``text`` cut to at most ``width`` cells, the cut marked with ``ellipsis`` (when it fits)."""
    if text_width(text) <= width:
        return text
    room = width - text_width(ellipsis)
    if room < 0:
        ellipsis, room = "", width
    kept, used = [], 0
    for char in text:
        used += char_width(char)
        if used > room:
            break
        kept.append(char)
    return "".join(kept) + ellipsis


def pad(text: str, width: int, *, right: bool = False) -> str:
    """``text`` padded with spaces to ``width`` cells, on the left when ``right`` (right-aligned)."""
    spaces = " " * max(0, width - text_width(text))
    return spaces + text if right else text + spaces


def fit_rows(rows: Sequence[Row], room: int, keep_first: Callable[[Row], bool]) -> tuple[list[Row], list[Row]]:
    """Choose the rows that ``room`` lines show, in their order, and the hidden rest.

    When they do not all fit, the rows ``keep_first`` picks (the ones not LIVE) are kept before the
    others, so the rows that matter are never the hidden ones; one line is left for "+N more".
    """
    if len(rows) <= room:
        return list(rows), []
    shown = max(0, room - 1)
    order = sorted(range(len(rows)), key=lambda index: not keep_first(rows[index]))  # stable: store order within
    kept = set(order[:shown])
    return [row for i, row in enumerate(rows) if i in kept], [row for i, row in enumerate(rows) if i not in kept]
