"""Compiled core: it is the one loaded, its .pxd layout equals pm_ws.row, its buffer and input paths."""

from __future__ import annotations

import gc
import struct

import numpy
import orjson
import pytest

import pm_ws
from pm_ws import row
from pm_ws._core import NO_EXTENSIONS
from pm_ws.row import BID_PX, N_FIELDS, SEQ, STATE, State

from builders import (
    NO,
    YES,
    best_bid_ask_event,
    book_event,
    change,
    event_type_last,
    frame,
    last_trade_price_event,
    price_change_event,
    without,
)


@pytest.fixture(scope="module")
def core_c():
    """The compiled module itself (these tests are about it, not about the shared contract)."""
    import pm_ws._core_c

    return pm_ws._core_c


def frames() -> list[str]:
    """A short stream touching every hot event type, with an escaped key and a non-ASCII unknown field.

    Events are in the server's key order (the compiled fast paths), some optional keys left out.
    """
    books = [event_type_last(book_event(token, [("0.48", "30"), ("0.5", "15")], [("0.54", "10"), ("0.52", "25.5")],
                                        hash="924ec9bc", tick_size="0.01", last_trade_price="0.51"))
             for token in (YES, NO)]  # fmt: skip
    changes = event_type_last(price_change_event(change(YES, "0.49", "20", "BUY", "0.5", "0.52"),
                                                 change(NO, "0.52", "0", "SELL", "0.5", "0.54")))  # fmt: skip
    changes["note"] = "prix \u00e9lev\u00e9 \u2192 \U0001f4c8"
    trade = without(last_trade_price_event(YES), "fee_rate_bps")
    best = without(without(best_bid_ask_event(NO, "0.5", "0.6"), "spread"), "timestamp")
    texts = [frame(*books).decode(), frame(changes).decode(), frame(trade).decode(), frame(best).decode()]
    texts.append(texts[2].replace('"price"', '"pr\\u0069ce"'))  # an escaped key means the same key
    texts.append("pong")
    return texts


# --- which module is loaded -----------------------------------------------------------------


@pytest.mark.c_extension
@pytest.mark.skipif(NO_EXTENSIONS, reason="pure-Python core requested")
def test_core_extensions_enabled_compiled_module_loaded(core_c):
    assert pm_ws.IMPLEMENTATION == "cython"
    assert pm_ws.Dispatcher is core_c.Dispatcher
    assert pm_ws.BookStore is core_c.BookStore
    assert core_c.__file__.endswith((".so", ".pyd"))


@pytest.mark.c_extension
def test_core_c_exports_exactly_the_contract_names(core_c):
    assert sorted(core_c.__all__) == sorted(["parse_price", "parse_size", "price_to_cents", "BookStore", "Dispatcher"])


# --- the .pxd layout equals pm_ws.row ---------------------------------------------------------


@pytest.mark.c_extension
def test_pxd_field_indices_equal_row_module(core_c):
    named = row.FIELD_NAMES[: row.FIRST_SPARE]  # the spare fields have no constant
    expected = {name.upper(): getattr(row, name.upper()) for name in named}
    assert core_c.FIELD_INDEX == expected
    assert sorted(core_c.FIELD_INDEX.values()) == list(range(row.FIRST_SPARE))


@pytest.mark.c_extension
def test_pxd_constants_equal_row_module(core_c):
    expected = {
        "PRICE_SCALE": row.PRICE_SCALE, "SIZE_SCALE": row.SIZE_SCALE, "N_FIELDS": row.N_FIELDS,
        "FIRST_SPARE": row.FIRST_SPARE, "SIDE_BUY": row.SIDE_BUY, "SIDE_SELL": row.SIDE_SELL, "N_STATS": len(row.STAT_KEYS),
        **{state.name: state.value for state in State},
    }  # fmt: skip
    assert core_c.C_CONSTANTS == expected


# --- the exported buffer ----------------------------------------------------------------------


@pytest.mark.c_extension
def test_view_buffer_layout_read_only_int64_rows(core_c):
    store = core_c.BookStore(5)
    view = store.view
    assert (view.format, view.itemsize, view.ndim) == ("q", 8, 2)
    assert view.shape == (5, N_FIELDS)
    assert view.strides == (N_FIELDS * 8, 8)
    assert view.readonly and view.c_contiguous
    assert view.nbytes == 5 * N_FIELDS * 8
    assert view.obj is store


@pytest.mark.c_extension
def test_view_writable_buffer_request_refused(core_c):
    store = core_c.BookStore(2)
    with pytest.raises(TypeError, match="read-write"):
        struct.pack_into("q", store, 0, 1)  # asks the store itself for a writable buffer
    with pytest.raises(TypeError):
        store.view[0, BID_PX] = 1


