"""Both cores: RESOLVED (final, winner known) and load_book (a REST book, UNCONFIRMED until the WebSocket agrees)."""

from __future__ import annotations

import pytest

from pm_ws.row import CONFIRM_TS_NS, EPOCH, EXCH_TS_MS, SEQ, STATE, TICK, State

from builders import NO, YES, best_bid_ask_event, book_event, change, frame, price_change_event, row

# YES's book of the builders' snapshot, as REST levels in pm_ws units (any order)
BIDS = [(5000, 15_000_000), (4800, 30_000_000), (4900, 20_000_000)]
ASKS = [(5200, 25_000_000), (5400, 10_000_000), (5300, 60_000_000)]


def loaded(dispatcher, tick=100, exch_ts_ms=1786728430000, recv_ts_ns=7):
    assert dispatcher.store.load_book(YES, BIDS, ASKS, tick, exch_ts_ms, recv_ts_ns) is True
    return dispatcher


def test_load_book_is_unconfirmed_with_the_book_in_wire_order(dispatcher):
    before = row(dispatcher)
    loaded(dispatcher)
    after = row(dispatcher)
    assert State(after[STATE]) is State.UNCONFIRMED
    assert (after[TICK], after[EXCH_TS_MS], after[CONFIRM_TS_NS]) == (100, 1786728430000, 0)
    assert after[EPOCH] == before[EPOCH] + 1 and after[SEQ] > before[SEQ]
    assert dispatcher.store.book(YES, None) == (sorted(BIDS, reverse=True), sorted(ASKS))


def test_a_matching_price_change_confirms_a_loaded_book(dispatcher):
    loaded(dispatcher)
    event = price_change_event(change(YES, "0.49", "5", "BUY", best_bid="0.5", best_ask="0.52"))
    assert dispatcher.feed(frame(event), 11) == 1
    assert State(row(dispatcher)[STATE]) is State.LIVE
    assert row(dispatcher)[CONFIRM_TS_NS] == 11
    assert dispatcher.store.book(YES, 2)[0] == [(5000, 15_000_000), (4900, 5_000_000)]


def test_a_price_change_without_best_prices_applies_but_does_not_confirm(dispatcher):
    loaded(dispatcher)
    assert dispatcher.feed(frame(price_change_event(change(YES, "0.47", "5", "BUY"))), 11) == 1
    assert State(row(dispatcher)[STATE]) is State.UNCONFIRMED
    assert dispatcher.store.book(YES, None)[0][-1] == (4700, 5_000_000)


def test_a_disagreeing_price_change_makes_a_loaded_book_invalid_and_queues_a_resync(dispatcher):
    loaded(dispatcher)
    event = price_change_event(change(YES, "0.49", "5", "BUY", best_bid="0.49", best_ask="0.52"))
    dispatcher.feed(frame(event), 11)
    assert State(row(dispatcher)[STATE]) is State.INVALID
    assert dispatcher.stats()["checksum_mismatch"] == 1
    assert dispatcher.pending_resync() == [YES]


def test_a_matching_best_bid_ask_confirms_a_loaded_book_a_differing_one_is_only_counted(dispatcher):
    loaded(dispatcher)
    dispatcher.feed(frame(best_bid_ask_event(best_bid="0.49", best_ask="0.52")), 9)
    assert State(row(dispatcher)[STATE]) is State.UNCONFIRMED
    assert dispatcher.stats()["bba_mismatch"] == 1
    dispatcher.feed(frame(best_bid_ask_event(best_bid="0.5", best_ask="0.52")), 10)
    assert State(row(dispatcher)[STATE]) is State.LIVE and row(dispatcher)[CONFIRM_TS_NS] == 10


def test_a_websocket_book_replaces_a_loaded_one(dispatcher):
    loaded(dispatcher)
    dispatcher.feed(frame(book_event(bids=[("0.3", "1")], asks=[("0.6", "2")])), 12)
    assert State(row(dispatcher)[STATE]) is State.LIVE
    assert dispatcher.store.book(YES) == ([(3000, 1_000_000)], [(6000, 2_000_000)])


def test_load_book_refused_for_a_live_token(live):
    before = bytes(live.store.view)
    assert live.store.load_book(YES, BIDS, ASKS, 100, 1, 2) is False
    assert bytes(live.store.view) == before


@pytest.mark.parametrize(
    ("bids", "asks", "tick", "match"),
    [
        ([(5000, 1)], [(5000, 1)], 100, "crossed"),
        ([(5050, 1)], [], 100, "off the tick"),
        ([(0, 1)], [], 0, "outside"),
        ([(10_000, 1)], [], 0, "outside"),
        ([(5000, 0)], [], 100, "size"),
        ([(5000, 1), (5000, 2)], [], 100, "twice"),
    ],
)
def test_load_book_refuses_impossible_books_and_changes_nothing(dispatcher, bids, asks, tick, match):
    before = bytes(dispatcher.store.view)
    with pytest.raises(ValueError, match=match):
        dispatcher.store.load_book(YES, bids, asks, tick, 1, 2)
    assert bytes(dispatcher.store.view) == before


def test_load_book_of_an_unknown_token_raises_key_error(store):
    with pytest.raises(KeyError):
        store.load_book("123", BIDS, ASKS, 100, 1, 2)


def test_resolved_is_final_and_names_the_winner(live):
    store = live.store
    store.resolve(YES, True)
    store.resolve(NO, False)
    assert (store.resolution(YES), store.resolution(NO)) == (True, False)
    resolved = row(live)
    assert State(resolved[STATE]) is State.RESOLVED
    store.mark_stale([YES])
    live.feed(frame(book_event()), 20)
    live.feed(frame(price_change_event(change(YES, "0.49", "5", "BUY", best_bid="0.5", best_ask="0.52"))), 21)
    assert store.load_book(YES, BIDS, ASKS, 100, 1, 2) is False
    assert row(live) == resolved
    assert live.stats()["skip_not_live"] == 2


def test_resolution_unknown_winner_and_cleared_on_remove(store):
    assert store.resolution(YES) is None
    store.resolve(YES, None)
    assert store.resolution(YES) is None and State(store.top(YES).state) is State.RESOLVED
    store.remove(YES)
    store.add(YES)
    assert State(store.top(YES).state) is State.SUBSCRIBING and store.resolution(YES) is None
    with pytest.raises(KeyError):
        store.resolve("123", True)
