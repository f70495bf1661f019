"""The pm-ws command line: every subcommand against loopback fakes (WebSocket and Gamma REST)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import http.server
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
import urllib.parse
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from pm_ws import BookStore, Dispatcher, MarketClient, TopReader, _core, _live, _record, _replay
from pm_ws import _core_py  # only to build a deliberately broken core for the --check test
from pm_ws._decimal_text import price_text, size_text
from pm_ws._exit import ExitCode
from pm_ws._record import recording_client
from pm_ws._watch_view import RateMeter, Screen, TopTable, screen_for, short_token, terminal_text
from pm_ws.cli import build_parser, main
from pm_ws import cli
from pm_ws.gamma import GammaError, MarketNotFoundError, markets_by_condition_id, markets_by_slug
from pm_ws.row import State
from pm_ws.recording import KIND_META, RecordingReader, RecordingWriter
from pm_ws.testing import FakeMarketServer

SUBPROCESS_TIMEOUT = 60


# -- fixtures ---------------------------------------------------------------------------------------


@dataclass
class ServerThread:
    """A FakeMarketServer running on its own event loop in a thread, so main() can run here."""

    server: FakeMarketServer
    loop: asyncio.AbstractEventLoop

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def subscribed_connections(self) -> int:
        return sum(1 for conn in self.server.connections if conn.subscribed and not conn.closed)

    def wait_subscribed(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.subscribed_connections() < n:
            assert time.monotonic() < deadline, f"{n} subscribed connections expected"
            time.sleep(0.02)


@contextmanager
def server_thread(**options: Any) -> Iterator[ServerThread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = FakeMarketServer(**options)
    running = ServerThread(server, loop)
    running.call(server.start())
    try:
        yield running
    finally:
        running.call(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def quiet_server() -> Iterator[ServerThread]:
    """Two binary markets whose books change only when the test says so."""
    with server_thread(markets=2, seed=11, rate_hz=0, trade_every=4) as running:
        yield running


@contextmanager
def gamma_fake(routes: dict[str, Any]) -> Iterator[str]:
    """A loopback Gamma REST fake: routes map "/path?query" to a JSON value (or bytes to send raw)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path, _, query = self.path.partition("?")
            key = f"{path}?{urllib.parse.unquote(query)}"
            answer = routes.get(key, routes.get(path, []))
            body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_module(*args: str, timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pm_ws", *args], capture_output=True, text=True, timeout=timeout, env=_child_env()
    )


# A child started from a process that ignores SIGINT (a background job of a non-interactive shell)
# inherits SIG_IGN, and Python then installs no KeyboardInterrupt handler: put Python's back first
_PM_WS_WITH_CTRL_C = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'pm_ws'; runpy.run_module('pm_ws', run_name='__main__', alter_sys=True)"
)


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONIOENCODING": "utf-8"}


def write_recording(path: Path, server: FakeMarketServer, changes: int) -> int:
    """Record a client subscribed to every token of ``server`` (books change without sockets); count frames."""
    start = 1_700_000_000_000_000_000
    with RecordingWriter(path) as writer:
        writer.write_meta({"type": "start", "format": 1}, start)
        writer.write_meta({"type": "subscribe", "tokens": server.token_ids}, start)
        writer.write_frame(server.initial_dump(), start)
        for index, frame in enumerate(server.frames(changes, trades=True), 1):
            writer.write_frame(frame, start + index * 1_000_000)
    return writer.frames


# -- argument handling ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [([], "exit codes:"), (["watch"], "--slug SLUG"), (["record"], "recording format"), (["replay"], "--check"),
     (["demo"], "--share NAME"), (["peek"], "NAME")],
)  # fmt: skip
def test_cli_help_of_every_command_exits_zero(
    command: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert out.startswith(" ".join(["usage: pm-ws", *command]))
    assert expected in out


def test_cli_python_dash_m_runs_the_same_main() -> None:
    result = run_module("--help")

    assert result.returncode == 0
    assert "watch" in result.stdout and "replay" in result.stdout and "demo" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [([], "required"), (["fly"], "invalid choice"), (["watch", "1", "--duration", "-1"], "positive"),
     (["watch", "1", "--duration", "soon"], "not a number"), (["demo", "--markets", "0"], "positive"),
     (["replay"], "required"), (["watch", "bad id!"], "invalid token id"),
     (["watch"], "at least one TOKEN_ID"), (["watch", "1", "--url", "http://127.0.0.1:1"], "invalid WebSocket URL"),
     (["replay", "r.pmws", "--speed", "2"], "--speed applies only with --realtime"),
     (["replay", "r.pmws", "--check", "--impl", "py"], "--impl does not apply to --check"),
     (["demo", "--share", "a/b"], "invalid shared table name"), (["peek"], "required")],
)  # fmt: skip
def test_cli_bad_arguments_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [(["-v", "watch", "1"], True), (["watch", "-v", "1"], True), (["watch", "1", "--verbose"], True),
     (["--verbose", "replay", "r.pmws"], True), (["watch", "1"], False), (["demo"], False)],
)  # fmt: skip
def test_cli_parser_verbose_before_or_after_the_command_is_parsed(argv: list[str], verbose: bool) -> None:
    assert build_parser().parse_args(argv).verbose is verbose


