"""Dispatcher, ``tick_size_change``: a new tick makes the book STALE until the next snapshot."""

from __future__ import annotations

import pytest

from pm_ws.row import EPOCH, EXCH_TS_MS, RECV_TS_NS, SEQ, STATE, TICK, State

from builders import OTHER, YES, book_event, frame, row, tick_size_change_event


def test_tick_size_change_new_value_stale_resync(live):
    assert live.feed(frame(tick_size_change_event(new="0.001")), 6) == 1
    values = row(live)
    assert (values[TICK], values[STATE], values[EPOCH], values[SEQ]) == (10, State.STALE, 2, 6)
    assert (values[EXCH_TS_MS], values[RECV_TS_NS]) == (1739068041853, 6)
    assert live.store.book(YES, None)[0] != []  # kept for inspection
    assert live.pending_resync() == [YES]
    assert live.stats()["ev_tick_size_change"] == 1


def test_tick_size_change_same_value_no_op(live):
    live.feed(frame(book_event(tick_size="0.001")))
    before = bytes(live.store.view)
    assert live.feed(frame(tick_size_change_event(new="0.001"))) == 1
    assert bytes(live.store.view) == before
    assert live.stats()["ev_tick_size_change"] == 1
    assert live.pending_resync() == []


def test_tick_size_change_subscribing_token_tick_recorded_state_kept(dispatcher):
    dispatcher.feed(frame(tick_size_change_event(new="0.01")))
    values = row(dispatcher)
    assert (values[TICK], values[STATE], values[EPOCH], values[SEQ]) == (100, State.SUBSCRIBING, 1, 4)
    assert dispatcher.pending_resync() == []


def test_tick_size_change_invalid_token_becomes_stale(live):
    live.feed(frame(book_event(bids=[("0.6", "1")], asks=[("0.5", "1")])))
    live.pending_resync()
    live.feed(frame(tick_size_change_event()))
    assert row(live)[STATE] == State.STALE
    assert live.pending_resync() == [YES]


def test_tick_size_change_then_book_live_again(live):
    live.feed(frame(tick_size_change_event(new="0.001")))
    live.feed(frame(book_event()))
    assert row(live)[STATE] == State.LIVE
    assert row(live)[TICK] == 10


@pytest.mark.parametrize("new", ["0", "0.0000", "0.00001", "1.5", "-0.01", "abc", ""])
def test_tick_size_change_bad_tick_bad_number(live, new):
    before = bytes(live.store.view)
    assert live.feed(frame(tick_size_change_event(new=new))) == 0
    assert live.stats()["rej_bad_number"] == 1
    assert bytes(live.store.view) == before


def test_tick_size_change_unsubscribed_skipped(live):
    assert live.feed(frame(tick_size_change_event(token_id=OTHER))) == 0
    assert live.stats()["skip_unsubscribed"] == 1
