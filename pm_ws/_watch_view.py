"""The ``pm-ws watch`` table: one top-of-book line per token, fitted to a terminal without hiding what matters.

``TopTable`` turns rows into lines (the layout rules are in its docstring); a ``Screen`` of
``pm_ws._terminal`` shows them, redrawn in place or as snapshots. ``Screen``, ``screen_for``,
``can_encode`` and ``terminal_text`` are imported from here by the other commands.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ._decimal_text import price_text, size_text
from ._table_layout import cut, fit_rows, pad, text_width
from ._terminal import DOWN, STATE_COLOURS, UP, Screen, can_encode, paint, screen_for, terminal_text
from .row import SIDE_BUY, SIDE_SELL, State, Top

__all__ = [  # with the Screen's names that the commands showing a TopTable import from here
    "HEADERS", "LABEL_WIDTH", "RateMeter", "TopSource", "TopTable", "age_text", "parse_columns", "short_token",
    "state_counts", "states_summary", "tops", "Screen", "can_encode", "screen_for", "terminal_text",
]  # fmt: skip


HEADERS = ("TOKEN", "BID", "ASK", "SPREAD", "LAST", "STATE", "AGE", "UPD/S")
REQUIRED = ("TOKEN", "BID", "ASK", "STATE")  # shown at any width: without them a row can look tradeable
DROPPED_FIRST = ("UPD/S", "AGE", "SPREAD", "LAST")  # the other columns, the first to go when the width is short
RIGHT_ALIGNED = frozenset({"SPREAD", "AGE", "UPD/S"})
GAP = "  "  # between columns
LABEL_WIDTH = 32  # a market question can be a paragraph
MIN_LABEL_WIDTH = 12  # a label is cut to this before a column is dropped
MOVE_SECONDS = 1.0  # how long a price that moved stays coloured

class TopSource(Protocol):
    """What the table reads: a BookStore, or a TopReader of a shared table."""

    def tokens(self) -> list[str]: ...
    def top(self, token_id: str) -> Top: ...


class RateMeter:
    """Rate of a growing counter, measured over windows of about ``window`` seconds.

    A window closes at the first update at least half a window after it opened, so a caller that
    updates once per ``window`` (give or take scheduling jitter) gets a fresh rate every time.
    """

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._start: tuple[float, int] | None = None
        self.rate = 0.0

    def update(self, count: int, now: float) -> float:
        """Feed the counter's current value; return the rate of the last closed window."""
        if self._start is None or count < self._start[1]:
            self._start = (now, count)
        elif now - self._start[0] >= self.window / 2:
            self.rate = (count - self._start[1]) / (now - self._start[0])
            self._start = (now, count)
        return self.rate


def short_token(token_id: str, keep: int = 4) -> str:
    """Shorten a ~77-digit token id to its first and last digits: ``"7160…6553"``."""
    return token_id if len(token_id) <= 2 * keep + 1 else f"{token_id[:keep]}…{token_id[-keep:]}"


