"""MarketClient against the real loopback FakeMarketServer: protocol, faults, sharding, seed surface.

Every test runs its own event loop (``asyncio.run``) with deadlines of a few hundred milliseconds.
Fault tests log what they measured (logger ``pm_ws.tests.faults``); run with
``-o log_cli=true --log-cli-level=INFO -k fault`` to read the figures of the README's fault matrix.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import ModuleType
from typing import Any

import orjson
import pytest
from websockets.protocol import State as SocketState

import pm_ws.client as client_module
from pm_ws import BookStore, Dispatcher
from pm_ws.backoff import ExponentialBackoff
from pm_ws.client import CAUSE_CORE, CAUSE_MARKED, CAUSE_STOPPED, ClientEvent, MarketClient, PolymarketMarketWsClient
from pm_ws.row import RECV_TS_NS, TICK, State
from pm_ws.testing import FakeMarketServer

figures = logging.getLogger("pm_ws.tests.faults")

TEST_DEADLINE = 10.0  # seconds; a hung test fails instead of stalling the suite

# Deadlines short enough for a fast suite, long enough for a loaded 2-core machine
FAST: dict[str, Any] = {
    "ping_interval": 0.1,
    "inbound_timeout": 0.5,
    "snapshot_timeout": 0.3,
    "silence_timeout": 0.6,
    "connect_stagger": 0.0,
    "backoff": functools.partial(ExponentialBackoff, 0.02, 0.2),
}


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TEST_DEADLINE))


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> float:
    """Poll ``predicate`` every millisecond; return the seconds it took."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.001)
    return time.perf_counter() - start


def states(client: MarketClient, tokens: list[str]) -> list[State]:
    return [client.store.top(token).state for token in tokens]


def all_in(client: MarketClient, tokens: list[str], state: State) -> Callable[[], bool]:
    return lambda: all(value is state for value in states(client, tokens))


def none_live(client: MarketClient, tokens: list[str]) -> Callable[[], bool]:
    return lambda: all(value is not State.LIVE for value in states(client, tokens))


def books_match(client: MarketClient, server: FakeMarketServer, tokens: list[str]) -> bool:
    return all(client.store.book(token, depth=None) == server.truth(token) for token in tokens)


def frames_of(server: FakeMarketServer, conn_id: int) -> list[Any]:
    """What one connection sent: parsed JSON objects, control words as str."""
    conn = next(c for c in server.connections if c.id == conn_id)
    return [text if text.strip().upper() == "PING" else orjson.loads(text) for text in conn.received]


class StaleGuard:
    """Fail if a token reads LIVE while the client itself considers its connection down.

    Checked synchronously at each ``disconnected`` event and by a sampler every millisecond.
    """

    def __init__(self, client: MarketClient) -> None:
        self.client = client
        self.violations: list[str] = []
        self.disconnects = 0

    def on_event(self, event: ClientEvent) -> None:
        if event.kind == "disconnected":
            self.disconnects += 1
            self.check(f"at disconnect of connection {event.data['connection']}")

    def check(self, when: str) -> None:
        stats = self.client.stats()
        down = {conn["id"] for conn in stats["connections"] if conn["state"] != "open"}
        for token, row in stats["tokens"].items():
            if row["connection"] in down and row["state"] is State.LIVE:
                self.violations.append(f"{token[:8]} LIVE {when}")

    async def sample(self) -> None:
        while True:
            self.check("while sampling")
            await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def started(
    server: FakeMarketServer, *, tokens: list[str] | None = None, store: Any = None, **options: Any
) -> AsyncIterator[tuple[MarketClient, StaleGuard]]:
    """A running client subscribed to ``tokens`` (default: all), every token LIVE, guarded."""
    tokens = server.token_ids if tokens is None else tokens

    def on_event(event: ClientEvent) -> None:
        guard.on_event(event)

    client = MarketClient(server.url, store=store, on_event=on_event, **(FAST | options))
    guard = StaleGuard(client)
    await client.subscribe(tokens)
    async with client:
        await wait_until(all_in(client, tokens, State.LIVE), what="first books")
        sampler = asyncio.create_task(guard.sample())
        try:
            yield client, guard
        finally:
            sampler.cancel()
    assert guard.violations == []
    assert_subscription_first(server)


def assert_subscription_first(server: FakeMarketServer) -> None:
    """Every socket's first frame is the subscription, and no later frame carries `type`."""
    for conn in server.connections:
        if not conn.received:
            continue
        first = orjson.loads(conn.received[0])
        assert first["type"] == "market" and first["initial_dump"] is True, conn.received[0]
        later = [text for text in conn.received[1:] if text != "PING"]
        assert all("type" not in orjson.loads(text) for text in later), later


# ---------------------------------------------------------------------------------- protocol


def test_client_first_frame_is_the_subscription_and_nothing_precedes_it() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=0) as server:
            async with started(server):
                await asyncio.sleep(0.25)  # a couple of PINGs
            first, *rest = frames_of(server, server.connections[0].id)

        assert first == {
            "assets_ids": server.token_ids,
            "type": "market",
            "initial_dump": True,
            "custom_feature_enabled": True,
        }
        assert rest and all(frame == "PING" for frame in rest)

    run(scenario())


def test_client_custom_features_off_is_sent_as_false() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            async with started(server, custom_features=False):
                pass
            assert frames_of(server, 1)[0]["custom_feature_enabled"] is False

    run(scenario())


def test_client_ping_cadence_follows_ping_interval() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=200) as server:
            async with started(server, ping_interval=0.1) as (client, _):
                start = time.perf_counter()
                await asyncio.sleep(0.55)
                elapsed = time.perf_counter() - start
                pings = client.stats()["connections"][0]["pings"]
            received = server.connections[0].received

        # data flowing does not replace the heartbeat; the cadence is neither early nor late
        assert received.count("PING") == pings
        assert int(elapsed / 0.1) - 1 <= pings <= int(elapsed / 0.1) + 2
        figures.info("ping cadence: %d PINGs in %.3fs at ping_interval=0.1", pings, elapsed)

    run(scenario())


