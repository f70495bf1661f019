"""The `pm-ws record`, --url and Gamma bugs of issue 15, each against a real (often hostile) loopback server."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from pm_ws._exit import ExitCode
from pm_ws.cli import main
from test_cli import SUBPROCESS_TIMEOUT, _PM_WS_WITH_CTRL_C, _child_env, run_module, server_thread

TOKEN = "1234567"


# -- servers ----------------------------------------------------------------------------------------


@contextmanager
def closing_ws_server(code: int = 4003, reason: str = "subscriptions closed") -> Iterator[str]:
    """A WebSocket server that completes every handshake, then closes the connection with ``code``."""

    async def close_at_once(websocket: ServerConnection) -> None:
        await websocket.close(code, reason)

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    address: list[str] = []

    async def run() -> None:
        async with serve(close_at_once, "127.0.0.1", 0) as server:
            address.append(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}")
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield address[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


@contextmanager
def trickling_http_server() -> Iterator[str]:
    """An HTTP server that answers every request at 1 byte per second, a promised 1,000-byte JSON body."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # the accept loop sees `done` soon
    done = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            for byte in head + b" " * 999:
                if done.wait(1.0):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        listener.close()
        thread.join(timeout=10)


# -- arguments --------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["watch", TOKEN], ["record", "out.pmws", TOKEN], ["publish", TOKEN]])
@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:99999", "ws://127.0.0.1:abc", "http://127.0.0.1:1", "ws://:80/x", "127.0.0.1:8080"]
)
def test_bad_url_is_a_usage_error_in_one_line(command: list[str], url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--url", url]) == ExitCode.USAGE

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"argument --url: invalid WebSocket URL", err), err
    assert err.startswith("usage: ")  # argparse's usage, then the one error line
    assert [line for line in err.splitlines() if "error" in line] == [err.splitlines()[-1]]


def test_bad_url_in_a_subprocess_exits_2_without_a_traceback() -> None:
    result = run_module("watch", TOKEN, "--url", "ws://127.0.0.1:99999")

    assert result.returncode == ExitCode.USAGE
    assert "Traceback" not in result.stderr
    assert "invalid WebSocket URL" in result.stderr


