"""Hostile frames, one test per class: each is counted under its reason (a ``stats()`` key) and changes no book.

Every test first builds a LIVE book, then feeds the bad frame and compares the store's view bytes
before and after, so a frame that is "rejected" but still half-applied fails. The frames are bytes
written out by hand (not ``builders``): the damage goes into exact byte positions, and an object that
does not open with ``"market"`` is read by the compiled core's generic scanner, not its fast path for
the server's layout (the frames that must take the fast path open with ``"market"``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from pm_ws.row import BID_LEVELS, State

TOKEN = "42"  # spelled out in the frames below
OTHER = "43"  # never subscribed
BOOK = (b'{"event_type":"book","asset_id":"42","bids":[{"price":"0.4","size":"10"},{"price":"0.5","size":"2"}],'
        b'"asks":[{"price":"0.7","size":"3"},{"price":"0.6","size":"1"}],"timestamp":"1786728432337",'
        b'"tick_size":"0.1"}')  # fmt: skip
PRICE_CHANGE = (b'{"event_type":"price_change","timestamp":"1786728432338","price_changes":[{"asset_id":"42",'
                b'"price":"0.5","size":"7","side":"BUY","best_bid":"0.5","best_ask":"0.6"}]}')  # fmt: skip


def live_book(impl: ModuleType, **options: Any) -> tuple[Any, Any]:
    """A store holding TOKEN with a LIVE book (bid 0.5 x 2, ask 0.6 x 1), and its dispatcher."""
    store = impl.BookStore(4)
    store.add(TOKEN)
    dispatcher = impl.Dispatcher(store, **options)
    assert dispatcher.feed(BOOK) == 1
    assert store.top(TOKEN).state == State.LIVE
    return store, dispatcher


def feed_rejected(store: Any, dispatcher: Any, frame: Any, counter: str, times: int = 1) -> None:
    """Feed ``frame``; it must apply nothing, bump only frames/bytes/``counter``, leave the view as it was."""
    view_before, stats_before = bytes(store.view), dispatcher.stats()
    applied = dispatcher.feed(frame)
    stats_after = dispatcher.stats()
    size = len(frame.encode() if isinstance(frame, str) else frame)
    delta = {k: stats_after[k] - stats_before[k] for k in stats_after if stats_after[k] != stats_before[k]}
    assert (applied, delta) == (0, {"frames": 1, "bytes": size, counter: times})
    assert bytes(store.view) == view_before


def book_with(field: bytes) -> bytes:
    """The live book frame with one more member spliced in before its closing brace."""
    return BOOK[:-1] + b"," + field + b"}"


# ---------------------------------------------------------------- encoding and syntax


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe4\xb8", b"\xf4\x90\x80\x80", b"\x80", b"\xf8\x88\x80\x80\x80"],
    ids=["ff", "overlong-nul", "utf16-surrogate", "truncated-sequence", "above-u10ffff", "lone-continuation", "5-byte"],
)
@pytest.mark.parametrize("where", ["value", "key", "token"])
def test_feed_invalid_utf8_rejected_as_invalid_json(impl: ModuleType, bad: bytes, where: str) -> None:
    store, dispatcher = live_book(impl)
    frame = {"value": book_with(b'"market":"0x' + bad + b'"'), "key": book_with(b'"m' + bad + b'":"1"'),
             "token": BOOK.replace(b'"asset_id":"42"', b'"asset_id":"42' + bad + b'"')}[where]  # fmt: skip
    feed_rejected(store, dispatcher, frame, "rej_invalid_json")


def test_feed_invalid_utf8_control_word_rejected_as_unknown_text(impl: ModuleType) -> None:
    store, dispatcher = live_book(impl)
    feed_rejected(store, dispatcher, b"PONG\xff", "rej_unknown_text")


@pytest.mark.parametrize(
    "frame",
    [
        BOOK[:-1] + b",}",  # trailing comma
        BOOK.replace(b'"bids"', b"'bids'"),  # single quotes
        BOOK.replace(b'"bids":', b'"bids"'),  # missing colon
        BOOK.replace(b'"bids"', b"bids"),  # unquoted key
        book_with(b'"x":NaN'),
        book_with(b'"x":01'),
        book_with(b'"x":1.'),
        book_with(b'"x":-'),
        book_with(b'"x":tru'),
        book_with(b'"x":"a\x01b"'),  # raw control character
        book_with(b'"x":"\\x41"'),  # bad escape
        book_with(b'"x":"\\ud800"'),  # lone high surrogate
        book_with(b'"x":"\\udc00\\ud800"'),  # surrogates the wrong way round
        book_with(b'"x":"\\u12"'),
        book_with(b'"x":/*c*/1'),
        # Server key order takes the compiled fast paths; an interim build accepted these (found by
        # test_fuzz_crash's orjson oracle): a control byte or broken UTF-8 inside a number string
        b'{"market":"0xcd","price_changes":[{"asset_id":"42","price":"0.4","size":"9\x1f.5","side":"SELL",'
        b'"hash":"f3","best_bid":"0.3","best_ask":"0.7"}],"timestamp":"1786728478203","event_type":"price_change"}',
        b'{"market":"0xcd","price_changes":[{"asset_id":"42","price":"0.4","size":"9.5","side":"SELL",'
        b'"hash":"f3","best_bid":"0\xe4\xb8.3","best_ask":"0.7"}],"timestamp":"1786728478203",'
        b'"event_type":"price_change"}',
        b'{"market":"0xab","asset_id":"42","timestamp":"1786728432922","hash":"92","bids":[{"price":"0.5933",'
        b'"size":"2473.\x1f86"}],"asks":[],"tick_size":"0.0001","event_type":"book"}',
        BOOK + b"x",  # content after the document
        BOOK + BOOK,  # two documents
        BOOK + b"\x00",
        b"{",
        b"[",
        b"[{}",
        b'{"event_type":"book"',
    ],
)
def test_feed_invalid_json_rejected_and_book_unchanged(impl: ModuleType, frame: bytes) -> None:
    store, dispatcher = live_book(impl)
    feed_rejected(store, dispatcher, frame, "rej_invalid_json")


def test_feed_truncated_array_every_prefix_rejected_nothing_applied(impl: ModuleType) -> None:
    # The first element is complete long before the end: it must still not apply
    store, dispatcher = live_book(impl)
    frame = b"[" + PRICE_CHANGE + b"," + BOOK.replace(b'"0.5"', b'"0.55"') + b"]"
    for end in range(1, len(frame)):
        feed_rejected(store, dispatcher, frame[:end], "rej_invalid_json")


def test_feed_nesting_depth_32_accepted(impl: ModuleType) -> None:
    store, dispatcher = live_book(impl)
    assert dispatcher.feed(book_with(b'"x":' + b"[" * 31 + b"]" * 31)) == 1
    assert dispatcher.stats()["rej_invalid_json"] == 0


@pytest.mark.parametrize("depth", [33, 1_000, 100_000], ids=["33", "1k", "100k"])
def test_feed_nesting_deeper_than_32_rejected(impl: ModuleType, depth: int) -> None:
    store, dispatcher = live_book(impl)
    feed_rejected(store, dispatcher, book_with(b'"x":' + b'{"a":' * (depth - 1) + b"1" + b"}" * (depth - 1)),
                  "rej_invalid_json")  # fmt: skip
    feed_rejected(store, dispatcher, b"[" * depth + b"]" * depth, "rej_invalid_json")


# ---------------------------------------------------------------- size


def test_feed_50mb_frame_rejected_as_oversized(impl: ModuleType) -> None:
    store, dispatcher = live_book(impl)
    frame = book_with(b'"pad":"' + b"x" * (50 * 1024 * 1024) + b'"')
    feed_rejected(store, dispatcher, frame, "rej_oversized")


def test_feed_frame_at_limit_accepted_one_byte_over_rejected(impl: ModuleType) -> None:
    limit = 4096
    store, dispatcher = live_book(impl, max_frame_bytes=limit)
    fitting = book_with(b'"pad":"' + b"x" * (limit - len(BOOK) - 9) + b'"')
    assert len(fitting) == limit and dispatcher.feed(fitting) == 1
    feed_rejected(store, dispatcher, fitting[:-1] + b' }', "rej_oversized")


def test_feed_huge_book_below_limit_applied(impl: ModuleType) -> None:
    # Every price on the finest grid: 4999 bids and 4999 asks, plus 12 MB of padding
    store, dispatcher = live_book(impl)
    bids = b",".join(b'{"price":"0.%04d","size":"1"}' % p for p in range(1, 5000))
    asks = b",".join(b'{"price":"0.%04d","size":"2"}' % p for p in range(9999, 5000, -1))
    frame = (b'{"event_type":"book","asset_id":"42","bids":[' + bids + b'],"asks":[' + asks
             + b'],"pad":"' + b"y" * (12 * 1024 * 1024) + b'"}')  # fmt: skip
    assert dispatcher.feed(frame) == 1
    top = store.top(TOKEN)
    assert (top.bid_px, top.ask_px, top.bid_levels, top.ask_levels) == (4999, 5001, 4999, 4999)


# ---------------------------------------------------------------- wrong types and numbers


@pytest.mark.parametrize(
    "frame",
    [
        BOOK.replace(b'"price":"0.4"', b'"price":0.4'),
        BOOK.replace(b'"size":"10"', b'"size":10'),
        BOOK.replace(b'"asset_id":"42"', b'"asset_id":42'),
        BOOK.replace(b'"bids":[', b'"bids":[1,'),
        BOOK.replace(b'"timestamp":"1786728432337"', b'"timestamp":1786728432337'),
        BOOK.replace(b'"tick_size":"0.1"', b'"tick_size":0.1'),
        PRICE_CHANGE.replace(b'"price":"0.5"', b'"price":0.5'),
        PRICE_CHANGE.replace(b'"best_bid":"0.5"', b'"best_bid":0.5'),
        b'{"event_type":"last_trade_price","asset_id":"42","price":0.5,"size":"1","side":"BUY"}',
        b'{"event_type":"tick_size_change","asset_id":"42","new_tick_size":0.01}',
        b'{"event_type":"best_bid_ask","asset_id":"42","best_bid":0.5,"best_ask":"0.6"}',
    ],
)
def test_feed_json_number_instead_of_string_rejected_as_bad_event(impl: ModuleType, frame: bytes) -> None:
    store, dispatcher = live_book(impl)
    feed_rejected(store, dispatcher, frame, "rej_bad_event")


@pytest.mark.parametrize("price", [b"-0.5", b"-0", b"5e-1", b"1e0", b"0.5E0", b"1.5", b"0.12345", b"+0.5", b"0x1"])
@pytest.mark.parametrize("token", [TOKEN, OTHER], ids=["subscribed", "unsubscribed"])
def test_feed_negative_or_exponent_price_rejected_as_bad_number(impl: ModuleType, price: bytes, token: str) -> None:
    # Numbers are validated before the subscription check, so an unknown token changes nothing here
    # Arrange
    store, dispatcher = live_book(impl)
    quoted = b'"%s"' % token.encode()
    frames = [
        BOOK.replace(b'"0.4"', b'"' + price + b'"').replace(b'"42"', quoted),
        PRICE_CHANGE.replace(b'"price":"0.5"', b'"price":"' + price + b'"').replace(b'"42"', quoted),
        b'{"event_type":"last_trade_price","asset_id":"%s","price":"%s","size":"1"}' % (token.encode(), price),
        b'{"event_type":"best_bid_ask","asset_id":"%s","best_bid":"%s","best_ask":"0.6"}' % (token.encode(), price),
        b'{"event_type":"tick_size_change","asset_id":"%s","new_tick_size":"%s"}' % (token.encode(), price),
    ]
    # Act / Assert
    for frame in frames:
        feed_rejected(store, dispatcher, frame, "rej_bad_number")


@pytest.mark.parametrize(
    "frame",
    [
        # Server key order takes the compiled fast path, whose digit loop overflowed int64 on the 19th
        # digit before checking the length (UBSan: signed integer overflow in quoted_digits)
        b'{"market":"0x01","asset_id":"42","timestamp":"9999999999999999999","hash":"ab","bids":[],"asks":[],'
        b'"event_type":"book"}',
        b'{"market":"0x01","asset_id":"42","timestamp":"%s","hash":"ab","bids":[],"asks":[],"event_type":"book"}'
        % (b"9" * 60,),
        b'{"event_type":"last_trade_price","asset_id":"42","price":"0.5","size":"1","timestamp":"9999999999999999999"}',
    ],
    ids=["book-fast-path-19", "book-fast-path-60", "trade-19"],
)
def test_feed_timestamp_over_18_digits_rejected_as_bad_number(impl: ModuleType, frame: bytes) -> None:
    store, dispatcher = live_book(impl)
    feed_rejected(store, dispatcher, frame, "rej_bad_number")


@pytest.mark.parametrize("tick", [b"0", b"0.0000", b"00"])
def test_feed_zero_tick_size_rejected_as_bad_number(impl: ModuleType, tick: bytes) -> None:
    store, dispatcher = live_book(impl)
    feed_rejected(store, dispatcher, b'{"event_type":"tick_size_change","asset_id":"42","new_tick_size":"%s"}' % tick,
                  "rej_bad_number")  # fmt: skip


# ---------------------------------------------------------------- unknown tokens


def _price_change_for(tokens: list[str]) -> bytes:
    entries = b",".join(b'{"asset_id":"%s","price":"0.5","size":"9","side":"BUY"}' % t.encode() for t in tokens)
    return b'{"event_type":"price_change","price_changes":[' + entries + b"]}"


def test_feed_price_change_10000_unknown_tokens_skipped_unsubscribed(impl: ModuleType) -> None:
    store, dispatcher = live_book(impl)
    feed_rejected(store, dispatcher, _price_change_for([f"{i:077d}" for i in range(10_000)]), "skip_unsubscribed")


def test_feed_price_change_10000_unknown_then_one_known_applies_known(impl: ModuleType) -> None:
    store, dispatcher = live_book(impl)
    assert dispatcher.feed(_price_change_for([f"{i:077d}" for i in range(10_000)] + [TOKEN])) == 1
    assert (store.top(TOKEN).bid_sz, len(store)) == (9_000_000, 1)


# ---------------------------------------------------------------- nulls


@pytest.mark.parametrize(
    "frame",
    [
        BOOK.replace(b'"asset_id":"42"', b'"asset_id":null'),
        BOOK.replace(b'"bids":[', b'"bids":null,"x":['),
        BOOK.replace(b'"price":"0.4"', b'"price":null'),
        BOOK.replace(b'{"price":"0.4","size":"10"}', b"null"),
        PRICE_CHANGE.replace(b'"side":"BUY"', b'"side":null'),
        PRICE_CHANGE.replace(b'"size":"7"', b'"size":null'),
        b'{"event_type":"price_change","price_changes":null}',
        b'{"event_type":"last_trade_price","asset_id":null,"price":"0.5","size":"1"}',
        b'{"event_type":"tick_size_change","asset_id":"42","new_tick_size":null}',
        b'{"event_type":"best_bid_ask","asset_id":"42","best_bid":"0.5","best_ask":null}',
    ],
)
def test_feed_null_required_field_rejected_as_bad_event(impl: ModuleType, frame: bytes) -> None:
    store, dispatcher = live_book(impl)
    feed_rejected(store, dispatcher, frame, "rej_bad_event")


@pytest.mark.parametrize("frame", [b'{"event_type":null,"asset_id":"42"}', b'{"asset_id":"42"}', b"[null]"])
def test_feed_null_or_missing_event_type_rejected(impl: ModuleType, frame: bytes) -> None:
    store, dispatcher = live_book(impl)
    feed_rejected(store, dispatcher, frame, "rej_bad_event" if frame == b"[null]" else "rej_unknown_event")


def test_feed_mixed_array_applies_good_elements_only(impl: ModuleType) -> None:
    # The rest of an array frame still applies when one element is bad
    store, dispatcher = live_book(impl)
    frame = b"[null," + PRICE_CHANGE.replace(b'"0.5"', b'"-1"', 1) + b"," + PRICE_CHANGE + b"]"
    assert dispatcher.feed(frame) == 1
    stats = dispatcher.stats()
    assert (stats["rej_bad_event"], stats["rej_bad_number"], store.top(TOKEN).bid_sz) == (1, 1, 7_000_000)
    assert store.top(TOKEN).state == State.LIVE and store.view[store.slot(TOKEN), BID_LEVELS] == 2