def age_text(seconds: float) -> str:
    """Write an age compactly: ``0.3s``, ``12s``, ``5m``, ``3h``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 600:
        return f"{seconds:.0f}s"
    if seconds < 36_000:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


class TopTable:
    """Turn BookStore rows into aligned text lines that fit a terminal without hiding what matters.

    At any width the token, bid, ask and STATE stay: the label is cut first, then the secondary
    columns go (UPD/S, AGE, SPREAD, LAST), then the label, then the sizes. Column widths only grow, so
    the columns do not jump sideways from one redraw to the next. When the rows do not all fit the
    height, the LIVE ones are hidden first and a "+N more" line says what is hidden.

    Parameters
    ----------
    store : BookStore
        Where the rows come from (read with ``top``).
    labels : dict
        Optional short label per token id ("YES", "Will X happen? No"), shown after the short id.
    ascii_only : bool
        Write ``x`` and ``...`` instead of ``×`` and ``…`` (for a stream that cannot encode them).
    show_rates : bool
        Include the UPD/S column (row updates per second, measured between calls).
    columns : sequence of str, optional
        The columns to show (``--columns``), in table order; TOKEN, BID, ASK and STATE are always shown.
    """

    def __init__(
        self,
        store: TopSource,
        labels: dict[str, str] | None = None,
        *,
        ascii_only: bool = False,
        show_rates: bool = True,
        columns: Sequence[str] | None = None,
    ) -> None:
        self.store = store
        self.labels = {token: terminal_text(label) for token, label in (labels or {}).items()}
        self.ascii_only = ascii_only
        wanted = set(HEADERS if columns is None else columns) | set(REQUIRED)
        if not show_rates:
            wanted.discard("UPD/S")
        self.columns = tuple(column for column in HEADERS if column in wanted)
        self._update_rates: dict[str, RateMeter] = {}
        self._widths: dict[str, int] = {}  # the widest cell seen per column: widths never shrink
        self._quotes: dict[str, tuple[int, int]] = {}  # last (bid, ask) price per token, to see moves
        self._moves: dict[tuple[str, str], tuple[str, float]] = {}  # (token, BID|ASK) -> (colour, until)

    def summary(self, *, colour: bool = False) -> str:
        """The tokens' states, the ones not LIVE first: ``"1 STALE, 3 LIVE"``."""
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
        """Render the header line and one line per token held by the store.

        Parameters
        ----------
        now_ns, now_monotonic : optional
            The wall-clock time the ages are measured to, and the clock of the UPD/S rates.
        width : int, optional
            Terminal cells per line; None: every column, labels up to LABEL_WIDTH.
        height : int, optional
            Lines available (at least 2: the header and a "+N more" line); None: every row.
        colour : bool
            Colour the states that are not LIVE and the prices that just moved (ANSI SGR).
        """
        now_ns = time.time_ns() if now_ns is None else now_ns
        now_monotonic = time.monotonic() if now_monotonic is None else now_monotonic
        held = tops(self.store)
        rows = [self._row(token, top, now_ns, now_monotonic) for token, top in held]
        self._forget_removed({token for token, _ in held})
        self._grow_widths(rows)
        hidden: list[_Row] = []
        if height is not None:
            rows, hidden = fit_rows(rows, max(1, height - 1), lambda row: row.state != State.LIVE)
        layout, token_width = self._layout(width)
        columns = [(column, _cell_key(column, layout.sizes)) for column in layout.columns]
        widths = {key: token_width if column == "TOKEN" else self._widths[key] for column, key in columns}
        cut_to = width if layout.overflows else None
        colour = colour and cut_to is None  # a line cut at a cell boundary could cut a colour sequence

        def line(cells: dict[str, str], styles: dict[str, str]) -> str:
            text = GAP.join(
                _cell(cells[key], widths[key], column in RIGHT_ALIGNED, styles.get(column, "") if colour else "")
                for column, key in columns
            ).rstrip()
            return text if cut_to is None else cut(text, cut_to, self._ellipsis)

        lines = [line({key: column for column, key in columns}, {})]
        for row in rows:
            lines.append(line({**row.cells, "TOKEN": self._name(row, token_width)}, row.styles))
        if hidden:
            more = f"+{len(hidden)} more: {states_summary(row.state for row in hidden)}"
            lines.append(more if width is None else cut(more, width, self._ellipsis))
        return lines

    @property
    def _ellipsis(self) -> str:
        return "..." if self.ascii_only else "…"

    def _row(self, token: str, top: Top, now_ns: int, now_monotonic: float) -> _Row:
        rate = self._update_rates.setdefault(token, RateMeter()).update(top.seq, now_monotonic)
        bid_px = top.bid_px if top.bid_levels else 0
        ask_px = top.ask_px if top.ask_levels else 0
        cells = {
            "BID": self._quote(top.bid_px, top.bid_sz, top.tick) if bid_px else "-",
            "ASK": self._quote(top.ask_px, top.ask_sz, top.tick) if ask_px else "-",
            "BID_PX": price_text(top.bid_px, top.tick) if bid_px else "-",
            "ASK_PX": price_text(top.ask_px, top.tick) if ask_px else "-",
            "SPREAD": price_text(top.ask_px - top.bid_px, top.tick) if bid_px and ask_px else "-",
            "LAST": self._last(top),
            "STATE": top.state.name,
            "AGE": age_text(max(0, now_ns - top.recv_ts_ns) / 1e9) if top.recv_ts_ns else "-",
            "UPD/S": f"{rate:.1f}",
        }
        if self.ascii_only:
            cells = {key: self._ascii(cell) for key, cell in cells.items()}
        styles = {"STATE": STATE_COLOURS.get(top.state, "")}
        previous = self._quotes.get(token)
        self._quotes[token] = (bid_px, ask_px)
        for side, old, new in zip(("BID", "ASK"), previous or (0, 0), (bid_px, ask_px)):
            if old and new and old != new:
                self._moves[token, side] = (UP if new > old else DOWN, now_monotonic + MOVE_SECONDS)
            move = self._moves.get((token, side))
            if move is not None and now_monotonic < move[1]:
                styles[side] = styles[f"{side}_PX"] = move[0]
        label = self.labels.get(token, "")
        return _Row(top.state, self._ascii(short_token(token)) if self.ascii_only else short_token(token),
                    cut(label, LABEL_WIDTH, self._ellipsis), cells, styles)  # fmt: skip

    def _forget_removed(self, held: set[str]) -> None:
        # `watch --all` removes the tokens of resolved markets: their rates and moves go with them
        if len(self._quotes) > len(held):
            for token in self._quotes.keys() - held:
                del self._quotes[token], self._update_rates[token]
            self._moves = {key: move for key, move in self._moves.items() if key[0] in held}

    def _grow_widths(self, rows: Sequence[_Row]) -> None:
        for key in (*HEADERS, "BID_PX", "ASK_PX"):
            title = key.removesuffix("_PX")
            widest = max((text_width(row.cells[key]) for row in rows if key in row.cells), default=0)
            self._widths[key] = max(self._widths.get(key, 0), text_width(title), widest)
        self._widths["name"] = max(self._widths.get("name", 0), *(text_width(row.name) for row in rows), 0)
        self._widths["label"] = max(self._widths.get("label", 0), *(text_width(row.label) for row in rows), 0)

    def _layout(self, width: int | None) -> tuple[_Layout, int]:
        # The required columns with as many others as fit `width` (LAST first, UPD/S last), the label
        # cut to MIN_LABEL_WIDTH at most; failing that, the label goes, then the sizes. Also the TOKEN
        # column's width (short id and label) in that layout.
        name, label = self._widths["name"], self._widths["label"]
        natural = max(text_width("TOKEN"), name + (1 + label if label else 0))
        if width is None:
            return _Layout(self.columns, sizes=True), natural
        for sizes, min_label in ((True, MIN_LABEL_WIDTH), (True, 0), (False, 0)):
            need = max(text_width("TOKEN"), name + (1 + min(min_label, label) if label and min_label else 0))
            shown = [column for column in self.columns if column in REQUIRED]
            if self._room(shown, sizes, width) < need:
                continue
            for column in reversed(DROPPED_FIRST):
                if column in self.columns and self._room([*shown, column], sizes, width) >= need:
                    shown.append(column)
            layout = _Layout(tuple(column for column in self.columns if column in shown), sizes)
            return layout, min(natural, self._room(shown, sizes, width))
        return _Layout(tuple(c for c in self.columns if c in REQUIRED), sizes=False, overflows=True), natural

    def _room(self, columns: Sequence[str], sizes: bool, width: int) -> int:
        # what `width` leaves the TOKEN column next to the other `columns`
        others = sum(self._widths[_cell_key(column, sizes)] for column in columns if column != "TOKEN")
        return width - others - len(GAP) * (len(columns) - 1)

    def _name(self, row: _Row, width: int) -> str:
        room = width - text_width(row.name) - 1  # the label gets what the short id leaves
        return f"{row.name} {cut(row.label, room, self._ellipsis)}" if row.label and room >= 2 else row.name

    def _quote(self, price: int, size: int, tick: int) -> str:
        return f"{price_text(price, tick)} × {size_text(size)}"

    def _last(self, top: Top) -> str:
        if not top.last_px and not top.last_sz:
            return "-"
        text = price_text(top.last_px, top.tick)
        if top.last_sz:
            text = self._quote(top.last_px, top.last_sz, top.tick)
        side = {SIDE_BUY: " BUY", SIDE_SELL: " SELL"}.get(top.last_side, "")
        return text + side

    @staticmethod
    def _ascii(cell: str) -> str:
        return cell.replace("×", "x").replace("…", "...")


