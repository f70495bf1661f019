"""FakeMarketServer (pm_ws.testing): protocol, simulated books and fault switches, driven by a raw client.

The client here is plain ``websockets`` on purpose: these tests pin the server, not pm_ws.client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from types import ModuleType
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from pm_ws.row import State
from pm_ws.testing import MALFORMED_KINDS, TICK_SIZES, FakeMarketServer

PRICE_SCALE = 10_000
QUIET_SECONDS = 0.05  # no frame for this long = the server has nothing more to say
TEST_TIMEOUT_SECONDS = 5.0
DECIMAL_TEXT = re.compile(r"^(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$")  # normalised: no trailing zeros
BOOK_KEYS = ["market", "asset_id", "timestamp", "hash", "bids", "asks", "tick_size", "event_type", "last_trade_price"]
ENTRY_KEYS = ["asset_id", "price", "size", "side", "hash", "best_bid", "best_ask"]


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[FakeMarketServer]:
    """A fresh started server with no background changes; the block must end within ``TEST_TIMEOUT_SECONDS``."""
    async with FakeMarketServer(**{"rate_hz": 0, **options}) as server:
        async with asyncio.timeout(TEST_TIMEOUT_SECONDS):
            yield server


async def connect(server: FakeMarketServer, **options: Any) -> ClientConnection:
    return await websockets.connect(server.url, ping_interval=None, compression=None, **options)


async def subscribed(server: FakeMarketServer, token_ids: list[str] | None = None, **extra: Any) -> ClientConnection:
    """Connect, subscribe (all tokens by default) and wait until the server read it; the dump is left unread."""
    known = len(server.connections)
    ws = await connect(server, max_size=64 * 2**20)
    ids = server.token_ids if token_ids is None else token_ids
    await ws.send(json.dumps({"assets_ids": ids, "type": "market", **extra}))
    await until(lambda: len(server.connections) > known and bool(server.connections[known].received))
    return ws


async def until(condition: Callable[[], bool], timeout: float = 1.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def drain(ws: ClientConnection, quiet: float = QUIET_SECONDS) -> list[str | bytes]:
    """Every frame that arrives until the socket stays quiet for ``quiet`` seconds."""
    frames: list[str | bytes] = []
    while True:
        try:
            frames.append(await asyncio.wait_for(ws.recv(), quiet))
        except TimeoutError:
            return frames


async def close_received(ws: ClientConnection) -> tuple[int, str] | None:
    """Wait for the connection to end; return the server's close (code, reason), None if it sent none."""
    with pytest.raises(ConnectionClosed) as caught:
        await asyncio.wait_for(ws.recv(), 1.0)
    close = caught.value.rcvd
    return None if close is None else (close.code, close.reason)


def book_levels(event: dict[str, Any], side: str) -> list[tuple[int, int]]:
    return [(to_units(level["price"], 4), to_units(level["size"], 6)) for level in event[side]]


def to_units(text: str, decimals: int) -> int:
    assert DECIMAL_TEXT.match(text), f"not a normalised decimal: {text!r}"
    whole, _, fraction = text.partition(".")
    return int(whole) * 10**decimals + int(fraction.ljust(decimals, "0") or 0)


