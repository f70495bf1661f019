"""Real Polymarket payloads (read from ../shared/fixtures, never copied) fed as whole frames.

The files are one JSON document each, some pretty-printed; the file text is the frame.
"""

from __future__ import annotations

import orjson
import pytest

from pm_ws.row import RECV_TS_NS, SIDE_BUY, SIDE_SELL, State

EVENT_FOLDERS = ("genuine", "docs_examples", "synthetic")


@pytest.fixture
def read(shared_fixtures):
    """Return a capture's text by its path below the shared fixtures folder."""

    def read(name):
        return (shared_fixtures / name).read_text(encoding="utf-8")

    return read


def subscribed(impl, *token_ids):
    store = impl.BookStore(8)
    for token_id in token_ids:
        store.add(token_id)
    return store, impl.Dispatcher(store)


def asset_of(text):
    return orjson.loads(text)["asset_id"]


def snapshot(token_id, bids, asks):
    """A hand-made `book` frame for a token of a capture (prices and sizes as text pairs)."""
    return orjson.dumps({"event_type": "book", "asset_id": token_id,
                         "bids": [{"price": p, "size": s} for p, s in bids],
                         "asks": [{"price": p, "size": s} for p, s in asks]})  # fmt: skip


def test_every_capture_classified_and_accounted(impl, shared_fixtures):
    # Arrange: every event file, with every token it names subscribed
    files = sorted(path for folder in EVENT_FOLDERS for path in (shared_fixtures / folder).glob("*.json"))
    assert len(files) >= 20
    for path in files:
        text = path.read_text(encoding="utf-8")
        document = orjson.loads(text)
        token_ids = [document["asset_id"]] if "asset_id" in document else []
        token_ids += [entry["asset_id"] for entry in document.get("price_changes", [])]
        store, dispatcher = subscribed(impl, *dict.fromkeys(token_ids))
        # Act
        applied = dispatcher.feed(text, 1)
        # Assert: one frame, reached the events, exactly one outcome for its one event object
        stats = dispatcher.stats()
        assert (stats["frames"], stats["bytes"], stats["rej_invalid_json"]) == (1, len(text.encode()), 0), path.name
        outcomes = ("events", "rej_unknown_event", "rej_bad_event", "rej_bad_number", "skip_unsubscribed")
        assert sum(stats[key] for key in outcomes) == 1, path.name
        assert stats["rej_bad_number"] == 0, path.name
        assert applied == stats["events"]


def test_nautilus_book_best_levels_last(impl, read):
    text = read("genuine/nautilus_ws_book_2024-09.json")
    token_id = asset_of(text)
    store, dispatcher = subscribed(impl, token_id)
    assert dispatcher.feed(text, 42) == 1
    top = store.top(token_id)
    assert (top.bid_px, top.bid_sz, top.ask_px, top.ask_sz) == (5110, 1_304_720_000, 5140, 20_230_870_000)
    assert (top.bid_levels, top.ask_levels) == (76, 86)
    assert (top.state, top.exch_ts_ms, top.recv_ts_ns, top.seq, top.epoch) == (State.LIVE, 1728799418260, 42, 4, 1)
    assert top.tick == 0  # the 2024 capture has no tick_size
    bids, asks = store.book(token_id, depth=None)
    assert bids[-1][0] == 10 and asks[-1][0] == 9990  # 0.001 and 0.999 are the worst levels


def test_netqo_book_tick_and_last_trade_price(impl, read):
    text = read("genuine/netqo_ws_book_2026-08.json")
    token_id = asset_of(text)
    store, dispatcher = subscribed(impl, token_id)
    assert dispatcher.feed(text) == 1
    top = store.top(token_id)
    assert (top.bid_px, top.bid_sz, top.ask_px, top.ask_sz) == (40, 100_000_000, 90, 25_000_000)
    assert (top.tick, top.last_px, top.last_sz, top.last_side) == (10, 40, 0, 0)
    assert store.book(token_id) == ([(40, 100_000_000), (10, 2_200_800_000)], [(90, 25_000_000), (9990, 50_000_000)])


