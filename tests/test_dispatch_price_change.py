"""Dispatcher, ``price_change``: absolute level sizes, entries per token, not-live tokens, best-price checks."""

from __future__ import annotations

import pytest

from pm_ws.row import (
    ASK_PX,
    ASK_SZ,
    BID_LEVELS,
    BID_PX,
    BID_SZ,
    EPOCH,
    EXCH_TS_MS,
    MISMATCHES,
    RECV_TS_NS,
    SEQ,
    STATE,
    State,
)

from builders import (
    NO,
    OTHER,
    TS,
    YES,
    book_event,
    change,
    counters,
    frame,
    price_change_event,
    row,
    tick_size_change_event,
)


def test_price_change_absolute_size_replaces_level(live):
    assert live.feed(frame(price_change_event(change(YES, "0.5", "40", "BUY", "0.5", "0.52"))), 9) == 1
    values = row(live)
    assert values[BID_SZ] == 40_000_000  # not 15 + 40
    assert (values[SEQ], values[EPOCH], values[RECV_TS_NS]) == (6, 1, 9)  # add, book, price_change: 2 each
    assert values[EXCH_TS_MS] == 1786728438403


def test_price_change_size_zero_deletes_level(live):
    live.feed(frame(price_change_event(change(YES, "0.5", "0", "BUY", "0.49", "0.52"))))
    values = row(live)
    assert values[BID_PX:BID_SZ + 1] == [4900, 20_000_000]
    assert values[BID_LEVELS] == 2
    assert values[STATE] == State.LIVE


def test_price_change_delete_absent_level_no_op_but_touched(live):
    before = live.store.book(YES, None)
    assert live.feed(frame(price_change_event(change(YES, "0.3", "0", "BUY")))) == 1
    assert live.store.book(YES, None) == before
    assert row(live)[SEQ] == 6


def test_price_change_new_levels_inserted_in_order(live):
    live.feed(frame(price_change_event(
        change(YES, "0.485", "1", "BUY"), change(YES, "0.51", "2", "BUY"),
        change(YES, "0.515", "3", "SELL"), change(YES, "0.535", "4", "SELL"),
    )))  # fmt: skip
    bids, asks = live.store.book(YES, None)
    assert [price for price, _ in bids] == [5100, 5000, 4900, 4850, 4800]
    assert [price for price, _ in asks] == [5150, 5200, 5300, 5350, 5400]
    assert row(live)[BID_PX:ASK_SZ + 1] == [5100, 2_000_000, 5150, 3_000_000]


def test_price_change_several_entries_one_token_one_seq_bump(live):
    live.feed(frame(price_change_event(*(change(YES, f"0.4{n}", "1", "BUY") for n in range(5)))))
    assert row(live)[SEQ] == 6
    assert row(live)[BID_LEVELS] == 8


def test_price_change_two_tokens_each_touched_once(live):
    live.feed(frame(book_event(token_id=NO, bids=[("0.46", "25")], asks=[("0.5", "15")])))
    data = frame(price_change_event(change(YES, "0.51", "5", "BUY", "0.51", "0.52"),
                                    change(NO, "0.49", "5", "SELL", "0.46", "0.49")))  # fmt: skip
    assert live.feed(data, 4) == 1
    assert (row(live, YES)[SEQ], row(live, NO)[SEQ]) == (6, 6)
    assert row(live, NO)[ASK_PX] == 4900
    assert live.stats()["ev_price_change"] == 1


def test_price_change_unsubscribed_entries_ignored(live):
    data = frame(price_change_event(change(OTHER, "0.51", "5", "BUY"), change(YES, "0.51", "5", "BUY")))
    assert live.feed(data) == 1
    assert row(live)[BID_PX] == 5100
    assert live.stats()["skip_unsubscribed"] == 0
    assert OTHER not in live.store


def test_price_change_only_unsubscribed_skipped(live):
    before = bytes(live.store.view)
    assert live.feed(frame(price_change_event(change(OTHER, "0.51", "5", "BUY")))) == 0
    assert counters(live)["skip_unsubscribed"] == 1
    assert live.stats()["ev_price_change"] == 0
    assert bytes(live.store.view) == before


def test_price_change_empty_entries_skipped_unsubscribed(live):
    assert live.feed(frame(price_change_event())) == 0
    assert live.stats()["skip_unsubscribed"] == 1


def test_price_change_not_live_entries_counted_row_unchanged(live):
    # NO is SUBSCRIBING: its entries are dropped one by one, YES still applies
    before_no = row(live, NO)
    data = frame(price_change_event(change(NO, "0.4", "1", "BUY"), change(YES, "0.51", "5", "BUY"),
                                    change(NO, "0.6", "1", "SELL")))  # fmt: skip
    assert live.feed(data) == 1
    assert row(live, NO) == before_no
    assert live.store.book(NO) == ([], [])
    assert counters(live)["skip_not_live"] == 2
    assert row(live, YES)[BID_PX] == 5100


def test_price_change_only_not_live_entries_still_counted_as_event(dispatcher):
    assert dispatcher.feed(frame(price_change_event(change(YES, "0.4", "1", "BUY")))) == 1
    assert counters(dispatcher) == {"frames": 1, "bytes": dispatcher.stats()["bytes"], "events": 1,
                                    "ev_price_change": 1, "skip_not_live": 1}  # fmt: skip


