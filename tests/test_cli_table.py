"""The watch/demo/peek/replay table on a terminal: it never hides what matters.

At any width the token, bid, ask and STATE of every shown row stay on screen (in a pseudo-terminal
of 80x24 and 200x50, and for the layout at every width 40..200 and height 5..50 with random labels,
CJK among them); widths only grow; a short terminal says "+N more" and keeps the rows not LIVE;
colour on a terminal only, off with NO_COLOR; a closed stdout ends the command quietly.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import random
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders import book_event, change, frame, price_change_event
from pm_ws import BookStore, Dispatcher
from pm_ws._decimal_text import price_text
from pm_ws._exit import ExitCode
from pm_ws._table_layout import cut, fit_rows, text_width
from pm_ws._terminal import screen_block, screen_for
from pm_ws._watch_view import TopTable, short_token, state_counts
from pm_ws.cli import main
from pm_ws.recording import RecordingWriter
from pm_ws.row import State
from test_cli import SUBPROCESS_TIMEOUT, _child_env, server_thread

SGR = re.compile(r"\x1b\[[0-9;]*m")
CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ROW_START = re.compile(r"^\d{4}…\d{4}")  # a row line starts with the short token id
STATES = {state.name for state in State}
TOKEN = "12345678901234567890"
LABELS = ["YES", "Will it rain in Tokyo tomorrow? No", "東京の明日の天気は雨ですか？ はい", "café ñ Yes",
          "e\u0301\u0301 combining", "全角ＡＢＣ１２３", "Will 김정은 visit 北京 before 2027?", ""]  # fmt: skip


# -- a pseudo-terminal ------------------------------------------------------------------------------


def run_in_terminal(args: list[str], columns: int, lines: int, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``python -m pm_ws ARGS`` on a pseudo-terminal of ``columns`` x ``lines``; its exit code and output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdout is the terminal
        os.execve(sys.executable, [sys.executable, "-m", "pm_ws", *args], env or _child_env())
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    out = b""
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            out += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


def last_screen(output: str) -> list[str]:
    """The lines of the last redraw (each starts at cursor home), without escape sequences."""
    return [CSI.sub("", line).rstrip("\r") for line in output.rsplit("\x1b[H", 1)[-1].split("\n")]


def check_screen(screen: list[str], columns: int) -> list[str]:
    """Assert every line fits and every row shows its token, bid, ask and STATE; return the row lines."""
    assert all(text_width(line) <= columns for line in screen), screen
    assert re.match(r"\d+ [A-Z]+", screen[0]), screen[0]  # the state summary first
    assert screen[1].split()[:3] == ["TOKEN", "BID", "ASK"] and "STATE" in screen[1].split()
    rows = [line for line in screen if ROW_START.match(line)]
    for line in rows:
        words = line.split()
        assert STATES & set(words), f"no STATE in {line!r}"
        assert len(re.findall(r"(?:^|\s)(?:\d+\.\d+|-)(?=\s)", line)) >= 2, f"no bid and ask in {line!r}"
    return rows


@pytest.mark.slow
@pytest.mark.parametrize(("columns", "lines"), [(80, 24), (200, 50)])
def test_demo_on_a_terminal_shows_state_token_bid_and_ask_on_every_row(columns: int, lines: int) -> None:
    code, output = run_in_terminal(["demo", "--duration", "2", "--seed", "1"], columns, lines)

    assert code == 0
    rows = check_screen(last_screen(output), columns)
    assert len(rows) == 6
    if columns == 200:  # room for every column
        assert last_screen(output)[1].split() == ["TOKEN", "BID", "ASK", "SPREAD", "LAST", "STATE", "AGE", "UPD/S"]


@pytest.mark.slow
def test_demo_on_a_short_terminal_says_how_many_rows_are_hidden_and_keeps_notes() -> None:
    code, output = run_in_terminal(["demo", "--duration", "2.5", "--seed", "1", "--markets", "8"], 80, 12)

    assert code == 0
    screen = last_screen(output)
    rows = check_screen(screen, 80)
    more = next(line for line in screen if line.startswith("+"))
    assert int(more.split()[0][1:]) + len(rows) == 16
    assert any(re.match(r"\d\d:\d\d:\d\d ", line) for line in screen)  # an event note


@pytest.mark.slow
def test_demo_on_a_terminal_is_in_colour_unless_no_color() -> None:
    _, coloured = run_in_terminal(["demo", "--duration", "2", "--seed", "1"], 120, 30)
    _, plain = run_in_terminal(["demo", "--duration", "2", "--seed", "1"], 120, 30, {**_child_env(), "NO_COLOR": "1"})

    assert re.search(r"\x1b\[(?:32|31|36|1;33)m", coloured)  # a price move, SUBSCRIBING or STALE
    assert not SGR.search(plain)


@pytest.mark.slow
def test_watch_on_an_80_column_terminal_keeps_state() -> None:
    with server_thread(markets=3, seed=4, rate_hz=20, trade_every=2) as running:
        tokens = running.server.token_ids
        code, output = run_in_terminal(
            ["watch", *tokens, "--url", running.server.url, "--duration", "2", "--refresh", "0.2"], 80, 24
        )

    assert code == 0
    assert len(check_screen(last_screen(output), 80)) == 6


# -- a closed stdout --------------------------------------------------------------------------------


def read_lines_then_close(process: subprocess.Popen[str], lines: int) -> tuple[int, str]:
    assert process.stdout is not None and process.stderr is not None
    for _ in range(lines):
        process.stdout.readline()
    process.stdout.close()  # `| head -5`
    with process.stderr:
        err = process.stderr.read()
    return process.wait(timeout=SUBPROCESS_TIMEOUT), err


@pytest.mark.slow
def test_demo_into_a_closed_pipe_ends_quietly_with_exit_0() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "pm_ws", "demo", "--duration", "3", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(),
    )  # fmt: skip

    code, err = read_lines_then_close(demo, 5)

    assert code == 0 and err == ""


@pytest.mark.slow
def test_watch_into_a_closed_pipe_ends_quietly_with_exit_0() -> None:
    with server_thread(markets=1, seed=4, rate_hz=20) as running:
        watch = subprocess.Popen(
            [sys.executable, "-m", "pm_ws", "watch", *running.server.token_ids, "--url", running.server.url,
             "--duration", "4", "--refresh", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(),
        )  # fmt: skip
        running.wait_subscribed(1)
        time.sleep(0.5)
        running.loop.call_soon_threadsafe(running.server.abort_all)  # event notes, written from a callback

        code, err = read_lines_then_close(watch, 5)

    assert code == 0 and err == ""


# -- the layout -------------------------------------------------------------------------------------


def random_store(rng: random.Random, tokens: int) -> tuple[BookStore, dict[str, str]]:
    """A store of ``tokens`` rows in random states, with random sizes and labels (CJK among them)."""
    store = BookStore(tokens)
    dispatcher = Dispatcher(store)
    labels = {}
    for _ in range(tokens):
        token = str(rng.randrange(10**76, 10**77))
        store.add(token)
        labels[token] = rng.choice(LABELS) + " " * rng.randrange(2) + rng.choice(LABELS)
        state = rng.choice([State.SUBSCRIBING, State.LIVE, State.LIVE, State.STALE, State.RESOLVED])
        if state == State.SUBSCRIBING:
            continue
        bid = rng.randrange(1, 98)
        size = f"{rng.randrange(1, 10**rng.randrange(1, 8))}.{rng.randrange(10**6):06d}"
        levels = ([(f"0.{bid:02d}", size)], [(f"0.{bid + 1:02d}", "12.5")])
        dispatcher.feed(frame(book_event(token, *levels)), time.time_ns())
        if state == State.STALE:
            store.mark_stale([token])
        elif state == State.RESOLVED:
            store.resolve(token, True)
    return store, labels


@pytest.mark.parametrize("seed", range(6))
def test_layout_at_every_width_and_height_keeps_token_bid_ask_and_state(seed: int) -> None:
    rng = random.Random(seed)
    store, labels = random_store(rng, rng.randrange(1, 30))
    table = TopTable(store, labels)
    notes = [f"12:00:0{n} note {n} {rng.choice(LABELS)}" for n in range(rng.randrange(8))]
    not_live = {short_token(token) for token in store.tokens() if store.top(token).state != State.LIVE}
    for width in range(40, 201):
        height = rng.randrange(5, 51)
        colour = rng.random() < 0.5

        block = screen_block("pm-ws demo ws://127.0.0.1:1 (seed 1)", table, notes, width, height, colour=colour)

        plain = [SGR.sub("", line) for line in block]
        assert len(block) <= height - 1
        rows = check_screen(plain, width)
        shown = {row[:9] for row in rows}
        for token in store.tokens():
            if short_token(token) in shown:
                row = next(line for line in rows if line.startswith(short_token(token)))
                top = store.top(token)
                assert top.state.name in row.split()
                assert (price_text(top.bid_px, top.tick) if top.bid_levels else "-") in row.split()
        more = [line for line in plain if line.startswith("+")]
        hidden = int(more[0].split()[0][1:]) if more else 0
        assert hidden + len(rows) == len(store)
        assert not_live <= shown or shown <= not_live  # the rows not LIVE are the last to be hidden
        if not_live:
            assert plain[0].startswith(state_counts(store).split(",")[0])
        if height >= 11 and notes:
            assert sum(1 for line in plain if line.startswith("12:00:0")) >= min(2, len(notes))


def test_fit_rows_hides_the_rows_that_pass_the_test_last() -> None:
    rows = ["a", "B", "c", "D", "e"]

    assert fit_rows(rows, 5, str.isupper) == (rows, [])
    assert fit_rows(rows, 3, str.isupper) == (["B", "D"], ["a", "c", "e"])
    assert fit_rows(rows, 2, str.isupper) == (["B"], ["a", "c", "D", "e"])


def test_wide_and_combining_characters_are_measured_in_cells() -> None:
    assert text_width("東京 YES") == 8 and text_width("e\u0301") == 1 and text_width("ＡＢ") == 4
    assert cut("東京の天気", 6) == "東京…" and text_width(cut("東京の天気", 6)) == 5
    assert cut("abc", 3) == "abc" and cut("abcd", 3) == "ab…"


def test_a_cjk_label_does_not_shift_the_columns() -> None:
    store = BookStore(2)
    dispatcher = Dispatcher(store)
    tokens = ["11111111112222222222", "33333333334444444444"]
    for token in tokens:
        store.add(token)
        dispatcher.feed(frame(book_event(token)), 1)
    table = TopTable(store, {tokens[0]: "東京の天気 YES", tokens[1]: "Tokyo YES"})

    header, *rows = table.lines()

    bid_cell = [line.index("0.50") for line in rows]
    assert text_width(rows[0][: bid_cell[0]]) == text_width(rows[1][: bid_cell[1]]) == header.index("BID")


def one_token(bid_size: str) -> tuple[BookStore, Dispatcher]:
    """A store holding TOKEN with a book: bid 0.5 x ``bid_size``, ask 0.52 x 10."""
    store = BookStore(1)
    dispatcher = Dispatcher(store)
    store.add(TOKEN)
    dispatcher.feed(frame(book_event(TOKEN, [("0.5", bid_size)], [("0.52", "10")])), 1)
    return store, dispatcher


def test_column_widths_only_grow() -> None:
    store, dispatcher = one_token("2121.104809")
    token = TOKEN
    table = TopTable(store)
    wide = table.lines()
    dispatcher.feed(frame(book_event(token, [("0.5", "1")], [("0.52", "10")])), 2)

    narrow = table.lines()

    assert narrow[0] == wide[0]  # the header: every column where it was
    assert narrow[1].index("0.52") == wide[1].index("0.52")


def test_price_moves_are_coloured_for_a_moment() -> None:
    store, dispatcher = one_token("10")
    token = TOKEN
    table = TopTable(store)
    table.lines(now_monotonic=100.0, colour=True)
    dispatcher.feed(frame(price_change_event(change(token, "0.51", "5", "BUY"))), 2)

    moved = table.lines(now_monotonic=100.1, colour=True)[1]
    later = table.lines(now_monotonic=102.0, colour=True)[1]
    plain = table.lines(now_monotonic=100.2)[1]

    assert "\x1b[32m0.51 × 5.00\x1b[0m" in moved  # the bid went up: green
    assert "\x1b[" not in later and "\x1b[" not in plain


def test_states_not_live_are_coloured_and_summarised_first() -> None:
    store = BookStore(3)
    for token in ("1", "2", "3"):
        store.add(token)
    Dispatcher(store).feed(frame(book_event("1")), 1)
    store.mark_stale(["2"])

    lines = TopTable(store).lines(colour=True)

    assert state_counts(store) == "1 SUBSCRIBING, 1 STALE, 1 LIVE"
    assert any("\x1b[1;33mSTALE\x1b[0m" in line for line in lines)
    assert any("\x1b[36mSUBSCRIBING\x1b[0m" in line for line in lines)
    assert not any("\x1b[" in line for line in lines if " LIVE" in line)


@pytest.mark.parametrize(("value", "colour"), [(None, True), ("", True), ("1", False)])
def test_no_color_turns_colour_off(value: str | None, colour: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    if value is not None:
        monkeypatch.setenv("NO_COLOR", value)

    assert screen_for(Terminal(), plain=False, refresh=None)[0].colour is colour
    assert screen_for(Terminal(), plain=True, refresh=None)[0].colour is False
    assert screen_for(io.StringIO(), plain=False, refresh=None)[0].colour is False


def test_columns_choose_the_columns_but_never_drop_the_required_ones() -> None:
    store = BookStore(1)
    store.add("1")

    assert TopTable(store, columns=("LAST",)).lines()[0].split() == ["TOKEN", "BID", "ASK", "LAST", "STATE"]


def test_columns_option_refuses_an_unknown_column(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--columns", "bid,nope"]) == ExitCode.USAGE
    assert "unknown column 'NOPE'" in capsys.readouterr().err


# -- replay --realtime ------------------------------------------------------------------------------


@pytest.fixture
def steady_recording(tmp_path: Path) -> Iterator[tuple[Path, float]]:
    """3 recorded seconds of one token's bid moving every 10 ms; and its row updates per recorded second."""
    token = "12345678901234567890"
    start = 1_700_000_000_000_000_000
    frames = [frame(book_event(token, [("0.5", "10")], [("0.9", "10")]))]
    frames += [frame(price_change_event(change(token, f"0.{51 + i % 2}", "5", "BUY"))) for i in range(300)]
    store = BookStore(1)
    store.add(token)
    dispatcher = Dispatcher(store)
    path = tmp_path / "steady.pmws"
    with RecordingWriter(path) as writer:
        writer.write_meta({"type": "start", "format": 1}, start)
        writer.write_meta({"type": "subscribe", "tokens": [token]}, start)
        for index, data in enumerate(frames):
            writer.write_frame(data, start + index * 10_000_000)
            dispatcher.feed(data, start + index * 10_000_000)
            if index == 0:
                first_seq = store.top(token).seq
    yield path, (store.top(token).seq - first_seq) / 3.0


