"""The ``pm-ws watch`` display: a top-of-book table per token, redrawn in place or printed as snapshots.

On a terminal the table is redrawn in place with plain ANSI sequences (cursor home, clear to end of
line); anywhere else (a pipe, a CI log, a test) it prints one dated table per refresh and event notes
as plain lines, so a ``--duration`` run leaves a readable log. Text from the network (market questions,
server messages) can carry control characters and escape sequences: ``terminal_text`` removes them,
and every line the Screen writes passes through it.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Protocol, TextIO

from ._decimal_text import price_text, size_text
from .row import SIDE_BUY, SIDE_SELL, State, Top

HEADERS = ("TOKEN", "BID", "ASK", "SPREAD", "LAST", "STATE", "AGE", "UPD/S")
RIGHT_ALIGNED = frozenset({"SPREAD", "AGE", "UPD/S"})
NOTES_KEPT = 6  # event notes shown under the table on a terminal
LABEL_WIDTH = 32  # a market question can be a paragraph

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


def shorten(text: str, width: int) -> str:
    """Cut ``text`` to ``width`` characters, marking the cut with ``…``."""
    return text if len(text) <= width else text[: width - 1] + "…"


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
    """Turn BookStore rows into aligned text lines.

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
    """

    def __init__(
        self,
        store: TopSource,
        labels: dict[str, str] | None = None,
        *,
        ascii_only: bool = False,
        show_rates: bool = True,
    ) -> None:
        self.store = store
        self.labels = labels or {}
        self.ascii_only = ascii_only
        self.show_rates = show_rates
        self._update_rates: dict[str, RateMeter] = {}

    def lines(self, now_ns: int | None = None, now_monotonic: float | None = None) -> list[str]:
        """Render the header line and one line per token held by the store."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        now_monotonic = time.monotonic() if now_monotonic is None else now_monotonic
        rows = [self._row(token, top, now_ns, now_monotonic) for token, top in tops(self.store)]
        columns = len(HEADERS) if self.show_rates else len(HEADERS) - 1  # UPD/S is the last column
        return aligned([row[:columns] for row in (HEADERS, *rows)])

    def _row(self, token: str, top: Top, now_ns: int, now_monotonic: float) -> tuple[str, ...]:
        rate = self._update_rates.setdefault(token, RateMeter()).update(top.seq, now_monotonic)
        label = self.labels.get(token)
        name = short_token(token) + (f" {shorten(label, LABEL_WIDTH)}" if label else "")
        bid = self._quote(top.bid_px, top.bid_sz, top.tick) if top.bid_levels else "-"
        ask = self._quote(top.ask_px, top.ask_sz, top.tick) if top.ask_levels else "-"
        spread = price_text(top.ask_px - top.bid_px, top.tick) if top.bid_levels and top.ask_levels else "-"
        age = age_text(max(0, now_ns - top.recv_ts_ns) / 1e9) if top.recv_ts_ns else "-"
        row = (name, bid, ask, spread, self._last(top), top.state.name, age, f"{rate:.1f}")
        return tuple(self._ascii(cell) for cell in row) if self.ascii_only else row

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


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Pad cells into columns (two spaces apart); columns named in RIGHT_ALIGNED are right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = [header in RIGHT_ALIGNED for header in rows[0]]
    return [
        "  ".join(cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)).rstrip()
        for row in rows
    ]


def tops(store: TopSource) -> list[tuple[str, Top]]:
    """``(token, top)`` of every token held; one that another process's writer removed meanwhile is left out."""
    found = []
    for token in store.tokens():
        try:
            found.append((token, store.top(token)))
        except KeyError:
            continue
    return found


def state_counts(store: TopSource) -> str:
    """Summarise the tokens' states: ``"3 LIVE, 1 STALE"``."""
    counts: dict[str, int] = {}
    for _, top in tops(store):
        counts[top.state.name] = counts.get(top.state.name, 0) + 1
    order = [state.name for state in State]
    return ", ".join(f"{counts[name]} {name}" for name in order if name in counts) or "no tokens"


class Screen:
    """Show a block of lines repeatedly: in place on a terminal, as dated snapshots elsewhere.

    Parameters
    ----------
    stream : text stream
        Where to write (``sys.stdout``).
    interactive : bool
        Redraw in place with ANSI sequences (a terminal) instead of printing snapshots.
    """

    def __init__(self, stream: TextIO, *, interactive: bool) -> None:
        self.stream = stream
        self.interactive = interactive
        self._notes: deque[str] = deque(maxlen=NOTES_KEPT)
        self._started = False

    def show(self, lines: Iterable[str]) -> None:
        """Draw the block (and, on a terminal, the latest notes under it)."""
        lines = [terminal_text(line) for line in lines]
        if not self.interactive:
            self.stream.write(time.strftime("-- %H:%M:%S --\n") + "".join(f"{line}\n" for line in lines) + "\n")
            self.stream.flush()
            return
        if not self._started:
            self.stream.write(_HIDE_CURSOR + _CLEAR_SCREEN)
            self._started = True
        # a wrapped or scrolled line would break the redraw: cut to the terminal's size
        width, height = shutil.get_terminal_size()
        block = [line[:width] for line in (*lines, "", *self._notes)][: max(1, height - 1)]
        self.stream.write(_HOME + "".join(f"{line}{_CLEAR_LINE_END}\n" for line in block) + _CLEAR_BELOW)
        self.stream.flush()

    def note(self, line: str) -> None:
        """Add an event note: printed at once when not interactive, kept under the table otherwise."""
        stamped = time.strftime("%H:%M:%S ") + terminal_text(line)
        if self.interactive:
            self._notes.append(stamped)
        else:
            self.stream.write(stamped + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Give the cursor back (the last table stays on screen)."""
        if self.interactive and self._started:
            self.stream.write(_SHOW_CURSOR)
            self.stream.flush()


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
        The Screen and the refresh period in seconds.
    """
    interactive = stream.isatty() and not plain
    return Screen(stream, interactive=interactive), refresh or (0.25 if interactive else 1.0)


def can_encode(stream: TextIO, text: str) -> bool:
    """Whether ``stream`` can write ``text`` (a terminal with a non-UTF-8 encoding may not)."""
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