@dataclass(frozen=True)
class _Layout:
    columns: tuple[str, ...]
    sizes: bool  # BID and ASK with their sizes, or the prices alone
    overflows: bool = False  # nothing fits: the lines are cut at the width


@dataclass
class _Row:
    state: State
    name: str  # the short token id
    label: str
    cells: dict[str, str]  # by column, plus BID_PX and ASK_PX (the prices alone)
    styles: dict[str, str]  # colour by column


def _cell_key(column: str, sizes: bool) -> str:
    return column if sizes or column not in ("BID", "ASK") else f"{column}_PX"


def _cell(text: str, width: int, right: bool, style: str) -> str:
    if not style:
        return pad(text, width, right=right)
    spaces = " " * max(0, width - text_width(text))  # outside the colour: a coloured background stops at the text
    return spaces + paint(text, style) if right else paint(text, style) + spaces


def tops(store: TopSource) -> list[tuple[str, Top]]:
    """``(token, top)`` of every token held; one that another process's writer removed meanwhile is left out."""
    found = []
    for token in store.tokens():
        try:
            found.append((token, store.top(token)))
        except KeyError:
            continue
    return found


def state_counts(store: TopSource, *, colour: bool = False) -> str:
    """Summarise the tokens' states, the ones not LIVE first: ``"1 STALE, 3 LIVE"``."""
    return states_summary((top.state for _, top in tops(store)), colour=colour)


def states_summary(states: Iterable[State], *, colour: bool = False) -> str:
    """Count ``states``, the ones not LIVE first: ``"1 STALE, 3 LIVE"`` (coloured on a terminal)."""
    counts = Counter(states)
    order = sorted(counts, key=lambda state: (state == State.LIVE, state))
    parts = [f"{counts[state]} {state.name}" for state in order]
    if colour:
        parts = [paint(part, STATE_COLOURS.get(state, "")) for state, part in zip(order, parts)]
    return ", ".join(parts) or "no tokens"


def parse_columns(text: str) -> tuple[str, ...]:
    """The ``--columns`` list (comma-separated, any case) as column names; argparse's error names a wrong one."""
    names = tuple(name.strip().upper() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in HEADERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown column {unknown[0] if unknown else text!r}: choose from {', '.join(HEADERS)}")
    return names