@pytest.mark.parametrize(
    ("out", "message"), [("", "the recording file name is empty"), (None, "is a directory: name a file to create")]
)
def test_record_out_empty_or_a_directory_is_one_usage_error(
    out: str | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["record", str(tmp_path) if out is None else out, TOKEN, "--url", "ws://127.0.0.1:9"]

    assert main(argv) == ExitCode.USAGE

    err = capsys.readouterr().err
    assert message in err
    assert "already exists" not in err and "Traceback" not in err


# -- record that gives up ---------------------------------------------------------------------------


def test_record_that_gives_up_with_exit_3_leaves_no_file_so_a_retry_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "session.pmws"
    with server_thread(markets=1, rate_hz=0) as running:
        url = running.server.url
        assert main(["record", str(out), "12345", "--url", url, "--book-timeout", "0.5"]) == ExitCode.NOT_FOUND
        assert not out.exists()
        assert main(["record", str(out), *running.server.token_ids, "--url", url, "--duration", "1"]) == ExitCode.OK

    assert out.stat().st_size > 100
    assert "already exists" not in capsys.readouterr().err


def test_record_server_closing_every_connection_is_reported_with_its_close_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "closed.pmws"
    with closing_ws_server(4003, "subscriptions closed") as url:
        code = main(["record", str(out), TOKEN, "--url", url, "--book-timeout", "2"])

    err = capsys.readouterr().err
    assert code == ExitCode.NOT_FOUND, err
    error = err.splitlines()[-1]
    assert "unknown token ids" not in error
    assert re.search(r"the server closed the connection \d+ times after the subscription", error), error
    assert "close code 4003 'subscriptions closed'" in error
    assert not out.exists()


def test_watch_server_closing_every_connection_is_not_called_unknown_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    with closing_ws_server() as url:
        code = main(["watch", TOKEN, "--url", url, "--book-timeout", "1.5", "--refresh", "0.2"])

    error = capsys.readouterr().err.splitlines()[-1]
    assert code == ExitCode.NOT_FOUND
    assert "every connection ended without a frame" in error and "unknown token ids" not in error


# -- record when the feed dies ----------------------------------------------------------------------


@pytest.mark.slow
def test_record_says_loudly_when_the_server_dies_mid_recording(tmp_path: Path) -> None:
    out = tmp_path / "dies.pmws"
    with server_thread(markets=1, rate_hz=50) as running:
        argv = ["record", str(out), *running.server.token_ids, "--url", running.server.url, "--duration", "5"]
        child = subprocess.Popen(
            [sys.executable, "-m", "pm_ws", *argv], stderr=subprocess.PIPE, text=True, env=_child_env()
        )
        time.sleep(2)
        running.call(running.server.stop())  # the server dies 2 s into a 5 s recording
        _, err = child.communicate(timeout=SUBPROCESS_TIMEOUT)

    assert child.returncode == ExitCode.OK, err  # frames were recorded: the file is kept, the gap reported
    assert re.search(r"pm-ws record: NO FRAMES for \d+ s - connection lost: ", err), err
    assert "connections 0/1 up" in err and "STALE" in err
    assert re.search(r"warning: the feed was down for [\d.]+ s of the [\d.]+ s recording", err), err


@pytest.mark.slow
def test_record_first_progress_line_to_a_log_shows_the_real_rate(tmp_path: Path) -> None:
    out = tmp_path / "rate.pmws"
    with server_thread(markets=1, rate_hz=50) as running:
        argv = ["record", str(out), *running.server.token_ids, "--url", running.server.url, "--duration", "6"]
        result = run_module(*argv)  # stderr is a pipe: a line every 5 s

    assert result.returncode == ExitCode.OK, result.stderr
    first = result.stderr.splitlines()[0]
    rate = re.search(r" frames \(([\d,]+)/s\)", first)
    assert rate and int(rate[1].replace(",", "")) > 0, first
    assert re.match(r"recording rate.pmws \d+ s: connections 1/1 up, 0 reconnects, 2 LIVE; ", first), first


# -- Gamma that answers 1 byte/s ----------------------------------------------------------------------


def test_gamma_lookup_has_a_total_deadline(capsys: pytest.CaptureFixture[str]) -> None:
    with trickling_http_server() as gamma_url:
        started = time.monotonic()
        argv = ["watch", "--slug", "s", "--gamma-url", gamma_url, "--gamma-timeout", "1.5", "--url", "ws://127.0.0.1:9"]
        code = main(argv)
        took = time.monotonic() - started

    assert code == ExitCode.UNREACHABLE
    assert took < 4
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "did not answer within 1.5 s (--gamma-timeout)" in error


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_during_a_slow_gamma_lookup_stops_at_once(signum: int) -> None:
    with trickling_http_server() as gamma_url:
        argv = ["record", "never.pmws", "--slug", "s", "--gamma-url", gamma_url, "--url", "ws://127.0.0.1:9"]
        child = subprocess.Popen(
            [sys.executable, "-c", _PM_WS_WITH_CTRL_C, *argv], stderr=subprocess.PIPE, text=True, env=_child_env()
        )
        try:
            time.sleep(3)  # in the middle of the first answer
            child.send_signal(signum)
            sent = time.monotonic()
            _, err = child.communicate(timeout=SUBPROCESS_TIMEOUT)
            took = time.monotonic() - sent
        finally:
            child.kill()
            child.communicate()

    assert child.returncode == ExitCode.OK, err
    assert "Traceback" not in err
    assert took < 1.0


@pytest.mark.slow
def test_record_says_when_the_feed_comes_back_after_an_outage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outage.pmws"
    with server_thread(markets=1, rate_hz=50) as running, ThreadPoolExecutor(1) as pool:
        argv = ["record", str(out), *running.server.token_ids, "--url", running.server.url, "--duration", "9"]
        recording = pool.submit(main, argv)
        running.wait_subscribed(1)
        time.sleep(1)
        running.server.reject_connections(True)  # a 1.5 s outage: the client's backoff may make it longer
        running.server.abort_all()
        time.sleep(1.5)
        running.server.reject_connections(False)
        code = recording.result(timeout=SUBPROCESS_TIMEOUT)

    err = capsys.readouterr().err
    assert code == ExitCode.OK, err
    alarm = err.index("pm-ws record: NO FRAMES for ")
    back = err.index("pm-ws record: the feed is back (1/1 connections up, ")
    assert alarm < back
    down = re.search(r"warning: the feed was down for ([\d.]+) s of the [\d.]+ s recording \((\d+) reconnects", err)
    assert down and 1.0 <= float(down[1]) <= 8.0 and int(down[2]) >= 1, err
    assert "connections 1/1 up" in err.splitlines()[-2] and " 2 LIVE; " in err.splitlines()[-2]  # the final line
