"""``pm-ws export`` and ``replay --from/--to``: the exported history, replayed in order, is the replay's rows.

The reference is a plain loop over the recording (meta notes and frames, as ``pm-ws replay`` applies
them), independent of the row-change machinery the export shares with ``--json``/``--csv``.
"""

from __future__ import annotations

import csv
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pm_ws import _core, _replay
from pm_ws._exit import ExitCode
from pm_ws._time_points import TimePoint, iso_time, parse_time_point
from pm_ws.cli import main
from pm_ws.row import SIDE_BUY, SIDE_SELL, Top

from client_helpers import record_session

pyarrow = pytest.importorskip("pyarrow")
import pyarrow.parquet  # noqa: E402 - after the skip

Row = tuple[Any, ...]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    path = tmp_path_factory.mktemp("export") / "session.pmws"
    asyncio.run(record_session(path))
    return path


def projected(top: Top) -> Row:
    """The fields of a row the export carries, in pm_ws units (None for an empty side or no trade)."""
    traded = bool(top.last_px or top.last_sz)
    return (
        top.state.name,
        top.bid_px if top.bid_levels else None, top.bid_sz if top.bid_levels else None,
        top.ask_px if top.ask_levels else None, top.ask_sz if top.ask_levels else None,
        top.last_px if traded else None, top.last_sz if traded else None,
        {SIDE_BUY: "BUY", SIDE_SELL: "SELL"}.get(top.last_side), top.tick or None,
        top.recv_ts_ns or None, top.exch_ts_ms or None, top.seq, {1: "WON", 2: "LOST"}.get(top.outcome),
    )  # fmt: skip


def units(text: str, decimals: int) -> int | None:
    if text == "":
        return None
    value = Decimal(text).scaleb(decimals)
    assert value == value.to_integral_value(), text  # exact: no digit beyond the unit
    return int(value)


def parsed(line: dict[str, str]) -> Row:
    """A CSV line back in pm_ws units."""
    def integer(text: str) -> int | None:
        return int(text) if text else None

    return (
        line["state"], units(line["bid"], 4), units(line["bid_size"], 6), units(line["ask"], 4),
        units(line["ask_size"], 6), units(line["last"], 4), units(line["last_size"], 6), line["last_side"] or None,
        units(line["tick"], 4), integer(line["recv_ns"]), integer(line["exch_ms"]), int(line["seq"]),
        line["outcome"] or None,
    )  # fmt: skip


def rows_at(recording: _replay.LoadedRecording, until_ns: int | None) -> dict[str, Row]:
    """The rows after every frame received at or before ``until_ns`` (and the notes after it): a plain loop."""
    replayer = _replay.Replayer(_core, recording.tokens)
    for segment in recording.segments:
        replayer.apply_meta(segment.meta)
        for frame, recv_ns in segment.frames:
            if until_ns is not None and recv_ns > until_ns:
                return _tops(replayer)
            replayer.dispatcher.feed(frame, recv_ns)
    return _tops(replayer)


def _tops(replayer: _replay.Replayer) -> dict[str, Row]:
    return {token: projected(replayer.store.top(token)) for token in replayer.store.tokens()}


def fold(lines: list[dict[str, str]], until_ns: int) -> dict[str, Row]:
    """The exported rows replayed in order up to ``until_ns``: each token's last line."""
    rows: dict[str, Row] = {}
    for line in lines:
        if int(line["time_ns"]) > until_ns:
            break
        rows[line["token"]] = parsed(line)
    return rows


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def frame_times(recording: _replay.LoadedRecording) -> list[int]:
    return sorted({recv_ns for segment in recording.segments for _, recv_ns in segment.frames})


def test_export_csv_replayed_in_order_gives_the_rows_of_the_replay_at_every_frame(
    session: Path, tmp_path: Path
) -> None:
    out = tmp_path / "top.csv"
    assert main(["export", str(session), "-o", str(out)]) == ExitCode.OK
    lines = read_csv(out)
    recording = _replay.load_recording(str(session))
    times = frame_times(recording)

    assert [int(line["time_ns"]) for line in lines] == sorted(int(line["time_ns"]) for line in lines)
    assert {line["state"] for line in lines} >= {"SUBSCRIBING", "LIVE", "STALE"}  # the lost connection is there
    for until_ns in times:
        assert fold(lines, until_ns) == rows_at(recording, until_ns), f"rows differ after the frame at {until_ns}"
    assert fold(lines, times[-1]) == rows_at(recording, None)