def test_client_pong_keeps_a_quiet_connection_alive() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            async with started(server, inbound_timeout=0.3, silence_timeout=5.0) as (client, _):
                await asyncio.sleep(0.8)  # no market data at all, only PONGs
                assert len(server.connections) == 1
                assert client.stats()["connections"][0]["reconnects"] == 0
                assert states(client, server.token_ids) == [State.LIVE] * 2

    run(scenario())


def test_client_books_match_server_truth_after_changes_and_trades(impl: ModuleType) -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=3, seed=5, rate_hz=0, trade_every=7) as server:
            async with started(server, store=impl.BookStore(16)) as (client, _):
                await server.step(120)
                await server.trade()
                await server.burst(50)
                await wait_until(lambda: books_match(client, server, server.token_ids), what="books = truth")
                counters = client.stats()["dispatcher"]

        assert counters["ev_price_change"] >= 170
        assert counters["checksum_mismatch"] == counters["crossed_book"] == 0
        assert counters["rej_invalid_json"] == counters["rej_bad_event"] == 0
        assert counters["ctl_invalid_operation"] == 0

    run(scenario())


def test_client_subscribe_while_running_uses_an_operation_frame_on_the_same_socket() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=100) as server:
            first, second = server.token_ids[:2], server.token_ids[2:]
            async with started(server, tokens=first) as (client, _):
                await client.subscribe(second)
                await wait_until(all_in(client, second, State.LIVE), what="new tokens live")
                await client.unsubscribe(first[:1])
                await asyncio.sleep(0.05)
                assert states(client, first[1:] + second) == [State.LIVE] * 3
                assert first[0] not in client.store
            sent = [frame for frame in frames_of(server, 1) if frame != "PING"]

        assert len(server.connections) == 1
        assert sent[1] == {"assets_ids": second, "operation": "subscribe", "custom_feature_enabled": True}
        assert sent[2] == {"assets_ids": first[:1], "operation": "unsubscribe"}
        assert not any("type" in frame for frame in sent[1:])  # a second `type` frame is INVALID OPERATION

    run(scenario())


# ---------------------------------------------------------------------------------- faults


async def measure_disconnect(
    server: FakeMarketServer, client: MarketClient, fault: Callable[[], Awaitable[None] | None], name: str
) -> None:
    tokens = server.token_ids
    start = time.perf_counter()
    result = fault()
    if result is not None:
        await result
    await wait_until(none_live(client, tokens), what=f"{name}: STALE")
    detected = time.perf_counter() - start
    assert set(states(client, tokens)) == {State.STALE}
    await wait_until(all_in(client, tokens, State.LIVE), what=f"{name}: LIVE again")
    recovered = time.perf_counter() - start
    await server.step(30)
    await wait_until(lambda: books_match(client, server, tokens), what=f"{name}: books = truth")
    figures.info(
        "fault %s: detected after %.1f ms, recovered after %.1f ms", name, detected * 1e3, recovered * 1e3
    )


def test_client_fault_clean_close_marks_stale_then_recovers() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=0) as server:
            async with started(server) as (client, guard):
                await measure_disconnect(server, client, lambda: server.close_all(1011, "test"), "close 1011")
                assert guard.disconnects == 1
                assert client.stats()["connections"][0]["reconnects"] == 1

    run(scenario())


def test_client_fault_tcp_abort_marks_stale_then_recovers() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=0) as server:
            async with started(server) as (client, guard):
                await measure_disconnect(server, client, server.abort_all, "TCP abort")
                assert guard.disconnects == 1

    run(scenario())


def test_client_fault_burst_is_absorbed_and_books_stay_exact() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=0) as server:
            async with started(server) as (client, guard):
                start = time.perf_counter()
                await server.burst(3000)
                await wait_until(lambda: books_match(client, server, server.token_ids), what="books = truth")
                took = time.perf_counter() - start
                assert states(client, server.token_ids) == [State.LIVE] * 4
                assert guard.disconnects == 0
                assert client.stats()["dispatcher"]["ev_price_change"] == 3000
                figures.info("fault burst: 3000 price_change frames, books exact after %.0f ms", took * 1e3)

    run(scenario())


def test_client_fault_stale_rows_bump_epoch_and_fresh_book_bumps_it_again() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            token = server.token_ids[0]
            async with started(server) as (client, _):
                live_epoch = client.store.top(token).epoch
                server.abort_all()
                await wait_until(none_live(client, [token]))
                stale_epoch = client.store.top(token).epoch
                await wait_until(all_in(client, [token], State.LIVE))
                assert live_epoch < stale_epoch < client.store.top(token).epoch

    run(scenario())


def test_client_fault_half_open_server_is_aborted_after_inbound_timeout() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=50) as server:
            async with started(server, inbound_timeout=0.4) as (client, guard):
                tokens = server.token_ids
                start = time.perf_counter()
                server.set_unresponsive(True)
                detected = await wait_until(none_live(client, tokens), what="STALE after inbound timeout")
                assert 0.3 <= detected <= 0.9
                server.set_unresponsive(False)
                recovered = await wait_until(all_in(client, tokens, State.LIVE), what="LIVE again")
                await wait_until(lambda: books_match(client, server, tokens), what="books = truth")
                assert client.stats()["connections"][0]["aborts"] >= 1
                figures.info(
                    "fault half-open: detected after %.1f ms, recovered %.1f ms after the server answered "
                    "(%.1f ms after the fault)",
                    detected * 1e3,
                    recovered * 1e3,
                    (time.perf_counter() - start) * 1e3,
                )

    run(scenario())


class SteppedWallClock:
    """``time`` for pm_ws.client with a wall clock that an NTP step can move (monotonic untouched).

    No loopback server can step the machine's clock, so this one module gets a stand-in.
    """

    def __init__(self) -> None:
        self.offset_ns = 0
        self.monotonic_ns = time.monotonic_ns

    def time_ns(self) -> int:
        return time.time_ns() + self.offset_ns


