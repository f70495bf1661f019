"""Dispatcher, cold events (``new_market``, ``market_resolved``): delivered to ``on_event``, new markets once."""

from __future__ import annotations

import orjson
import pytest

from pm_ws.row import SEEN_MARKET_ID_MAX, SEEN_MARKETS_MAX

from builders import YES, Recorder, frame, market_resolved_event, new_market_event


def test_new_market_delivered_as_decoded_payload(impl, store):
    recorder = Recorder()
    dispatcher = impl.Dispatcher(store, on_event=recorder)
    data = frame(new_market_event())
    assert dispatcher.feed(data) == 1
    assert recorder.calls == [("new_market", orjson.loads(data))]
    assert dispatcher.stats()["ev_new_market"] == 1


def test_new_market_repeat_skipped_duplicate(impl, store):
    recorder = Recorder()
    dispatcher = impl.Dispatcher(store, on_event=recorder)
    assert dispatcher.feed(frame(new_market_event(), new_market_event())) == 1
    assert dispatcher.feed(frame(new_market_event(question="changed"))) == 0
    assert len(recorder.calls) == 1
    assert (dispatcher.stats()["ev_new_market"], dispatcher.stats()["skip_duplicate"]) == (1, 2)


def test_new_market_dedup_memory_bounded_oldest_forgotten(impl, store):
    # A server (or an attacker) naming endless new markets must not grow the dedup memory forever
    # Arrange
    delivered = []
    dispatcher = impl.Dispatcher(store, on_event=lambda kind, payload: delivered.append(payload["market"]))
    markets = [{"event_type": "new_market", "market": f"0x{i:064x}"} for i in range(SEEN_MARKETS_MAX + 1)]
    # Act
    for start in range(0, len(markets), 4096):
        dispatcher.feed(orjson.dumps(markets[start : start + 4096]))
    # Assert
    assert dispatcher.feed(orjson.dumps(markets[-1])) == 0  # the newest is still remembered
    assert dispatcher.feed(orjson.dumps(markets[0])) == 1  # the oldest was forgotten: delivered again
    stats = dispatcher.stats()
    assert (stats["ev_new_market"], stats["skip_duplicate"]) == (SEEN_MARKETS_MAX + 2, 1)
    assert len(delivered) == SEEN_MARKETS_MAX + 2 and delivered[-1] == markets[0]["market"]


def test_new_market_overlong_id_never_remembered(impl, store):
    dispatcher = impl.Dispatcher(store)
    huge = orjson.dumps({"event_type": "new_market", "market": "1" * (SEEN_MARKET_ID_MAX + 1)})
    longest = orjson.dumps({"event_type": "new_market", "market": "1" * SEEN_MARKET_ID_MAX})
    assert [dispatcher.feed(f) for f in (huge, huge, longest, longest)] == [1, 1, 1, 0]


def test_new_market_different_markets_both_delivered(impl, store):
    recorder = Recorder()
    dispatcher = impl.Dispatcher(store, on_event=recorder)
    dispatcher.feed(frame(new_market_event(), new_market_event(market="0x" + "32" * 32)))
    assert len(recorder.calls) == 2


@pytest.mark.parametrize("present", [("condition_id", "id"), ("id",)])
def test_new_market_dedup_falls_back_to_next_key(impl, store, present):
    payload = {key: new_market_event()[key] for key in ("event_type", "question", *present)}
    dispatcher = impl.Dispatcher(store)
    dispatcher.feed(frame(payload, payload | {"question": "again"}))
    assert (dispatcher.stats()["ev_new_market"], dispatcher.stats()["skip_duplicate"]) == (1, 1)


@pytest.mark.parametrize("market", [None, 5, ["0x1"], {"a": 1}])
def test_new_market_non_string_key_not_deduplicated(impl, store, market):
    dispatcher = impl.Dispatcher(store)
    dispatcher.feed(frame(new_market_event(market=market), new_market_event(market=market)))
    assert (dispatcher.stats()["ev_new_market"], dispatcher.stats()["skip_duplicate"]) == (2, 0)


def test_new_market_without_keys_not_deduplicated(impl, store):
    dispatcher = impl.Dispatcher(store)
    assert dispatcher.feed(frame({"event_type": "new_market"}, {"event_type": "new_market"})) == 2


def test_new_market_counted_and_deduplicated_without_callback(dispatcher):
    assert dispatcher.feed(frame(new_market_event(), new_market_event())) == 1
    assert (dispatcher.stats()["ev_new_market"], dispatcher.stats()["skip_duplicate"]) == (1, 1)


def test_market_resolved_delivered_every_time(impl, store):
    recorder = Recorder()
    dispatcher = impl.Dispatcher(store, on_event=recorder)
    payload = market_resolved_event()
    assert dispatcher.feed(frame(payload, payload)) == 2
    assert recorder.calls == [("market_resolved", payload), ("market_resolved", payload)]
    assert dispatcher.stats()["ev_market_resolved"] == 2


def test_cold_events_do_not_touch_rows(impl, store):
    dispatcher = impl.Dispatcher(store, on_event=Recorder())
    before = bytes(store.view)
    dispatcher.feed(frame(new_market_event(), {"event_type": "market_resolved", "asset_id": YES}))
    assert bytes(store.view) == before
