"""Dispatcher: frame classification, every event type, the apply rules, counters and resyncs."""

from __future__ import annotations

import orjson
import pytest

from pm_ws.row import (
    ASK_LEVELS,
    ASK_PX,
    ASK_SZ,
    BID_LEVELS,
    BID_PX,
    BID_SZ,
    EPOCH,
    EXCH_TS_MS,
    LAST_PX,
    LAST_SIDE,
    LAST_SZ,
    MISMATCHES,
    PRICE_SCALE,
    RECV_TS_NS,
    SEEN_MARKET_ID_MAX,
    SEEN_MARKETS_MAX,
    SEQ,
    SIDE_BUY,
    SIDE_SELL,
    STAT_KEYS,
    STATE,
    TICK,
    State,
)

# Made-up ids shaped like real ones (decimal uint256, 77 digits): a YES/NO pair we hold, one we don't
YES = "38104916273645509182736450918273645091827364509182736450918273645091827364501"
NO = "61895083726354490817263549081726354908172635490817263549081726354908172635499"
OTHER = "50000000000000000000000000000000000000000000000000000000000000000000000000017"
MARKET = "0x" + "5d" * 32
TS = "1786728432337"

# YES: bids 0.48 x 30, 0.49 x 20, 0.50 x 15 (best last); asks 0.54 x 10, 0.53 x 60, 0.52 x 25 (best last)
YES_BIDS = [("0.48", "30"), ("0.49", "20"), ("0.5", "15")]
YES_ASKS = [("0.54", "10"), ("0.53", "60"), ("0.52", "25")]


def book_event(token_id=YES, bids=YES_BIDS, asks=YES_ASKS, **extra):
    event = {
        "market": MARKET,
        "asset_id": token_id,
        "timestamp": TS,
        "hash": "924ec9bc1c6dd89f5db9b7b2b68cdab458cc2dc6",
        "bids": [{"price": p, "size": s} for p, s in bids],
        "asks": [{"price": p, "size": s} for p, s in asks],
        "event_type": "book",
    }
    event.update(extra)
    return event


def change(token_id, price, size, side, best_bid=None, best_ask=None):
    entry = {"asset_id": token_id, "price": price, "size": size, "side": side, "hash": "f3285de052f8"}
    if best_bid is not None:
        entry["best_bid"] = best_bid
    if best_ask is not None:
        entry["best_ask"] = best_ask
    return entry


def price_change_event(*changes, timestamp="1786728438403"):
    event = {"market": MARKET, "price_changes": list(changes), "event_type": "price_change"}
    if timestamp is not None:
        event["timestamp"] = timestamp
    return event


def trade_event(token_id=YES, price="0.51", size="219.217767", side="SELL", **extra):
    event = {"market": MARKET, "asset_id": token_id, "price": price, "size": size, "fee_rate_bps": "0",
             "side": side, "timestamp": "1786728467101", "event_type": "last_trade_price"}  # fmt: skip
    event.update(extra)
    return event


def tick_event(token_id=YES, new="0.001", old="0.01"):
    return {"asset_id": token_id, "event_type": "tick_size_change", "market": MARKET,
            "new_tick_size": new, "old_tick_size": old, "timestamp": "1739068041853"}  # fmt: skip


def bba_event(token_id=YES, best_bid="0.5", best_ask="0.52"):
    return {"market": MARKET, "asset_id": token_id, "best_bid": best_bid, "best_ask": best_ask,
            "spread": "0.02", "timestamp": "1786728467006", "event_type": "best_bid_ask"}  # fmt: skip


def frame(*events):
    """One event as a bare object, several as an array."""
    return orjson.dumps(events[0] if len(events) == 1 else list(events))


