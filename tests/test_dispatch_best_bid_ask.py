"""Dispatcher, ``best_bid_ask``: compared with a LIVE local book and counted; a match confirms the top of book."""

from __future__ import annotations

import pytest

from pm_ws.row import CONFIRM_TS_NS, RECV_TS_NS, SEQ

from builders import OTHER, best_bid_ask_event, frame, row


def test_best_bid_ask_matching_counted_only_confirmation_changes(live):
    before = row(live)
    assert live.feed(frame(best_bid_ask_event(best_bid="0.50", best_ask="0.52")), 99) == 1
    before[CONFIRM_TS_NS] = before[RECV_TS_NS] = 99
    before[SEQ] += 2
    assert row(live) == before
    assert (live.stats()["ev_best_bid_ask"], live.stats()["bba_mismatch"]) == (1, 0)


def test_best_bid_ask_differing_mismatch_counted_row_unchanged(live):
    before = bytes(live.store.view)
    assert live.feed(frame(best_bid_ask_event(best_bid="0.51", best_ask="0.52")), 99) == 1
    assert bytes(live.store.view) == before
    assert live.stats()["bba_mismatch"] == 1
    assert live.pending_resync() == []


def test_best_bid_ask_not_live_never_mismatch(dispatcher):
    assert dispatcher.feed(frame(best_bid_ask_event(best_bid="0.51", best_ask="0.52"))) == 1
    assert dispatcher.stats()["bba_mismatch"] == 0


def test_best_bid_ask_unsubscribed_skipped(live):
    assert live.feed(frame(best_bid_ask_event(token_id=OTHER))) == 0
    assert live.stats()["skip_unsubscribed"] == 1


@pytest.mark.parametrize(("field", "value"), [("best_bid", 0.5), ("best_ask", None), ("asset_id", 5)])
def test_best_bid_ask_wrong_type_bad_event(live, field, value):
    assert live.feed(frame(best_bid_ask_event() | {field: value})) == 0
    assert live.stats()["rej_bad_event"] == 1
