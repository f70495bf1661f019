"""``--json`` and ``--csv`` of watch, demo and replay: lines for a pipe, every row change, exact decimals.

And ``| head`` ends them quietly with exit 0.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pm_ws._exit import ExitCode
from pm_ws._core import BookStore
from pm_ws._row_output import ROW_COLUMNS, JsonLines, LivePipe, RowChanges, row_record
from pm_ws.backoff import ExponentialBackoff
from pm_ws.cli import main
from pm_ws.client import MarketClient
from pm_ws.row import State, Top

from client_helpers import all_in, record_session, serving, wait_until

DECIMAL = re.compile(r"\d+\.\d{2,6}")
PRICE_FIELDS = ("bid", "bid_size", "ask", "ask_size", "last", "last_size", "tick")
SUBPROCESS_TIMEOUT = 60


def pm_ws(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.Popen(
        [sys.executable, "-m", "pm_ws", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def floats_in(value: Any) -> list[Any]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for item in value.values() for f in floats_in(item)]
    if isinstance(value, list):
        return [f for item in value for f in floats_in(item)]
    return []


def assert_exact_row(record: dict[str, Any]) -> None:
    assert set(ROW_COLUMNS) <= record.keys()
    for name in PRICE_FIELDS:
        assert record[name] is None or DECIMAL.fullmatch(record[name]), (name, record[name])
    assert record["state"] in State.__members__


def test_demo_json_writes_rows_events_and_notes_one_object_per_line() -> None:
    demo = pm_ws("demo", "--duration", "3", "--json", "--seed", "7")
    out, err = demo.communicate(timeout=SUBPROCESS_TIMEOUT)

    assert demo.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]  # every line is one JSON object
    assert not floats_in(records)  # prices, sizes and times are never floats
    rows = [record for record in records if record["type"] == "row"]
    for row in rows:
        assert_exact_row(row)
    assert {"market 1 YES", "market 1 NO"} <= {row["label"] for row in rows}
    # the demo's abrupt disconnect at 2 s: every row STALE, said by rows, events and a note
    assert {"SUBSCRIBING", "LIVE", "STALE"} <= {row["state"] for row in rows}
    events = {record["event"] for record in records if record["type"] == "event"}
    assert {"connected", "disconnected", "state"} <= events
    assert any("abrupt TCP disconnect" in record["text"] for record in records if record["type"] == "note")
    stale = next(r for r in records if r["type"] == "event" and r["event"] == "state" and r["state"] == "STALE")
    assert stale["reason"] and stale["cause"] == "marked"


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_demo_into_head_ends_quietly_with_exit_0(option: str) -> None:
    demo = pm_ws("demo", "--duration", "20", option)
    assert demo.stdout is not None
    lines = [demo.stdout.readline() for _ in range(3)]  # `| head -3`
    demo.stdout.close()
    assert demo.wait(timeout=SUBPROCESS_TIMEOUT) == 0
    assert demo.stderr is not None
    with demo.stderr:
        assert demo.stderr.read() == ""  # no traceback, no "Exception ignored"
    assert all(line.endswith("\n") for line in lines)


def test_demo_csv_writes_a_header_then_one_line_per_row_change() -> None:
    demo = pm_ws("demo", "--duration", "1.5", "--csv", "--seed", "7")
    out, err = demo.communicate(timeout=SUBPROCESS_TIMEOUT)

    assert demo.returncode == 0, err
    lines = list(csv.reader(out.splitlines()))
    assert tuple(lines[0]) == ROW_COLUMNS
    assert len(lines) > 7 and all(len(line) == len(ROW_COLUMNS) for line in lines)
    assert {line[2] for line in lines[1:]} >= {"SUBSCRIBING", "LIVE"}


@pytest.mark.parametrize("per_connection", [200, 1], ids=["one connection", "a connection per token"])
async def test_live_pipe_writes_every_change_of_every_row(per_connection: int) -> None:
    """An observer that compares every row after every frame and store operation sees the lines' changes."""
    async with serving(markets=2, seed=3, rate_hz=0, trade_every=3) as server:
        tokens = server.token_ids
        client = MarketClient(
            server.url, capacity=len(tokens), max_tokens_per_connection=per_connection,
            backoff=lambda: ExponentialBackoff(0.01, 0.05),
        )  # fmt: skip
        await client.subscribe(tokens)
        seen: dict[str, list[Top]] = {token: [] for token in tokens}

        def look(*_: Any) -> None:
            for token in tokens:
                top = client.store.top(token)
                if not seen[token] or seen[token][-1] != top:
                    seen[token].append(top)

        look()
        stop_looking = client.add_tap(on_frame=look, on_store=look)
        stream = io.StringIO()
        pipe = LivePipe(client, JsonLines(stream))
        async with client:
            await wait_until(all_in(client, tokens, State.LIVE), what="books")
            await server.step(30)
            server.abort_all()
            await wait_until(all_in(client, tokens, State.STALE), what="STALE")
            await wait_until(all_in(client, tokens, State.LIVE), timeout=5.0, what="recovery")
            await server.step(30)
            await asyncio.sleep(0.1)
            pipe.close()
            stop_looking()  # before the client stops (and marks every row STALE)

    rows = [json.loads(line) for line in stream.getvalue().splitlines()]
    for token in tokens:
        written = [(row["seq"], row["state"]) for row in rows if row["token"] == token]
        assert written == [(top.seq, top.state.name) for top in seen[token]]
        assert len(written) > 5


