"""``pm-ws export``: a recording's top-of-book history, or its order-book level changes, as CSV or Parquet.

The recording is replayed (``Replayer.write_changes``, as ``replay --csv`` does) and every row change
becomes a record; Parquet goes through pyarrow (the ``parquet`` extra) with exact types: decimal128
prices and sizes, UTC timestamps, no floats.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from ._core import BookStore
from ._decimal_text import price_text, size_text
from ._exit import CliError, ExitCode
from ._replay import Replayer, core_module, load_recording
from ._row_output import LEVEL_COLUMNS, ROW_COLUMNS, CsvLines, RowOutput, RowsTo, Table
from .row import Top

PARQUET_INSTALL = "pip install 'pm_ws[parquet]'"


def export(args: argparse.Namespace) -> int:
    """Run ``pm-ws export`` (see ``pm-ws export --help``)."""
    parquet = (args.format or ("parquet" if args.output.lower().endswith(".parquet") else "csv")) == "parquet"
    pyarrow = _pyarrow() if parquet else None  # a missing extra fails before the recording is read
    recording = load_recording(args.file)
    replayer = Replayer(core_module("auto"), recording.tokens)
    columns = LEVEL_COLUMNS if args.levels else ROW_COLUMNS
    try:
        if pyarrow is not None:
            records = RecordList()
            replayer.write_changes(recording, _output(args.levels, replayer.store, records))
            _write_parquet(pyarrow, records.records, columns, args.output)
            written = len(records.records)
        else:
            with open(args.output, "w", encoding="utf-8", newline="") as stream:
                lines = CountedCsvLines(stream, columns)
                replayer.write_changes(recording, _output(args.levels, replayer.store, lines))
            written = lines.count
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}", ExitCode.BAD_FILE) from None
    what = "level changes" if args.levels else "row changes"
    print(f"exported {written:,} {what} of {len(recording.tokens)} tokens from {args.file} to {args.output}",
          file=sys.stderr)  # fmt: skip
    return ExitCode.OK


def _output(levels: bool, store: BookStore, table: Table) -> RowOutput:
    return LevelChanges(store, table) if levels else RowsTo(table)


class RecordList:
    """A ``Table`` kept in memory (for Parquet, written whole at the end)."""

    broken = False

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)


class CountedCsvLines(CsvLines):
    """``CsvLines`` that counts the records written."""

    count = 0

    def add(self, record: dict[str, Any]) -> None:
        super().add(record)
        self.count += 1


class LevelChanges:
    """Each changed row's book compared with the one seen before: a record per level that changed (size 0: gone)."""

    def __init__(self, store: BookStore, table: Table) -> None:
        self.store = store
        self.table = table
        self._books: dict[str, tuple[dict[int, int], dict[int, int]]] = {}

    @property
    def broken(self) -> bool:
        return self.table.broken

    def rows(self, changed: Iterable[tuple[str, Top]], now_ns: int) -> None:
        for token, top in changed:
            bids, asks = self.store.book(token, depth=None)
            book = (dict(bids), dict(asks))
            before = self._books.get(token, ({}, {}))
            self._books[token] = book
            for side, old, new in (("bid", before[0], book[0]), ("ask", before[1], book[1])):
                for price in sorted(old.keys() | new.keys()):
                    size = new.get(price, 0)
                    if size != old.get(price, 0):
                        record = {"time_ns": now_ns, "token": token, "side": side}
                        self.table.add({**record, "price": price_text(price, top.tick), "size": size_text(size)})

    def event(self, record: dict[str, Any]) -> None:
        pass  # level changes only


def _pyarrow() -> Any:
    try:
        importlib.import_module("pyarrow.parquet")  # imported by name: pyarrow has no type information
    except ImportError:
        raise CliError(f"--to parquet needs pyarrow: {PARQUET_INSTALL}", ExitCode.USAGE) from None
    return importlib.import_module("pyarrow")


def _write_parquet(pa: Any, records: list[dict[str, Any]], columns: tuple[str, ...], path: str) -> None:
    price, size, utc_ns = pa.decimal128(19, 4), pa.decimal128(19, 6), pa.timestamp("ns", tz="UTC")
    types = {
        "time_ns": utc_ns, "recv_ns": utc_ns, "exch_ms": pa.timestamp("ms", tz="UTC"),
        "bid": price, "ask": price, "last": price, "tick": price, "price": price,
        "bid_size": size, "ask_size": size, "last_size": size, "size": size,
        "age_ns": pa.int64(), "exch_age_ms": pa.int64(), "seq": pa.int64(),
    }  # fmt: skip
    arrays = {}
    for column in columns:
        kind = types.get(column, pa.string())
        values = [record[column] for record in records]
        if pa.types.is_decimal(kind):  # from the exact decimal text: Decimal("0.514"), never a float
            values = [None if value is None else Decimal(value) for value in values]
        arrays[column] = pa.array(values, type=kind)
    pa.parquet.write_table(pa.table(arrays), path)