def test_netqo_price_change_after_books_applied_and_checked(impl, read):
    # Arrange: books consistent with the entries' best_bid/best_ask after the change
    text = read("genuine/netqo_ws_price_change_2026-08.json")
    first, second = (entry["asset_id"] for entry in orjson.loads(text)["price_changes"])
    store, dispatcher = subscribed(impl, first, second)
    dispatcher.feed(snapshot(first, [("0.05", "10"), ("0.07", "5")], [("0.09", "3"), ("0.08", "4")]))
    dispatcher.feed(snapshot(second, [("0.92", "6")], [("0.94", "7"), ("0.93", "8")]))
    # Act
    assert dispatcher.feed(text, 5) == 1
    # Assert: BUY 0.06 -> 374.34 inserted; SELL 0.94 size 0 deleted; both still LIVE
    assert store.book(first, None)[0] == [(700, 5_000_000), (600, 374_340_000), (500, 10_000_000)]
    assert store.book(second, None)[1] == [(9300, 8_000_000)]
    for token_id in (first, second):
        top = store.top(token_id)
        assert (top.state, top.seq, top.exch_ts_ms, top.recv_ts_ns) == (State.LIVE, 6, 1786728438403, 5)
    assert dispatcher.stats()["checksum_mismatch"] == 0


def test_netqo_price_change_diverged_book_invalid(impl, read):
    text = read("genuine/netqo_ws_price_change_2026-08.json")
    first, second = (entry["asset_id"] for entry in orjson.loads(text)["price_changes"])
    store, dispatcher = subscribed(impl, first, second)
    dispatcher.feed(snapshot(first, [("0.05", "10")], [("0.08", "4")]))  # server says best bid 0.07
    dispatcher.feed(text)
    assert store.top(first).state is State.INVALID
    assert store.top(second).state is State.SUBSCRIBING
    assert dispatcher.stats()["skip_not_live"] == 1
    assert dispatcher.pending_resync() == [first]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("genuine/nautilus_ws_last_trade_price_2024-08.json", (4910, 85_360_000, SIDE_SELL, 1724564136087)),
        ("genuine/netqo_ws_last_trade_price_2026-08.json", (5850, 2_460_000, SIDE_SELL, 1786728467101)),
        ("docs_examples/docs_last_trade_price.json", (4560, 219_217_767, SIDE_BUY, 1750428146322)),
    ],
)
def test_last_trade_price_captures_exact(impl, read, name, expected):
    text = read(name)
    token_id = asset_of(text)
    store, dispatcher = subscribed(impl, token_id)
    assert dispatcher.feed(text) == 1
    top = store.top(token_id)
    assert (top.last_px, top.last_sz, top.last_side, top.exch_ts_ms) == expected


@pytest.mark.parametrize(
    "name", ["genuine/nautilus_ws_tick_size_change_2025-02.json", "docs_examples/docs_tick_size_change_toy.json"]
)
def test_tick_size_change_capture_live_token_stale(impl, read, name):
    text = read(name)
    token_id = asset_of(text)
    store, dispatcher = subscribed(impl, token_id)
    dispatcher.feed(snapshot(token_id, [("0.4", "1")], [("0.6", "1")]))
    assert dispatcher.feed(text) == 1
    top = store.top(token_id)
    assert (top.tick, top.state, top.epoch) == (10, State.STALE, 2)
    assert top.exch_ts_ms == int(orjson.loads(text)["timestamp"])
    assert dispatcher.pending_resync() == [token_id]


@pytest.mark.parametrize(
    "name",
    ["genuine/nautilus_ws_price_change_LEGACY_pre-2025-09_2024-08.json",
     "docs_examples/docs_price_change_LEGACY_pre-2025-09.json"],
)  # fmt: skip
def test_legacy_price_change_schema_bad_event(impl, read, name):
    text = read(name)
    token_id = asset_of(text)
    store, dispatcher = subscribed(impl, token_id)
    dispatcher.feed(snapshot(token_id, [("0.4", "1")], [("0.6", "1")]))
    before = bytes(store.view)
    assert dispatcher.feed(text) == 0
    assert dispatcher.stats()["rej_bad_event"] == 1
    assert bytes(store.view) == before


@pytest.mark.parametrize("name", ["genuine/nautilus_rest_book_2024-09.json", "genuine/netqo_rest_book_2026-08.json"])
def test_rest_book_without_event_type_unknown_event(impl, read, name):
    text = read(name)
    token_id = asset_of(text)
    store, dispatcher = subscribed(impl, token_id)
    assert dispatcher.feed(text) == 0
    assert dispatcher.stats()["rej_unknown_event"] == 1
    assert store.top(token_id).state is State.SUBSCRIBING


@pytest.mark.parametrize(
    "name",
    ["docs_examples/docs_subscribe_initial.json", "docs_examples/docs_subscribe_update.json",
     "docs_examples/docs_unsubscribe.json"],
)  # fmt: skip
def test_client_subscription_frames_unknown_event(impl, read, name):
    _, dispatcher = subscribed(impl)
    assert dispatcher.feed(read(name)) == 0
    assert dispatcher.stats()["rej_unknown_event"] == 1


