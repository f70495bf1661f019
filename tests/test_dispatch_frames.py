"""Dispatcher frames: classification, input types and sizes, JSON validity and depth, arrays, counters."""

from __future__ import annotations

import orjson
import pytest

from pm_ws.row import BID_PX, EPOCH, LAST_PX, RECV_TS_NS, SEQ, STAT_KEYS, State

from builders import (
    NO,
    OTHER,
    YES,
    best_bid_ask_event,
    book_event,
    change,
    counters,
    frame,
    last_trade_price_event,
    new_market_event,
    price_change_event,
    row,
    tick_size_change_event,
)

# --- frame classification: counters, text frames, input types, size -------------------------


def test_stats_new_dispatcher_every_key_zero(dispatcher):
    stats = dispatcher.stats()
    assert list(stats) == list(STAT_KEYS)
    assert set(stats.values()) == {0}


def test_stats_returns_copy(dispatcher):
    dispatcher.stats()["frames"] = 99
    assert dispatcher.stats()["frames"] == 0


def test_dispatcher_store_attribute_read_only(impl, dispatcher, store):
    assert dispatcher.store is store
    with pytest.raises(AttributeError):
        dispatcher.store = impl.BookStore(1)


@pytest.mark.parametrize(
    ("text", "counter"),
    [
        ("PONG", "ctl_pong"),
        ("pong", "ctl_pong"),
        ("Pong", "ctl_pong"),
        (" PONG\r\n", "ctl_pong"),
        ("INVALID OPERATION", "ctl_invalid_operation"),
        ("invalid operation", "ctl_invalid_operation"),
        ("NO NEW ASSETS", "ctl_no_new_assets"),
        ("\tno new assets\n", "ctl_no_new_assets"),
        ("", "rej_unknown_text"),
        ("   ", "rej_unknown_text"),
        ("PING", "rej_unknown_text"),
        ("PONGPONG", "rej_unknown_text"),
        ("INVALID  OPERATION", "rej_unknown_text"),
        ("hello", "rej_unknown_text"),
        ('"PONG"', "rej_unknown_text"),
        ("\ufeff{}", "rej_unknown_text"),
        ("1", "rej_unknown_text"),
    ],
)
def test_feed_text_frame_counted_by_kind(dispatcher, text, counter):
    assert dispatcher.feed(text) == 0
    stats = dispatcher.stats()
    assert (stats["frames"], stats["bytes"], stats[counter]) == (1, len(text.encode()), 1)
    assert sum(stats.values()) == 2 + len(text.encode())


@pytest.mark.parametrize("kind", [str, bytes, bytearray, memoryview])
def test_feed_frame_types_same_result(impl, kind):
    store = impl.BookStore(2)
    store.add(YES)
    dispatcher = impl.Dispatcher(store)
    data = frame(book_event())
    assert dispatcher.feed(kind(data.decode()) if kind is str else kind(data), 5) == 1
    assert store.top(YES).bid_px == 5000
    assert dispatcher.stats()["bytes"] == len(data)


@pytest.mark.parametrize("value", [None, 5, 1.5, ["PONG"], {"event_type": "book"}])
def test_feed_non_frame_type_error(dispatcher, value):
    with pytest.raises(TypeError):
        dispatcher.feed(value)


def test_feed_non_ascii_str_utf8_encoded(dispatcher):
    text = orjson.dumps(book_event(note="prix élevé ✓")).decode()
    assert dispatcher.feed(text) == 1
    assert dispatcher.stats()["bytes"] == len(text.encode("utf-8"))


def test_feed_oversized_frame_rejected_unread(impl, store):
    dispatcher = impl.Dispatcher(store, max_frame_bytes=100)
    data = frame(book_event())
    assert len(data) > 100
    assert dispatcher.feed(data) == 0
    assert counters(dispatcher) == {"frames": 1, "bytes": len(data), "rej_oversized": 1}
    assert store.top(YES).state is State.SUBSCRIBING


