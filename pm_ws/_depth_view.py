"""``--depth N``: the best N price levels per side of each token, exact, under the row's state.

A token's block is its name and state (flagged when not LIVE: its levels may be old), then one line
per level with the bids and the asks side by side, or, when that is too wide, the asks above the bids
as on a ladder. The levels come from ``BookStore.book`` and are printed exactly (integer units to
decimal text). On a short terminal the blocks of the tokens that are not LIVE are kept first and a
"+N more" line counts the rest, as the top-of-book table does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ._decimal_text import price_text, size_text
from ._table_layout import cut, pad, text_width
from ._terminal import STATE_COLOURS, Table, paint, terminal_text
from ._watch_view import GAP, MIN_LABEL_WIDTH, TopSource, TopTable, short_token, state_counts, states_summary, tops
from .row import State, Top

INDENT = "  "  # level lines sit under their token's title line
_SIDE_BY_SIDE = (("BID SIZE", True), ("BID", True), ("ASK", False), ("ASK SIZE", True))  # (column, right-aligned)


class BookSource(TopSource, Protocol):
    """What the depth view reads: a BookStore."""

    def book(self, token_id: str, depth: int | None = 10) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]: ...


def table_for(store: BookSource, labels: dict[str, str], args: argparse.Namespace, *, ascii_only: bool) -> Table:
    """The view the display options ask for: the levels of ``--depth N``, else the table of ``--columns``."""
    depth = getattr(args, "depth", None)
    if depth is not None:
        return DepthView(store, labels, depth, ascii_only=ascii_only)
    return TopTable(store, labels, ascii_only=ascii_only, columns=getattr(args, "columns", None))


@dataclass
class _Block:
    state: State
    name: str  # the short token id
    label: str
    bids: list[tuple[str, str]]  # (price, size) text, best first
    asks: list[tuple[str, str]]


class DepthView:
    """The best ``depth`` levels per side of each token the store holds (see the module's docstring).

    Parameters
    ----------
    store : BookStore
        Where the rows (``top``) and levels (``book``) come from.
    labels : dict
        Optional short label per token id, shown after the short id.
    depth : int
        Levels per side.
    ascii_only : bool
        Write ``...`` instead of ``…``.
    """

    def __init__(self, store: BookSource, labels: dict[str, str], depth: int, *, ascii_only: bool = False) -> None:
        self.store = store
        self.labels = {token: terminal_text(label) for token, label in labels.items()}
        self.depth = depth
        self.ellipsis = "..." if ascii_only else "…"
        self._between = " | " if ascii_only else " │ "  # the bids on the left, the asks on the right
        self._widths = dict.fromkeys((column for column, _ in _SIDE_BY_SIDE), 0)  # they never shrink

    def summary(self, *, colour: bool = False) -> str:
        """The tokens' states, the ones not LIVE first."""
        return state_counts(self.store, colour=colour)

    def lines(
        self,
        now_ns: int | None = None,
        now_monotonic: float | None = None,
        *,
        width: int | None = None,
        height: int | None = None,
        colour: bool = False,
    ) -> list[str]:
        """Render every token's block (``now_ns`` and ``now_monotonic`` are not used: levels have no age).

        ``width`` (cells) and ``height`` (lines, at least 2) are the room on a terminal, None for no limit.
        """
        del now_ns, now_monotonic  # the Table protocol's clock: levels have no age column
        blocks = [block for token, top in tops(self.store) if (block := self._block(token, top)) is not None]
        self._grow_widths(blocks)
        side_by_side = width is None or text_width(self._level_line("", "", "", "")) <= width
        rendered = [self._render(block, width, side_by_side, colour) for block in blocks]
        if height is None:
            return [line for lines in rendered for line in lines]
        return self._fit(blocks, rendered, max(2, height), width)

    def _block(self, token: str, top: Top) -> _Block | None:
        try:
            bids, asks = self.store.book(token, self.depth)
        except KeyError:  # removed meanwhile
            return None
        return _Block(
            top.state, short_token(token).replace("…", self.ellipsis), self.labels.get(token, ""),
            [(price_text(price, top.tick), size_text(size)) for price, size in bids],
            [(price_text(price, top.tick), size_text(size)) for price, size in asks],
        )  # fmt: skip

    def _grow_widths(self, blocks: Sequence[_Block]) -> None:
        for block in blocks:
            for column, cells in (("BID", block.bids), ("ASK", block.asks)):
                for price, size in cells:
                    self._widths[column] = max(self._widths[column], text_width(column), len(price))
                    self._widths[f"{column} SIZE"] = max(self._widths[f"{column} SIZE"], len("SIZE"), len(size))

    def _level_line(self, bid_size: str, bid: str, ask: str, ask_size: str) -> str:
        texts = (bid_size, bid, ask, ask_size)
        cells = [pad(text, self._widths[column], right=right) for text, (column, right) in zip(texts, _SIDE_BY_SIDE)]
        return f"{INDENT}{cells[0]}{GAP}{cells[1]}{self._between}{cells[2]}{GAP}{cells[3]}"

    def _render(self, block: _Block, width: int | None, side_by_side: bool, colour: bool) -> list[str]:
        lines = [self._title(block, width, colour)]
        if not block.bids and not block.asks:
            return [*lines, INDENT + "no levels"]
        if side_by_side:
            lines.append(self._level_line("SIZE", "BID", "ASK", "SIZE").rstrip())
            for index in range(max(len(block.bids), len(block.asks))):
                bid_price, bid_size = block.bids[index] if index < len(block.bids) else ("", "")
                ask_price, ask_size = block.asks[index] if index < len(block.asks) else ("", "")
                lines.append(self._level_line(bid_size, bid_price, ask_price, ask_size).rstrip())
        else:  # a ladder: the asks from the worst down to the best, then the bids from the best down
            price_width = max(self._widths["BID"], self._widths["ASK"])
            for side, levels in (("ASK", block.asks[::-1]), ("BID", block.bids)):
                for price, size in levels:
                    lines.append(f"{INDENT}{side}{GAP}{pad(price, price_width)}{GAP}{size}")
        # the title is fitted already (and may be coloured): cut the level lines alone
        return lines if width is None else [lines[0], *(cut(line, width, self.ellipsis) for line in lines[1:])]

    def _title(self, block: _Block, width: int | None, colour: bool) -> str:
        # the short id and the state at any width; then the label (cut to MIN_LABEL_WIDTH at most)
        # and why a row not LIVE is flagged; the label takes what is left
        state = block.state.name if block.state == State.LIVE else f"! {block.state.name}"
        why = "" if block.state == State.LIVE else ": not LIVE, levels may be old"
        if width is not None:
            room = width - text_width(block.name) - len(GAP) - text_width(state)
            label_room = room - 1 if block.label else 0
            if text_width(why) > label_room - min(MIN_LABEL_WIDTH, text_width(block.label)):
                why = ""
            label_room -= text_width(why)
            label = cut(block.label, label_room, self.ellipsis) if label_room >= 2 else ""
        else:
            label = block.label
        flag = paint(f"{state}{why}", STATE_COLOURS.get(block.state, "") if colour else "")
        return f"{block.name} {label}{GAP}{flag}" if label else f"{block.name}{GAP}{flag}"

    def _fit(self, blocks: Sequence[_Block], rendered: list[list[str]], height: int, width: int | None) -> list[str]:
        # whole blocks, the ones not LIVE first; the first block shown is cut to the room if it alone is too tall
        order = sorted(range(len(blocks)), key=lambda index: blocks[index].state == State.LIVE)
        kept: set[int] = set()
        used = 0
        for index in order:
            reserve = 1 if len(kept) + 1 < len(blocks) else 0  # the "+N more" line
            if used + len(rendered[index]) + reserve <= height:
                kept.add(index)
                used += len(rendered[index])
            elif not kept:
                rendered[index] = rendered[index][: max(1, height - reserve)]
                kept.add(index)
                used += len(rendered[index])
        lines = [line for index, block_lines in enumerate(rendered) if index in kept for line in block_lines]
        hidden = [blocks[index].state for index in range(len(blocks)) if index not in kept]
        if hidden:
            more = f"+{len(hidden)} more: {states_summary(hidden)}"
            lines.append(more if width is None else cut(more, width, self.ellipsis))
        return lines