@pytest.mark.parametrize("state_change", ["mark_stale", "tick_size_change", "crossed"])
def test_price_change_not_live_states_not_applied(live, state_change):
    # Arrange
    if state_change == "mark_stale":
        live.store.mark_stale([YES])
    elif state_change == "tick_size_change":
        live.feed(frame(tick_size_change_event()))
    else:
        live.feed(frame(price_change_event(change(YES, "0.53", "5", "BUY"))))
    before = bytes(live.store.view)
    # Act
    applied = live.feed(frame(price_change_event(change(YES, "0.4", "1", "BUY"))))
    # Assert
    assert applied == 1
    assert bytes(live.store.view) == before
    assert live.stats()["skip_not_live"] == 1


def test_price_change_matching_best_prices_stay_live(live):
    live.feed(frame(price_change_event(change(YES, "0.515", "3", "SELL", "0.5", "0.515"))))
    assert row(live)[STATE] == State.LIVE
    assert live.stats()["checksum_mismatch"] == 0
    assert live.pending_resync() == []


def test_price_change_best_price_mismatch_invalid_resync(live):
    # Arrange / Act
    live.feed(frame(price_change_event(change(YES, "0.515", "3", "SELL", "0.5", "0.52"))), 8)
    # Assert: applied and touched, then marked
    values = row(live)
    assert values[ASK_PX] == 5150
    assert (values[STATE], values[MISMATCHES], values[SEQ], values[RECV_TS_NS]) == (State.INVALID, 1, 6, 8)
    assert live.stats()["checksum_mismatch"] == 1
    assert live.stats()["resync_queued"] == 1
    assert live.pending_resync() == [YES]
    assert live.pending_resync() == []


def test_price_change_only_last_entry_of_token_checked(live):
    data = frame(price_change_event(change(YES, "0.51", "1", "BUY", "0.9", "0.95"),
                                    change(YES, "0.505", "1", "BUY", "0.51", "0.52")))  # fmt: skip
    live.feed(data)
    assert row(live)[STATE] == State.LIVE


def test_price_change_last_entry_wrong_earlier_right_mismatch(live):
    data = frame(price_change_event(change(YES, "0.51", "1", "BUY", "0.51", "0.52"),
                                    change(YES, "0.505", "1", "BUY", "0.505", "0.52")))  # fmt: skip
    live.feed(data)
    assert row(live)[STATE] == State.INVALID


@pytest.mark.parametrize(("best_bid", "best_ask"), [(None, None), ("0.9", None), (None, "0.1")])
def test_price_change_without_both_best_prices_not_checked(live, best_bid, best_ask):
    live.feed(frame(price_change_event(change(YES, "0.51", "1", "BUY", best_bid, best_ask))))
    assert row(live)[STATE] == State.LIVE


def test_price_change_empty_sides_checked_as_0_and_1(impl):
    store = impl.BookStore(2)
    store.add(YES)
    dispatcher = impl.Dispatcher(store)
    dispatcher.feed(frame(book_event(bids=[], asks=[])))
    dispatcher.feed(frame(price_change_event(change(YES, "0.5", "200", "BUY", "0.5", "1"))))
    assert store.top(YES).state is State.LIVE
    dispatcher.feed(frame(price_change_event(change(YES, "0.5", "0", "BUY", "0", "1.0"))))
    assert store.top(YES).state is State.LIVE


def test_price_change_crossed_without_best_prices_invalid(live):
    live.feed(frame(price_change_event(change(YES, "0.52", "5", "BUY"))))
    assert row(live)[STATE] == State.INVALID
    assert (live.stats()["crossed_book"], live.stats()["checksum_mismatch"]) == (1, 0)


def test_price_change_crossed_matching_server_best_still_crossed(live):
    live.feed(frame(price_change_event(change(YES, "0.53", "5", "BUY", "0.53", "0.52"))))
    assert row(live)[STATE] == State.INVALID
    assert (live.stats()["crossed_book"], live.stats()["checksum_mismatch"]) == (1, 0)


def test_price_change_checksum_mismatch_counted_not_also_crossed(live):
    live.feed(frame(price_change_event(change(YES, "0.53", "5", "BUY", "0.5", "0.52"))))
    assert row(live)[MISMATCHES] == 1
    assert (live.stats()["crossed_book"], live.stats()["checksum_mismatch"]) == (0, 1)


def test_price_change_without_timestamp_keeps_exchange_time(live):
    live.feed(frame(price_change_event(change(YES, "0.51", "5", "BUY"), timestamp=None)))
    assert row(live)[EXCH_TS_MS] == int(TS)


@pytest.mark.parametrize("legacy", [
    {"asset_id": YES, "event_type": "price_change", "price": "0.514", "side": "SELL", "size": "1", "timestamp": TS},
    {"asset_id": YES, "changes": [{"price": "0.4", "side": "SELL", "size": "3300"}], "event_type": "price_change"},
])  # fmt: skip
def test_price_change_legacy_schema_bad_event(live, legacy):
    assert live.feed(frame(legacy)) == 0
    assert live.stats()["rej_bad_event"] == 1