def test_client_wall_clock_steps_neither_fire_nor_freeze_the_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    # A forward step must not abort a healthy socket; a backward step must not hide a half-open one
    clock = SteppedWallClock()
    monkeypatch.setattr(client_module, "time", clock)
    hour_ns = 3600 * 10**9

    async def scenario() -> None:
        # No data, only PONGs: every watchdog tick compares against the last PONG's stamp
        async with FakeMarketServer(markets=2, rate_hz=0) as server:
            async with started(server, inbound_timeout=0.4, silence_timeout=5.0) as (client, guard):
                tokens = server.token_ids
                clock.offset_ns = hour_ns
                await asyncio.sleep(0.6)  # beyond inbound_timeout
                assert guard.disconnects == 0 and client.stats()["connections"][0]["aborts"] == 0
                assert all_in(client, tokens, State.LIVE)()
                clock.offset_ns = -hour_ns
                server.set_unresponsive(True)
                detected = await wait_until(none_live(client, tokens), what="STALE after inbound timeout")
                assert 0.25 <= detected <= 0.9  # inbound_timeout less the last PONG's age (ping_interval 0.1)
                server.set_unresponsive(False)
                await wait_until(all_in(client, tokens, State.LIVE), what="LIVE again")
                assert client.stats()["connections"][0]["aborts"] == 1
                # Rows carry the (stepped) wall clock: comparable with the exchange's timestamps
                assert abs(client.store.view[0, RECV_TS_NS] - clock.time_ns()) < hour_ns // 2

    run(scenario())


def test_client_fault_data_stall_with_pongs_redrives_then_rebuilds() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=100) as server:
            async with started(server, silence_timeout=0.4, snapshot_timeout=0.3) as (client, _):
                tokens = server.token_ids
                start = time.perf_counter()
                server.set_data_stalled(True)
                detected = await wait_until(none_live(client, tokens), what="STALE after silence")
                await wait_until(lambda: len(server.connections) == 2, what="rebuild")
                rebuilt = time.perf_counter() - start
                server.set_data_stalled(False)
                recovered = await wait_until(all_in(client, tokens, State.LIVE), what="LIVE again")
                await wait_until(lambda: books_match(client, server, tokens), what="books = truth")
                sent = [frame for frame in frames_of(server, 1) if frame != "PING"]
                figures.info(
                    "fault data stall (PONG flowing): detected (STALE + re-drive) after %.1f ms, "
                    "rebuilt after %.1f ms, LIVE %.1f ms after data resumed",
                    detected * 1e3,
                    rebuilt * 1e3,
                    recovered * 1e3,
                )
                assert 0.35 <= detected <= 0.7
                assert detected + 0.25 <= rebuilt <= 1.3

        # the re-drive happened on the first socket before it was rebuilt: unsubscribe, then subscribe
        assert {"assets_ids": tokens, "operation": "unsubscribe"} in sent
        assert {"assets_ids": tokens, "operation": "subscribe", "custom_feature_enabled": True} in sent
        assert sent.index({"assets_ids": tokens, "operation": "unsubscribe"}) < len(sent) - 1

    run(scenario())


def test_client_fault_withheld_snapshot_is_redriven_without_disturbing_the_others() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=50) as server:
            withheld, others = server.token_ids[0], server.token_ids[1:]
            server.withhold_snapshot(withheld)
            client = MarketClient(server.url, **(FAST | {"snapshot_timeout": 0.3}))
            await client.subscribe(server.token_ids)
            async with client:
                await wait_until(all_in(client, others, State.LIVE), what="others live")
                start = time.perf_counter()
                await wait_until(lambda: len(server.connections[0].received) > 1 and any(
                    "unsubscribe" in text for text in server.connections[0].received), what="re-drive")
                redriven_after = time.perf_counter() - start
                server.withhold_snapshot(withheld, on=False)
                server.connections[0].received.clear()
                # the next re-drive or refresh brings the book; the socket and the neighbours stay put
                await server.trade(withheld)
                recovered = await wait_until(all_in(client, [withheld], State.LIVE), what="withheld live")
                assert states(client, others) == [State.LIVE] * 3
                assert len(server.connections) == 1
                figures.info(
                    "fault missing snapshot: re-driven %.1f ms after the others were live, "
                    "LIVE %.1f ms after release",
                    redriven_after * 1e3,
                    recovered * 1e3,
                )

    run(scenario())


def test_client_fault_snapshot_still_missing_after_redrive_rebuilds_once() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=20) as server:
            withheld = server.token_ids[0]
            server.withhold_snapshot(withheld)
            client = MarketClient(server.url, **(FAST | {"snapshot_timeout": 0.2}))
            await client.subscribe(server.token_ids)
            async with client:
                start = time.perf_counter()
                await wait_until(lambda: len(server.connections) == 2, what="rebuild")
                rebuilt = time.perf_counter() - start
                await asyncio.sleep(1.0)  # 5 more deadlines: re-drives only, no rebuild loop
                assert len(server.connections) == 2
                assert client.store.top(withheld).state is not State.LIVE
                assert states(client, server.token_ids[1:]) == [State.LIVE] * 3
                redrives = client.stats()["connections"][0]["redrives"]
            assert 0.3 <= rebuilt <= 1.0
            assert redrives >= 3
            figures.info("fault snapshot never sent: rebuilt after %.1f ms, then re-drives", rebuilt * 1e3)

    run(scenario())


def mismatching_price_change(server: FakeMarketServer, token: str) -> str:
    """A price_change adding a bid at 0.01 whose best_bid/best_ask cannot match the local book."""
    entry = {"asset_id": token, "price": "0.01", "size": "5", "side": "BUY", "hash": "0"}
    return orjson.dumps(
        {
            "market": server.markets[0].condition_id,
            "price_changes": [entry | {"best_bid": "0.99", "best_ask": "1"}],
            "timestamp": "1",
            "event_type": "price_change",
        }
    ).decode()