def test_feed_frame_at_size_limit_accepted(impl, store):
    data = frame(book_event())
    dispatcher = impl.Dispatcher(store, max_frame_bytes=len(data))
    assert dispatcher.feed(data) == 1


# --- JSON: layout, escapes, duplicate keys, validity, depth ---------------------------------


def test_feed_whitespace_and_key_order_same_state(impl):
    # Arrange: one compact frame, one shuffled and pretty-printed, each on its own store
    compact = frame(book_event())
    shuffled = (
        ' \r\n\t{\n  "event_type" : "book",\n\t"asks":[ {"size":"10","price":"0.54"} ,{"size":"60","price":"0.53"},'
        '{ "size" : "25" , "price" : "0.52" } ] ,\n "timestamp":"1786728432337", "bids": [{"size":"30","price":"0.48"},'
        '{"price":"0.49","size":"20"},{"price":"0.5","size":"15"}],"asset_id":"' + YES + '" , "market":"x"\n}\n '
    )
    views = []
    for data in (compact, shuffled):
        store = impl.BookStore(2)
        store.add(YES)
        # Act
        assert impl.Dispatcher(store).feed(data, 3) == 1
        views.append(bytes(store.view))
    # Assert
    assert views[0] == views[1]


def test_feed_escaped_keys_and_ids_compared_after_unescaping(live):
    escaped_id = "".join(f"\\u{ord(c):04x}" for c in YES)
    data = '{"event\\u005ftype":"last_trade_price","asset_id":"' + escaped_id + '","price":"0.51","size":"1"}'
    assert live.feed(data) == 1
    assert row(live)[LAST_PX] == 5100


def test_feed_duplicate_keys_last_wins(live):
    data = orjson.dumps(last_trade_price_event()).decode()[:-1] + ',"price":"0.44","event_type":"last_trade_price"}'
    assert live.feed(data) == 1
    assert row(live)[LAST_PX] == 4400


def test_feed_duplicate_event_type_last_wins_unknown(live):
    data = orjson.dumps(last_trade_price_event()).decode()[:-1] + ',"event_type":"nope"}'
    assert live.feed(data) == 0
    assert live.stats()["rej_unknown_event"] == 1


@pytest.mark.parametrize(
    "data",
    [
        '{"event_type":"book"',  # truncated
        '[{"event_type":"pong"}',  # unclosed array
        '{"event_type":"book",}',  # trailing comma
        "{'event_type':'book'}",  # single quotes
        '{"a":NaN}',
        '{"a":01}',
        '{"a":1.}',
        '{"a":"\\x41"}',  # bad escape
        '{"a":"\\ud800"}',  # lone surrogate escape
        '{"a":"tab\there"}',  # raw control character in a string
        "{} {}",  # two documents
        "{}x",
        "[1,]",
        b'{"a":"\xff"}',  # invalid UTF-8
        b'{"a":"\xed\xa0\x80"}',  # UTF-8-encoded surrogate
        b'{"a":"\xc0\xaf"}',  # overlong encoding
        "{\"a\":'x'}",
        '{"a" 1}',
        "[",
        "{",
    ],
)
def test_feed_invalid_json_rejected(dispatcher, data):
    assert dispatcher.feed(data) == 0
    stats = dispatcher.stats()
    assert stats["rej_invalid_json"] == 1
    assert stats["events"] == 0


@pytest.mark.parametrize(
    "tail",
    [',{"event_type":"book",', ',{"event_type":"book"}}', ',"\\ud800"]', ',"\x01"]', ",nul]"],
)
def test_feed_invalid_json_late_in_array_nothing_applied(live, tail):
    # The valid events before the damage must not be applied either
    before = bytes(live.store.view)
    good = orjson.dumps([last_trade_price_event(), book_event(bids=[("0.1", "1")]), tick_size_change_event()]).decode()
    assert live.feed(good[:-1] + tail) == 0
    assert bytes(live.store.view) == before
    assert live.store.book(YES, None)[0][-1] == (4800, 30_000_000)
    assert live.stats()["rej_invalid_json"] == 1


def nested(depth):
    # An unknown key whose value nests `depth` arrays
    return "[" * depth + "]" * depth


