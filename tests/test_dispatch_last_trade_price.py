"""Dispatcher, ``last_trade_price``: the row's last trade, in any state, and the optional trade callback."""

from __future__ import annotations

import pytest

from pm_ws.row import (
    ASK_SZ,
    BID_PX,
    EPOCH,
    EXCH_TS_MS,
    LAST_PX,
    LAST_SIDE,
    LAST_SZ,
    RECV_TS_NS,
    SEQ,
    SIDE_BUY,
    SIDE_SELL,
    STATE,
    State,
)

from builders import OTHER, YES, Recorder, frame, last_trade_price_event, row


def test_last_trade_price_sets_last_and_touches_row(live):
    assert live.feed(frame(last_trade_price_event()), 55) == 1
    values = row(live)
    assert (values[LAST_PX], values[LAST_SZ], values[LAST_SIDE]) == (5100, 219_217_767, SIDE_SELL)
    assert (values[SEQ], values[EPOCH], values[EXCH_TS_MS], values[RECV_TS_NS]) == (6, 1, 1786728467101, 55)
    assert values[BID_PX:ASK_SZ + 1] == [5000, 15_000_000, 5200, 25_000_000]
    assert live.stats()["ev_last_trade_price"] == 1


def test_last_trade_price_applies_in_any_state(dispatcher):
    assert dispatcher.feed(frame(last_trade_price_event(side="BUY"))) == 1
    values = row(dispatcher)
    assert (values[LAST_PX], values[LAST_SIDE], values[STATE], values[SEQ]) == (5100, SIDE_BUY, State.SUBSCRIBING, 4)


def test_last_trade_price_absent_side_zero(live):
    event = last_trade_price_event()
    del event["side"]
    live.feed(frame(last_trade_price_event(side="BUY")))
    live.feed(frame(event))
    assert row(live)[LAST_SIDE] == 0


@pytest.mark.parametrize("side", ["buy", "Sell", "", "BID", 1, None])
def test_last_trade_price_bad_side_bad_event(live, side):
    assert live.feed(frame(last_trade_price_event(side=side))) == 0
    assert live.stats()["rej_bad_event"] == 1


def test_last_trade_price_unsubscribed_skipped(live):
    assert live.feed(frame(last_trade_price_event(token_id=OTHER))) == 0
    assert live.stats()["skip_unsubscribed"] == 1


def test_last_trade_price_emit_trades_delivers_ints(impl, store):
    # Arrange
    recorder = Recorder()
    dispatcher = impl.Dispatcher(store, on_event=recorder, emit_trades=True)
    event = last_trade_price_event()
    del event["timestamp"]
    # Act
    dispatcher.feed(frame(last_trade_price_event(), event))
    # Assert
    assert recorder.calls == [
        ("last_trade_price", {"asset_id": YES, "price": 5100, "size": 219_217_767, "side": SIDE_SELL,
                              "timestamp": 1786728467101}),
        ("last_trade_price", {"asset_id": YES, "price": 5100, "size": 219_217_767, "side": SIDE_SELL, "timestamp": 0}),
    ]  # fmt: skip


def test_last_trade_price_without_emit_trades_not_delivered(impl, store):
    recorder = Recorder()
    impl.Dispatcher(store, on_event=recorder).feed(frame(last_trade_price_event()))
    assert recorder.calls == []


def test_last_trade_price_emit_trades_without_callback_applied(impl, store):
    assert impl.Dispatcher(store, emit_trades=True).feed(frame(last_trade_price_event())) == 1


def test_last_trade_price_unsubscribed_not_delivered(impl, store):
    recorder = Recorder()
    impl.Dispatcher(store, on_event=recorder, emit_trades=True).feed(frame(last_trade_price_event(token_id=OTHER)))
    assert recorder.calls == []