def test_client_fault_checksum_mismatch_resyncs_the_token() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            async with started(server) as (client, _):
                token = server.token_ids[0]
                bad = mismatching_price_change(server, token)
                seen: list[State] = []
                start = time.perf_counter()
                await server.send_raw(bad)
                await wait_until(lambda: client.stats()["dispatcher"]["checksum_mismatch"] == 1)
                seen.append(client.store.top(token).state)
                detected = time.perf_counter() - start
                recovered = await wait_until(all_in(client, [token], State.LIVE), what="resynced")
                await server.step(20)
                await wait_until(lambda: books_match(client, server, server.token_ids), what="books = truth")
                sent = [frame for frame in frames_of(server, 1) if frame != "PING"]
                unsubscribes = [frame for frame in sent if frame.get("operation") == "unsubscribe"]
                assert unsubscribes == [{"assets_ids": [token], "operation": "unsubscribe"}]
                assert len(server.connections) == 1
                assert seen[0] in (State.INVALID, State.LIVE)  # LIVE only if the resync already finished
                figures.info(
                    "fault checksum mismatch: detected after %.1f ms (on the frame), LIVE %.1f ms later",
                    detected * 1e3,
                    recovered * 1e3,
                )

    run(scenario())


def test_client_fault_crossed_book_resyncs_the_token() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            async with started(server) as (client, _):
                token = server.token_ids[0]
                crossed = orjson.dumps(
                    {
                        "market": server.markets[0].condition_id,
                        "asset_id": token,
                        "timestamp": "1",
                        "hash": "0",
                        "bids": [{"price": "0.6", "size": "10"}],
                        "asks": [{"price": "0.5", "size": "10"}],
                        "event_type": "book",
                    }
                ).decode()
                start = time.perf_counter()
                await server.send_raw(crossed)
                await wait_until(lambda: client.stats()["dispatcher"]["crossed_book"] == 1, what="crossed")
                await wait_until(all_in(client, [token], State.LIVE), what="resynced")
                recovered = time.perf_counter() - start
                await server.step(20)
                await wait_until(lambda: books_match(client, server, server.token_ids), what="books = truth")
                assert client.store.top(token).mismatches == 1
                figures.info("fault crossed book: INVALID on the frame, LIVE after %.1f ms", recovered * 1e3)

    run(scenario())


def test_client_fault_repeated_resyncs_of_one_token_are_spaced_by_the_gap() -> None:
    async def scenario() -> list[float]:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            token = server.token_ids[0]
            redriven: list[float] = []

            def on_event(event: ClientEvent) -> None:
                if event.kind == "resync":
                    redriven.append(time.perf_counter())

            client = MarketClient(server.url, on_event=on_event, **FAST)
            client.RESYNC_GAP = 0.25
            await client.subscribe(server.token_ids)
            bad = mismatching_price_change(server, token)
            async with client:
                for _ in range(3):
                    await wait_until(all_in(client, [token], State.LIVE))
                    await server.send_raw(bad)
                    await wait_until(lambda: client.store.top(token).state is not State.LIVE)
                await wait_until(lambda: len(redriven) == 3, what="three resyncs")
                await wait_until(all_in(client, [token], State.LIVE))
            return redriven

    stamps = run(scenario())
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    assert all(gap >= 0.2 for gap in gaps), gaps


def test_client_fault_tick_size_change_goes_stale_then_live_on_new_grid() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0, tick="0.01") as server:
            async with started(server) as (client, _):
                tokens = server.token_ids
                start = time.perf_counter()
                await server.change_tick(tokens[0], "0.001")
                await wait_until(lambda: all(client.store.top(t).tick == 10 for t in tokens), what="tick")
                await wait_until(all_in(client, tokens, State.LIVE), what="LIVE on new grid")
                figures.info("fault tick size change: LIVE on the new grid %.1f ms after the change",
                             (time.perf_counter() - start) * 1e3)
                await server.step(20)
                await wait_until(lambda: books_match(client, server, tokens), what="books = truth")
                assert client.stats()["dispatcher"]["ev_tick_size_change"] == 2
                assert [client.store.view[client.store.slot(t), TICK] for t in tokens] == [10, 10]

    run(scenario())


def test_client_fault_malformed_frames_change_nothing() -> None:
    async def scenario() -> dict[str, int]:
        async with FakeMarketServer(markets=2, rate_hz=0) as server:
            async with started(server) as (client, guard):
                await server.step(10)
                await wait_until(lambda: books_match(client, server, server.token_ids), what="books = truth")
                rows = bytes(client.store.view)
                def data_frames() -> int:  # PONGs keep coming meanwhile
                    counters = client.stats()["dispatcher"]
                    return int(counters["frames"] - counters["ctl_pong"])

                before = data_frames()
                await server.send_malformed(10)  # includes a 17 MiB frame
                await server.send_raw("\x00garbage")
                await wait_until(lambda: data_frames() == before + 11, what="11 frames")
                assert bytes(client.store.view) == rows  # not one row changed
                await server.step(10)
                await wait_until(lambda: books_match(client, server, server.token_ids), what="books = truth")
                assert states(client, server.token_ids) == [State.LIVE] * 4
                assert len(server.connections) == 1 and guard.disconnects == 0
                return client.stats()["dispatcher"]

    counters = run(scenario())
    rejected = {key: value for key, value in counters.items() if key.startswith("rej_") and value}
    assert sum(rejected.values()) >= 11, rejected  # per event: an array of 5 non-objects counts 5
    assert rejected["rej_oversized"] == 1  # the socket takes 32 MiB, the dispatcher rejects > 16 MiB
    assert counters["checksum_mismatch"] == counters["resync_queued"] == 0


def test_client_fault_accept_then_close_backs_off_without_hot_loop() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            slower = functools.partial(ExponentialBackoff, 0.05, 0.4, jitter="equal")
            async with started(server, backoff=slower) as (client, _):
                server.reject_connections(True)
                await server.close_all()
                start = time.perf_counter()
                await asyncio.sleep(1.5)
                attempts = len(server.connections) - 1
                server.reject_connections(False)
                recovered = await wait_until(all_in(client, server.token_ids, State.LIVE), what="LIVE")
                assert client.stats()["connections"][0]["state"] == "open"
                figures.info(
                    "fault accept-then-close: %d connection attempts in %.2fs (backoff 0.05->0.4 s), "
                    "LIVE %.1f ms after the server accepted again",
                    attempts,
                    time.perf_counter() - start - recovered,
                    recovered * 1e3,
                )
        # delays 0.025-0.05, 0.05-0.1, 0.1-0.2, then 0.2-0.4 each: at most ~9 attempts in 1.5 s
        assert 3 <= attempts <= 10

    run(scenario())