@pytest.mark.c_extension
def test_view_same_memory_for_store_life(core_c):
    store = core_c.BookStore(4)
    address = numpy.asarray(store.view).ctypes.data
    dispatcher = core_c.Dispatcher(store)
    store.add(YES)
    store.add(NO)
    for text in frames():
        dispatcher.feed(text)
    store.remove(YES)
    assert numpy.asarray(store.view).ctypes.data == address


@pytest.mark.c_extension
def test_view_keeps_store_alive_after_last_reference(core_c):
    store = core_c.BookStore(2)
    store.add(YES)
    array = numpy.asarray(store.view)
    del store
    gc.collect()
    assert array[0, STATE] == State.SUBSCRIBING
    assert not array.flags.writeable


# --- input paths: every frame type reads the same bytes ---------------------------------------


def _run(impl, convert) -> tuple[bytes, dict[str, int], list[str]]:
    store = impl.BookStore(4)
    store.add(YES)
    store.add(NO)
    dispatcher = impl.Dispatcher(store)
    for text in frames():
        dispatcher.feed(convert(text), 7)
    return bytes(store.view), dispatcher.stats(), dispatcher.pending_resync()


@pytest.mark.parametrize(
    "convert",
    [
        str.encode,
        lambda text: bytearray(text.encode()),
        lambda text: memoryview(text.encode()),
        lambda text: memoryview(bytearray(text.encode())),
        lambda text: memoryview(b"".join(bytes([b, 32]) for b in text.encode()))[::2],  # not contiguous
    ],
    ids=["bytes", "bytearray", "memoryview", "memoryview-bytearray", "memoryview-strided"],
)
def test_feed_str_and_buffers_same_result(impl, convert):
    assert _run(impl, convert) == _run(impl, str)


def test_feed_stream_applies_expected_events(impl):
    view, stats, _ = _run(impl, str)
    assert stats["events"] == 6  # 2 books, 1 price_change, 2 trades, 1 best_bid_ask
    assert (stats["ctl_pong"], stats["rej_invalid_json"], stats["rej_bad_event"]) == (1, 0, 0)
    values = numpy.frombuffer(view, dtype=numpy.int64).reshape(4, N_FIELDS)
    assert values[0, BID_PX] == 5000 and values[0, SEQ] == 10  # add, book, price_change, 2 trades: 2 each


def test_feed_ascii_str_subclass_same_result(impl):
    class Text(str):
        pass

    assert _run(impl, Text) == _run(impl, str)


def test_feed_non_ascii_str_counted_in_utf8_bytes(impl):
    store = impl.BookStore(2)
    dispatcher = impl.Dispatcher(store)
    text = frames()[1]
    dispatcher.feed(text)
    assert dispatcher.stats()["bytes"] == len(text.encode("utf-8")) > len(text)


def test_feed_lone_surrogate_str_invalid_json(impl):
    dispatcher = impl.Dispatcher(impl.BookStore(2))
    assert dispatcher.feed('{"event_type":"book","x":"\ud800"}') == 0
    assert dispatcher.stats()["rej_invalid_json"] == 1


# --- compiled-only behaviour ------------------------------------------------------------------


def test_dispatcher_feed_from_own_callback_applies_nested_frame(impl):
    # the compiled core stages a nested frame apart: the outer frame's staged events still apply
    # Arrange: each of the outer frame's two trades calls back, and the callback feeds the two books
    store = impl.BookStore(2)
    store.add(YES)
    store.add(NO)
    nested = frames()[0]  # the two books
    returned: list[int] = []

    def on_event(event_type, payload):
        returned.append(dispatcher.feed(nested, 3))

    dispatcher = impl.Dispatcher(store, on_event=on_event, emit_trades=True)
    outer = "[" + frames()[2] + "," + frames()[2] + "]"  # two trades, each calling back
    # Act
    applied = dispatcher.feed(outer, 9)
    # Assert
    assert applied == 2
    assert returned == [2, 2]
    stats = dispatcher.stats()
    assert (stats["frames"], stats["ev_book"], stats["ev_last_trade_price"], stats["events"]) == (3, 4, 2, 6)
    assert store.top(YES).recv_ts_ns == 3  # the second nested book came after the second trade
    assert store.top(YES).last_side == 2


@pytest.mark.c_extension
def test_dispatcher_unknown_ids_never_allocate_slots(core_c):
    store = core_c.BookStore(2)
    store.add(YES)
    dispatcher = core_c.Dispatcher(store)
    for i in range(1000):
        other = str(10**76 + i)
        dispatcher.feed(frame(last_trade_price_event(other, price="0.5", size="1")))
    assert store.tokens() == [YES]
    assert dispatcher.stats()["skip_unsubscribed"] == 1000


@pytest.mark.c_extension
def test_bookstore_remove_and_readd_many_lookup_still_exact(core_c):
    # open addressing with deletions: every held id must stay findable through add/remove churn
    store = core_c.BookStore(64)
    held: set[str] = set()
    for i in range(2000):
        token = str(10**76 + (i * 7919) % 97)
        if token in held:
            store.remove(token)
            held.discard(token)
        elif len(held) < 64:
            store.add(token)
            held.add(token)
        assert all(t in store for t in held)
    assert sorted(store.tokens()) == sorted(held)


