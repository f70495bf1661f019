"""MarketClient under real faults of the loopback FakeMarketServer: disconnects, silence, missing books, resyncs.

Each test logs what it measured (logger ``pm_ws.tests.faults``): the figures of the README's fault matrix.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

import orjson
import pytest

import pm_ws._shard as shard_module
import pm_ws._watchdogs as watchdogs_module
import pm_ws.client as client_module
from client_helpers import (
    FAST,
    TEST_DEADLINE,
    all_in,
    books_match,
    figures,
    frames_of,
    none_live,
    serving,
    socket_down,
    started,
    states,
    wait_until,
)
from pm_ws.backoff import ExponentialBackoff
from pm_ws.client import ClientEvent, MarketClient
from pm_ws.row import RECV_TS_NS, TICK, State
from pm_ws.testing import FakeMarketServer

pytestmark = pytest.mark.usefixtures("transport")  # every test over websockets, then picows


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


async def test_client_fault_clean_close_marks_stale_then_recovers() -> None:
    async with serving(markets=2, rate_hz=0) as server:
        async with started(server) as (client, guard):
            await measure_disconnect(server, client, lambda: server.close_all(1011, "test"), "close 1011")
            assert guard.disconnects == 1
            assert client.stats()["connections"][0]["reconnects"] == 1


async def test_client_fault_tcp_abort_marks_stale_then_recovers() -> None:
    async with serving(markets=2, rate_hz=0) as server:
        async with started(server) as (client, guard):
            await measure_disconnect(server, client, server.abort_all, "TCP abort")
            assert guard.disconnects == 1


async def test_client_fault_burst_is_absorbed_and_books_stay_exact() -> None:
    async with serving(markets=2, rate_hz=0) as server:
        async with started(server) as (client, guard):
            start = time.perf_counter()
            await server.burst(3000)
            await wait_until(lambda: books_match(client, server, server.token_ids), what="books = truth")
            took = time.perf_counter() - start
            assert states(client, server.token_ids) == [State.LIVE] * 4
            assert guard.disconnects == 0
            assert client.stats()["dispatcher"]["ev_price_change"] == 3000
            figures.info("fault burst: 3000 price_change frames, books exact after %.0f ms", took * 1e3)


async def test_client_fault_stale_rows_bump_epoch_and_fresh_book_bumps_it_again() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        token = server.token_ids[0]
        async with started(server) as (client, _):
            live_epoch = client.store.top(token).epoch
            server.abort_all()
            await wait_until(none_live(client, [token]))
            stale_epoch = client.store.top(token).epoch
            await wait_until(all_in(client, [token], State.LIVE))
            assert live_epoch < stale_epoch < client.store.top(token).epoch


async def test_client_fault_half_open_server_is_aborted_after_inbound_timeout() -> None:
    async with serving(markets=2, rate_hz=50) as server:
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


class SteppedWallClock:
    """``time`` for the client's modules with a wall clock that an NTP step can move (monotonic untouched).

    No loopback server can step the machine's clock, so the modules that read it get a stand-in.
    """

    def __init__(self) -> None:
        self.offset_ns = 0
        self.monotonic_ns = time.monotonic_ns

    def time_ns(self) -> int:
        return time.time_ns() + self.offset_ns


async def test_client_wall_clock_steps_neither_fire_nor_freeze_the_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    # A forward step must not abort a healthy socket; a backward step must not hide a half-open one
    clock = SteppedWallClock()
    for module in (client_module, shard_module, watchdogs_module):  # stats, the reader, the watchdogs
        monkeypatch.setattr(module, "time", clock)
    hour_ns = 3600 * 10**9

    # No data, only PONGs: every watchdog tick compares against the last PONG's stamp
    async with serving(markets=2, rate_hz=0) as server:
        async with started(server, inbound_timeout=0.4, confirm_interval=5.0) as (client, guard):
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


async def test_client_fault_data_stall_with_pongs_probes_then_stale_then_rebuilds() -> None:
    # Without data no row is confirmed: each is probed at confirm_interval, STALE when the probe brings
    # no book within snapshot_timeout, re-driven, and the connection rebuilt when that brings none either
    async with serving(markets=2, rate_hz=100) as server:
        async with started(server, confirm_interval=0.4, snapshot_timeout=0.3) as (client, _):
            tokens = server.token_ids
            start = time.perf_counter()
            server.set_data_stalled(True)
            detected = await wait_until(none_live(client, tokens), what="STALE after an unanswered probe")
            await wait_until(lambda: len(server.connections) == 2, what="rebuild")
            rebuilt = time.perf_counter() - start
            server.set_data_stalled(False)
            recovered = await wait_until(all_in(client, tokens, State.LIVE), what="LIVE again")
            await wait_until(lambda: books_match(client, server, tokens), what="books = truth")
            probes = client.stats()["connections"][0]["probes"]
            sent = [frame for frame in frames_of(server, 1) if frame != "PING"]
            figures.info(
                "fault data stall (PONG flowing): STALE after %.1f ms (probe unanswered), "
                "rebuilt after %.1f ms, LIVE %.1f ms after data resumed",
                detected * 1e3,
                rebuilt * 1e3,
                recovered * 1e3,
            )
            assert 0.5 <= detected <= 0.9  # confirm_interval + snapshot_timeout, acting 2 ticks early
            assert detected + 0.25 <= rebuilt <= 1.6
            assert probes >= len(tokens)

    # probe and re-drive happened on the first socket before it was rebuilt: unsubscribe, then subscribe
    operations = [(frame["operation"], set(frame["assets_ids"])) for frame in sent[1:]]
    assert operations.count(("unsubscribe", set(tokens))) >= 2, operations  # the probe, then the re-drive
    assert operations[0] == ("unsubscribe", set(tokens)) and operations[1] == ("subscribe", set(tokens))


async def test_client_fault_withheld_snapshot_is_redriven_without_disturbing_the_others() -> None:
    async with serving(markets=2, rate_hz=50) as server:
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


async def test_client_fault_snapshot_still_missing_after_redrive_rebuilds_once() -> None:
    async with serving(markets=2, rate_hz=20) as server:
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


async def test_client_fault_checksum_mismatch_resyncs_the_token() -> None:
    async with serving(markets=1, rate_hz=0) as server:
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


async def test_client_fault_crossed_book_resyncs_the_token() -> None:
    async with serving(markets=1, rate_hz=0) as server:
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


async def test_client_fault_repeated_resyncs_of_one_token_are_spaced_by_the_gap() -> None:
    async with serving(markets=1, rate_hz=0) as server:
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

    gaps = [later - earlier for earlier, later in zip(redriven, redriven[1:])]
    assert all(gap >= 0.2 for gap in gaps), gaps


async def test_client_fault_tick_size_change_goes_stale_then_live_on_new_grid() -> None:
    async with serving(markets=1, rate_hz=0, tick="0.01") as server:
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


async def test_client_fault_malformed_frames_change_nothing() -> None:
    async with serving(markets=2, rate_hz=0) as server:
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
            counters = client.stats()["dispatcher"]

    rejected = {key: value for key, value in counters.items() if key.startswith("rej_") and value}
    assert sum(rejected.values()) >= 11, rejected  # per event: an array of 5 non-objects counts 5
    assert rejected["rej_oversized"] == 1  # the socket takes 32 MiB, the dispatcher rejects > 16 MiB
    assert counters["checksum_mismatch"] == counters["resync_queued"] == 0


async def test_client_fault_accept_then_close_backs_off_without_hot_loop() -> None:
    async with serving(markets=1, rate_hz=0) as server:
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


async def test_client_fault_backoff_resets_only_after_a_snapshot() -> None:
    backoffs: list[ExponentialBackoff] = []

    def factory() -> ExponentialBackoff:
        backoffs.append(ExponentialBackoff(0.02, 0.2))
        return backoffs[-1]

    async with serving(markets=1, rate_hz=0) as server:
        async with started(server, backoff=factory) as (client, _):
            server.reject_connections(True)
            await server.close_all()
            await wait_until(lambda: backoffs[0].attempts >= 3, what="attempts pile up")
            server.reject_connections(False)
            await wait_until(all_in(client, server.token_ids, State.LIVE), what="LIVE")
            await wait_until(lambda: backoffs[0].attempts == 0, what="reset after the snapshot")
    assert len(backoffs) == 1


async def test_client_fault_server_down_then_back_on_the_same_port() -> None:
    async with asyncio.timeout(TEST_DEADLINE):
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


async def test_client_disconnected_event_sees_every_token_already_stale() -> None:
    async with serving(markets=2, rate_hz=100) as server:
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


@pytest.mark.parametrize("fault", ["close", "abort"])
async def test_client_tokens_are_stale_as_soon_as_the_socket_knows_it_is_down(fault: str) -> None:
    async with serving(markets=2, rate_hz=200) as server:
        async with started(server) as (client, _):
            ws = client._shards[0].socket  # its state flips inside loop callbacks
            assert ws is not None
            seen = 0

            async def spin() -> None:
                nonlocal seen
                while True:  # a busy user task that runs between any two callbacks
                    if socket_down(ws):
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
    assert seen > 0  # the spinner did run while the socket was down
