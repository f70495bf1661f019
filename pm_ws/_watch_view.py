"""The ``pm-ws watch`` display: a top-of-book table per token, redrawn in place or printed as snapshots.

On a terminal the table is redrawn in place with plain ANSI sequences (cursor home, clear to end of
line); anywhere else (a pipe, a CI log, a test) it prints one dated table per refresh and event notes
as plain lines, so a ``--duration`` run leaves a readable log. Text from the network (market questions,
server messages) can carry control characters and escape sequences: ``terminal_text`` removes them,
and every line the Screen writes passes through it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from ._decimal_text import price_text, size_text
from ._table_layout import cut, fit_rows, pad, text_width
from .row import SIDE_BUY, SIDE_SELL, State, Top

HEADERS = ("TOKEN", "BID", "ASK", "SPREAD", "LAST", "STATE", "AGE", "UPD/S")
REQUIRED = ("TOKEN", "BID", "ASK", "STATE")  # shown at any width: without them a row can look tradeable
DROPPED_FIRST = ("UPD/S", "AGE", "SPREAD", "LAST")  # the other columns, the first to go when the width is short
RIGHT_ALIGNED = frozenset({"SPREAD", "AGE", "UPD/S"})
GAP = "  "  # between columns
NOTES_KEPT = 6  # event notes shown under the table on a terminal
NOTES_MIN = 2  # ... of which a short terminal still shows this many
LABEL_WIDTH = 32  # a market question can be a paragraph
MIN_LABEL_WIDTH = 12  # a label is cut to this before a column is dropped
MOVE_SECONDS = 1.0  # how long a price that moved stays coloured

# Colours (ANSI SGR) on a terminal: the states a row must not be traded in, and price moves
_RESET = "\x1b[0m"
_UP, _DOWN = "\x1b[32m", "\x1b[31m"
STATE_COLOURS = {
    State.SUBSCRIBING: "\x1b[36m",  # cyan
    State.STALE: "\x1b[1;33m",  # bold yellow
    State.INVALID: "\x1b[1;97;41m",  # bold white on red
    State.RESOLVED: "\x1b[35m",  # magenta
    State.UNCONFIRMED: "\x1b[34m",  # blue
}

_HOME = "\x1b[H"
_CLEAR_SCREEN = "\x1b[2J"
_CLEAR_LINE_END = "\x1b[K"
_CLEAR_BELOW = "\x1b[J"
_HIDE_CURSOR = "\x1b[?25l"
_SHOW_CURSOR = "\x1b[?25h"


# ECMA-48 escape sequences, in their 7-bit (ESC ...) and 8-bit (C1) forms: a control sequence (CSI),
# a control string (OSC, DCS, SOS, PM, APC: up to its terminator, or to the end of the text), or any
# other ESC sequence. Removed whole, so that no parameter bytes are left behind as visible text.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: Unicode category Cc


def terminal_text(text: str) -> str:
    """``text`` made safe to print on one line of a terminal.

    Escape sequences are removed, a whitespace control (tab, newline, ...) becomes a space, and any
    other control character (C0, DEL, C1) is removed: a market question from the Gamma API or a
    server's message cannot move the cursor, recolour, retitle or clear the terminal.
    """
    if text.isprintable():  # the common case, and no regex work
        return text
    text = _ESCAPE_SEQUENCE.sub("", text)
    return _CONTROL.sub(lambda match: " " if match.group().isspace() else "", text)


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
        rows = [self._row(token, top, now_ns, now_monotonic) for token, top in tops(self.store)]
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
                self._moves[token, side] = (_UP if new > old else _DOWN, now_monotonic + MOVE_SECONDS)
            move = self._moves.get((token, side))
            if move is not None and now_monotonic < move[1]:
                styles[side] = styles[f"{side}_PX"] = move[0]
        label = self.labels.get(token, "")
        return _Row(top.state, self._ascii(short_token(token)) if self.ascii_only else short_token(token),
                    cut(label, LABEL_WIDTH, self._ellipsis), cells, styles)  # fmt: skip

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
    spaces = " " * max(0, width - text_width(text))
    text = f"{style}{text}{_RESET}" if style else text
    return spaces + text if right else text + spaces


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
        parts = [f"{STATE_COLOURS[s]}{part}{_RESET}" if s in STATE_COLOURS else part for s, part in zip(order, parts)]
    return ", ".join(parts) or "no tokens"


class Table(Protocol):
    """What a Screen shows under its header line: a TopTable, or a DepthView (``--depth``)."""

    def summary(self, *, colour: bool = False) -> str: ...
    def lines(
        self,
        now_ns: int | None = None,
        now_monotonic: float | None = None,
        *,
        width: int | None = None,
        height: int | None = None,
        colour: bool = False,
    ) -> list[str]: ...


class Screen:
    """Show a block of lines repeatedly: in place on a terminal, as dated snapshots elsewhere.

    A closed stdout (``pm-ws demo | head``) ends the command quietly: a note that finds the pipe
    closed (notes are written from event callbacks) keeps the error for the next ``show``, which raises
    it to ``main``, which exits 0.

    Parameters
    ----------
    stream : text stream
        Where to write (``sys.stdout``).
    interactive : bool
        Redraw in place with ANSI sequences (a terminal) instead of printing snapshots.
    colour : bool
        Colour the states that are not LIVE and the prices that just moved (when interactive).
    """

    def __init__(self, stream: TextIO, *, interactive: bool, colour: bool = False) -> None:
        self.stream = stream
        self.interactive = interactive
        self.colour = colour and interactive
        self.ellipsis = "…" if can_encode(stream, "…") else "..."  # marks a line cut at the terminal's width
        self._notes: deque[str] = deque(maxlen=NOTES_KEPT)
        self._started = False
        self._broken_pipe: BrokenPipeError | None = None

    def show(self, lines: Iterable[str]) -> None:
        """Draw the block (and, on a terminal, the latest notes under it)."""
        lines = [terminal_text(line) for line in lines]
        if not self.interactive:
            self._snapshot(lines)
            return
        width, height = shutil.get_terminal_size()
        self._redraw([cut(line, width, self.ellipsis) for line in lines], width, height)

    def show_table(
        self, title: str, table: Table, *, now_ns: int | None = None, now_monotonic: float | None = None
    ) -> None:
        """Draw the header line (``title`` and the state summary) and ``table``, fitted to the terminal.

        On a terminal the state summary comes first, so that a narrow one still shows "6 STALE"; in a
        snapshot it comes last, after the title.
        """
        if not self.interactive:
            self._snapshot([terminal_text(f"{title}  {table.summary()}"), *table.lines(now_ns, now_monotonic)])
            return
        width, height = shutil.get_terminal_size()
        block = screen_block(
            title, table, list(self._notes), width, height,
            colour=self.colour, ellipsis=self.ellipsis, now_ns=now_ns, now_monotonic=now_monotonic,
        )  # fmt: skip
        self._redraw(block, width, height)

    def note(self, line: str) -> None:
        """Add an event note: printed at once when not interactive, kept under the table otherwise."""
        stamped = time.strftime("%H:%M:%S ") + terminal_text(line)
        if self.interactive:
            self._notes.append(stamped)
            return
        try:
            self._write(stamped + "\n")
        except BrokenPipeError as exc:  # called back from the event loop: the next show() raises it
            self._broken_pipe = exc

    def close(self) -> None:
        """Give the cursor back (the last table stays on screen)."""
        if self.interactive and self._started and self._broken_pipe is None:
            self._write(_SHOW_CURSOR)

    def _snapshot(self, lines: Sequence[str]) -> None:
        self._write(time.strftime("-- %H:%M:%S --\n") + "".join(f"{line}\n" for line in lines) + "\n")

    def _redraw(self, block: Sequence[str], width: int, height: int) -> None:
        if not self._started:
            self._write(_HIDE_CURSOR + _CLEAR_SCREEN)
            self._started = True
        # a wrapped or scrolled line would break the redraw: the block fits the terminal's size
        block = block[: max(1, height - 1)]
        self._write(_HOME + "".join(f"{line}{_CLEAR_LINE_END}\n" for line in block) + _CLEAR_BELOW)

    def _write(self, text: str) -> None:
        if self._broken_pipe is not None:
            raise self._broken_pipe
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError as exc:
            self._broken_pipe = exc
            raise


def screen_block(
    title: str,
    table: Table,
    notes: Sequence[str],
    width: int,
    height: int,
    *,
    colour: bool = False,
    ellipsis: str = "…",
    now_ns: int | None = None,
    now_monotonic: float | None = None,
) -> list[str]:
    """The lines of one redraw on a ``width`` x ``height`` terminal: header, table, the latest notes.

    The last line of the terminal stays empty (writing it would scroll). The table gets the room
    left after the header and the latest NOTES_MIN notes (fewer on a very short terminal); notes
    fill what the table leaves. Every line fits ``width`` cells.
    """
    room = max(1, height - 1)
    summary = table.summary()
    header = cut(terminal_text(f"{summary}  {title}"), width, ellipsis)
    if colour and header.startswith(summary):
        header = table.summary(colour=True) + header[len(summary) :]
    notes_min = min(len(notes), NOTES_MIN if room >= 10 else 1 if room >= 7 else 0)
    table_room = max(2, room - 1 - (1 + notes_min if notes_min else 0))
    rows = table.lines(now_ns, now_monotonic, width=width, height=table_room, colour=colour)
    spare = room - 1 - len(rows)
    shown = min(len(notes), spare - 1) if spare >= 2 else 0
    block = [header, *rows]
    if shown:
        block += ["", *(cut(note, width, ellipsis) for note in notes[len(notes) - shown :])]
    return block[:room]


def screen_for(stream: TextIO, *, plain: bool, refresh: float | None) -> tuple[Screen, float]:
    """Make the Screen for ``stream`` and choose the refresh period.

    Parameters
    ----------
    stream : text stream
        Where the table goes (``sys.stdout``); redrawn in place only if it is a terminal.
    plain : bool
        Print snapshots even on a terminal (``--plain``).
    refresh : float or None
        The period asked for (``--refresh``); None means 0.25 s when redrawing in place, 1 s otherwise.

    Returns
    -------
    tuple
        The Screen (in colour on a terminal, unless the NO_COLOR variable is set: no-color.org) and
        the refresh period in seconds.
    """
    interactive = stream.isatty() and not plain
    colour = interactive and not os.environ.get("NO_COLOR")
    return Screen(stream, interactive=interactive, colour=colour), refresh or (0.25 if interactive else 1.0)


def parse_columns(text: str) -> tuple[str, ...]:
    """The ``--columns`` list (comma-separated, any case) as column names; argparse's error names a wrong one."""
    names = tuple(name.strip().upper() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in HEADERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown column {unknown[0] if unknown else text!r}: choose from {', '.join(HEADERS)}")
    return names


def can_encode(stream: TextIO, text: str) -> bool:
    """Whether ``stream`` can write ``text`` (a terminal with a non-UTF-8 encoding may not)."""
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