# --- the fast path for the server's layout agrees with the generic scanner --------------------

# Values for number fields: valid spellings, edge cases and invalid ones (each must take the same
# route to the same outcome whether the fast path or the generic scanner reads it)
NUMBER_TEXTS = ("0.5", ".48", "1", "0", "1.", "00.5", "1.0000", "0.0025", "0.12345", "1.0001", "2", "", ".",
                "-1", "1e2", " 1", "0.5\n", 'a"b', "\u00bd", "9223372036854.775807", "9223372036854.775808",
                "99999999999999999999", "219.217767", "1786728438403", "000000000000000001",
                "1234567890123456789", "0.1234567")  # fmt: skip


def server_layout_events(rng) -> list[dict]:
    market = "0x" + "3b" * 32
    rate = rng.choice((0.0, 0.0, 0.02, 0.3))  # most events clean, some with a few odd numbers

    def number(valid: str) -> str:
        return rng.choice(NUMBER_TEXTS) if rng.random() < rate else valid

    def entry(token: str) -> dict:
        return {"asset_id": token, "price": number("0.06"), "size": number("374.34"),
                "side": rng.choice(("BUY", "SELL", "SELL", "BUY", "buy")), "hash": "f3285de052f887d0ce28",
                "best_bid": number("0.07"), "best_ask": number("0.08")}  # fmt: skip

    def levels(low: int, high: int, step: int) -> list[dict]:
        units = range(low, high, step)
        # distinct valid prices: a duplicate price next to a bad number has its own parity case
        # (test_parity.py "duplicate-price-with-bad-number")
        return [{"price": f"0.{u:02d}", "size": number(f"{u * 3}.5")} for u in units]

    token = rng.choice((YES, NO, "5" * 77))
    book = {"market": market, "asset_id": token, "timestamp": number("1786728432337"), "hash": "924ec9bc",
            "bids": levels(1, 40, rng.randint(1, 9)), "asks": levels(99, 50, -rng.randint(1, 9)),
            "tick_size": number("0.01"), "last_trade_price": number("0.5"), "event_type": "book"}  # fmt: skip
    if rng.random() < 0.3:
        del book["tick_size"]
    entries = [entry(rng.choice((YES, NO, "7" * 77))) for _ in range(rng.randint(0, 3))]
    change = {"market": market, "price_changes": entries,
              "timestamp": number("1786728438403"), "event_type": "price_change"}  # fmt: skip
    trade = {"market": market, "asset_id": token, "price": number("0.585"), "size": number("2.46"),
             "fee_rate_bps": "0", "side": rng.choice(("SELL", "BUY", "sell")), "timestamp": number("1786728467101"),
             "event_type": "last_trade_price", "transaction_hash": "0x6c83"}  # fmt: skip
    best = {"market": market, "asset_id": token, "best_bid": number("0.585"), "best_ask": number("0.587"),
            "spread": "0.002", "timestamp": number("1786728467006"), "event_type": "best_bid_ask"}  # fmt: skip
    return [book, change, trade, best]


@pytest.mark.c_extension
def test_fast_path_and_generic_scanner_same_state(core_c):
    import json
    import random

    import pm_ws._core_py as core_py

    # Arrange: one core reading compact frames, one reading spaced-out frames, the twin
    rng = random.Random(20261124)
    runs = {}
    for name, module in (("fast", core_c), ("generic", core_c), ("twin", core_py)):
        store = module.BookStore(4)
        store.add(YES)
        store.add(NO)
        runs[name] = (store, module.Dispatcher(store))
    # Act / Assert: after every event, the same view and counters in all three
    for _ in range(300):
        for event in server_layout_events(rng):
            compact = orjson.dumps(event)
            runs["fast"][1].feed(compact)
            runs["generic"][1].feed(json.dumps(event, indent=1))  # whitespace everywhere: no fast path
            runs["twin"][1].feed(compact)
            views = [bytes(store.view) for store, _ in runs.values()]
            stats = [_without_bytes(dispatcher.stats()) for _, dispatcher in runs.values()]
            assert views[0] == views[1] == views[2], compact
            assert stats[0] == stats[1] == stats[2], compact
    # Assert: the stream reached every hot event kind and both rejections
    final = runs["fast"][1].stats()
    kinds = ("ev_price_change", "ev_book", "ev_last_trade_price", "ev_best_bid_ask", "rej_bad_number", "rej_bad_event")
    assert min(final[kind] for kind in kinds) > 20


def _without_bytes(stats: dict[str, int]) -> dict[str, int]:
    return {key: value for key, value in stats.items() if key != "bytes"}  # spaced frames are longer