@pytest.mark.parametrize(
    ("argv", "positionals"),
    [(["record", "out.pmws", "--url", "ws://127.0.0.1:9", "1", "2"], {"out": "out.pmws", "tokens": ["1", "2"]}),
     (["record", "--url", "ws://127.0.0.1:9", "out.pmws", "1", "--overwrite", "2"], {"out": "out.pmws", "tokens": ["1", "2"]}),
     (["record", "--slug", "s", "out.pmws"], {"out": "out.pmws", "tokens": []}),
     (["watch", "--url", "ws://127.0.0.1:9", "1", "--duration", "3", "2", "-v", "3"], {"tokens": ["1", "2", "3"]}),
     (["watch", "1", "--market", "0x1", "2"], {"tokens": ["1", "2"]}),
     (["replay", "--check", "r.pmws"], {"file": "r.pmws"})],
)  # fmt: skip
def test_cli_parser_options_and_positionals_mix_in_any_order(argv: list[str], positionals: dict[str, Any]) -> None:
    args = vars(build_parser().parse_args(argv))

    assert {name: args[name] for name in positionals} == positionals


def test_cli_record_out_then_options_then_tokens_records_them(
    quiet_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = quiet_server.server
    out = tmp_path / "mixed.pmws"

    code = main(["record", str(out), "--url", server.url, "--duration", "0.5", *server.token_ids])

    assert code == ExitCode.OK, capsys.readouterr().err
    with RecordingReader(out) as reader:
        metas = [r.meta for r in reader if r.kind == KIND_META]
    assert metas[1] == {"type": "subscribe", "tokens": server.token_ids}


def test_cli_verbose_after_the_command_is_not_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ws://127.0.0.1:{free_port()}"

    assert main(["watch", "-v", "1", "--url", url]) == ExitCode.UNREACHABLE
    assert f"cannot reach {url}" in capsys.readouterr().err


def test_cli_parser_every_command_has_a_summary() -> None:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))

    assert set(commands.choices) == {"watch", "record", "replay", "demo", "peek", "publish", "export", "plot"}
    assert all(choice.help for choice in commands._choices_actions)


def test_cli_help_lists_every_exit_code_with_its_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == ExitCode.OK
    epilog = capsys.readouterr().out.split("exit codes:\n", 1)[1]

    assert [line.split(maxsplit=1) for line in epilog.splitlines()] == [[str(c.value), c.meaning] for c in ExitCode]


@pytest.mark.parametrize(
    ("module", "loads_fake_server"),
    [("pm_ws.cli", False), ("pm_ws._live", False), ("pm_ws._record", False), ("pm_ws._replay", False),
     ("pm_ws._peek", False), ("pm_ws._demo", True)],
)
def test_cli_only_demo_imports_the_fake_server(module: str, loads_fake_server: bool) -> None:
    # a fresh interpreter: this one has pm_ws.testing loaded already
    code = f"import sys, {module}; print('pm_ws.testing' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)

    assert result.stdout.strip() == str(loads_fake_server), result.stderr


# -- watch ------------------------------------------------------------------------------------------