def test_feed_depth_32_accepted(live):
    data = orjson.dumps(last_trade_price_event()).decode()[:-1] + ',"extra":' + nested(31) + "}"
    assert live.feed(data) == 1


def test_feed_depth_33_rejected(live):
    data = orjson.dumps(last_trade_price_event()).decode()[:-1] + ',"extra":' + nested(32) + "}"
    assert live.feed(data) == 0
    assert live.stats()["rej_invalid_json"] == 1


def test_feed_depth_33_in_array_element_rejected(live):
    # array 1, event 2, "extra" array 3, inner object 4, then 29 more
    data = "[" + orjson.dumps(last_trade_price_event()).decode()[:-1] + ',"extra":[{"a":' + nested(29) + "}]}]"
    assert live.feed(data) == 0
    assert live.stats()["rej_invalid_json"] == 1


def test_feed_depth_33_hidden_by_duplicate_key_rejected(live):
    # The deep value is overwritten by the later key, but the frame is still too deep
    data = '{"extra":' + nested(32) + "," + orjson.dumps(last_trade_price_event()).decode()[1:-1] + ',"extra":1}'
    assert live.feed(data) == 0
    assert live.stats()["rej_invalid_json"] == 1


def test_feed_brackets_inside_strings_not_depth(live):
    data = orjson.dumps(last_trade_price_event(note="[" * 40 + "{" * 40 + '\\"[')).decode()
    assert live.feed(data) == 1


# --- arrays and unknown events --------------------------------------------------------------


def test_feed_array_each_event_applied_in_order(dispatcher):
    data = frame(
        price_change_event(change(YES, "0.51", "5", "BUY")),  # YES not live yet: entry skipped
        book_event(),
        price_change_event(change(YES, "0.505", "7", "BUY")),  # live now: applied
    )
    assert dispatcher.feed(data) == 3
    assert row(dispatcher)[BID_PX] == 5050
    assert counters(dispatcher)["skip_not_live"] == 1


def test_feed_array_non_object_element_bad_event_rest_applied(dispatcher):
    data = orjson.dumps([1, "PONG", None, [book_event()], book_event(), {}])
    assert dispatcher.feed(data) == 1
    stats = dispatcher.stats()
    assert (stats["rej_bad_event"], stats["rej_unknown_event"], stats["ev_book"]) == (4, 1, 1)


def test_feed_empty_array_and_object_counted(dispatcher):
    assert dispatcher.feed("[]") == 0
    assert dispatcher.feed("{}") == 0
    assert counters(dispatcher) == {"frames": 2, "bytes": 4, "rej_unknown_event": 1}


@pytest.mark.parametrize("event_type", [None, 5, ["book"], {"a": 1}, "BOOK", "Book", "order", "", "book "])
def test_feed_unknown_or_non_string_event_type_rejected(live, event_type):
    before = bytes(live.store.view)
    assert live.feed(frame(book_event(bids=[], event_type=event_type))) == 0
    assert live.stats()["rej_unknown_event"] == 1
    assert bytes(live.store.view) == before


def test_feed_missing_event_type_unknown_event(live):
    event = book_event()
    del event["event_type"]
    assert live.feed(frame(event)) == 0
    assert live.stats()["rej_unknown_event"] == 1


def test_feed_unknown_keys_any_json_value_ignored(impl):
    extras = {"fee_schedule": {"a": [1, 2.5, -3e10, None, True]}, "neg_risk": False, "x": None, "y": 1.5e300,
              "z": [], "w": {}, "v": "\u00e9\U0001f600"}  # fmt: skip
    views = []
    for extra in ({}, extras):
        # Arrange: a store of its own for the plain events and for those with unknown keys
        store = impl.BookStore(2)
        store.add(YES)
        dispatcher = impl.Dispatcher(store)
        # Act
        assert dispatcher.feed(frame(book_event(**extra), last_trade_price_event(**extra)), 1) == 2
        views.append(bytes(store.view))
    # Assert
    assert views[0] == views[1]


