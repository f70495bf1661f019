"""Dispatcher, ``book`` snapshots: levels sorted best first, the row, state and timestamps."""

from __future__ import annotations

import pytest

from pm_ws.row import (
    ASK_LEVELS,
    ASK_PX,
    ASK_SZ,
    BID_LEVELS,
    BID_PX,
    EPOCH,
    EXCH_TS_MS,
    LAST_PX,
    LAST_SIDE,
    LAST_SZ,
    MISMATCHES,
    PRICE_SCALE,
    RECV_TS_NS,
    SEQ,
    SIDE_BUY,
    STATE,
    TICK,
    State,
)

from builders import OTHER, TS, YES, YES_ASKS, YES_BIDS, book_event, counters, frame, last_trade_price_event, row


def test_book_snapshot_sets_row_live(dispatcher):
    assert dispatcher.feed(frame(book_event()), 123) == 1
    values = row(dispatcher)
    assert values[BID_PX:ASK_SZ + 1] == [5000, 15_000_000, 5200, 25_000_000]
    assert (values[BID_LEVELS], values[ASK_LEVELS]) == (3, 3)
    assert values[STATE] == State.LIVE
    assert (values[EPOCH], values[SEQ]) == (1, 4)  # add, book: SEQ steps by 2
    assert (values[EXCH_TS_MS], values[RECV_TS_NS]) == (int(TS), 123)
    assert counters(dispatcher)["ev_book"] == 1 and counters(dispatcher)["events"] == 1


def test_book_best_last_order_kept(live):
    assert live.store.book(YES) == (
        [(5000, 15_000_000), (4900, 20_000_000), (4800, 30_000_000)],
        [(5200, 25_000_000), (5300, 60_000_000), (5400, 10_000_000)],
    )


def test_book_unsorted_sides_sorted(dispatcher):
    bids = [("0.49", "20"), ("0.5", "15"), ("0.48", "30")]
    asks = [("0.52", "25"), ("0.54", "10"), ("0.53", "60")]
    assert dispatcher.feed(frame(book_event(bids=bids, asks=asks))) == 1
    assert row(dispatcher)[BID_PX:ASK_SZ + 1] == [5000, 15_000_000, 5200, 25_000_000]
    assert dispatcher.store.book(YES)[0] == [(5000, 15_000_000), (4900, 20_000_000), (4800, 30_000_000)]
    assert dispatcher.store.book(YES)[1] == [(5200, 25_000_000), (5300, 60_000_000), (5400, 10_000_000)]


def test_book_best_first_wire_order_sorted(dispatcher):
    # Documentation-style order (best first) must not make element 0 the best
    bids = list(reversed(YES_BIDS))
    asks = list(reversed(YES_ASKS))
    dispatcher.feed(frame(book_event(bids=bids, asks=asks)))
    assert row(dispatcher)[BID_PX:ASK_SZ + 1] == [5000, 15_000_000, 5200, 25_000_000]


def test_book_size_zero_levels_dropped(dispatcher):
    dispatcher.feed(frame(book_event(bids=[("0.48", "30"), ("0.5", "0")], asks=[("0.52", "0.000"), ("0.6", "1")])))
    values = row(dispatcher)
    assert values[BID_PX:ASK_SZ + 1] == [4800, 30_000_000, 6000, 1_000_000]
    assert (values[BID_LEVELS], values[ASK_LEVELS]) == (1, 1)


def test_book_replaces_whole_book(live):
    live.feed(frame(book_event(bids=[("0.3", "1")], asks=[])), 2)
    assert live.store.book(YES, None) == ([(3000, 1_000_000)], [])
    values = row(live)
    assert values[ASK_PX:ASK_SZ + 1] == [PRICE_SCALE, 0]
    assert (values[EPOCH], values[SEQ]) == (2, 6)


def test_book_empty_sides_live_with_empty_row_values(dispatcher):
    dispatcher.feed(frame(book_event(bids=[], asks=[])))
    values = row(dispatcher)
    assert values[BID_PX:ASK_SZ + 1] == [0, 0, PRICE_SCALE, 0]
    assert (values[BID_LEVELS], values[ASK_LEVELS], values[STATE]) == (0, 0, State.LIVE)


def test_book_tick_size_and_last_trade_price_recorded(live):
    live.feed(frame(last_trade_price_event(price="0.51", size="2", side="BUY")))
    live.feed(frame(book_event(tick_size="0.01", last_trade_price="0.550")))
    values = row(live)
    assert (values[TICK], values[LAST_PX]) == (100, 5500)
    assert (values[LAST_SZ], values[LAST_SIDE]) == (2_000_000, SIDE_BUY)  # untouched by the book


def test_book_empty_last_trade_price_keeps_last(live):
    live.feed(frame(last_trade_price_event(price="0.51")))
    live.feed(frame(book_event(last_trade_price="")))
    assert row(live)[LAST_PX] == 5100


def test_book_absent_tick_size_keeps_tick(live):
    live.feed(frame(book_event(tick_size="0.0025")))
    live.feed(frame(book_event()))
    assert row(live)[TICK] == 25


def test_book_without_timestamp_keeps_exchange_time(live):
    event = book_event()
    del event["timestamp"]
    live.feed(frame(event), 77)
    assert row(live)[EXCH_TS_MS] == int(TS)
    assert row(live)[RECV_TS_NS] == 77


def test_book_crossed_invalid_resync_queued(dispatcher):
    assert dispatcher.feed(frame(book_event(bids=[("0.52", "1")], asks=[("0.52", "1")]))) == 1
    values = row(dispatcher)
    assert (values[STATE], values[MISMATCHES]) == (State.INVALID, 1)
    assert counters(dispatcher)["crossed_book"] == 1
    assert dispatcher.pending_resync() == [YES]
    assert dispatcher.stats()["resync_queued"] == 1


def test_book_after_invalid_live_again(dispatcher):
    dispatcher.feed(frame(book_event(bids=[("0.6", "1")], asks=[("0.5", "1")])))
    dispatcher.feed(frame(book_event()))
    assert row(dispatcher)[STATE] == State.LIVE
    assert row(dispatcher)[MISMATCHES] == 1


def test_book_unsubscribed_skipped_without_allocating(dispatcher):
    assert dispatcher.feed(frame(book_event(token_id=OTHER))) == 0
    assert dispatcher.stats()["skip_unsubscribed"] == 1
    assert OTHER not in dispatcher.store
    assert len(dispatcher.store) == 2


@pytest.mark.parametrize(
    ("bids", "asks"),
    [([("0.5", "1"), ("0.50", "2")], []), ([], [("0.6", "1"), ("0.7", "1"), ("0.6000", "0")])],
)
def test_book_duplicate_price_bad_event(live, bids, asks):
    before = bytes(live.store.view)
    assert live.feed(frame(book_event(bids=bids, asks=asks))) == 0
    assert live.stats()["rej_bad_event"] == 1
    assert bytes(live.store.view) == before
