"""``pm-ws peek NAME``: the table a ``watch``/``demo --share NAME`` publishes, shown from another process.

It reads the shared table through ``TopReader`` (no connection, no lock) with the ``watch`` display,
and says in its header line whether the writer is alive and how old its heartbeat is. A writer that
dies leaves every row STALE; a new writer of the same name is picked up (a note says so).
"""

from __future__ import annotations

import argparse
import sys
import time

from . import TopReader
from ._exit import CliError, ExitCode
from ._watch_view import TopTable, age_text, can_encode, screen_for
from .shared import SharedTableError


def peek(args: argparse.Namespace) -> int:
    """Run ``pm-ws peek``: refresh until --duration passes (exit 0) or Ctrl-C."""
    if getattr(args, "depth", None) is not None:
        raise CliError("peek shows the rows only: a shared table holds no price levels (no --depth)", ExitCode.USAGE)
    try:
        reader = TopReader(args.name)
    except SharedTableError as exc:  # not there (yet), or not a table this pm_ws reads
        raise CliError(str(exc), ExitCode.NOT_FOUND) from None
    screen, refresh = screen_for(sys.stdout, plain=args.plain, refresh=args.refresh)
    table = TopTable(reader, ascii_only=not can_encode(sys.stdout, "×…"), columns=getattr(args, "columns", None))
    started = time.monotonic()
    alive, generation = True, reader.generation
    with reader:
        try:
            while True:
                now = time.monotonic()
                if reader.generation != generation:  # the reader found a new writer's table
                    generation, alive = reader.generation, True
                    screen.note(f"writer pid {reader.writer_pid} took the table over")
                elif reader.writer_alive() != alive:
                    alive = not alive
                    screen.note(f"writer pid {reader.writer_pid} " + ("is back" if alive else "is gone: rows read STALE"))
                screen.show_table(header(reader, now - started), table, now_monotonic=now)
                elapsed = now - started
                if args.duration is not None and elapsed >= args.duration:
                    return ExitCode.OK
                wait = refresh if args.duration is None else min(refresh, args.duration - elapsed)
                time.sleep(max(0.0, wait))
        finally:
            screen.close()


def header(reader: TopReader, elapsed: float) -> str:
    """The line above the table: the name, the writer and its heartbeat (the Screen adds the states)."""
    writer = "alive" if reader.writer_alive() else "GONE (every row STALE)"
    beat = age_text(max(0, reader.heartbeat_age_ns()) / 1e9)
    return (
        f"pm-ws peek {reader.name}  {elapsed:.0f}s  writer pid {reader.writer_pid} {writer}, "
        f"heartbeat {beat} ago"
    )