def test_cli_watch_loopback_server_prints_exact_books(
    quiet_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    server = quiet_server.server
    token = server.token_ids[0]

    code = main(["watch", token, "--url", server.url, "--duration", "1.5", "--refresh", "0.5"])

    out = capsys.readouterr().out
    (best_bid, bid_size), (best_ask, ask_size) = server.truth(token)[0][0], server.truth(token)[1][0]
    tick = server.tick(token)
    assert code == ExitCode.OK
    last_table = out.rsplit("-- ", 1)[1]
    assert f"{price_text(best_bid, tick)} × {size_text(bid_size)}" in last_table
    assert f"{price_text(best_ask, tick)} × {size_text(ask_size)}" in last_table
    assert "LIVE" in last_table and short_token(token) in last_table


def test_cli_watch_unreachable_url_exits_5(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ws://127.0.0.1:{free_port()}"

    assert main(["watch", "1", "--url", url]) == ExitCode.UNREACHABLE
    assert f"cannot reach {url}" in capsys.readouterr().err


def test_cli_watch_unknown_token_exits_3_after_book_timeout(
    quiet_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["watch", "12345", "--url", quiet_server.server.url, "--book-timeout", "0.5", "--refresh", "0.2"])

    assert code == ExitCode.NOT_FOUND
    assert "no order book for any token after 0.5 s" in capsys.readouterr().err


# -- Gamma resolution -------------------------------------------------------------------------------

CONDITION = "0x" + "ab" * 32


def _gamma_routes(tokens: list[str]) -> dict[str, Any]:
    return {
        "/markets?slug=will-it-rain": [
            {"conditionId": CONDITION, "question": "Will it rain?", "slug": "will-it-rain",
             "clobTokenIds": json.dumps(tokens[:2]), "outcomes": '["Yes", "No"]'}
        ],
        f"/markets?condition_ids={CONDITION}": [
            {"conditionId": CONDITION, "question": "Will it rain?", "clobTokenIds": tokens[:2],
             "outcomes": ["Yes", "No"]}
        ],
        "/events?slug=weather": [
            {"slug": "weather", "markets": [
                {"conditionId": "0x1", "question": "Rain?", "clobTokenIds": json.dumps(tokens[:2])},
                {"conditionId": "0x2", "question": "Snow?", "clobTokenIds": json.dumps(tokens[2:4])},
                {"conditionId": "0x3", "question": "Not on the CLOB"},
            ]}
        ],
        "/markets?slug=gibberish": b"<html>not json</html>",
        "/markets?slug=bad-ids": [{"conditionId": "0x4", "question": "Bad?", "clobTokenIds": '["1", "bad id!"]'}],
    }  # fmt: skip


async def test_gamma_slug_string_encoded_token_ids_resolved() -> None:
    tokens = ["101", "102", "103", "104"]
    with gamma_fake(_gamma_routes(tokens)) as url:
        markets = await markets_by_slug("will-it-rain", url)

    assert [(m.condition_id, m.token_ids, m.outcomes, m.question) for m in markets] == [
        (CONDITION, ("101", "102"), ("Yes", "No"), "Will it rain?")
    ]


async def test_gamma_condition_id_list_token_ids_resolved() -> None:
    with gamma_fake(_gamma_routes(["201", "202"])) as url:
        markets = await markets_by_condition_id(CONDITION, url)

    assert markets[0].token_ids == ("201", "202")


async def test_gamma_event_slug_falls_back_to_every_market_of_the_event() -> None:
    with gamma_fake(_gamma_routes(["1", "2", "3", "4"])) as url:
        markets = await markets_by_slug("weather", url)

    assert [m.token_ids for m in markets] == [("1", "2"), ("3", "4")]


async def test_gamma_unknown_slug_raises_market_not_found() -> None:
    with gamma_fake({}) as url, pytest.raises(MarketNotFoundError, match="no market with slug 'nope'"):
        await markets_by_slug("nope", url)


async def test_gamma_non_json_answer_raises_gamma_error() -> None:
    with gamma_fake(_gamma_routes(["1", "2"])) as url, pytest.raises(GammaError, match="not JSON"):
        await markets_by_slug("gibberish", url)


def test_cli_watch_slug_resolved_through_gamma_fake(
    quiet_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    server = quiet_server.server
    with gamma_fake(_gamma_routes(server.token_ids)) as gamma_url:
        argv = ["watch", "--slug", "will-it-rain", "--gamma-url", gamma_url, "--url", server.url, "--duration", "1"]
        code = main(argv)

    out = capsys.readouterr().out
    assert code == ExitCode.OK
    assert f"{short_token(server.token_ids[0])} Yes Will it rain?" in out
    assert f"{short_token(server.token_ids[1])} No Will it rain?" in out
    assert short_token(server.token_ids[2]) not in out


# what a hostile or broken Gamma answer could put in front of a terminal: a title change (OSC), colours
# and a screen clear (CSI, in 7-bit and 8-bit form), a carriage return, NUL, DEL and a C1 control
HOSTILE = "\x1b]0;pwned\x07Will \x1b[31mit\x1b[0m rain?\x9b2J\r\x00\x7f\x85"


def _control_characters(text: str) -> list[str]:
    return re.findall(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", text)  # every Cc but the newline


@pytest.mark.parametrize(
    ("text", "shown"),
    [(HOSTILE, "Will it rain?"), ("Yes\tor\nno", "Yes or no"), ("a\x1bPsixel\x1b\\b", "ab"),
     ("cut short \x1b[3", "cut short "), ("plain “text” ×…", "plain “text” ×…")],
)  # fmt: skip
def test_terminal_text_removes_control_characters_and_escape_sequences(text: str, shown: str) -> None:
    assert terminal_text(text).strip() == shown.strip()


def test_cli_watch_gamma_text_with_control_characters_is_shown_clean(
    quiet_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    server = quiet_server.server
    routes = {"/markets?slug=hostile": [
        {"conditionId": CONDITION, "question": HOSTILE, "clobTokenIds": server.token_ids[:2],
         "outcomes": ["Y\x1b[2Jes", "N\x1b]2;x\x1b\\o"]}
    ]}  # fmt: skip
    with gamma_fake(routes) as gamma_url:
        argv = ["watch", "--slug", "hostile", "--gamma-url", gamma_url, "--url", server.url, "--duration", "1"]
        code = main(argv)

    captured = capsys.readouterr()
    assert code == ExitCode.OK, captured.err
    assert _control_characters(captured.out) == []
    assert f"{short_token(server.token_ids[0])} Yes Will it rain?" in captured.out
    assert f"{short_token(server.token_ids[1])} No Will it rain?" in captured.out


def test_cli_error_line_and_verbose_log_lines_quoting_a_server_are_clean(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(args: argparse.Namespace) -> int:
        logger = logging.getLogger("pm_ws.client")
        logger.warning("server said %s", HOSTILE)
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            logger.exception("connection 0: unexpected error")
        raise cli.CliError(f"cannot reach ws://127.0.0.1:9: {HOSTILE}", ExitCode.UNREACHABLE)

    monkeypatch.setattr(cli, "_run_watch", run)

    assert main(["-v", "watch", "1"]) == ExitCode.UNREACHABLE
    err = capsys.readouterr().err
    assert _control_characters(err) == []
    assert "server said Will it rain?" in err and "ValueError: Will it rain?" in err
    assert err.splitlines()[-1].rstrip() == "pm-ws: error: cannot reach ws://127.0.0.1:9: Will it rain?"


def test_screen_notes_and_lines_from_the_network_are_clean() -> None:
    stream = io.StringIO()
    screen = Screen(stream, interactive=False)

    screen.show([f"row {HOSTILE}"])
    screen.note(f"connection 0 lost: {HOSTILE}")

    assert _control_characters(stream.getvalue()) == []
    assert "row Will it rain?" in stream.getvalue() and "lost: Will it rain?" in stream.getvalue()


@pytest.mark.parametrize(
    ("option", "value", "code", "message"),
    [("--slug", "nope", ExitCode.NOT_FOUND, "no market with slug 'nope'"),
     ("--market", "0xdead", ExitCode.NOT_FOUND, "no market with condition id '0xdead'"),
     ("--slug", "gibberish", ExitCode.UNREACHABLE, "not JSON"),
     ("--slug", "bad-ids", ExitCode.UNREACHABLE, "answered an invalid token id 'bad id!'")],
)  # fmt: skip
def test_cli_gamma_failures_exit_with_one_line(
    option: str, value: str, code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with gamma_fake(_gamma_routes(["1", "2"])) as gamma_url:
        assert main(["watch", option, value, "--gamma-url", gamma_url, "--url", "ws://127.0.0.1:1"]) == code

    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_cli_gamma_unreachable_exits_5(capsys: pytest.CaptureFixture[str]) -> None:
    gamma_url = f"http://127.0.0.1:{free_port()}"

    assert main(["record", "out.pmws", "--slug", "x", "--gamma-url", gamma_url]) == ExitCode.UNREACHABLE
    assert "cannot reach the Gamma API" in capsys.readouterr().err


# -- record and replay ------------------------------------------------------------------------------


async def _collect_frames(url: str, tokens: list[str], frames: list[str | bytes], stop: asyncio.Event) -> None:
    # A bare subscriber beside the recorder: it must receive exactly the frames the recorder wrote
    async with connect(url, compression=None, ping_interval=None) as ws:
        await ws.send(json.dumps({"assets_ids": tokens, "type": "market", "initial_dump": True,
                                  "custom_feature_enabled": True}))  # fmt: skip
        while not stop.is_set():
            try:
                frames.append(await asyncio.wait_for(ws.recv(), 0.1))
            except TimeoutError:
                continue


def test_cli_record_then_replay_round_trip_is_byte_exact(
    quiet_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = quiet_server.server
    tokens = server.token_ids
    out = tmp_path / "session.pmws"
    seen: list[str | bytes] = []
    stop = asyncio.Event()
    collector = asyncio.run_coroutine_threadsafe(_collect_frames(server.url, tokens, seen, stop), quiet_server.loop)
    quiet_server.wait_subscribed(1)

    with ThreadPoolExecutor(1) as pool:
        recording = pool.submit(main, ["record", str(out), *tokens, "--url", server.url, "--duration", "3"])
        quiet_server.wait_subscribed(2)
        for _ in range(10):
            quiet_server.call(server.step(5))
            time.sleep(0.05)
        quiet_server.call(server.trade(tokens[0]))
        code = recording.result(timeout=30)
    quiet_server.loop.call_soon_threadsafe(stop.set)
    collector.result(timeout=10)

    with RecordingReader(out) as reader:
        records = list(reader)
    frames = [r.frame for r in records if r.kind != KIND_META]
    metas = [r.meta for r in records if r.kind == KIND_META]
    assert code == ExitCode.OK
    # the initial dumps are rendered per connection (own timestamps); every later frame is shared
    assert frames[1:] == seen[1:] and len(frames) > 50
    assert json.loads(frames[0])[0]["asset_id"] == tokens[0]
    assert metas[0]["type"] == "start" and metas[1] == {"type": "subscribe", "tokens": tokens}
    receive_times = [r.recv_ns for r in records if r.kind != KIND_META]
    assert receive_times == sorted(receive_times)
    assert "frames" in capsys.readouterr().err  # the progress line

    replayer = _replay.Replayer(_core, tokens)
    for segment in _replay.load_recording(str(out)).segments:
        replayer.apply_meta(segment.meta)
        for frame, recv_ns in segment.frames:
            replayer.dispatcher.feed(frame, recv_ns)
    assert all(replayer.store.book(t, depth=None) == server.truth(t) for t in tokens)


async def test_recording_client_replay_rebuilds_the_store_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "faults.pmws"
    async with FakeMarketServer(markets=2, seed=4, rate_hz=0, trade_every=3) as server:
        tokens = server.token_ids
        with RecordingWriter(path) as writer:
            client = await recording_client(server.url, tokens, writer)
            async with client:
                await _until(lambda: _all_live(client, tokens))
                await server.step(12)
                server.abort_all()  # the client marks every row STALE: meta records, not frames
                await _until(lambda: not _all_live(client, tokens))
                await _until(lambda: _all_live(client, tokens))
                await server.change_tick(tokens[0], "0.001")
                await server.step(12)
                await _until(lambda: _all_live(client, tokens))
                await asyncio.sleep(0.2)
                client_view = client.store.view.tobytes()

    replayer = _replay.Replayer(_core, tokens)
    for segment in _replay.load_recording(str(path)).segments:
        replayer.apply_meta(segment.meta)
        for frame, recv_ns in segment.frames:
            replayer.dispatcher.feed(frame, recv_ns)
    assert replayer.store.view.tobytes() == client_view


def _all_live(client: Any, tokens: list[str]) -> bool:
    return all(client.store.top(token).state == State.LIVE for token in tokens)


async def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_cli_record_existing_out_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taken.pmws"
    out.write_bytes(b"keep me")
    with server_thread(markets=1, rate_hz=0) as running:
        code = main(["record", str(out), running.server.token_ids[0], "--url", running.server.url])

    assert code == ExitCode.BAD_FILE
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


class _FileOnFullDisk:
    """A writer's file on a disk with ``room`` bytes left: a short write, then ENOSPC."""

    def __init__(self, file: Any, room: int) -> None:
        self.file = file
        self.room = room

    def write(self, data: bytes) -> int:
        if not self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.file.write(data[: self.room])
        self.room -= written
        return int(written)

    def close(self) -> None:
        self.file.close()


@contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextmanager
def _full_disk_out(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where `pm-ws record` writes and fills the disk after a few KB: a real tmpfs or a patched file."""
    if kind == "patched":
        real = _record.RecordingWriter

        def writer_on_full_disk(*args: Any, **kwargs: Any) -> RecordingWriter:
            writer = real(*args, **kwargs)
            writer._file = _FileOnFullDisk(writer._file, room=40_000)
            return writer

        monkeypatch.setattr(_record, "RecordingWriter", writer_on_full_disk)
        yield tmp_path / "full.pmws"
        return
    with _tmpfs(tmp_path / "disk", "64k") as disk:
        yield disk / "full.pmws"


@pytest.mark.parametrize("kind", ["tmpfs", "patched"])
def test_cli_record_full_disk_exits_7_with_one_line_and_a_readable_file(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with server_thread(markets=2, rate_hz=300) as running, _full_disk_out(kind, tmp_path, monkeypatch) as out:
        argv = ["record", str(out), *running.server.token_ids, "--url", running.server.url, "--duration", "30"]
        code = main(argv)
        with RecordingReader(out) as reader:
            frames = sum(1 for r in reader if r.kind != KIND_META)
        size = out.stat().st_size

    err = capsys.readouterr().err
    assert code == ExitCode.DISK_FULL, err
    assert "Traceback" not in err
    error = err.splitlines()[-1]
    kept = re.fullmatch(
        rf"pm-ws: error: disk full while recording {re.escape(str(out))} \(No space left on device\): it keeps "
        r"([\d,]+) frames in its first ([\d,]+) bytes, readable; the frames after them are lost",
        error,
    )  # fmt: skip
    assert kept, error
    assert frames > 0 and int(kept[1].replace(",", "")) == frames
    assert int(kept[2].replace(",", "")) <= size


def test_cli_replay_prints_rate_final_books_and_counters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeMarketServer(markets=2, seed=5, rate_hz=0)
    path = tmp_path / "r.pmws"
    frames = write_recording(path, server, 300)

    code = main(["replay", str(path), "--impl", "py"])

    out = capsys.readouterr().out
    assert code == ExitCode.OK
    assert f"replayed {frames} frames" in out and "frames/s" in out and "µs/frame" in out
    for token in server.token_ids:
        (bid, bid_size), (ask, ask_size) = server.truth(token)[0][0], server.truth(token)[1][0]
        line = next(line for line in out.splitlines() if short_token(token) in line)
        assert f"{price_text(bid, server.tick(token))} × {size_text(bid_size)}" in line
        assert f"{price_text(ask, server.tick(token))} × {size_text(ask_size)}" in line
        assert "LIVE" in line
    assert f"frames={frames}" in out and "ev_price_change=300" in out


def test_cli_replay_realtime_plays_at_recorded_pace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeMarketServer(markets=1, seed=5, rate_hz=0)
    path = tmp_path / "rt.pmws"
    frames = write_recording(path, server, 40)  # 40 ms of recorded time

    started = time.monotonic()
    code = main(["replay", str(path), "--realtime", "--speed", "0.1", "--refresh", "0.1", "--impl", "py"])
    elapsed = time.monotonic() - started

    out = capsys.readouterr().out
    assert code == ExitCode.OK
    assert 0.35 < elapsed < 10
    assert "pm-ws replay" in out and f"frame {frames}/{frames}" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file"), (b"not a recording at all", "not a pm_ws recording"),
     (b"PMWSREC\x01" + bytes(12) + b"junk", "damaged block")],
)  # fmt: skip
def test_cli_replay_bad_file_exits_4(
    content: bytes | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.pmws"
    if content is not None:
        path.write_bytes(content)

    assert main(["replay", str(path)]) == ExitCode.BAD_FILE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "meta", [{"type": "subscribe", "tokens": 5}, {"type": "stale", "tokens": "12"}, {"type": "start", "tokens": {}}]
)
def test_cli_replay_meta_tokens_not_a_list_exits_4(
    meta: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "meta.pmws"
    with RecordingWriter(path) as writer:
        writer.write_meta({"type": "subscribe", "tokens": ["12"]}, 1)
        writer.write_meta(meta, 2)

    assert main(["replay", str(path)]) == ExitCode.BAD_FILE
    err = capsys.readouterr().err
    assert '"tokens" that are not a list' in err and err.count("\n") == 1


@pytest.mark.c_extension
def test_cli_replay_check_compiled_and_pure_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeMarketServer(markets=2, seed=9, rate_hz=0)
    path = tmp_path / "c.pmws"
    frames = write_recording(path, server, 500)

    assert main(["replay", str(path), "--check"]) == ExitCode.OK
    assert f"agree on all {frames} frames" in capsys.readouterr().out


class _DeafDispatcher(_core_py.Dispatcher):
    """A broken 'compiled' core for the divergence test: ignores the 100th frame."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = 0

    def feed(self, frame: Any, recv_ts_ns: int = 0) -> int:
        self.count += 1
        return 0 if self.count == 100 else super().feed(frame, recv_ts_ns)


def test_cli_replay_check_reports_divergence_exits_6(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FakeMarketServer(markets=2, seed=9, rate_hz=0)
    path = tmp_path / "d.pmws"
    write_recording(path, server, 200)
    broken = types.SimpleNamespace(
        __name__="broken", BookStore=_core_py.BookStore, Dispatcher=_DeafDispatcher, IMPLEMENTATION="broken"
    )
    monkeypatch.setattr(_replay, "core_module", lambda choice: broken if choice == "c" else _core_py)

    assert main(["replay", str(path), "--check"]) == ExitCode.DIVERGENCE
    assert "DIVERGENCE at frame 99" in capsys.readouterr().out


# -- demo and Ctrl-C --------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_demo_with_duration_shows_recovery_and_exits_0() -> None:
    result = run_module("demo", "--duration", "6", "--seed", "3", "--fault-every", "2")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "abrupt TCP disconnect" in out
    assert "STALE: 6 tokens" in out
    assert out.count("LIVE: 6 tokens (snapshot)") >= 2  # first books, then again after the fault
    assert "TOKEN" in out and "market 1 YES" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "signum"), [("demo", signal.SIGINT), ("record", signal.SIGINT), ("record", signal.SIGTERM)]
)
def test_cli_ctrl_c_or_sigterm_stops_cleanly_with_exit_0(command: str, signum: int, tmp_path: Path) -> None:
    out = tmp_path / "interrupted.pmws"
    with server_thread(markets=1, rate_hz=50) as running:
        argv = ["demo"]
        if command == "record":
            argv = ["record", str(out), *running.server.token_ids, "--url", running.server.url]
        child = subprocess.Popen(
            [sys.executable, "-c", _PM_WS_WITH_CTRL_C, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=_child_env(),
        )  # fmt: skip
        try:
            time.sleep(3)
            child.send_signal(signum)
            stdout, stderr = child.communicate(timeout=SUBPROCESS_TIMEOUT)
        finally:
            child.kill()  # no stray recorder if the signal did not stop it
            child.communicate()

    assert child.returncode == 0, stderr
    assert "Traceback" not in stderr
    if command == "record":
        with RecordingReader(out) as reader:
            assert sum(1 for r in reader if r.kind != KIND_META) > 20
            assert reader.truncated_bytes == 0
    else:
        assert "LIVE" in stdout


@pytest.mark.slow
def test_cli_record_killed_leaves_readable_file(tmp_path: Path) -> None:
    out = tmp_path / "killed.pmws"
    with server_thread(markets=1, rate_hz=100) as running:
        child = subprocess.Popen(
            [sys.executable, "-m", "pm_ws", "record", str(out), *running.server.token_ids, "--url", running.server.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_child_env(),
        )  # fmt: skip
        time.sleep(3.5)
        child.kill()
        child.wait(timeout=SUBPROCESS_TIMEOUT)

    with RecordingReader(out) as reader:
        frames = sum(1 for r in reader if r.kind != KIND_META)
    assert frames > 50  # at least the blocks of the first two seconds


# -- --share and peek -------------------------------------------------------------------------------


@pytest.fixture
def table_name() -> Iterator[str]:
    """A fresh shared table name; a table left by a killed writer is unlinked afterwards."""
    name = f"pmws-test-{uuid.uuid4().hex[:12]}"
    yield name
    with suppress(FileNotFoundError):
        os.unlink(f"/dev/shm/{name}")


def test_cli_peek_without_a_table_exits_3_with_one_line(table_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["peek", table_name]) == ExitCode.NOT_FOUND
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no pm_ws shared table named {table_name!r}" in err


def test_cli_share_name_in_use_exits_2(table_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = BookStore(2, shared=table_name)
    try:
        assert main(["demo", "--share", table_name, "--duration", "1"]) == ExitCode.USAGE
    finally:
        store.close_shared()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{table_name!r} is in use by writer pid {os.getpid()}" in err


def test_cli_watch_share_publishes_the_table_then_unlinks_it(
    quiet_server: ServerThread, table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server = quiet_server.server
    seen: dict[str, State] = {}

    def read_from_another_thread() -> None:  # TopReader sees only the segment, as another process would
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(seen) < len(server.token_ids):
            with suppress(FileNotFoundError):
                with TopReader(table_name) as reader:
                    seen.update((token, reader.top(token).state) for token in reader.tokens())
                    if set(seen.values()) == {State.LIVE}:
                        return
            time.sleep(0.05)

    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_from_another_thread)
        code = main(["watch", *server.token_ids, "--url", server.url, "--share", table_name, "--duration", "2"])
        reading.result(timeout=15)

    assert code == ExitCode.OK
    assert f"shared as {table_name}" in capsys.readouterr().out
    assert seen == dict.fromkeys(server.token_ids, State.LIVE)
    assert not os.path.exists(f"/dev/shm/{table_name}")  # unlinked at the clean exit


@pytest.mark.slow
def test_cli_peek_shows_a_demo_in_another_process_then_its_death(table_name: str) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "pm_ws", "demo", "--share", table_name, "--markets", "2", "--fault-every", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_child_env(),
    )  # fmt: skip
    try:
        wait_for_live_table(table_name, tokens=4)
        alive = run_module("peek", table_name, "--duration", "1.5")
        demo.kill()  # no clean exit: the table stays behind, its heartbeat stops
        demo.wait(timeout=SUBPROCESS_TIMEOUT)
        dead = run_module("peek", table_name, "--duration", "1.5")
    finally:
        demo.kill()
        demo.communicate()

    assert alive.returncode == 0 and alive.stderr == "", alive.stderr
    first = alive.stdout.split("-- ")[1]
    assert f"pm-ws peek {table_name}" in first and f"writer pid {demo.pid} alive" in first
    assert "4 LIVE" in first and first.count(" LIVE ") == 4
    assert dead.returncode == 0, dead.stderr
    last = dead.stdout.rsplit("-- ", 1)[1]
    assert "GONE" in last and "4 STALE" in last and "LIVE" not in last


def wait_for_live_table(name: str, tokens: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(FileNotFoundError):
            with TopReader(name) as reader:
                held = reader.tokens()
                if len(held) == tokens and all(reader.top(token).state is State.LIVE for token in held):
                    return
        time.sleep(0.1)
    raise AssertionError(f"table {name} not LIVE within {timeout} s")


# -- the table --------------------------------------------------------------------------------------


def test_top_table_rows_show_exact_prices_sizes_and_state() -> None:
    store = BookStore(2)
    dispatcher = Dispatcher(store)
    store.add("12345678901234567890")
    dispatcher.feed(
        '{"event_type":"book","asset_id":"12345678901234567890","bids":[{"price":"0.514","size":"1304.72"}],'
        '"asks":[{"price":"0.52","size":"10"}],"tick_size":"0.001","last_trade_price":"0.515"}',
        recv_ts_ns=1_000_000_000,
    )

    header, row = TopTable(store).lines(now_ns=3_500_000_000)

    assert header.split() == ["TOKEN", "BID", "ASK", "SPREAD", "LAST", "STATE", "AGE", "UPD/S"]
    assert row.split() == ["1234…7890", "0.514", "×", "1304.72", "0.520", "×", "10.00", "0.006", "0.515", "LIVE",
                           "2.5s", "0.0"]  # fmt: skip


def test_top_table_ascii_only_replaces_symbols() -> None:
    store = BookStore(1)
    store.add("98765432109876543210")

    lines = TopTable(store, ascii_only=True).lines()

    assert "9876...3210" in lines[1] and "…" not in "".join(lines)


def test_screen_not_interactive_prints_dated_snapshots_and_notes() -> None:
    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    sink = Sink()
    screen = Screen(sink, interactive=False)  # type: ignore[arg-type]
    screen.show(["a", "b"])
    screen.note("hello")

    assert "\x1b" not in sink.text
    assert sink.text.splitlines()[1:3] == ["a", "b"] and sink.text.endswith("hello\n")


def test_screen_for_pipe_prints_snapshots_every_second_unless_refresh_given() -> None:
    class Pipe(io.StringIO):
        def isatty(self) -> bool:
            return False

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen, refresh = screen_for(Pipe(), plain=False, refresh=None)
    assert (screen.interactive, refresh) == (False, 1.0)
    screen, refresh = screen_for(Terminal(), plain=False, refresh=None)
    assert (screen.interactive, refresh) == (True, 0.25)
    screen, refresh = screen_for(Terminal(), plain=True, refresh=0.1)
    assert (screen.interactive, refresh) == (False, 0.1)


async def test_live_view_closed_with_notes_pending_prints_nothing_after_close(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_live, "NOTE_GATHER_SECONDS", 1.0)  # the note is still gathering when the view closes
    args = argparse.Namespace(plain=True, refresh=0.05, duration=0.1, book_timeout=None)
    client = MarketClient("ws://127.0.0.1:1", capacity=1)
    view = _live.LiveView(client, {}, args, "test")
    client._emit("disconnected", None, {"connection": 0, "reason": "gone"})

    assert await view.run() == ExitCode.OK
    capsys.readouterr()  # what the view printed while it was open
    await asyncio.sleep(1.3)  # past the gathering time
    assert capsys.readouterr().out == ""


def test_rate_meter_counts_per_second_over_its_window() -> None:
    meter = RateMeter(window=1.0)
    meter.update(0, 10.0)

    assert meter.update(50, 10.2) == 0.0
    assert meter.update(100, 11.0) == 100.0
