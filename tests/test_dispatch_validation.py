"""Dispatcher validation: bad shapes and bad numbers reject the whole event, and which rejection wins."""

from __future__ import annotations

import pytest

from pm_ws.row import BID_LEVELS, EXCH_TS_MS, LAST_PX

from builders import (
    OTHER,
    TS,
    YES,
    best_bid_ask_event,
    book_event,
    change,
    counters,
    frame,
    last_trade_price_event,
    price_change_event,
    row,
    tick_size_change_event,
    without,
)


BAD_EVENTS = [
    without(book_event(), "asset_id"),
    without(book_event(), "bids"),
    without(book_event(), "asks"),
    book_event(asset_id=None),
    book_event(asset_id=int("1" * 20)),
    {**book_event(), "bids": {"price": "0.5", "size": "1"}},
    {**book_event(), "asks": "[]"},
    {**book_event(), "bids": [{"price": "0.5"}]},
    {**book_event(), "bids": [{"size": "1"}]},
    {**book_event(), "bids": [["0.5", "1"]]},
    {**book_event(), "asks": [{"price": 0.5, "size": "1"}]},
    {**book_event(), "asks": [{"price": "0.5", "size": 1}]},
    {**book_event(), "asks": [{"price": "0.5", "size": None}]},
    book_event(timestamp=int(TS)),
    book_event(tick_size=0.01),
    book_event(last_trade_price=None),
    price_change_event(change(YES, "0.5", "1", "buy")),
    price_change_event(change(YES, "0.5", "1", "BUY ")),
    price_change_event(without(change(YES, "0.5", "1", "BUY"), "side")),
    price_change_event(without(change(YES, "0.5", "1", "BUY"), "size")),
    price_change_event(without(change(YES, "0.5", "1", "BUY"), "asset_id")),
    price_change_event(change(YES, "0.5", "1", "BUY") | {"best_bid": 0.5, "best_ask": "0.52"}),
    price_change_event(change(YES, "0.5", "1", "BUY"), "not an entry"),
    price_change_event(change(YES, "0.5", "1", "BUY"), timestamp=1786728438403),
    without(price_change_event(), "price_changes"),
    price_change_event() | {"price_changes": {"asset_id": YES}},
    without(last_trade_price_event(), "price"),
    without(last_trade_price_event(), "size"),
    last_trade_price_event(price=0.51),
    without(tick_size_change_event(), "new_tick_size"),
    tick_size_change_event(new=0.001),
    without(best_bid_ask_event(), "best_ask"),
]


@pytest.mark.parametrize("event", BAD_EVENTS)
def test_bad_shape_rejected_nothing_changed(live, event):
    before = (bytes(live.store.view), live.store.book(YES, None))
    assert live.feed(frame(event)) == 0
    assert (bytes(live.store.view), live.store.book(YES, None)) == before
    assert counters(live)["rej_bad_event"] == 1
    assert live.stats()["events"] == 1  # the snapshot only


BAD_NUMBERS = [
    {**book_event(), "bids": [{"price": "0.48", "size": "30"}, {"price": "0.12345", "size": "1"}]},
    {**book_event(), "asks": [{"price": "0.6", "size": "1"}, {"price": "1.01", "size": "1"}]},
    {**book_event(), "asks": [{"price": "0.6", "size": "-1"}]},
    {**book_event(), "asks": [{"price": "0.6", "size": "1e3"}]},
    {**book_event(), "asks": [{"price": "0.6", "size": "9223372036854.775808"}]},
    book_event(timestamp="1786728432337000000"),  # 19 digits
    book_event(timestamp=""),
    book_event(timestamp="-1"),
    book_event(timestamp="1.5"),
    book_event(timestamp=" 1"),
    book_event(tick_size="0"),
    book_event(tick_size="0.00001"),
    book_event(last_trade_price="0.5x"),
    price_change_event(change(YES, "0.5", "1", "BUY"), change(YES, "0.5", "1,5", "BUY")),
    price_change_event(change(YES, "0.5", "1", "BUY", "0.5", "1.1")),
    price_change_event(change(YES, "0.5", "1", "BUY", "", "0.52")),
    price_change_event(change(YES, "0.5", "1", "BUY"), timestamp="now"),
    last_trade_price_event(price="2"),
    last_trade_price_event(size="0.0000001"),
    last_trade_price_event(timestamp="1786728467101.0"),
    best_bid_ask_event(best_bid="-0.5"),
    best_bid_ask_event(best_ask="0.52 "),
]


@pytest.mark.parametrize("event", BAD_NUMBERS)
def test_bad_number_rejected_nothing_changed(live, event):
    before = (bytes(live.store.view), live.store.book(YES, None))
    assert live.feed(frame(event)) == 0
    assert (bytes(live.store.view), live.store.book(YES, None)) == before
    assert counters(live)["rej_bad_number"] == 1


def test_timestamp_18_digits_accepted(live):
    live.feed(frame(last_trade_price_event(timestamp="999999999999999999")))
    assert row(live)[EXCH_TS_MS] == 999_999_999_999_999_999


def test_precedence_bad_event_over_bad_number(live):
    event = price_change_event(change(YES, "0.12345", "1", "BUY"), change(YES, "0.5", "1", "SIDEWAYS"))
    live.feed(frame(event))
    assert (live.stats()["rej_bad_event"], live.stats()["rej_bad_number"]) == (1, 0)


def test_precedence_unknown_event_over_bad_event(live):
    live.feed(frame({"event_type": "orderbook", "bids": 5}))
    assert (live.stats()["rej_unknown_event"], live.stats()["rej_bad_event"]) == (1, 0)


@pytest.mark.parametrize(
    "event",
    [book_event(token_id=OTHER, bids=[("0.5.", "1")]), last_trade_price_event(token_id=OTHER, size="x"),
     price_change_event(change(OTHER, "0.5", "1", "BUY"), change(OTHER, "0.5", "-1", "SELL"))],
)  # fmt: skip
def test_precedence_bad_number_over_unsubscribed(live, event):
    live.feed(frame(event))
    assert (live.stats()["rej_bad_number"], live.stats()["skip_unsubscribed"]) == (1, 0)


def test_precedence_bad_shape_in_unsubscribed_entry_rejects_whole_event(live):
    before = bytes(live.store.view)
    event = price_change_event(change(YES, "0.51", "1", "BUY"), without(change(OTHER, "0.5", "1", "BUY"), "size"))
    assert live.feed(frame(event)) == 0
    assert bytes(live.store.view) == before
    assert live.stats()["rej_bad_event"] == 1


def test_rejected_event_in_array_others_applied(live):
    data = frame(last_trade_price_event(price="0.44"), last_trade_price_event(price="7"), book_event(bids=[], asks=[]))
    assert live.feed(data) == 2
    assert row(live)[LAST_PX] == 4400
    assert row(live)[BID_LEVELS] == 0