def test_client_fault_backoff_resets_only_after_a_snapshot() -> None:
    async def scenario() -> None:
        backoffs: list[ExponentialBackoff] = []

        def factory() -> ExponentialBackoff:
            backoffs.append(ExponentialBackoff(0.02, 0.2))
            return backoffs[-1]

        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            async with started(server, backoff=factory) as (client, _):
                server.reject_connections(True)
                await server.close_all()
                await wait_until(lambda: backoffs[0].attempts >= 3, what="attempts pile up")
                server.reject_connections(False)
                await wait_until(all_in(client, server.token_ids, State.LIVE), what="LIVE")
                await wait_until(lambda: backoffs[0].attempts == 0, what="reset after the snapshot")
        assert len(backoffs) == 1

    run(scenario())


def test_client_fault_server_down_then_back_on_the_same_port() -> None:
    async def scenario() -> None:
        server = FakeMarketServer(markets=1, rate_hz=0, seed=3)
        await server.start()
        port = int(server.url.rsplit(":", 1)[1])
        async with started(server) as (client, _):
            await server.stop()
            await wait_until(none_live(client, server.token_ids), what="STALE")
            await asyncio.sleep(0.3)  # refused connects meanwhile
            again = FakeMarketServer(markets=1, rate_hz=0, seed=3, port=port)
            async with again:
                recovered = await wait_until(all_in(client, again.token_ids, State.LIVE), what="LIVE")
                assert books_match(client, again, again.token_ids)
        figures.info("fault server restart: LIVE %.1f ms after it listened again", recovered * 1e3)

    run(scenario())


def test_client_disconnected_event_sees_every_token_already_stale() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=100) as server:
            snapshots: list[list[State]] = []

            def on_event(event: ClientEvent) -> None:
                if event.kind == "disconnected":  # synchronous: nothing else ran since the socket died
                    snapshots.append(states(client, server.token_ids))

            client = MarketClient(server.url, on_event=on_event, **FAST)
            await client.subscribe(server.token_ids)
            async with client:
                await wait_until(all_in(client, server.token_ids, State.LIVE))
                await server.close_all()
                await wait_until(lambda: len(snapshots) == 1)
                await wait_until(all_in(client, server.token_ids, State.LIVE))
                server.abort_all()
                await wait_until(lambda: len(snapshots) == 2)
        assert snapshots == [[State.STALE] * 4] * 2

    run(scenario())


@pytest.mark.parametrize("fault", ["close", "abort"])
def test_client_tokens_are_stale_as_soon_as_the_socket_knows_it_is_down(fault: str) -> None:
    async def scenario() -> int:
        async with FakeMarketServer(markets=2, rate_hz=200) as server:
            async with started(server) as (client, _):
                ws = client._connections[0].ws  # its state flips inside loop callbacks
                assert ws is not None
                seen = 0

                async def spin() -> None:
                    nonlocal seen
                    while True:  # a busy user task that runs between any two callbacks
                        if ws.state is not SocketState.OPEN:
                            seen += 1
                            assert none_live(client, server.token_ids)(), "LIVE on a socket that is down"
                        await asyncio.sleep(0)

                spinner = asyncio.create_task(spin())
                await asyncio.sleep(0.01)
                if fault == "close":
                    await server.close_all()
                else:
                    server.abort_all()
                await wait_until(lambda: client.stats()["connections"][0]["reconnects"] == 1)
                assert not spinner.done()
                spinner.cancel()
                return seen

    assert run(scenario()) > 0  # the spinner did run while the socket was down


# ---------------------------------------------------------------------------------- scale


def test_client_shards_tokens_over_connections() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=5, rate_hz=50) as server:
            tokens = server.token_ids
            async with started(server, max_tokens_per_connection=4, connect_stagger=0.05) as (client, _):
                conns = client.stats()["connections"]
                assert [c["tokens"] for c in conns] == [4, 4, 2]
                assert sorted(len(c.subscribed) for c in server.connections) == [2, 4, 4]
                await server.step(40)
                await wait_until(lambda: books_match(client, server, tokens), what="books = truth")

        assert len(server.connections) == 3

    run(scenario())


def test_client_connect_stagger_spaces_connection_attempts() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=3, rate_hz=0) as server:
            opened: list[float] = []

            def on_event(event: ClientEvent) -> None:
                if event.kind == "connected":
                    opened.append(time.perf_counter())

            sharded = {"max_tokens_per_connection": 2, "connect_stagger": 0.1}
            client = MarketClient(server.url, on_event=on_event, **(FAST | sharded))
            await client.subscribe(server.token_ids)
            async with client:
                await wait_until(lambda: len(opened) == 3)
        gaps = [b - a for a, b in zip(opened, opened[1:])]
        assert all(gap >= 0.08 for gap in gaps), gaps

    run(scenario())


def test_client_unsubscribe_and_subscribe_move_tokens_without_disturbing_others() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=4, rate_hz=50) as server:
            tokens = server.token_ids
            async with started(server, tokens=tokens[:6], max_tokens_per_connection=4) as (client, guard):
                kept = tokens[4:6]
                epochs = [client.store.top(t).epoch for t in kept]
                await client.unsubscribe(tokens[:4])  # empties connection 0: it closes
                await client.subscribe(tokens[6:])  # joins connection 1 by an operation frame
                await wait_until(all_in(client, tokens[4:], State.LIVE))
                await asyncio.sleep(0.1)
                assert [client.store.top(t).epoch for t in kept] == epochs  # never re-snapshotted
                assert [c["tokens"] for c in client.stats()["connections"]] == [4]
                assert all(t not in client.store for t in tokens[:4])
                assert guard.disconnects == 0  # retiring an empty connection is not a fault
            assert len(server.connections) == 2 and server.connections[0].closed
            sent = [frame for frame in frames_of(server, 2) if frame != "PING"]
            joined = {"assets_ids": tokens[6:], "operation": "subscribe", "custom_feature_enabled": True}
            assert sent[1] == joined

    run(scenario())


