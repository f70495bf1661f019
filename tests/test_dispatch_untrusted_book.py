"""Books that cannot be trusted: a price off the token's known tick grid, or a book that cannot exist."""

from __future__ import annotations

import pytest

from pm_ws.row import CONFIRM_TS_NS, MISMATCHES, STATE, TICK, State

from builders import NO, YES, book_event, change, counters, frame, price_change_event, row


def test_book_off_grid_level_invalid_resync(dispatcher):
    # 0.405 on a 0.01 tick: the book names its tick first, then the levels are checked against it
    dispatcher.feed(frame(book_event(bids=[("0.4", "1"), ("0.405", "2")], tick_size="0.01")), 7)
    assert (row(dispatcher)[STATE], row(dispatcher)[TICK], row(dispatcher)[MISMATCHES]) == (State.INVALID, 100, 1)
    assert row(dispatcher)[CONFIRM_TS_NS] == 0
    assert counters(dispatcher)["off_grid"] == 1
    assert dispatcher.pending_resync() == [YES]


def test_book_tick_unknown_any_price_accepted(dispatcher):
    dispatcher.feed(frame(book_event(bids=[("0.405", "2")])), 7)
    assert row(dispatcher)[STATE] == State.LIVE


def test_book_on_known_tick_from_earlier_book(dispatcher):
    dispatcher.feed(frame(book_event(tick_size="0.01")))
    dispatcher.feed(frame(book_event(asks=[("0.555", "1")])))  # no tick_size: the known one applies
    assert counters(dispatcher)["off_grid"] == 1 and row(dispatcher)[STATE] == State.INVALID


@pytest.mark.parametrize("bids, asks", [([("1", "5")], []), ([("0.4", "5")], [("0", "5")])])
def test_book_that_cannot_exist_invalid_resync(dispatcher, bids, asks):
    dispatcher.feed(frame(book_event(bids=bids, asks=asks)))
    assert row(dispatcher)[STATE] == State.INVALID
    assert counters(dispatcher)["impossible_book"] == 1
    assert dispatcher.pending_resync() == [YES]


def test_book_size_0_at_edge_prices_fine(dispatcher):
    dispatcher.feed(frame(book_event(bids=[("1", "0"), ("0.4", "1")], asks=[("0", "0"), ("0.6", "1")])))
    assert row(dispatcher)[STATE] == State.LIVE


def test_book_off_grid_wins_over_impossible(dispatcher):
    dispatcher.feed(frame(book_event(bids=[("1", "5")], asks=[("0.555", "1")], tick_size="0.01")))
    assert counters(dispatcher)["off_grid"] == 1 and "impossible_book" not in counters(dispatcher)


@pytest.fixture
def on_grid(dispatcher):
    """YES LIVE on a 0.01 tick, NO LIVE with its tick unknown."""
    dispatcher.feed(frame(book_event(tick_size="0.01"), book_event(NO)), 1)
    return dispatcher


@pytest.mark.parametrize("size", ["5", "0"])
def test_price_change_off_grid_invalid_others_apply(on_grid, size):
    event = price_change_event(change(YES, "0.505", size, "BUY"), change(NO, "0.505", "5", "BUY"))
    assert on_grid.feed(frame(event), 2) == 1
    assert row(on_grid)[STATE] == State.INVALID
    assert row(on_grid, NO)[STATE] == State.LIVE  # tick unknown: nothing to check against
    assert on_grid.store.book(NO)[0][0] == (5050, 5_000_000)
    assert counters(on_grid)["off_grid"] == 1
    assert on_grid.pending_resync() == [YES]


@pytest.mark.parametrize("side, price", [("BUY", "1"), ("SELL", "0")])
def test_price_change_impossible_level_invalid(on_grid, side, price):
    on_grid.feed(frame(price_change_event(change(YES, price, "5", side))))
    assert row(on_grid)[STATE] == State.INVALID
    assert counters(on_grid)["impossible_book"] == 1


def test_price_change_later_entry_of_token_still_flags(on_grid):
    # The flaw is remembered per token for the whole event, whatever entries follow
    event = price_change_event(change(YES, "0.505", "5", "BUY"), change(YES, "0.51", "5", "BUY", "0.51", "0.52"))
    on_grid.feed(frame(event))
    assert row(on_grid)[STATE] == State.INVALID
    assert counters(on_grid)["off_grid"] == 1 and "checksum_mismatch" not in counters(on_grid)