def test_export_parquet_has_the_csv_records_with_exact_types(session: Path, tmp_path: Path) -> None:
    assert main(["export", str(session), "-o", str(tmp_path / "top.csv")]) == ExitCode.OK
    assert main(["export", str(session), "-o", str(tmp_path / "top.parquet")]) == ExitCode.OK
    table = pyarrow.parquet.read_table(tmp_path / "top.parquet")
    lines = read_csv(tmp_path / "top.csv")

    assert table.schema.field("bid").type == pyarrow.decimal128(19, 4)
    assert table.schema.field("ask_size").type == pyarrow.decimal128(19, 6)
    assert table.schema.field("time_ns").type == pyarrow.timestamp("ns", tz="UTC")
    assert not any(pyarrow.types.is_floating(field.type) for field in table.schema)
    times = table.column("time_ns").cast(pyarrow.int64()).to_pylist()
    assert times == [int(line["time_ns"]) for line in lines]
    for column in ("bid", "bid_size", "ask", "last_size", "tick"):
        values = table.column(column).to_pylist()
        assert values == [Decimal(line[column]) if line[column] else None for line in lines], column
    assert table.column("token").to_pylist() == [line["token"] for line in lines]


def test_export_levels_replayed_in_order_give_the_replayed_books(session: Path, tmp_path: Path) -> None:
    out = tmp_path / "levels.csv"
    assert main(["export", str(session), "-o", str(out), "--to", "csv", "--levels"]) == ExitCode.OK
    books: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    for line in read_csv(out):
        side = books.setdefault(line["token"], ({}, {}))[0 if line["side"] == "bid" else 1]
        price, size = units(line["price"], 4), units(line["size"], 6)
        assert price is not None and size is not None
        if size:
            side[price] = size
        else:
            side.pop(price)  # a level that goes must have been there
    recording = _replay.load_recording(str(session))
    replayer = _replay.Replayer(_core, recording.tokens)
    replayer.feed_recording(recording)
    for token in recording.tokens:
        bids, asks = replayer.store.book(token, depth=None)
        assert books[token] == (dict(bids), dict(asks))


def test_replay_csv_from_to_starts_with_the_rows_right_at_from(
    session: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = _replay.load_recording(str(session))
    times = frame_times(recording)
    start, end = times[len(times) // 3], times[2 * len(times) // 3]
    offset = Decimal(start - times[0]) / 10**9

    assert main(["replay", str(session), "--csv", "--from", f"+{offset}", "--to", iso_time(end)]) == ExitCode.OK
    lines = list(csv.DictReader(capsys.readouterr().out.splitlines()))

    assert int(lines[0]["time_ns"]) == start and int(lines[-1]["time_ns"]) <= end
    before_start = max(t for t in times if t < start)
    first_block = lines[: len(recording.tokens)]  # the rows at --from, before the first frame of the slice
    assert {line["token"]: parsed(line) for line in first_block} == rows_at(recording, before_start)
    for until_ns in (t for t in times if start <= t <= end):
        assert fold(lines, until_ns) == rows_at(recording, until_ns)


def test_replay_table_from_to_prints_the_final_rows_of_the_slice(
    session: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(session), "--from", "0", "--to", "0.000001"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "replayed 1 frames" in out and "LIVE" in out  # the first frame: the subscription's books


@pytest.mark.parametrize(
    ("text", "expected"),
    [("+30", TimePoint(30 * 10**9, True)), ("90s", TimePoint(90 * 10**9, True)),
     ("1.000000001", TimePoint(1_000_000_001, True)), ("0", TimePoint(0, True)),
     ("2023-11-14T22:13:20Z", TimePoint(1_700_000_000 * 10**9, False)),
     ("2023-11-14T22:13:20.5", TimePoint(1_700_000_000_500_000_000, False)),
     ("2023-11-14T22:13:20.123456789Z", TimePoint(1_700_000_000_123_456_789, False)),
     ("2023-11-14T23:13:20+01:00", TimePoint(1_700_000_000 * 10**9, False))],
)  # fmt: skip
def test_time_points_are_offsets_or_iso_utc_times_in_exact_ns(text: str, expected: TimePoint) -> None:
    assert parse_time_point(text) == expected


def test_iso_time_writes_what_parse_time_point_reads() -> None:
    ns = 1_700_000_000_123_456_700
    assert iso_time(ns) == "2023-11-14T22:13:20.1234567Z"
    assert parse_time_point(iso_time(ns)).ns == ns


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["replay", "r.pmws", "--from", "soon"], "not a time"), (["replay", "r.pmws", "--to", "-3"], "not a time"),
     (["replay", "r.pmws", "--check", "--from", "1"], "do not apply to --check"),
     (["export", "r.pmws"], "required"), (["export", "r.pmws", "-o", "x", "--to", "xlsx"], "invalid choice")],
)  # fmt: skip
def test_bad_slice_and_export_arguments_exit_2_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_export_parquet_without_pyarrow_says_what_to_install(
    session: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if not installed: import raises ImportError

    assert main(["export", str(session), "-o", str(tmp_path / "top.parquet")]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'pm_ws[parquet]'" in err
    assert not (tmp_path / "top.parquet").exists()


def test_export_of_a_missing_file_is_exit_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "none.pmws"), "-o", str(tmp_path / "x.csv")]) == ExitCode.BAD_FILE
    assert "cannot replay" in capsys.readouterr().err