def test_client_unsubscribe_then_subscribe_again_at_once_gets_a_fresh_book() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=50) as server:
            async with started(server, snapshot_timeout=2.0) as (client, _):
                token = server.token_ids[0]
                client._remove_tokens([token])  # both before the writer runs: no frame in between
                await client.subscribe([token])
                # well before snapshot_timeout: the book comes from the re-drive, not from the watchdog
                await wait_until(all_in(client, [token], State.LIVE), timeout=0.5, what="fresh book")
                await wait_until(lambda: books_match(client, server, server.token_ids), what="books = truth")

    run(scenario())


def test_client_sharding_keeps_market_pairs_on_one_connection() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=5, rate_hz=400) as server:
            async with started(server, max_tokens_per_connection=3) as (client, _):
                await asyncio.sleep(0.5)
                stats = client.stats()
            markets = server.markets
        conn_of = {token: row["connection"] for token, row in stats["tokens"].items()}
        assert [c["tokens"] for c in stats["connections"]] == [2] * 5
        assert all(conn_of[m.yes_id] == conn_of[m.no_id] for m in markets)
        assert stats["dispatcher"]["checksum_mismatch"] == 0

    run(scenario())


def test_client_two_thousand_tokens_all_live_on_ten_connections() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1000, rate_hz=200, levels=5) as server:
            tokens = server.token_ids
            client = MarketClient(server.url, **(FAST | {"connect_stagger": 0.02, "snapshot_timeout": 3.0,
                                                          "inbound_timeout": 3.0, "silence_timeout": 10.0}))
            await client.subscribe(tokens)
            async with client:
                took = await wait_until(all_in(client, tokens, State.LIVE), timeout=8.0, what="2000 live")
                stats = client.stats()
                assert [c["tokens"] for c in stats["connections"]] == [200] * 10
                assert sum(c["redrives"] for c in stats["connections"]) == 0
                figures.info("2000 tokens on 10 connections: all LIVE after %.0f ms", took * 1e3)
            assert_subscription_first(server)

    run(scenario())


# ---------------------------------------------------------------------------------- API


def test_client_events_iterator_yields_state_trade_and_connection_events() -> None:
    async def scenario() -> list[ClientEvent]:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            client = MarketClient(server.url, **FAST)
            stream = client.events()
            await client.subscribe(server.token_ids)
            async with client:
                await wait_until(all_in(client, server.token_ids, State.LIVE))
                await server.trade(server.token_ids[0])
                await asyncio.sleep(0.05)
            return [event async for event in stream]  # the iteration ends once run() returned

    events = run(scenario())

    kinds = [event.kind for event in events]
    assert kinds[0] == "connected"
    assert kinds.count("state") >= 4  # 2 x LIVE on the snapshot, 2 x STALE when the client stopped
    trade = next(event for event in events if event.kind == "trade")
    assert set(trade.data) == {"asset_id", "price", "size", "side", "timestamp"}
    assert trade.token_id == trade.data["asset_id"]


def test_client_slow_event_consumer_loses_oldest_events_never_blocks_the_reader() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0, trade_every=1) as server:
            client = MarketClient(server.url, **FAST)
            stream = client.events(maxsize=3)
            await client.subscribe(server.token_ids)
            async with client:
                await wait_until(all_in(client, server.token_ids, State.LIVE))
                await server.step(30)  # 30 trades nobody reads
                await wait_until(lambda: books_match(client, server, server.token_ids))
                assert stream.dropped > 20
                assert client.stats()["events_dropped"] == stream.dropped
                latest = [await stream.__anext__() for _ in range(3)]
                assert all(event.kind in ("trade", "state") for event in latest)

    run(scenario())


def test_client_stats_report_connections_and_tokens() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=100) as server:
            async with started(server) as (client, _):
                await asyncio.sleep(0.05)
                stats = client.stats()
        (conn,) = stats["connections"]
        assert conn["state"] == "open" and conn["tokens"] == 2 and conn["reconnects"] == 0
        assert conn["frames"] > 2 and conn["bytes"] > 1000 and 0 <= conn["last_frame_age"] < 0.5
        for row in stats["tokens"].values():
            assert row["state"] is State.LIVE and row["epoch"] >= 1 and row["connection"] == 0
            assert 0 <= row["age"] < 1
        assert stats["dispatcher"]["frames"] == conn["frames"]

    run(scenario())


def test_client_stop_closes_sockets_and_leaves_every_token_stale() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=100) as server:
            client = MarketClient(server.url, **FAST)
            await client.subscribe(server.token_ids)
            stop = asyncio.Event()
            runner = asyncio.create_task(client.run(stop))
            await wait_until(all_in(client, server.token_ids, State.LIVE))
            stop.set()
            await runner
            assert states(client, server.token_ids) == [State.STALE] * 2
            await wait_until(lambda: all(conn.closed for conn in server.connections), what="server saw it")
            assert client.stats()["connections"][0]["state"] == "closed"

    run(scenario())


def test_client_context_exit_right_after_entry_stops_cleanly() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            client = MarketClient(server.url, **FAST)
            await client.subscribe(server.token_ids)
            async with client:
                pass
            async with client:  # and it can run again
                await wait_until(all_in(client, server.token_ids, State.LIVE))
            assert states(client, server.token_ids) == [State.STALE] * 2

    run(scenario())


def test_client_close_stops_run_from_another_task() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            client = MarketClient(server.url, **FAST)
            await client.subscribe(server.token_ids)
            runner = asyncio.create_task(client.run())
            await wait_until(all_in(client, server.token_ids, State.LIVE))
            await client.close()
            assert runner.done()

    run(scenario())