# --- seq / epoch and accounting -------------------------------------------------------------


def test_seq_and_epoch_bumped_per_event_kind(live):
    # Arrange
    steps = [  # (action, SEQ bump: 2 per change, EPOCH bump)
        (lambda: live.feed(frame(price_change_event(change(YES, "0.51", "1", "BUY")))), 2, 0),
        (lambda: live.feed(frame(last_trade_price_event())), 2, 0),
        (lambda: live.feed(frame(best_bid_ask_event())), 0, 0),
        (lambda: live.feed(frame(tick_size_change_event(new="0.01"))), 2, 1),
        (lambda: live.feed(frame(tick_size_change_event(new="0.01"))), 0, 0),
        (lambda: live.feed(frame(book_event())), 2, 1),
        (lambda: live.store.mark_stale([YES]), 2, 1),
        (lambda: live.feed(frame(price_change_event(change(YES, "0.51", "1", "BUY")))), 0, 0),  # stale
    ]
    for step, seq_bump, epoch_bump in steps:
        before = row(live)
        # Act
        step()
        # Assert
        after = row(live)
        assert (after[SEQ] - before[SEQ], after[EPOCH] - before[EPOCH]) == (seq_bump, epoch_bump)


def test_feed_return_values_sum_to_events(live):
    # Arrange
    frames = [
        frame(book_event(token_id=NO, bids=[("0.4", "1")], asks=[("0.6", "1")])),
        frame(price_change_event(change(YES, "0.51", "1", "BUY"), change(NO, "0.41", "2", "BUY"))),
        frame(last_trade_price_event(), last_trade_price_event(token_id=OTHER), best_bid_ask_event(),
              tick_size_change_event(new="0.01")),
        frame(new_market_event(), new_market_event(), {"event_type": "market_resolved"}),
    ]  # fmt: skip
    # Act
    returned = sum(live.feed(data) for data in frames) + 1  # + the fixture's snapshot
    # Assert
    stats = live.stats()
    assert returned == stats["events"] == 8
    assert stats["events"] == sum(value for key, value in stats.items() if key.startswith("ev_"))


def test_accounting_identities_hold(live):
    # Arrange: frames of every class; count the event objects in frames that reach step 5
    frames = [
        "PONG", "no new assets", "INVALID OPERATION", "hi", "", '{"a":', "[" * 40 + "]" * 40, "x" * 10,
        frame(book_event(token_id=NO)), frame(book_event(token_id=OTHER)), "[]", "[1, 2]",
        frame(price_change_event(change(YES, "0.51", "1", "BUY")),
              price_change_event(change(OTHER, "0.5", "1", "BUY"))),
        frame(last_trade_price_event(size="x"), last_trade_price_event(side="x"), {"event_type": "x"}, {},
              tick_size_change_event()),
        frame(new_market_event(), new_market_event(), new_market_event(event_type="market_resolved")),
        frame(best_bid_ask_event()),
    ]  # fmt: skip
    objects_seen = 1 + 1 + 1 + 2 + 2 + 5 + 3 + 1  # the fixture's snapshot first
    # Act
    for data in frames:
        live.feed(data)
    # Assert
    s = live.stats()
    assert s["frames"] == 1 + len(frames)
    assert s["frames"] == (s["rej_oversized"] + s["rej_unknown_text"] + s["rej_invalid_json"] + s["ctl_pong"]
                           + s["ctl_invalid_operation"] + s["ctl_no_new_assets"] + 1 + 8)  # fmt: skip
    assert objects_seen == (s["events"] + s["rej_unknown_event"] + s["rej_bad_event"] + s["rej_bad_number"]
                            + s["skip_unsubscribed"] + s["skip_duplicate"])  # fmt: skip


def test_recv_ts_ns_int64_range_checked(dispatcher):
    assert dispatcher.feed(frame(last_trade_price_event()), 2**63 - 1) == 1
    assert row(dispatcher)[RECV_TS_NS] == 2**63 - 1
    with pytest.raises(OverflowError):
        dispatcher.feed(frame(last_trade_price_event()), 2**63)
