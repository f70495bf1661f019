"""``--depth N``: the best N levels per side, exact, with the row's state, fitted to the terminal."""

from __future__ import annotations

import argparse
import random
import re

import pytest

from builders import book_event, frame
from pm_ws import BookStore, Dispatcher
from pm_ws._decimal_text import price_text, size_text
from pm_ws._depth_view import DepthView, table_for
from pm_ws._exit import ExitCode
from pm_ws._table_layout import text_width
from pm_ws._terminal import screen_block
from pm_ws._watch_view import TopTable
from pm_ws.cli import main
from pm_ws.row import State
from test_cli import server_thread
from test_cli_table import SGR, last_screen, random_store, run_in_terminal

TOKEN = "12345678901234567890"
BIDS = [("0.48", "30"), ("0.49", "2121.104809"), ("0.5", "15")]  # wire order: best last
ASKS = [("0.54", "10"), ("0.53", "60"), ("0.52", "25.5")]


def one_book(state: State = State.LIVE) -> BookStore:
    store = BookStore(1)
    store.add(TOKEN)
    Dispatcher(store).feed(frame(book_event(TOKEN, BIDS, ASKS)), 1)
    if state == State.STALE:
        store.mark_stale([TOKEN])
    return store


def test_depth_shows_the_best_levels_exactly_best_first() -> None:
    title, header, *levels = DepthView(one_book(), {TOKEN: "YES"}, 2).lines()

    assert title.split() == ["1234…7890", "YES", "LIVE"]
    assert header.split() == ["SIZE", "BID", "│", "ASK", "SIZE"]
    assert [line.split() for line in levels] == [["15.00", "0.50", "│", "0.52", "25.50"],
                                                 ["2121.104809", "0.49", "│", "0.53", "60.00"]]  # fmt: skip


def test_depth_flags_a_row_that_is_not_live() -> None:
    title = DepthView(one_book(State.STALE), {}, 3).lines()[0]

    assert "! STALE: not LIVE" in title


def test_depth_on_a_narrow_terminal_is_a_ladder_with_the_state_kept() -> None:
    lines = DepthView(one_book(State.STALE), {TOKEN: "東京の天気は雨ですか？" * 3}, 3).lines(width=30)

    assert all(text_width(line) <= 30 for line in lines)
    assert "STALE" in lines[0] and lines[0].startswith("1234…7890")
    assert [line.split()[:2] for line in lines[1:]] == [["ASK", "0.54"], ["ASK", "0.53"], ["ASK", "0.52"],
                                                       ["BID", "0.50"], ["BID", "0.49"], ["BID", "0.48"]]  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_depth_at_every_width_and_height_fits_and_keeps_the_rows_not_live(seed: int) -> None:
    rng = random.Random(seed)
    store, labels = random_store(rng, rng.randrange(1, 12))
    view = DepthView(store, labels, rng.randrange(1, 6))
    not_live = sum(1 for token in store.tokens() if store.top(token).state != State.LIVE)
    for width in range(40, 201, 3):
        height = rng.randrange(5, 51)

        block = [SGR.sub("", line) for line in screen_block("pm-ws watch", view, ["12:00:00 a note"], width, height,
                                                            colour=rng.random() < 0.5)]  # fmt: skip

        assert len(block) <= height - 1 and all(text_width(line) <= width for line in block)
        titles = [line for line in block if re.match(r"\d{4}…\d{4}", line)]
        assert all(re.search(r"  (LIVE|! STALE|! SUBSCRIBING|! RESOLVED)\b", line) for line in titles), titles
        more = [line for line in block if line.startswith("+")]
        hidden = int(more[0].split()[0][1:]) if more else 0
        assert hidden + len(titles) == len(store)
        shown_not_live = sum(1 for line in titles if "  ! " in line)
        assert shown_not_live == min(not_live, len(titles))


def test_table_for_chooses_depth_or_the_table() -> None:
    store = one_book()

    assert isinstance(table_for(store, {}, argparse.Namespace(depth=2, columns=None), ascii_only=False), DepthView)
    assert isinstance(table_for(store, {}, argparse.Namespace(depth=None, columns=None), ascii_only=False), TopTable)


def test_cli_watch_depth_prints_the_servers_levels(capsys: pytest.CaptureFixture[str]) -> None:
    with server_thread(markets=1, seed=11, rate_hz=0) as running:
        server = running.server
        token = server.token_ids[0]

        code = main(["watch", token, "--url", server.url, "--depth", "3", "--duration", "1.2", "--refresh", "0.4"])

    assert code == ExitCode.OK
    last = capsys.readouterr().out.rsplit("-- ", 1)[1].splitlines()
    bids, asks = server.truth(token)
    tick = server.tick(token)
    levels = [line.split() for line in last if "│" in line][1:]  # after the SIZE BID | ASK SIZE line
    assert len(levels) == 3
    for (bid, bid_size), (ask, ask_size), cells in zip(bids, asks, levels):
        assert cells == [size_text(bid_size), price_text(bid, tick), "│", price_text(ask, tick), size_text(ask_size)]


@pytest.mark.slow
def test_cli_demo_depth_on_an_80x24_terminal_fits_and_keeps_state() -> None:
    code, output = run_in_terminal(["demo", "--duration", "2", "--seed", "1", "--depth", "3"], 80, 24)

    assert code == 0
    screen = last_screen(output)
    assert all(text_width(line) <= 80 for line in screen) and len(screen) <= 24
    titles = [line for line in screen if re.match(r"\d{4}…\d{4}", line)]
    assert titles and all(re.search(r"\b(LIVE|STALE|SUBSCRIBING)\b", line) for line in titles)
    assert any(line.startswith("+") and "more" in line for line in screen)  # 6 tokens of 5 lines do not fit


def test_cli_peek_refuses_depth(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["peek", "nosuchtable", "--depth", "2"]) == ExitCode.USAGE
    assert "no --depth" in capsys.readouterr().err