def test_client_close_when_not_running_leaves_the_next_run_alone() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            tokens = server.token_ids
            client = MarketClient(server.url, **FAST)
            await client.subscribe(tokens)
            await client.close()  # nothing runs: nothing to stop, now or later
            for _ in range(2):
                stop = asyncio.Event()
                runner = asyncio.create_task(client.run(stop))
                await wait_until(all_in(client, tokens, State.LIVE), what="books of this run")
                await client.close()
                assert runner.done()
                await client.close()  # again, once the run ended
            async with client:
                await wait_until(all_in(client, tokens, State.LIVE), what="books inside async with")
                await client.close()
            async with client:  # the exit after close() above stopped nothing more
                await wait_until(all_in(client, tokens, State.LIVE), what="books after async with")

    run(scenario())


def test_client_stop_feeds_no_frame_once_the_rows_went_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            tokens = server.token_ids
            stopped = False
            fed_after_stop: list[list[State]] = []

            def on_event(event: ClientEvent) -> None:
                nonlocal stopped
                stopped = stopped or (event.kind == "state" and event.data["cause"] == CAUSE_STOPPED)

            def on_frame(frame: str | bytes, recv_ns: int) -> None:
                if stopped:
                    fed_after_stop.append(states(client, tokens))

            client = MarketClient(server.url, on_event=on_event, on_frame=on_frame, **FAST)
            await client.subscribe(tokens)
            stop = asyncio.Event()
            runner = asyncio.create_task(client.run(stop))
            await wait_until(all_in(client, tokens, State.LIVE))
            real_close = client_module._Socket.close

            async def late_close(self: Any, *args: Any, **kwargs: Any) -> None:
                # the close frame is held back (e.g. by a send in progress) while books still arrive
                await server.send_raw(server.initial_dump(tokens))
                await asyncio.sleep(0.05)
                await real_close(self, *args, **kwargs)

            monkeypatch.setattr(client_module._Socket, "close", late_close)
            stop.set()
            await runner
            assert fed_after_stop == []
            assert states(client, tokens) == [State.STALE] * 2

    run(scenario())


class FailsOnceBackoff(ExponentialBackoff):
    """A backoff whose first ``next_delay`` raises, like a buggy user factory's."""

    failed = False

    def next_delay(self) -> float:
        if not self.failed:
            self.failed = True
            raise RuntimeError("bug in backoff")
        return super().next_delay()


@pytest.mark.parametrize("fault", ["connect", "backoff"])
def test_client_unexpected_error_in_a_connection_task_retries_until_live(
    fault: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_connect = client_module.connect
    attempts = 0

    def connect_fails_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("bug in connect")
        return real_connect(*args, **kwargs)

    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            tokens = server.token_ids
            options = FAST | {"backoff": functools.partial(FailsOnceBackoff, 0.02, 0.2)} if fault == "backoff" else FAST
            client = MarketClient(server.url, **options)
            await client.subscribe(tokens)
            async with client:
                if fault == "backoff":  # a disconnect asks the backoff for its first delay
                    await wait_until(all_in(client, tokens, State.LIVE), what="first books")
                    server.abort_all()
                    await wait_until(none_live(client, tokens), what="STALE")
                await wait_until(all_in(client, tokens, State.LIVE), what="books after the error")

    if fault == "connect":
        monkeypatch.setattr(client_module, "connect", connect_fails_once)
    with caplog.at_level(logging.ERROR, logger="pm_ws"):
        run(scenario())

    (error,) = [record for record in caplog.records if "unexpected error" in record.getMessage()]
    assert error.exc_info is not None and f"bug in {fault}" in str(error.exc_info[1])


def test_client_event_streams_are_released_when_the_run_ends() -> None:
    async def scenario() -> tuple[MarketClient, weakref.ref[Any]]:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            client = MarketClient(server.url, **FAST)
            stream = client.events()
            await client.subscribe(server.token_ids)
            async with client:
                await wait_until(all_in(client, server.token_ids, State.LIVE))
            assert [event.kind async for event in stream][0] == "connected"  # it ended
            return client, weakref.ref(stream)

    client, released = run(scenario())  # the client lives on, e.g. to run again later
    gc.collect()
    assert released() is None


def test_client_subscribe_while_the_subscription_is_being_sent_returns_after_its_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=0) as server:
            first, later = server.token_ids[:2], server.token_ids[2:]
            gate = asyncio.Event()
            sent: list[Any] = []

            class GatedSocket(client_module._Socket):
                async def send(self, message: Any, **kwargs: Any) -> None:
                    if not sent:
                        await gate.wait()  # holds the subscription frame: the connection is "subscribing"
                    sent.append(message)
                    await super().send(message, **kwargs)

            monkeypatch.setattr(client_module, "_Socket", GatedSocket)
            client = MarketClient(server.url, **FAST)
            await client.subscribe(first)
            async with client:
                await wait_until(lambda: client.stats()["connections"][0]["state"] == "subscribing")
                subscribing = asyncio.create_task(client.subscribe(later))
                await asyncio.sleep(0.02)
                assert not subscribing.done()  # its operation frame cannot be sent yet
                gate.set()
                await subscribing
                frames = [orjson.loads(frame) for frame in sent if frame != "PING"]
                assert [frame["assets_ids"] for frame in frames] == [first, later]
                assert frames[1]["operation"] == "subscribe"
                await wait_until(all_in(client, server.token_ids, State.LIVE))

    run(scenario())


@pytest.mark.parametrize("compression", [False, True])
def test_client_compression_is_negotiated_only_when_asked(compression: bool) -> None:
    async def scenario() -> str | None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            async with started(server, compression=compression):
                response = server.connections[0].websocket.response
                assert response is not None
                return response.headers.get("Sec-WebSocket-Extensions")

    extensions = run(scenario())
    assert (extensions is not None and "permessage-deflate" in extensions) is compression


def test_client_bug_in_the_writer_rebuilds_the_connection_instead_of_going_deaf() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=50) as server:
            first, later = server.token_ids[:2], server.token_ids[2:]
            async with started(server, tokens=first) as (client, guard):
                real = client._operation_frames
                calls = 0

                def fails_once(conn: Any) -> list[str]:
                    nonlocal calls
                    calls += 1
                    if calls == 1:
                        raise RuntimeError("bug")
                    return real(conn)

                client._operation_frames = fails_once  # type: ignore[method-assign]
                await client.subscribe(later)
                await wait_until(all_in(client, server.token_ids, State.LIVE), what="all live after rebuild")
                assert guard.disconnects == 1
                assert client.stats()["connections"][0]["aborts"] == 1

    run(scenario())