@pytest.mark.parametrize(
    ("name", "mismatch"),
    [
        ("genuine/netqo_ws_best_bid_ask_2026-08.json", 0),
        ("docs_examples/nautilus_ws_best_bid_ask_docs-example.json", 1),
    ],
)
def test_best_bid_ask_capture_cross_check_only(impl, read, name, mismatch):
    # Arrange: a book that agrees with the netqo capture (0.585 / 0.587)
    text = read(name)
    token_id = asset_of(text)
    store, dispatcher = subscribed(impl, token_id)
    dispatcher.feed(snapshot(token_id, [("0.585", "10")], [("0.587", "10")]))
    before = store.top(token_id)
    # Act
    assert dispatcher.feed(text, 5) == 1
    # Assert: the book is untouched; a match only confirms it
    after = store.top(token_id)
    assert after[:RECV_TS_NS] == before[:RECV_TS_NS] and after.state == before.state
    assert after.confirm_ts_ns == (0 if mismatch else 5)
    assert dispatcher.stats()["bba_mismatch"] == mismatch


def test_docs_book_leading_dot_prices_and_ascending_asks(impl, read):
    text = read("docs_examples/docs_book_toy.json")
    token_id = asset_of(text)
    store, dispatcher = subscribed(impl, token_id)
    assert dispatcher.feed(text) == 1
    top = store.top(token_id)
    # The toy lists asks best first; sorting must still find .52 as the best ask
    assert (top.bid_px, top.bid_sz, top.ask_px, top.ask_sz) == (5000, 15_000_000, 5200, 25_000_000)
    assert (top.state, top.exch_ts_ms) == (State.LIVE, 123456789000)
    assert store.book(token_id)[0] == [(5000, 15_000_000), (4900, 20_000_000), (4800, 30_000_000)]


def test_docs_price_change_empty_sides_checked_as_0_and_1(impl, read):
    text = read("docs_examples/docs_price_change_toy.json")
    first, second = (entry["asset_id"] for entry in orjson.loads(text)["price_changes"])
    store, dispatcher = subscribed(impl, first, second)
    for token_id in (first, second):
        dispatcher.feed(snapshot(token_id, [], []))
    assert dispatcher.feed(text) == 1
    assert store.top(first).state is store.top(second).state is State.LIVE
    assert store.book(first) == ([(5000, 200_000_000)], [])
    assert store.book(second) == ([], [(5000, 200_000_000)])


def test_semisynthetic_price_change_crossing_entry_mismatch(impl, read):
    # Its BUY 0.7 makes the local best bid 0.7 while the entry reports 0.6 / 0.7
    text = read("synthetic/nautilus_ws_price_change_v2_semisynthetic.json")
    token_id = orjson.loads(text)["price_changes"][0]["asset_id"]
    store, dispatcher = subscribed(impl, token_id)
    dispatcher.feed(snapshot(token_id, [], [("0.7", "100")]))
    assert dispatcher.feed(text) == 1
    top = store.top(token_id)
    assert (top.state, top.mismatches, top.seq) == (State.INVALID, 1, 6)
    assert dispatcher.stats()["checksum_mismatch"] == 1


def test_new_market_docs_example_delivered_once(impl, read):
    text = read("docs_examples/nautilus_ws_new_market_docs-example.json")
    calls = []
    dispatcher = impl.Dispatcher(impl.BookStore(1), on_event=lambda kind, payload: calls.append((kind, payload)))
    assert dispatcher.feed(text) == 1
    assert dispatcher.feed(text) == 0
    assert calls == [("new_market", orjson.loads(text))]
    assert dispatcher.stats()["skip_duplicate"] == 1


def test_market_resolved_docs_example_delivered(impl, read):
    text = read("docs_examples/nautilus_ws_market_resolved_docs-example.json")
    calls = []
    dispatcher = impl.Dispatcher(impl.BookStore(1), on_event=lambda kind, payload: calls.append((kind, payload)))
    assert dispatcher.feed(text) == 1
    assert calls == [("market_resolved", orjson.loads(text))]


def test_initial_dump_array_of_captured_books(impl, read):
    # The server wraps the initial snapshots in one array frame
    texts = [read("genuine/nautilus_ws_book_2024-09.json"), read("genuine/netqo_ws_book_2026-08.json")]
    store, dispatcher = subscribed(impl, *(asset_of(text) for text in texts))
    assert dispatcher.feed("[" + ",".join(texts) + "]") == 2
    assert [store.top(asset_of(text)).bid_px for text in texts] == [5110, 40]