class Recorder:
    """An on_event callback that keeps what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, event_type, payload):
        self.calls.append((event_type, payload))


@pytest.fixture
def store(impl):
    store = impl.BookStore(8)
    store.add(YES)
    store.add(NO)
    return store


@pytest.fixture
def dispatcher(impl, store):
    return impl.Dispatcher(store)


@pytest.fixture
def live(dispatcher):
    """The dispatcher after YES got its snapshot (NO is still SUBSCRIBING)."""
    assert dispatcher.feed(frame(book_event()), 1) == 1
    return dispatcher


def row(dispatcher, token_id=YES):
    store = dispatcher.store
    return [store.view[store.slot(token_id), field] for field in range(store.view.shape[1])]


def counters(dispatcher):
    return {key: value for key, value in dispatcher.stats().items() if value}


# --- frame classification -------------------------------------------------------------------


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
    data = orjson.dumps(trade_event()).decode()[:-1] + ',"price":"0.44","event_type":"last_trade_price"}'
    assert live.feed(data) == 1
    assert row(live)[LAST_PX] == 4400


def test_feed_duplicate_event_type_last_wins_unknown(live):
    data = orjson.dumps(trade_event()).decode()[:-1] + ',"event_type":"nope"}'
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
    good = orjson.dumps([trade_event(), book_event(bids=[("0.1", "1")]), tick_event()]).decode()
    assert live.feed(good[:-1] + tail) == 0
    assert bytes(live.store.view) == before
    assert live.store.book(YES, None)[0][-1] == (4800, 30_000_000)
    assert live.stats()["rej_invalid_json"] == 1


def nested(depth):
    # An unknown key whose value nests `depth` arrays
    return "[" * depth + "]" * depth


def test_feed_depth_32_accepted(live):
    data = orjson.dumps(trade_event()).decode()[:-1] + ',"extra":' + nested(31) + "}"
    assert live.feed(data) == 1


def test_feed_depth_33_rejected(live):
    data = orjson.dumps(trade_event()).decode()[:-1] + ',"extra":' + nested(32) + "}"
    assert live.feed(data) == 0
    assert live.stats()["rej_invalid_json"] == 1


def test_feed_depth_33_in_array_element_rejected(live):
    # array 1, event 2, "extra" array 3, inner object 4, then 29 more
    data = "[" + orjson.dumps(trade_event()).decode()[:-1] + ',"extra":[{"a":' + nested(29) + "}]}]"
    assert live.feed(data) == 0
    assert live.stats()["rej_invalid_json"] == 1


def test_feed_depth_33_hidden_by_duplicate_key_rejected(live):
    # The deep value is overwritten by the later key, but the frame is still too deep
    data = '{"extra":' + nested(32) + "," + orjson.dumps(trade_event()).decode()[1:-1] + ',"extra":1}'
    assert live.feed(data) == 0
    assert live.stats()["rej_invalid_json"] == 1


def test_feed_brackets_inside_strings_not_depth(live):
    data = orjson.dumps(trade_event(note="[" * 40 + "{" * 40 + '\\"[')).decode()
    assert live.feed(data) == 1


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
        store = impl.BookStore(2)
        store.add(YES)
        dispatcher = impl.Dispatcher(store)
        assert dispatcher.feed(frame(book_event(**extra), trade_event(**extra)), 1) == 2
        views.append(bytes(store.view))
    assert views[0] == views[1]


# --- book -----------------------------------------------------------------------------------


def test_book_snapshot_sets_row_live(dispatcher):
    assert dispatcher.feed(frame(book_event()), 123) == 1
    values = row(dispatcher)
    assert values[BID_PX:ASK_SZ + 1] == [5000, 15_000_000, 5200, 25_000_000]
    assert (values[BID_LEVELS], values[ASK_LEVELS]) == (3, 3)
    assert values[STATE] == State.LIVE
    assert (values[EPOCH], values[SEQ]) == (1, 1)
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
    assert (values[EPOCH], values[SEQ]) == (2, 2)


def test_book_empty_sides_live_with_empty_row_values(dispatcher):
    dispatcher.feed(frame(book_event(bids=[], asks=[])))
    values = row(dispatcher)
    assert values[BID_PX:ASK_SZ + 1] == [0, 0, PRICE_SCALE, 0]
    assert (values[BID_LEVELS], values[ASK_LEVELS], values[STATE]) == (0, 0, State.LIVE)


def test_book_tick_size_and_last_trade_price_recorded(live):
    live.feed(frame(trade_event(price="0.51", size="2", side="BUY")))
    live.feed(frame(book_event(tick_size="0.01", last_trade_price="0.550")))
    values = row(live)
    assert (values[TICK], values[LAST_PX]) == (100, 5500)
    assert (values[LAST_SZ], values[LAST_SIDE]) == (2_000_000, SIDE_BUY)  # untouched by the book


def test_book_empty_last_trade_price_keeps_last(live):
    live.feed(frame(trade_event(price="0.51")))
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


# --- price_change ---------------------------------------------------------------------------


def test_price_change_absolute_size_replaces_level(live):
    assert live.feed(frame(price_change_event(change(YES, "0.5", "40", "BUY", "0.5", "0.52"))), 9) == 1
    values = row(live)
    assert values[BID_SZ] == 40_000_000  # not 15 + 40
    assert (values[SEQ], values[EPOCH], values[RECV_TS_NS]) == (2, 1, 9)
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
    assert row(live)[SEQ] == 2


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
    assert row(live)[SEQ] == 2
    assert row(live)[BID_LEVELS] == 8


def test_price_change_two_tokens_each_touched_once(live):
    live.feed(frame(book_event(token_id=NO, bids=[("0.46", "25")], asks=[("0.5", "15")])))
    data = frame(price_change_event(change(YES, "0.51", "5", "BUY", "0.51", "0.52"),
                                    change(NO, "0.49", "5", "SELL", "0.46", "0.49")))  # fmt: skip
    assert live.feed(data, 4) == 1
    assert (row(live, YES)[SEQ], row(live, NO)[SEQ]) == (2, 2)
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
    if state_change == "mark_stale":
        live.store.mark_stale([YES])
    elif state_change == "tick_size_change":
        live.feed(frame(tick_event()))
    else:
        live.feed(frame(price_change_event(change(YES, "0.53", "5", "BUY"))))
    before = bytes(live.store.view)
    assert live.feed(frame(price_change_event(change(YES, "0.4", "1", "BUY")))) == 1
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
    assert (values[STATE], values[MISMATCHES], values[SEQ], values[RECV_TS_NS]) == (State.INVALID, 1, 2, 8)
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


# --- resync queue ---------------------------------------------------------------------------


def test_resync_queue_deduplicated_and_counted_once(live):
    for _ in range(3):
        live.feed(frame(book_event(bids=[("0.6", "1")], asks=[("0.5", "1")])))
    assert live.stats()["crossed_book"] == 3
    assert live.stats()["resync_queued"] == 1
    assert live.pending_resync() == [YES]


def test_resync_queue_first_queued_order_requeue_after_drain(live):
    live.feed(frame(book_event(token_id=NO, bids=[("0.6", "1")], asks=[("0.5", "1")])))
    live.feed(frame(tick_event(token_id=YES)))
    assert live.pending_resync() == [NO, YES]
    live.feed(frame(book_event(token_id=NO, bids=[("0.6", "1")], asks=[("0.5", "1")])))
    assert live.pending_resync() == [NO]
    assert live.stats()["resync_queued"] == 3


def test_resync_queue_removed_token_dropped(live):
    live.feed(frame(book_event(bids=[("0.6", "1")], asks=[("0.5", "1")])))
    live.store.remove(YES)
    assert live.pending_resync() == []


def test_resync_queue_removed_and_re_added_token_not_pending(live):
    live.feed(frame(book_event(bids=[("0.6", "1")], asks=[("0.5", "1")])))
    live.store.remove(YES)
    live.store.add(YES)
    assert live.pending_resync() == []


# --- last_trade_price -----------------------------------------------------------------------


def test_last_trade_price_sets_last_and_touches_row(live):
    assert live.feed(frame(trade_event()), 55) == 1
    values = row(live)
    assert (values[LAST_PX], values[LAST_SZ], values[LAST_SIDE]) == (5100, 219_217_767, SIDE_SELL)
    assert (values[SEQ], values[EPOCH], values[EXCH_TS_MS], values[RECV_TS_NS]) == (2, 1, 1786728467101, 55)
    assert values[BID_PX:ASK_SZ + 1] == [5000, 15_000_000, 5200, 25_000_000]
    assert live.stats()["ev_last_trade_price"] == 1


def test_last_trade_price_applies_in_any_state(dispatcher):
    assert dispatcher.feed(frame(trade_event(side="BUY"))) == 1
    values = row(dispatcher)
    assert (values[LAST_PX], values[LAST_SIDE], values[STATE], values[SEQ]) == (5100, SIDE_BUY, State.SUBSCRIBING, 1)


def test_last_trade_price_absent_side_zero(live):
    event = trade_event()
    del event["side"]
    live.feed(frame(trade_event(side="BUY")))
    live.feed(frame(event))
    assert row(live)[LAST_SIDE] == 0


@pytest.mark.parametrize("side", ["buy", "Sell", "", "BID", 1, None])
def test_last_trade_price_bad_side_bad_event(live, side):
    assert live.feed(frame(trade_event(side=side))) == 0
    assert live.stats()["rej_bad_event"] == 1


def test_last_trade_price_unsubscribed_skipped(live):
    assert live.feed(frame(trade_event(token_id=OTHER))) == 0
    assert live.stats()["skip_unsubscribed"] == 1


def test_last_trade_price_emit_trades_delivers_ints(impl, store):
    recorder = Recorder()
    dispatcher = impl.Dispatcher(store, on_event=recorder, emit_trades=True)
    event = trade_event()
    del event["timestamp"]
    dispatcher.feed(frame(trade_event(), event))
    assert recorder.calls == [
        ("last_trade_price", {"asset_id": YES, "price": 5100, "size": 219_217_767, "side": SIDE_SELL,
                              "timestamp": 1786728467101}),
        ("last_trade_price", {"asset_id": YES, "price": 5100, "size": 219_217_767, "side": SIDE_SELL, "timestamp": 0}),
    ]  # fmt: skip


def test_last_trade_price_without_emit_trades_not_delivered(impl, store):
    recorder = Recorder()
    impl.Dispatcher(store, on_event=recorder).feed(frame(trade_event()))
    assert recorder.calls == []


def test_last_trade_price_emit_trades_without_callback_applied(impl, store):
    assert impl.Dispatcher(store, emit_trades=True).feed(frame(trade_event())) == 1


def test_last_trade_price_unsubscribed_not_delivered(impl, store):
    recorder = Recorder()
    impl.Dispatcher(store, on_event=recorder, emit_trades=True).feed(frame(trade_event(token_id=OTHER)))
    assert recorder.calls == []


# --- tick_size_change -----------------------------------------------------------------------


def test_tick_size_change_new_value_stale_resync(live):
    assert live.feed(frame(tick_event(new="0.001")), 6) == 1
    values = row(live)
    assert (values[TICK], values[STATE], values[EPOCH], values[SEQ]) == (10, State.STALE, 2, 2)
    assert (values[EXCH_TS_MS], values[RECV_TS_NS]) == (1739068041853, 6)
    assert live.store.book(YES, None)[0] != []  # kept for inspection
    assert live.pending_resync() == [YES]
    assert live.stats()["ev_tick_size_change"] == 1


def test_tick_size_change_same_value_no_op(live):
    live.feed(frame(book_event(tick_size="0.001")))
    before = bytes(live.store.view)
    assert live.feed(frame(tick_event(new="0.001"))) == 1
    assert bytes(live.store.view) == before
    assert live.stats()["ev_tick_size_change"] == 1
    assert live.pending_resync() == []


def test_tick_size_change_subscribing_token_tick_recorded_state_kept(dispatcher):
    dispatcher.feed(frame(tick_event(new="0.01")))
    values = row(dispatcher)
    assert (values[TICK], values[STATE], values[EPOCH], values[SEQ]) == (100, State.SUBSCRIBING, 1, 1)
    assert dispatcher.pending_resync() == []


def test_tick_size_change_invalid_token_becomes_stale(live):
    live.feed(frame(book_event(bids=[("0.6", "1")], asks=[("0.5", "1")])))
    live.pending_resync()
    live.feed(frame(tick_event()))
    assert row(live)[STATE] == State.STALE
    assert live.pending_resync() == [YES]


def test_tick_size_change_then_book_live_again(live):
    live.feed(frame(tick_event(new="0.001")))
    live.feed(frame(book_event()))
    assert row(live)[STATE] == State.LIVE
    assert row(live)[TICK] == 10


@pytest.mark.parametrize("new", ["0", "0.0000", "0.00001", "1.5", "-0.01", "abc", ""])
def test_tick_size_change_bad_tick_bad_number(live, new):
    before = bytes(live.store.view)
    assert live.feed(frame(tick_event(new=new))) == 0
    assert live.stats()["rej_bad_number"] == 1
    assert bytes(live.store.view) == before


def test_tick_size_change_unsubscribed_skipped(live):
    assert live.feed(frame(tick_event(token_id=OTHER))) == 0
    assert live.stats()["skip_unsubscribed"] == 1


# --- best_bid_ask ---------------------------------------------------------------------------


def test_best_bid_ask_matching_counted_row_unchanged(live):
    before = bytes(live.store.view)
    assert live.feed(frame(bba_event(best_bid="0.50", best_ask="0.52")), 99) == 1
    assert bytes(live.store.view) == before
    assert (live.stats()["ev_best_bid_ask"], live.stats()["bba_mismatch"]) == (1, 0)


def test_best_bid_ask_differing_mismatch_counted_row_unchanged(live):
    before = bytes(live.store.view)
    assert live.feed(frame(bba_event(best_bid="0.51", best_ask="0.52")), 99) == 1
    assert bytes(live.store.view) == before
    assert live.stats()["bba_mismatch"] == 1
    assert live.pending_resync() == []


def test_best_bid_ask_not_live_never_mismatch(dispatcher):
    assert dispatcher.feed(frame(bba_event(best_bid="0.51", best_ask="0.52"))) == 1
    assert dispatcher.stats()["bba_mismatch"] == 0


def test_best_bid_ask_unsubscribed_skipped(live):
    assert live.feed(frame(bba_event(token_id=OTHER))) == 0
    assert live.stats()["skip_unsubscribed"] == 1


@pytest.mark.parametrize(("field", "value"), [("best_bid", 0.5), ("best_ask", None), ("asset_id", 5)])
def test_best_bid_ask_wrong_type_bad_event(live, field, value):
    assert live.feed(frame(bba_event() | {field: value})) == 0
    assert live.stats()["rej_bad_event"] == 1


# --- new_market and market_resolved ---------------------------------------------------------


NEW_MARKET = {
    "event_type": "new_market", "id": "1031769", "question": "Will it rain?", "market": "0x" + "31" * 32,
    "assets_ids": [YES, NO], "outcomes": ["Yes", "No"], "timestamp": "1766790415550",
    "condition_id": "0x" + "31" * 32, "active": True, "order_price_min_tick_size": "0.01",
    "event_message": {"id": "125819", "title": "Rain"}, "tags": ["weather"],
}  # fmt: skip


def test_new_market_delivered_as_decoded_payload(impl, store):
    recorder = Recorder()
    dispatcher = impl.Dispatcher(store, on_event=recorder)
    data = orjson.dumps(NEW_MARKET)
    assert dispatcher.feed(data) == 1
    assert recorder.calls == [("new_market", orjson.loads(data))]
    assert dispatcher.stats()["ev_new_market"] == 1


def test_new_market_repeat_skipped_duplicate(impl, store):
    recorder = Recorder()
    dispatcher = impl.Dispatcher(store, on_event=recorder)
    assert dispatcher.feed(frame(NEW_MARKET, NEW_MARKET)) == 1
    assert dispatcher.feed(frame(NEW_MARKET | {"question": "changed"})) == 0
    assert len(recorder.calls) == 1
    assert (dispatcher.stats()["ev_new_market"], dispatcher.stats()["skip_duplicate"]) == (1, 2)


def test_new_market_dedup_memory_bounded_oldest_forgotten(impl, store):
    # A server (or an attacker) naming endless new markets must not grow the dedup memory forever
    delivered = []
    dispatcher = impl.Dispatcher(store, on_event=lambda kind, payload: delivered.append(payload["market"]))
    markets = [{"event_type": "new_market", "market": f"0x{i:064x}"} for i in range(SEEN_MARKETS_MAX + 1)]
    for start in range(0, len(markets), 4096):
        dispatcher.feed(orjson.dumps(markets[start : start + 4096]))
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
    dispatcher.feed(frame(NEW_MARKET, NEW_MARKET | {"market": "0x" + "32" * 32}))
    assert len(recorder.calls) == 2


@pytest.mark.parametrize("present", [("condition_id", "id"), ("id",)])
def test_new_market_dedup_falls_back_to_next_key(impl, store, present):
    payload = {key: NEW_MARKET[key] for key in ("event_type", "question", *present)}
    dispatcher = impl.Dispatcher(store)
    dispatcher.feed(frame(payload, payload | {"question": "again"}))
    assert (dispatcher.stats()["ev_new_market"], dispatcher.stats()["skip_duplicate"]) == (1, 1)


@pytest.mark.parametrize("market", [None, 5, ["0x1"], {"a": 1}])
def test_new_market_non_string_key_not_deduplicated(impl, store, market):
    dispatcher = impl.Dispatcher(store)
    dispatcher.feed(frame(NEW_MARKET | {"market": market}, NEW_MARKET | {"market": market}))
    assert (dispatcher.stats()["ev_new_market"], dispatcher.stats()["skip_duplicate"]) == (2, 0)


def test_new_market_without_keys_not_deduplicated(impl, store):
    dispatcher = impl.Dispatcher(store)
    assert dispatcher.feed(frame({"event_type": "new_market"}, {"event_type": "new_market"})) == 2


def test_new_market_counted_and_deduplicated_without_callback(dispatcher):
    assert dispatcher.feed(frame(NEW_MARKET, NEW_MARKET)) == 1
    assert (dispatcher.stats()["ev_new_market"], dispatcher.stats()["skip_duplicate"]) == (1, 1)


def test_market_resolved_delivered_every_time(impl, store):
    recorder = Recorder()
    dispatcher = impl.Dispatcher(store, on_event=recorder)
    payload = {"event_type": "market_resolved", "id": "1031769", "market": "0x" + "31" * 32,
               "winning_asset_id": YES, "winning_outcome": "Yes", "assets_ids": [YES, NO]}  # fmt: skip
    assert dispatcher.feed(frame(payload, payload)) == 2
    assert recorder.calls == [("market_resolved", payload), ("market_resolved", payload)]
    assert dispatcher.stats()["ev_market_resolved"] == 2


def test_cold_events_do_not_touch_rows(impl, store):
    dispatcher = impl.Dispatcher(store, on_event=Recorder())
    before = bytes(store.view)
    dispatcher.feed(frame(NEW_MARKET, {"event_type": "market_resolved", "asset_id": YES}))
    assert bytes(store.view) == before


# --- shape, numbers, precedence -------------------------------------------------------------


def without(event, key):
    return {k: v for k, v in event.items() if k != key}


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
    without(trade_event(), "price"),
    without(trade_event(), "size"),
    trade_event(price=0.51),
    without(tick_event(), "new_tick_size"),
    tick_event(new=0.001),
    without(bba_event(), "best_ask"),
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
    trade_event(price="2"),
    trade_event(size="0.0000001"),
    trade_event(timestamp="1786728467101.0"),
    bba_event(best_bid="-0.5"),
    bba_event(best_ask="0.52 "),
]


@pytest.mark.parametrize("event", BAD_NUMBERS)
def test_bad_number_rejected_nothing_changed(live, event):
    before = (bytes(live.store.view), live.store.book(YES, None))
    assert live.feed(frame(event)) == 0
    assert (bytes(live.store.view), live.store.book(YES, None)) == before
    assert counters(live)["rej_bad_number"] == 1


def test_timestamp_18_digits_accepted(live):
    live.feed(frame(trade_event(timestamp="999999999999999999")))
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
    [book_event(token_id=OTHER, bids=[("0.5.", "1")]), trade_event(token_id=OTHER, size="x"),
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
    data = frame(trade_event(price="0.44"), trade_event(price="7"), book_event(bids=[], asks=[]))
    assert live.feed(data) == 2
    assert row(live)[LAST_PX] == 4400
    assert row(live)[BID_LEVELS] == 0


# --- seq / epoch and accounting -------------------------------------------------------------


def test_seq_and_epoch_bumped_per_event_kind(live):
    steps = [  # (action, SEQ bump, EPOCH bump)
        (lambda: live.feed(frame(price_change_event(change(YES, "0.51", "1", "BUY")))), 1, 0),
        (lambda: live.feed(frame(trade_event())), 1, 0),
        (lambda: live.feed(frame(bba_event())), 0, 0),
        (lambda: live.feed(frame(tick_event(new="0.01"))), 1, 1),
        (lambda: live.feed(frame(tick_event(new="0.01"))), 0, 0),
        (lambda: live.feed(frame(book_event())), 1, 1),
        (lambda: live.store.mark_stale([YES]), 1, 1),
        (lambda: live.feed(frame(price_change_event(change(YES, "0.51", "1", "BUY")))), 0, 0),  # stale
    ]
    for step, seq_bump, epoch_bump in steps:
        before = row(live)
        step()
        after = row(live)
        assert (after[SEQ] - before[SEQ], after[EPOCH] - before[EPOCH]) == (seq_bump, epoch_bump)


def test_feed_return_values_sum_to_events(live):
    frames = [
        frame(book_event(token_id=NO, bids=[("0.4", "1")], asks=[("0.6", "1")])),
        frame(price_change_event(change(YES, "0.51", "1", "BUY"), change(NO, "0.41", "2", "BUY"))),
        frame(trade_event(), trade_event(token_id=OTHER), bba_event(), tick_event(new="0.01")),
        frame(NEW_MARKET, NEW_MARKET, {"event_type": "market_resolved"}),
    ]
    returned = sum(live.feed(data) for data in frames) + 1  # + the fixture's snapshot
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
        frame(trade_event(size="x"), trade_event(side="x"), {"event_type": "x"}, {}, tick_event()),
        frame(NEW_MARKET, NEW_MARKET, NEW_MARKET | {"event_type": "market_resolved"}), frame(bba_event()),
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
    assert dispatcher.feed(frame(trade_event()), 2**63 - 1) == 1
    assert row(dispatcher)[RECV_TS_NS] == 2**63 - 1
    with pytest.raises(OverflowError):
        dispatcher.feed(frame(trade_event()), 2**63)
