"""``--json`` and ``--csv``: row changes and events as lines for a pipe instead of the table.

A row change is seen through the row's ``SEQ``, which every change of a row bumps: after each frame
(a client tap, or each step of a replay) and after each store operation of the client (a row added,
marked STALE), the rows whose ``SEQ`` moved are written, so no change is missed; several changes of
one row inside one frame show as one line, its state after the frame (no reader can see a row in
the middle of a frame). A live view also looks every 0.1 s, for what changes rows without a frame
(the REST books and resolutions of ``--all``). Prices and sizes are exact decimal strings, never floats.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import orjson

from ._core import BookStore
from ._decimal_text import price_text, size_text
from .client_events import ClientEvent
from .row import OUTCOME_LOST, OUTCOME_WON, SEQ, SIDE_BUY, SIDE_SELL, State, Top

if TYPE_CHECKING:  # replay and export load no websockets
    from .client import MarketClient

SIDES = {SIDE_BUY: "BUY", SIDE_SELL: "SELL"}
# One row change; None (JSON null, an empty CSV cell) for an empty book side or what is not known yet
ROW_COLUMNS = (
    "time_ns", "token", "state", "bid", "bid_size", "ask", "ask_size", "last", "last_size", "last_side",
    "tick", "recv_ns", "exch_ms", "age_ns", "exch_age_ms", "seq", "outcome",
)  # fmt: skip
OUTCOMES = {OUTCOME_WON: "WON", OUTCOME_LOST: "LOST"}

OUTPUT_HELP = """\
--json writes one JSON object per line, flushed line by line (for jq, a log shipper, a program):
  {"type": "row", "time_ns", "token", "label"?, "state", "bid", "bid_size", "ask", "ask_size", "last",
   "last_size", "last_side", "tick", "recv_ns", "exch_ms", "age_ns", "exch_age_ms", "seq", "outcome"}
      one per row change, after the frame (or the client's own mark) that changed the row. time_ns:
      when the change happened (the frame's receive time, ns since the epoch); state: SUBSCRIBING,
      LIVE, STALE, INVALID, RESOLVED or UNCONFIRMED, and only LIVE may be traded on; prices and sizes
      are exact decimal strings ("0.514", "1304.72"), null for an empty side or an unknown trade;
      last_side BUY, SELL or null; recv_ns: receive time of the frame that last changed the row;
      exch_ms: the exchange's timestamp; age_ns, exch_age_ms: time_ns minus those; seq: grows on
      every change of the row; outcome: WON or LOST once RESOLVED with a known winner, else null
  {"type": "event", "time_ns", "event", "token"?, ...} what the client says (time_ns: when it was
      written, just after the rows it changed): "connected"
      (connection, tokens), "disconnected" (connection, reason), "state" (token, state, reason,
      cause), "resync", "trade" (token, price, size, side, exch_ms), "new_market" and
      "market_resolved" (data: the server's object)
  {"type": "note", "time_ns", "text"} what `pm-ws demo` does to its server
  {"type": "meta", "time_ns", "meta"} replay: a note of the recording (subscribe, stale, ...)
--csv writes a header line, then one line per row change with the columns of a "row" object
(time_ns, token, state, bid, ..., seq; an empty cell for null); events are left out.
"""


LEVEL_COLUMNS = ("time_ns", "token", "side", "price", "size")

EXPORT_HELP = f"""\
top of book (default): one record per row change, after the frame (or the recorded client's own
mark) that changed it, with the columns of `pm-ws replay --csv`:
{textwrap.fill(", ".join(ROW_COLUMNS), 96, initial_indent="  ", subsequent_indent="  ")}
  time_ns: the frame's receive time (a STALE mark: the frame before it), ns since the epoch;
  recv_ns: receive time of the frame that last changed the row; exch_ms: the exchange's timestamp;
  prices and sizes exact decimals, empty (null) for an empty book side or no trade yet
--levels: one record per order-book level that changed: {", ".join(LEVEL_COLUMNS)}
  side bid or ask; size 0: the level is gone (a snapshot that replaces the book lists every level)
Parquet types: time_ns, recv_ns timestamp[ns, UTC]; exch_ms timestamp[ms, UTC]; prices and tick
decimal128(19, 4); sizes decimal128(19, 6); age_ns, exch_age_ms, seq int64; the rest strings.
Replaying the top-of-book records in order gives the rows `pm-ws replay` rebuilds.
"""


class RowOutput(Protocol):
    """Where row changes and events go: ``JsonLines``, or ``RowsTo`` a table (rows only)."""

    @property
    def broken(self) -> bool: ...  # the reader went away (`| head` has what it wanted): nothing more is written

    def rows(self, changed: Iterable[tuple[str, Top]], now_ns: int) -> None: ...
    def event(self, record: dict[str, Any]) -> None: ...


def row_record(token: str, top: Top, now_ns: int) -> dict[str, Any]:
    """A row change as ``ROW_COLUMNS`` values: ints, exact decimal strings and None."""
    return {
        "time_ns": now_ns,
        "token": token,
        "state": top.state.name,
        "bid": price_text(top.bid_px, top.tick) if top.bid_levels else None,
        "bid_size": size_text(top.bid_sz) if top.bid_levels else None,
        "ask": price_text(top.ask_px, top.tick) if top.ask_levels else None,
        "ask_size": size_text(top.ask_sz) if top.ask_levels else None,
        "last": price_text(top.last_px, top.tick) if top.last_px or top.last_sz else None,
        "last_size": size_text(top.last_sz) if top.last_px or top.last_sz else None,
        "last_side": SIDES.get(top.last_side),
        "tick": price_text(top.tick) if top.tick else None,
        "recv_ns": top.recv_ts_ns or None,
        "exch_ms": top.exch_ts_ms or None,
        "age_ns": now_ns - top.recv_ts_ns if top.recv_ts_ns else None,
        "exch_age_ms": now_ns // 1_000_000 - top.exch_ts_ms if top.exch_ts_ms else None,
        "seq": top.seq,
        "outcome": OUTCOMES.get(top.outcome),
    }


def event_record(event: ClientEvent, now_ns: int) -> dict[str, Any]:
    """A client event as a JSON-ready ``{"type": "event", ...}`` object."""
    record: dict[str, Any] = {"type": "event", "time_ns": now_ns, "event": event.kind}
    if event.token_id is not None:
        record["token"] = event.token_id
    data = event.data
    if event.kind == "trade":
        record.update(
            price=price_text(data["price"]), size=size_text(data["size"]), side=SIDES.get(data["side"]),
            exch_ms=data["timestamp"] or None,
        )  # fmt: skip
    elif event.kind in ("new_market", "market_resolved"):
        record["data"] = data
    else:
        record.update((key, value.name if isinstance(value, State) else value) for key, value in data.items())
    return record


class RowChanges:
    """The rows of a store that changed since the last look, found by their ``SEQ``.

    A frame fed with ``owner=n`` changes only the rows of tokens owned by ``n``: ``changed(n)`` looks
    at those alone, so a client with many connections pays per frame for one connection's tokens.
    """

    def __init__(self, store: BookStore) -> None:
        self.store = store
        self._slots: list[tuple[str, int]] = []
        self._owned: dict[int, list[tuple[str, int]]] = {}
        self._seen: dict[str, int] = {}
        self.retrack()

    def retrack(self) -> None:
        """Follow the tokens the store holds now, and their owners (after some were added, removed or moved)."""
        store, seen = self.store, self._seen
        self._slots = [(token, store.slot(token)) for token in store.tokens()]
        self._owned = {}
        for token, slot in self._slots:
            self._owned.setdefault(store.owner(token), []).append((token, slot))
        self._seen = {token: seen.get(token, -1) for token, _ in self._slots}

    def changed(self, owner: int | None = None) -> list[tuple[str, Top]]:
        """``(token, top)`` of every row (of ``owner``'s tokens, if given) whose ``SEQ`` moved since it was last
        seen; a new row counts."""
        slots = self._slots if owner is None else self._owned.get(owner, [])
        view, seen, found = self.store.view, self._seen, []
        for token, slot in slots:
            seq = view[slot, SEQ]
            if seq != seen[token]:
                seen[token] = seq
                found.append((token, self.store.top(token)))
        return found


class _Lines:
    """Whole lines on a text stream, each flushed at once; after a broken pipe nothing more is written."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.broken = False

    def write_line(self, line: str) -> None:
        if self.broken:
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.broken = True
            raise


class JsonLines(_Lines):
    """``--json``: one JSON object per row change and per event."""

    def __init__(self, stream: TextIO, labels: dict[str, str] | None = None) -> None:
        super().__init__(stream)
        self.labels = labels or {}

    def rows(self, changed: Iterable[tuple[str, Top]], now_ns: int) -> None:
        for token, top in changed:
            record = {"type": "row", **row_record(token, top, now_ns)}
            if token in self.labels:
                record["label"] = self.labels[token]
            self.event(record)

    def event(self, record: dict[str, Any]) -> None:
        self.write_line(orjson.dumps(record).decode())


class CsvLines(_Lines):
    """A header line of ``columns``, then one line per record added (None is an empty cell)."""

    def __init__(self, stream: TextIO, columns: tuple[str, ...]) -> None:
        super().__init__(stream)
        self.columns = columns
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="")
        self._line(columns)

    def add(self, record: dict[str, Any]) -> None:
        self._line(record[column] for column in self.columns)

    def _line(self, cells: Iterable[Any]) -> None:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(cells)
        self.write_line(self._buffer.getvalue())


class Table(Protocol):
    """Records of fixed columns: ``CsvLines`` or a Parquet table being built."""

    @property
    def broken(self) -> bool: ...

    def add(self, record: dict[str, Any]) -> None: ...


class RowsTo:
    """``--csv`` and ``pm-ws export``: each row change as a record of ``ROW_COLUMNS`` in a table; no events."""

    def __init__(self, table: Table) -> None:
        self.table = table

    @property
    def broken(self) -> bool:
        return self.table.broken

    def rows(self, changed: Iterable[tuple[str, Top]], now_ns: int) -> None:
        for token, top in changed:
            self.table.add(row_record(token, top, now_ns))

    def event(self, record: dict[str, Any]) -> None:
        pass  # a table has one schema: rows


def output_for(args: argparse.Namespace, labels: dict[str, str] | None = None) -> RowOutput | None:
    """The ``--json`` or ``--csv`` output on stdout, or None for the table."""
    if getattr(args, "json", False):
        return JsonLines(sys.stdout, labels)
    if getattr(args, "csv", False):
        return RowsTo(CsvLines(sys.stdout, ROW_COLUMNS))
    return None


class LivePipe:
    """A running client's row changes and events on a ``RowOutput``, row changes seen through the client's taps."""

    def __init__(self, client: MarketClient, output: RowOutput) -> None:
        self.output = output
        self._changes = RowChanges(client.store)
        self._remove_tap = client.add_tap(on_frame=self._on_frame, on_store=self._on_store)
        self._write_rows(time.time_ns())  # the rows as they are now: every later line is a change

    @property
    def broken(self) -> bool:
        return self.output.broken

    def note(self, text: str) -> None:
        self._write(lambda: self.output.event({"type": "note", "time_ns": time.time_ns(), "text": text}))

    def event(self, event: ClientEvent) -> None:
        self._write(lambda: self.output.event(event_record(event, time.time_ns())))

    def poll(self) -> None:
        """Write the changes made without a frame or a client's store operation (a REST book of ``--all``)."""
        self._write_rows(time.time_ns())

    def close(self) -> None:
        self._remove_tap()

    def _on_frame(self, frame: str | bytes, recv_ns: int, owner: int) -> None:
        self._write_rows(recv_ns, owner)

    def _on_store(self, op: str, tokens: list[str], options: dict[str, Any]) -> None:
        if op in ("add", "remove", "set_owner"):
            self._changes.retrack()
        self._write_rows(time.time_ns())

    def _write_rows(self, now_ns: int, owner: int | None = None) -> None:
        self._write(lambda: self.output.rows(self._changes.changed(owner), now_ns))

    def _write(self, write: Callable[[], None]) -> None:
        # Called from the client's callbacks: a reader gone away is kept in `broken` (LiveView stops on it)
        # rather than raised into the client, which would count it as a failing callback
        if self.output.broken:
            return
        try:
            write()
        except BrokenPipeError:
            pass