def test_row_changes_see_a_row_once_per_change() -> None:
    from pm_ws import _core

    store = _core.BookStore(4)
    store.add("1")
    changes = RowChanges(store)
    assert [token for token, _ in changes.changed()] == ["1"]  # a new row counts
    assert changes.changed() == []
    store.mark_stale(["1"])
    store.add("2")
    changes.retrack()
    assert [(token, top.state) for token, top in changes.changed()] == [("1", State.STALE), ("2", State.SUBSCRIBING)]


class _GoneReader(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError


def test_json_lines_stop_at_a_broken_pipe() -> None:
    from pm_ws import _core

    store = _core.BookStore(1)
    store.add("1")
    output = JsonLines(_GoneReader())
    with pytest.raises(BrokenPipeError):
        output.rows([("1", store.top("1"))], 0)
    assert output.broken
    output.rows([("1", store.top("1"))], 0)  # nothing more is tried


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("json") / "session.pmws"
    asyncio.run(record_session(path))
    return path


def test_replay_json_writes_the_recordings_notes_and_the_rows_of_export(
    session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(session), "--json"]) == ExitCode.OK
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["export", str(session), "-o", str(tmp_path / "top.csv")]) == ExitCode.OK
    with open(tmp_path / "top.csv", newline="", encoding="utf-8") as stream:
        exported = list(csv.DictReader(stream))

    assert not floats_in(records)
    metas = [record["meta"]["type"] for record in records if record["type"] == "meta"]
    assert metas[:2] == ["start", "subscribe"] and "stale" in metas
    rows = [record for record in records if record["type"] == "row"]
    for row in rows:
        assert_exact_row(row)
    as_text = [{name: "" if row[name] is None else str(row[name]) for name in ROW_COLUMNS} for row in rows]
    assert as_text == exported  # one schema for --json rows, --csv and export


def test_replay_json_realtime_paces_the_lines(session: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(session), "--json", "--realtime", "--speed", "50", "--to", "+0.2"]) == ExitCode.OK
    assert all(json.loads(line)["type"] in ("row", "meta") for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["demo", "--json", "--csv"], "not allowed with"), (["watch", "--nats", "nats://x", "--json"], "--nats"),
     (["replay", "r.pmws", "--check", "--csv"], "do not apply to --check")],
)  # fmt: skip
def test_bad_output_options_exit_2_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["watch", "demo", "replay"])
def test_help_documents_the_line_schema(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "--json writes one JSON object per line" in out and '"type": "row"' in out and "--csv writes" in out


def test_a_resolved_row_names_its_outcome_and_an_open_one_none() -> None:
    store = BookStore(4)
    for token in ("1", "2", "3"):
        store.add(token)
    store.resolve("1", won=True)
    store.resolve("2", won=False)

    outcomes = {token: row_record(token, store.top(token), 0)["outcome"] for token in ("1", "2", "3")}
    assert outcomes == {"1": "WON", "2": "LOST", "3": None}
