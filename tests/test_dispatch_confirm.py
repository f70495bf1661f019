"""CONFIRM_TS_NS: the receive time at which the server last confirmed a token's top of book."""

from __future__ import annotations

from pm_ws.row import CONFIRM_TS_NS, RECV_TS_NS, SEQ, STATE, State

from builders import NO, YES, best_bid_ask_event, book_event, change, counters, frame, price_change_event, row


def test_confirm_zero_until_snapshot(dispatcher):
    assert row(dispatcher)[CONFIRM_TS_NS] == 0


def test_book_confirms(dispatcher):
    dispatcher.feed(frame(book_event()), 111)
    assert row(dispatcher)[CONFIRM_TS_NS] == 111


def test_crossed_book_not_a_confirmation(dispatcher):
    dispatcher.feed(frame(book_event(bids=[("0.6", "1")], asks=[("0.5", "1")])), 111)
    assert row(dispatcher)[STATE] == State.INVALID
    assert row(dispatcher)[CONFIRM_TS_NS] == 0


def test_price_change_matching_best_prices_confirms(live):
    live.feed(frame(price_change_event(change(YES, "0.51", "5", "BUY", "0.51", "0.52"))), 222)
    assert row(live)[STATE] == State.LIVE
    assert row(live)[CONFIRM_TS_NS] == 222


def test_price_change_without_best_prices_not_a_confirmation(live):
    live.feed(frame(price_change_event(change(YES, "0.51", "5", "BUY"))), 222)
    assert (row(live)[RECV_TS_NS], row(live)[CONFIRM_TS_NS]) == (222, 1)


def test_price_change_mismatch_not_a_confirmation(live):
    live.feed(frame(price_change_event(change(YES, "0.51", "5", "BUY", "0.5", "0.52"))), 222)
    assert row(live)[STATE] == State.INVALID
    assert row(live)[CONFIRM_TS_NS] == 1


def test_best_bid_ask_match_confirms_and_bumps_seq(live):
    seq = row(live)[SEQ]
    live.feed(frame(best_bid_ask_event(YES, "0.5", "0.52")), 333)
    assert (row(live)[CONFIRM_TS_NS], row(live)[RECV_TS_NS], row(live)[SEQ]) == (333, 333, seq + 2)


def test_best_bid_ask_mismatch_row_unchanged(live):
    before = row(live)
    live.feed(frame(best_bid_ask_event(YES, "0.49", "0.52")), 333)
    assert row(live) == before
    assert counters(live)["bba_mismatch"] == 1


def test_best_bid_ask_not_live_row_unchanged(dispatcher):
    before = row(dispatcher, NO)
    dispatcher.feed(frame(best_bid_ask_event(NO, "0", "1")), 333)
    assert row(dispatcher, NO) == before


def test_remove_clears_confirm(live):
    store = live.store
    slot = store.slot(YES)
    store.remove(YES)
    assert store.view[slot, CONFIRM_TS_NS] == 0
