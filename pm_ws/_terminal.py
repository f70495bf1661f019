"""The terminal side of the live displays: redraw in place or print snapshots, colours, safe text.

On a terminal a Screen redraws its block in place with plain ANSI sequences (cursor home, clear to end
of line), fitted to the terminal's size, in colour unless NO_COLOR is set; anywhere else (a pipe, a CI
log, a test) it prints one dated snapshot per refresh and event notes as plain lines, so a
``--duration`` run leaves a readable log. Text from the network (market questions, server messages)
can carry control characters and escape sequences: ``terminal_text`` removes them, and every line
the Screen writes passes through it (the tables clean their labels themselves).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Protocol, TextIO

from ._table_layout import cut
from .row import State

NOTES_KEPT = 6  # event notes shown under the table on a terminal
NOTES_MIN = 2  # ... of which a short terminal still shows this many

# Colours (ANSI SGR) on a terminal: the states a row must not be traded in, and price moves
RESET = "\x1b[0m"
UP, DOWN = "\x1b[32m", "\x1b[31m"
STATE_COLOURS = {
    State.SUBSCRIBING: "\x1b[36m",  # cyan
    State.STALE: "\x1b[1;33m",  # bold yellow
    State.INVALID: "\x1b[1;97;41m",  # bold white on red
    State.RESOLVED: "\x1b[35m",  # magenta
    State.UNCONFIRMED: "\x1b[34m",  # blue
}



def paint(text: str, style: str) -> str:
    """``text`` in the colour ``style`` (an SGR sequence; "" for none)."""
    return f"{style}{text}{RESET}" if style else text


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


def can_encode(stream: TextIO, text: str) -> bool:
    """Whether ``stream`` can write ``text`` (a terminal with a non-UTF-8 encoding may not)."""
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