class LocalBooks:
    """Independent book replay for the tests: applies book / price_change events with plain dicts."""

    def __init__(self) -> None:
        self.bids: dict[str, dict[int, int]] = {}
        self.asks: dict[str, dict[int, int]] = {}

    def apply(self, event: dict[str, Any]) -> None:
        if event["event_type"] == "book":
            self.bids[event["asset_id"]] = dict(book_levels(event, "bids"))
            self.asks[event["asset_id"]] = dict(book_levels(event, "asks"))
        elif event["event_type"] == "price_change":
            for entry in event["price_changes"]:
                side = (self.bids if entry["side"] == "BUY" else self.asks)[entry["asset_id"]]
                price, size = to_units(entry["price"], 4), to_units(entry["size"], 6)
                if size:
                    side[price] = size
                else:
                    side.pop(price, None)

    def best(self, token_id: str) -> tuple[int, int]:
        return max(self.bids[token_id], default=0), min(self.asks[token_id], default=PRICE_SCALE)

    def book(self, token_id: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return sorted(self.bids[token_id].items(), reverse=True), sorted(self.asks[token_id].items())


def events_of(frames: Sequence[str | bytes]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for frame in frames:
        value = json.loads(frame)
        out.extend(value if isinstance(value, list) else [value])
    return out


# ---------------------------------------------------------------------- construction


def test_server_ids_seeded_look_real_and_deterministic() -> None:
    # Arrange / Act
    first, again, other = (FakeMarketServer(markets=3, seed=s, rate_hz=0) for s in (7, 7, 8))

    # Assert
    assert first.token_ids == again.token_ids and first.token_ids != other.token_ids
    assert len(first.token_ids) == 6 == len(set(first.token_ids))
    assert all(token.isdigit() and 76 <= len(token) <= 78 and int(token) < 2**256 for token in first.token_ids)
    assert all(re.fullmatch(r"0x[0-9a-f]{64}", market.condition_id) for market in first.markets)
    assert [t for m in first.markets for t in (m.yes_id, m.no_id)] == first.token_ids


def test_server_given_token_ids_used_as_yes_no_pairs() -> None:
    server = FakeMarketServer(token_ids=["11", "12", "21", "22"], rate_hz=0)
    assert [(m.yes_id, m.no_id) for m in server.markets] == [("11", "12"), ("21", "22")]


@pytest.mark.parametrize(
    "options",
    [{"host": "0.0.0.0"}, {"tick": "0.02"}, {"token_ids": ["1", "2", "3"]}, {"token_ids": ["1", "1"]}, {"levels": 0}],
)
def test_server_bad_options_raise_value_error(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FakeMarketServer(**options)


def test_server_url_before_start_raises_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = FakeMarketServer().url


@pytest.mark.parametrize("tick", sorted(TICK_SIZES))
def test_books_every_tick_on_grid_mirrored_never_crossed(tick: str) -> None:
    # Arrange
    server = FakeMarketServer(markets=2, seed=5, rate_hz=0, tick=tick, trade_every=4)
    units = TICK_SIZES[tick]

    for _ in range(40):
        # Act
        server.frames(25, trades=True)

        # Assert
        for market in server.markets:
            yes_bids, yes_asks = server.truth(market.yes_id)
            no_bids, no_asks = server.truth(market.no_id)
            assert no_bids == [(PRICE_SCALE - p, s) for p, s in yes_asks]
            assert no_asks == [(PRICE_SCALE - p, s) for p, s in yes_bids]
            prices = [p for p, _ in yes_bids + yes_asks]
            assert all(p % units == 0 and units <= p <= PRICE_SCALE - units for p in prices)
            assert all(s > 0 for _, s in yes_bids + yes_asks)
            assert yes_bids == sorted(yes_bids, reverse=True) and yes_asks == sorted(yes_asks)
            if yes_bids and yes_asks:
                assert yes_bids[0][0] < yes_asks[0][0]
            assert server.tick(market.yes_id) == server.tick(market.no_id) == units


# ---------------------------------------------------------------------- subscription and control frames


@pytest.mark.parametrize(
    "first_frame",
    [
        "PING",
        "not json",
        '["market"]',
        '{"type": "market"}',
        '{"assets_ids": "123", "type": "market"}',
        '{"assets_ids": [123], "type": "market"}',
        '{"assets_ids": [], "type": "user"}',
        '{"assets_ids": [], "operation": "subscribe"}',
    ],
)
async def test_subscription_invalid_first_frame_closes_1008(first_frame: str) -> None:
    async with serving() as server:
        ws = await connect(server)
        await ws.send(first_frame)
        assert await close_received(ws) == (1008, "invalid subscription payload")
        assert server.received == [(1, first_frame)]


async def test_subscription_initial_dump_one_array_best_last() -> None:
    async with serving(markets=3) as server:
        ws = await subscribed(server, initial_dump=True)
        frame = await ws.recv()
        dump = json.loads(frame)
        assert isinstance(dump, list) and [e["asset_id"] for e in dump] == server.token_ids
        for event in dump:
            assert list(event) == BOOK_KEYS and event["event_type"] == "book"
            assert event["tick_size"] == "0.01" and re.fullmatch(r"[0-9a-f]{40}", event["hash"])
            assert event["timestamp"].isdigit() and len(event["timestamp"]) == 13
            bids, asks = book_levels(event, "bids"), book_levels(event, "asks")
            assert (bids[::-1], asks[::-1]) == server.truth(event["asset_id"])
            assert bids == sorted(bids) and asks == sorted(asks, reverse=True)  # best LAST
        assert await drain(ws) == []


def test_subscription_last_trade_price_empty_or_three_decimals() -> None:
    server = FakeMarketServer(markets=3, rate_hz=0)
    last_prices = [event["last_trade_price"] for event in json.loads(server.initial_dump())]
    assert last_prices[4:] == ["", ""] and all(re.fullmatch(r"0\.[0-9]{3,4}", p) for p in last_prices[:4])


async def test_subscription_unknown_ids_accepted_silently() -> None:
    async with serving() as server:
        ws = await subscribed(server, ["123", server.token_ids[1], "456"], type="MARKET")
        dump = json.loads(await ws.recv())
        assert [e["asset_id"] for e in dump] == [server.token_ids[1]]
        assert server.connections[0].subscribed == {"123", "456", server.token_ids[1]}
        await ws.send("PING")
        assert await drain(ws) == ["PONG"]


async def test_subscription_type_frame_with_operation_accepted_first() -> None:
    async with serving() as server:
        ws = await subscribed(server, server.token_ids[:1], operation="subscribe", markets=[])
        assert [e["asset_id"] for e in json.loads(await ws.recv())] == server.token_ids[:1]


async def test_subscription_initial_dump_false_sends_no_books() -> None:
    async with serving() as server:
        ws = await subscribed(server, initial_dump=False)
        await ws.send("PING")
        assert await drain(ws) == ["PONG"]


async def test_ping_any_case_answered_with_pong_same_case() -> None:
    async with serving() as server:
        ws = await subscribed(server, [])
        for ping in ("PING", "ping", "Ping"):
            await ws.send(ping)
        assert await drain(ws) == ["PONG", "pong", "PONG"]


async def test_operation_subscribe_unsubscribe_on_same_socket() -> None:
    async with serving(markets=1) as server:
        yes_id, no_id = server.token_ids[:2]
        ws = await subscribed(server, [])
        await ws.send(json.dumps({"assets_ids": [yes_id, no_id, "999"], "operation": "subscribe"}))
        books = json.loads(await ws.recv())
        assert [e["asset_id"] for e in books] == [yes_id, no_id] and all("tick_size" in e for e in books)

        # re-subscribing a subscribed token re-sends its book (how clients re-drive)
        await ws.send(json.dumps({"assets_ids": [no_id], "operation": "subscribe"}))
        assert [e["asset_id"] for e in json.loads(await ws.recv())] == [no_id]

        await ws.send(json.dumps({"assets_ids": [yes_id, no_id], "operation": "unsubscribe"}))
        await ws.send("PING")
        assert await drain(ws) == ["PONG"]
        await server.step(20)
        assert await drain(ws) == []
        assert server.connections[0].subscribed == {"999"}


@pytest.mark.parametrize(
    "later_frame",
    [
        '{"assets_ids": [], "type": "market"}',
        '{"assets_ids": [], "operation": "resubscribe"}',
        '{"operation": "subscribe"}',
        "hello",
    ],
)
async def test_operation_second_type_frame_or_garbage_invalid_operation(later_frame: str) -> None:
    async with serving() as server:
        ws = await subscribed(server, [])
        await ws.send(later_frame)
        assert await drain(ws) == ["INVALID OPERATION"]
        assert [text for _, text in server.received][1:] == [later_frame]


async def test_custom_features_no_new_assets_every_hundred_changes() -> None:
    async with serving() as server:
        plain = await subscribed(server, [])
        custom = await subscribed(server, [], custom_feature_enabled=True)
        await asyncio.sleep(QUIET_SECONDS)
        await server.step(250)
        assert await drain(custom) == ["NO NEW ASSETS", "NO NEW ASSETS"]
        assert await drain(plain) == []


# ---------------------------------------------------------------------- market data


async def test_price_change_mirrored_and_best_matches_book_after_change() -> None:
    async with serving(markets=2, trade_every=0) as server:
        ws = await subscribed(server)
        local = LocalBooks()
        for event in json.loads(await ws.recv()):
            local.apply(event)
        await server.step(200)
        frames = await drain(ws)
        assert len(frames) == 200
        for event in events_of(frames):
            assert list(event) == ["market", "price_changes", "timestamp", "event_type"]
            first, second = event["price_changes"]
            assert list(first) == ENTRY_KEYS and list(second) == ENTRY_KEYS
            assert (first["side"], second["side"]) == ("BUY", "SELL")  # BUY entry first
            assert {first["asset_id"], second["asset_id"]} in [{m.yes_id, m.no_id} for m in server.markets]
            assert to_units(first["price"], 4) + to_units(second["price"], 4) == PRICE_SCALE
            assert first["size"] == second["size"]
            local.apply(event)
            for entry in (first, second):
                best = (to_units(entry["best_bid"], 4), to_units(entry["best_ask"], 4))
                assert best == local.best(entry["asset_id"])
        assert all(local.book(token) == server.truth(token) for token in server.token_ids)


async def test_wait_subscribed_returns_connection_once_subscription_read() -> None:
    async with serving() as server:
        ws = await connect(server)
        await ws.send(json.dumps({"assets_ids": server.token_ids[:1], "type": "market"}))
        conn = await server.wait_subscribed(server.token_ids[:1])
        assert conn is server.connections[0] and server.token_ids[0] in conn.subscribed
        with pytest.raises(TimeoutError):
            await server.wait_subscribed(timeout=0.05)


async def test_price_change_reaches_subscribers_of_either_token() -> None:
    async with serving(markets=2, trade_every=0) as server:
        ws = await subscribed(server, [server.markets[0].no_id], initial_dump=False)
        await server.step(30)
        markets = {json.loads(frame)["market"] for frame in await drain(ws)}
        assert markets == {server.markets[0].condition_id}


async def test_trade_last_trade_price_then_book_refresh_per_token() -> None:
    async with serving(markets=1) as server:
        market = server.markets[0]
        ws = await subscribed(server, [market.yes_id, market.no_id])
        await ws.recv()
        before = {token: server.truth(token) for token in (market.yes_id, market.no_id)}
        await server.trade(market.no_id)
        trade, yes_book, no_book = events_of(await drain(ws))
        assert trade["event_type"] == "last_trade_price" and trade["asset_id"] == market.no_id
        assert list(trade) == [
            "market", "asset_id", "price", "size", "fee_rate_bps", "side", "timestamp", "event_type",
            "transaction_hash",
        ]  # fmt: skip
        taker_buys = trade["side"] == "BUY"
        no_bids, no_asks = before[market.no_id]
        crossed = no_asks[0] if taker_buys else no_bids[0]
        assert to_units(trade["price"], 4) == crossed[0] and 0 < to_units(trade["size"], 6) <= crossed[1]
        for event, token in ((yes_book, market.yes_id), (no_book, market.no_id)):
            assert event["event_type"] == "book" and event["asset_id"] == token and "tick_size" not in event
            assert (book_levels(event, "bids")[::-1], book_levels(event, "asks")[::-1]) == server.truth(token)
        assert no_book["last_trade_price"] == f"{trade['price']:0<5}"


async def test_step_trades_every_trade_every_changes() -> None:
    async with serving(markets=1, trade_every=3) as server:
        ws = await subscribed(server, initial_dump=False)
        await server.step(9)
        kinds = [event["event_type"] for event in events_of(await drain(ws))]
        trade_block = ["last_trade_price", "book", "book"]
        assert kinds == (["price_change"] * 3 + trade_block) * 3


async def test_background_rate_hz_drives_changes() -> None:
    async with serving(rate_hz=200.0, trade_every=0) as server:
        ws = await subscribed(server, initial_dump=False)
        frames = [await asyncio.wait_for(ws.recv(), 0.2) for _ in range(10)]
        assert {json.loads(frame)["event_type"] for frame in frames} == {"price_change"}


def test_price_change_empty_side_reports_best_zero_or_one() -> None:
    # Arrange: thin books traded hard run out of levels now and then
    server = FakeMarketServer(markets=1, rate_hz=0, levels=1, trade_every=1)
    local = LocalBooks()
    for book in events_of([server.initial_dump()]):
        local.apply(book)
    sentinels = 0

    # Act
    for event in events_of(server.frames(300, trades=True)):
        local.apply(event)

        # Assert
        for entry in event.get("price_changes", []):
            best = (to_units(entry["best_bid"], 4), to_units(entry["best_ask"], 4))
            assert best == local.best(entry["asset_id"])
            sentinels += entry["best_bid"] == "0" or entry["best_ask"] == "1"
    assert sentinels > 0


def test_frames_fed_after_initial_dump_reproduce_truth_in_local_books() -> None:
    server = FakeMarketServer(markets=2, rate_hz=0, trade_every=5)
    local = LocalBooks()
    for event in events_of([server.initial_dump(), *server.frames(300, trades=True)]):
        local.apply(event)
    assert all(local.book(token) == server.truth(token) for token in server.token_ids)


# ---------------------------------------------------------------------- the core reproduces the server


async def test_dispatcher_fed_server_stream_reproduces_truth(impl: ModuleType) -> None:
    async with serving(markets=3, tick=["0.01", "0.0025", "0.001"], trade_every=11) as server:
        # Arrange
        store = impl.BookStore(capacity=16)
        dispatcher = impl.Dispatcher(store)
        for token in server.token_ids:
            store.add(token)
        ws = await subscribed(server, custom_feature_enabled=True)

        # Act: everything the server can say about books, then every frame into the dispatcher
        await server.step(150)
        await server.trade(server.token_ids[3])
        await server.change_tick(server.token_ids[0], "0.001")
        await server.burst(100)
        await server.change_tick(server.token_ids[1], "0.01")
        await server.step(150)
        await server.change_tick(server.token_ids[4], "0.005")
        await server.step(50)
        for frame in await drain(ws):
            dispatcher.feed(frame)

        # Assert
        for token in server.token_ids:
            assert store.book(token, depth=None) == server.truth(token)
            assert store.top(token).state == State.LIVE
            assert store.top(token).tick == server.tick(token)
        stats = dispatcher.stats()
        assert stats["ev_tick_size_change"] == 6 and stats["ctl_no_new_assets"] == 3  # 350 changes
        problems = {k: v for k, v in stats.items() if v and k.startswith(("rej_", "skip_", "checksum", "crossed"))}
        assert problems == {}


async def test_dispatcher_fed_malformed_frames_rejects_all_books_intact(impl: ModuleType) -> None:
    async with serving(markets=1) as server:
        store = impl.BookStore(capacity=4)
        dispatcher = impl.Dispatcher(store)
        for token in server.token_ids:
            store.add(token)
        ws = await subscribed(server)
        dispatcher.feed(await ws.recv())

        await server.send_malformed(len(MALFORMED_KINDS))
        frames = await drain(ws, quiet=0.3)

        assert len(frames) == len(MALFORMED_KINDS) and isinstance(frames[6], bytes)
        for frame in frames:
            assert dispatcher.feed(frame) == 0
        stats = dispatcher.stats()
        assert stats["rej_invalid_json"] == 3 and stats["rej_unknown_event"] == 1 and stats["rej_unknown_text"] == 1
        assert stats["rej_bad_event"] == 1 + 5 and stats["rej_bad_number"] == 2 and stats["rej_oversized"] == 1
        assert all(store.book(token, depth=None) == server.truth(token) for token in server.token_ids)


# ---------------------------------------------------------------------- fault switches


async def test_close_all_sends_close_code_and_reason() -> None:
    async with serving() as server:
        ws = await subscribed(server, [])
        await asyncio.sleep(QUIET_SECONDS)
        await server.close_all(code=1012, reason="restart")
        assert await close_received(ws) == (1012, "restart")
        assert server.connections[0].closed


async def test_abort_all_drops_tcp_without_close_frame() -> None:
    async with serving() as server:
        ws = await subscribed(server, [])
        await asyncio.sleep(QUIET_SECONDS)
        server.abort_all()
        assert await close_received(ws) is None and server.connections[0].closed


async def test_unresponsive_answers_nothing_until_switched_off() -> None:
    async with serving(trade_every=0) as server:
        ws = await subscribed(server)
        await ws.recv()
        server.set_unresponsive(True)
        await ws.send("PING")
        protocol_pong = asyncio.ensure_future(await ws.ping())
        await server.step(10)
        assert await drain(ws, quiet=0.2) == [] and not protocol_pong.done()
        late = await connect(server)  # the handshake completes, then silence
        await late.send(json.dumps({"assets_ids": server.token_ids, "type": "market"}))
        assert await drain(late) == [] and server.connections[1].received == []
        assert [text for conn_id, text in server.received if conn_id == 1] == [server.received[0][1]]

        server.set_unresponsive(False)
        assert await drain(ws) == ["PONG"]
        await asyncio.wait_for(protocol_pong, 1.0)


async def test_data_stalled_pongs_flow_data_does_not() -> None:
    async with serving(trade_every=0) as server:
        server.set_data_stalled(True)
        ws = await subscribed(server)
        await server.step(10)
        await server.trade()
        await server.change_tick(server.token_ids[0], "0.001")
        await ws.send(json.dumps({"assets_ids": server.token_ids, "operation": "subscribe"}))
        await ws.send("PING")
        assert await drain(ws) == ["PONG"]

        server.set_data_stalled(False)
        await server.step(1)
        assert json.loads(await ws.recv())["event_type"] == "price_change"


async def test_withhold_snapshot_skips_book_of_that_token_only() -> None:
    async with serving(markets=1, trade_every=0) as server:
        yes_id, no_id = server.token_ids
        server.withhold_snapshot(yes_id)
        ws = await subscribed(server)
        assert [e["asset_id"] for e in json.loads(await ws.recv())] == [no_id]
        await server.trade(no_id)
        assert [(e["event_type"], e["asset_id"]) for e in events_of(await drain(ws))] == [
            ("last_trade_price", no_id), ("book", no_id),
        ]  # fmt: skip
        await server.step(1)
        assert json.loads(await ws.recv())["event_type"] == "price_change"  # deltas still flow

        server.withhold_snapshot([yes_id], on=False)
        await ws.send(json.dumps({"assets_ids": [yes_id], "operation": "subscribe"}))
        assert [e["asset_id"] for e in json.loads(await ws.recv())] == [yes_id]


async def test_send_raw_text_and_binary_to_all_or_one() -> None:
    async with serving() as server:
        first = await subscribed(server, [])
        second = await subscribed(server, [])
        await asyncio.sleep(QUIET_SECONDS)
        await server.send_raw("hello")
        await server.send_raw(b"\x00\x01", conn=server.connections[1])
        assert await drain(first) == ["hello"]
        assert await drain(second) == ["hello", b"\x00\x01"]
        assert [conn.sent_frames for conn in server.connections] == [1, 2]

        await server.send_raw(["a", b"b", "c"], conn=server.connections[0])
        assert await drain(first) == ["a", b"b", "c"]


async def test_change_tick_coarser_regrids_and_announces() -> None:
    async with serving(markets=1, tick="0.001", trade_every=0) as server:
        market = server.markets[0]
        ws = await subscribed(server)
        await ws.recv()
        await server.step(30)
        await drain(ws)
        await server.change_tick(market.no_id, "0.01")
        change_yes, change_no, book_yes, book_no = events_of(await drain(ws))
        for event, token in ((change_yes, market.yes_id), (change_no, market.no_id)):
            assert event["event_type"] == "tick_size_change" and event["asset_id"] == token
            assert (event["old_tick_size"], event["new_tick_size"]) == ("0.001", "0.01")
        assert (book_yes["asset_id"], book_no["asset_id"]) == market[1:]
        for token in market[1:]:
            bids, asks = server.truth(token)
            assert server.tick(token) == 100 and all(price % 100 == 0 for price, _ in bids + asks)
            assert bids[0][0] < asks[0][0]
        assert book_levels(book_no, "bids")[::-1] == server.truth(market.no_id)[0]

        await server.change_tick(market.yes_id, "0.01")  # a no-op change is announced, no books follow
        assert [e["event_type"] for e in events_of(await drain(ws))] == ["tick_size_change"] * 2


async def test_change_tick_coarser_merges_levels_onto_new_grid() -> None:
    # Arrange
    server = FakeMarketServer(markets=1, rate_hz=0, tick="0.0025", levels=30)
    token = server.token_ids[0]
    bids, asks = server.truth(token)
    expected_bids: dict[int, int] = {}
    expected_asks: dict[int, int] = {}
    for price, size in bids:  # bids round down, asks up, off-range levels drop
        if price >= 1000:
            expected_bids[price - price % 1000] = expected_bids.get(price - price % 1000, 0) + size
    for price, size in asks:
        if price <= 9000:
            expected_asks[price + (-price) % 1000] = expected_asks.get(price + (-price) % 1000, 0) + size

    # Act
    await server.change_tick(token, "0.1")

    # Assert
    assert server.truth(token) == (sorted(expected_bids.items(), reverse=True), sorted(expected_asks.items()))
    assert len(expected_bids) < len(bids) and server.tick(token) == 1000


async def test_burst_sends_n_price_changes_back_to_back() -> None:
    async with serving(trade_every=1) as server:
        ws = await subscribed(server, initial_dump=False)
        await server.burst(500)
        kinds = {json.loads(frame)["event_type"] for frame in await drain(ws)}
        assert kinds == {"price_change"} and server.connections[0].sent_frames == 500


async def test_reject_connections_accepts_then_closes() -> None:
    async with serving() as server:
        server.reject_connections(True)
        ws = await connect(server)
        assert await close_received(ws) == (1013, "try again later") and server.connections[0].closed

        server.reject_connections(False)
        ws = await subscribed(server, [])
        await ws.send("PING")
        assert await ws.recv() == "PONG"


async def test_connections_record_what_clients_sent() -> None:
    async with serving() as server:
        ws = await subscribed(server, [])
        await ws.send("PING")
        await ws.send(b"binary \xff")
        await drain(ws)
        conn = server.connections[0]
        assert conn.received[1:] == ["PING", "binary \ufffd"] and not conn.closed
        assert server.received == [(1, text) for text in conn.received]
        await ws.close()
        await asyncio.sleep(QUIET_SECONDS)
        assert conn.closed


async def test_server_stop_with_half_open_connection_is_prompt() -> None:
    server = FakeMarketServer(rate_hz=50.0)
    await server.start()
    ws = await subscribed(server)
    server.set_unresponsive(True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop()
    elapsed = loop.time() - started
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            await asyncio.wait_for(ws.recv(), 1.0)  # whatever was sent before the freeze
    assert caught.value.rcvd is None  # aborted: it would never answer a close handshake
    assert elapsed < 0.5


async def test_frames_from_clients_are_kept_within_a_bound() -> None:
    async with serving(keep_received=10) as server:
        ws = await subscribed(server, [])
        for n in range(100):
            await ws.send(f"PING {n}")
        await ws.send("PING")
        await until(lambda: server.connections[0].received[-1] == "PING")
        for log in (server.connections[0].received, [text for _, text in server.received]):
            assert 10 <= len(log) < 20 and log[-2:] == ["PING 99", "PING"]
        await drain(ws)
        await ws.close()


async def test_stop_reading_keeps_sending_but_reads_nothing_more() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        ws = await subscribed(server)
        await drain(ws)
        server.stop_reading()
        await ws.send("PING")
        await server.step(3)
        assert [json.loads(frame)["event_type"] for frame in await drain(ws)].count("price_change") == 3
        assert server.connections[0].received[-1] != "PING"
        server.stop_reading(False)
        assert await drain(ws) == ["PONG"]
        await ws.close()