def test_client_subscribe_rejects_bad_ids_atomically() -> None:
    async def scenario() -> None:
        client = MarketClient("ws://127.0.0.1:9", **FAST)
        with pytest.raises(ValueError):
            await client.subscribe(["123", "not an id!"])
        assert "123" not in client.store
        with pytest.raises(TypeError):
            await client.subscribe("123")

    run(scenario())


def test_seed_surface_set_tokens_before_any_event_loop_works() -> None:
    server = FakeMarketServer(markets=1, rate_hz=0)
    market = server.markets[0]
    cache = BookStore(8)
    client = PolymarketMarketWsClient("ws://127.0.0.1:1", cache, ping_interval=0.1, ping_timeout=0.5)

    client.set_tokens(market.yes_id, market.no_id, market.condition_id)  # no loop running yet

    async def scenario() -> None:
        async with server:
            client.url = server.url
            stop = asyncio.Event()
            runner = asyncio.create_task(client.run(stop))
            await wait_until(all_in(client, [market.yes_id, market.no_id], State.LIVE))
            stop.set()
            await runner

    run(scenario())


def test_seed_surface_set_tokens_and_run_keep_the_cache_live() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=100) as server:
            (first, yes, no), (second, yes2, no2) = server.markets
            cache = BookStore(64)
            client = PolymarketMarketWsClient(server.url, cache, ping_interval=0.1, ping_timeout=0.5)
            client.set_tokens(yes, no, first)
            stop = asyncio.Event()
            runner = asyncio.create_task(client.run(stop))
            await wait_until(lambda: all(t in cache and cache.top(t).state is State.LIVE for t in (yes, no)))
            client.set_tokens(yes2, no2, second)
            pair = (yes2, no2)
            await wait_until(lambda: all(t in cache and cache.top(t).state is State.LIVE for t in pair))
            assert yes not in cache and no not in cache
            assert client.market_id == second
            server.abort_all()
            await wait_until(lambda: cache.top(yes2).state is not State.LIVE)
            await wait_until(lambda: cache.top(yes2).state is State.LIVE)
            stop.set()
            await runner

    run(scenario())


def test_client_on_frame_sees_every_frame_after_it_was_applied() -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=2, rate_hz=0) as server:
            yes = server.token_ids[0]
            seen: list[tuple[str | bytes, int, list[State], int]] = []

            def on_frame(frame: str | bytes, recv_ns: int) -> None:
                seen.append((frame, recv_ns, states(client, server.token_ids), client.store.top(yes).recv_ts_ns))

            client = MarketClient(server.url, on_frame=on_frame, **FAST)
            await client.subscribe(server.token_ids)
            async with client:
                await wait_until(all_in(client, server.token_ids, State.LIVE))
                await server.step(30)
                await server.send_malformed(3)
                await wait_until(lambda: len(seen) == server.connections[0].sent_frames, what="every frame")
                assert len(seen) == client.dispatcher.stats()["frames"] == client.stats()["connections"][0]["frames"]
        dump, recv_ns, at_call, row_recv_ns = seen[0]
        assert isinstance(dump, str) and dump.count('"event_type":"book"') == 4
        assert at_call == [State.LIVE] * 4  # the dump was applied before the callback ran
        assert recv_ns == row_recv_ns > 0  # with the receive time it was fed with
        assert sum(1 for frame, _, _, _ in seen if "mystery_event" in str(frame)) == 1  # rejected ones too

    run(scenario())


def _explode(*args: Any) -> None:
    raise RuntimeError("user bug")


@pytest.mark.parametrize(("option", "min_errors"), [("on_event", 2), ("on_frame", 21)])
def test_client_failing_user_callback_is_counted_and_the_reader_goes_on(option: str, min_errors: int) -> None:
    async def scenario() -> None:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            client = MarketClient(server.url, **{option: _explode}, **FAST)
            await client.subscribe(server.token_ids)
            async with client:
                await wait_until(all_in(client, server.token_ids, State.LIVE))
                await server.step(20)
                await wait_until(lambda: books_match(client, server, server.token_ids))
                assert client.stats()["callback_errors"] >= min_errors
                assert client.stats()["connections"][0]["reconnects"] == 0

    run(scenario())


def test_client_state_events_say_who_changed_the_row() -> None:
    async def scenario() -> list[tuple[str, str, str]]:
        async with FakeMarketServer(markets=1, rate_hz=0) as server:
            causes: list[tuple[str, str, str]] = []

            def on_event(event: ClientEvent) -> None:
                if event.kind == "state":
                    causes.append((event.data["state"].name, event.data["reason"], event.data["cause"]))

            yes = server.token_ids[0]
            store = BookStore(4)  # a LIVE row of a shared store is marked STALE on subscribe
            store.add(yes)
            Dispatcher(store).feed(server.initial_dump([yes]))
            client = MarketClient(server.url, store=store, on_event=on_event, **FAST)
            await client.subscribe(server.token_ids)
            async with client:
                await wait_until(lambda: ("LIVE", "snapshot", CAUSE_CORE) in causes, what="snapshot events")
                await server.close_all()
                await wait_until(none_live(client, server.token_ids))
                await wait_until(lambda: causes.count(("LIVE", "snapshot", CAUSE_CORE)) >= 4, what="books again")
        return causes

    causes = run(scenario())

    assert causes[0] == ("STALE", "subscribed", CAUSE_MARKED)
    assert ("LIVE", "snapshot", CAUSE_CORE) in causes
    assert ("STALE", "closed by the server or the network", CAUSE_MARKED) in causes
    assert causes[-2:] == [("STALE", "client stopped", CAUSE_STOPPED)] * 2
    assert {cause for _, _, cause in causes} == {CAUSE_MARKED, CAUSE_CORE, CAUSE_STOPPED}