def test_replay_realtime_counts_updates_per_recorded_second(
    steady_recording: tuple[Path, float], capsys: pytest.CaptureFixture[str]
) -> None:
    path, per_recorded_second = steady_recording

    code = main(["replay", str(path), "--realtime", "--speed", "2", "--refresh", "0.25", "--impl", "py"])

    assert code == ExitCode.OK
    rates = [float(line.split()[-1]) for line in capsys.readouterr().out.splitlines() if line.startswith("1234…7890")]
    measured = sorted(rate for rate in rates if rate)[len([r for r in rates if r]) // 2]  # the median
    assert 0.7 * per_recorded_second < measured < 1.3 * per_recorded_second, rates


def test_a_removed_token_is_forgotten() -> None:
    store, dispatcher = one_token("10")
    table = TopTable(store)
    table.lines(now_monotonic=1.0, colour=True)
    dispatcher.feed(frame(price_change_event(change(TOKEN, "0.51", "5", "BUY"))), 2)
    table.lines(now_monotonic=1.1, colour=True)
    store.remove(TOKEN)

    assert [line.split() for line in table.lines()] == [["TOKEN", "BID", "ASK", "SPREAD", "LAST", "STATE", "AGE", "UPD/S"]]
    assert not table._quotes and not table._update_rates and not table._moves
