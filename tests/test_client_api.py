"""MarketClient's public surface: events, stats, run and close, callbacks, the seed's PolymarketMarketWsClient."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import weakref
from typing import Any

import orjson
import pytest

import pm_ws._transport as transport_module
from client_helpers import FAST, TEST_DEADLINE, all_in, books_match, none_live, serving, started, states, wait_until
from pm_ws import BookStore, Dispatcher
from pm_ws.backoff import ExponentialBackoff
from pm_ws.client import CAUSE_CORE, CAUSE_MARKED, CAUSE_STOPPED, ClientEvent, MarketClient, PolymarketMarketWsClient
from pm_ws.row import State
from pm_ws.testing import FakeMarketServer


async def test_client_events_iterator_yields_state_trade_and_connection_events() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, **FAST)
        stream = client.events()
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(all_in(client, server.token_ids, State.LIVE))
            await server.trade(server.token_ids[0])
            await asyncio.sleep(0.05)
        events = [event async for event in stream]  # the iteration ends once run() returned

    kinds = [event.kind for event in events]
    assert kinds[0] == "connected"
    assert kinds.count("state") >= 4  # 2 x LIVE on the snapshot, 2 x STALE when the client stopped
    trade = next(event for event in events if event.kind == "trade")
    assert set(trade.data) == {"asset_id", "price", "size", "side", "timestamp"}
    assert trade.token_id == trade.data["asset_id"]


async def test_client_slow_event_consumer_loses_oldest_events_never_blocks_the_reader() -> None:
    async with serving(markets=1, rate_hz=0, trade_every=1) as server:
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


async def test_client_stats_report_connections_and_tokens() -> None:
    async with serving(markets=1, rate_hz=100) as server:
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


async def test_client_stop_closes_sockets_and_leaves_every_token_stale() -> None:
    async with serving(markets=1, rate_hz=100) as server:
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


async def test_client_context_exit_right_after_entry_stops_cleanly() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, **FAST)
        await client.subscribe(server.token_ids)
        async with client:
            pass
        async with client:  # and it can run again
            await wait_until(all_in(client, server.token_ids, State.LIVE))
        assert states(client, server.token_ids) == [State.STALE] * 2


async def test_client_close_stops_run_from_another_task() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, **FAST)
        await client.subscribe(server.token_ids)
        runner = asyncio.create_task(client.run())
        await wait_until(all_in(client, server.token_ids, State.LIVE))
        await client.close()
        assert runner.done()


async def test_client_close_when_not_running_leaves_the_next_run_alone() -> None:
    async with serving(markets=1, rate_hz=0) as server:
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


async def test_client_stop_feeds_no_frame_once_the_rows_went_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(markets=1, rate_hz=0) as server:
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
        real_close = transport_module.WebsocketsSocket.close

        async def late_close(self: Any, *args: Any, **kwargs: Any) -> None:
            # the close frame is held back (e.g. by a send in progress) while books still arrive
            await server.send_raw(server.initial_dump(tokens))
            await asyncio.sleep(0.05)
            await real_close(self, *args, **kwargs)

        monkeypatch.setattr(transport_module.WebsocketsSocket, "close", late_close)
        stop.set()
        await runner
        assert fed_after_stop == []
        assert states(client, tokens) == [State.STALE] * 2


class FailsOnceBackoff(ExponentialBackoff):
    """A backoff whose first ``next_delay`` raises, like a buggy user factory's."""

    failed = False

    def next_delay(self) -> float:
        if not self.failed:
            self.failed = True
            raise RuntimeError("bug in backoff")
        return super().next_delay()


@pytest.mark.parametrize("fault", ["connect", "backoff"])
async def test_client_unexpected_error_in_a_connection_task_retries_until_live(
    fault: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_connect = transport_module.connect
    attempts = 0

    def connect_fails_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("bug in connect")
        return real_connect(*args, **kwargs)

    if fault == "connect":
        monkeypatch.setattr(transport_module, "connect", connect_fails_once)
    with caplog.at_level(logging.ERROR, logger="pm_ws"):
        async with serving(markets=1, rate_hz=0) as server:
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

    (error,) = [record for record in caplog.records if "unexpected error" in record.getMessage()]
    assert error.exc_info is not None and f"bug in {fault}" in str(error.exc_info[1])


async def test_client_event_streams_are_released_when_the_run_ends() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, **FAST)
        stream = client.events()
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(all_in(client, server.token_ids, State.LIVE))
        assert [event.kind async for event in stream][0] == "connected"  # it ended
    released = weakref.ref(stream)
    del stream  # the client lives on, e.g. to run again later
    gc.collect()
    assert released() is None


async def test_client_subscribe_while_the_subscription_is_being_sent_returns_after_its_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(markets=2, rate_hz=0) as server:
        first, later = server.token_ids[:2], server.token_ids[2:]
        gate = asyncio.Event()
        sent: list[Any] = []

        class GatedSocket(transport_module.WebsocketsSocket):
            async def send(self, message: Any, **kwargs: Any) -> None:
                if not sent:
                    await gate.wait()  # holds the subscription frame: the connection is "subscribing"
                sent.append(message)
                await super().send(message, **kwargs)

        monkeypatch.setattr(transport_module, "WebsocketsSocket", GatedSocket)
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


@pytest.mark.parametrize("compression", [False, True])
async def test_client_compression_is_negotiated_only_when_asked(compression: bool) -> None:
    async with serving(markets=1, rate_hz=0) as server:
        async with started(server, compression=compression):
            response = server.connections[0].websocket.response
            assert response is not None
            extensions = response.headers.get("Sec-WebSocket-Extensions")

    assert (extensions is not None and "permessage-deflate" in extensions) is compression


async def test_client_bug_in_the_writer_rebuilds_the_connection_instead_of_going_deaf() -> None:
    async with serving(markets=2, rate_hz=50) as server:
        first, later = server.token_ids[:2], server.token_ids[2:]
        async with started(server, tokens=first) as (client, guard):
            shard = client._shards[0]
            real = shard.operation_frames
            calls = 0

            def fails_once() -> list[str]:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RuntimeError("bug")
                return real()

            shard.operation_frames = fails_once  # type: ignore[method-assign]
            await client.subscribe(later)
            await wait_until(all_in(client, server.token_ids, State.LIVE), what="all live after rebuild")
            assert guard.disconnects == 1
            assert client.stats()["connections"][0]["aborts"] == 1


async def test_client_subscribe_rejects_bad_ids_atomically() -> None:
    client = MarketClient("ws://127.0.0.1:9", **FAST)
    with pytest.raises(ValueError):
        await client.subscribe(["123", "not an id!"])
    assert "123" not in client.store
    with pytest.raises(TypeError):
        await client.subscribe("123")


def test_seed_surface_set_tokens_before_any_event_loop_works() -> None:
    server = FakeMarketServer(markets=1, rate_hz=0)
    market = server.markets[0]
    cache = BookStore(8)
    client = PolymarketMarketWsClient("ws://127.0.0.1:1", cache, ping_interval=0.1, ping_timeout=0.5)

    client.set_tokens(market.yes_id, market.no_id, market.condition_id)  # no loop running yet

    async def scenario() -> None:  # a sync test: no loop may run before set_tokens
        async with server:
            client.url = server.url
            stop = asyncio.Event()
            runner = asyncio.create_task(client.run(stop))
            await wait_until(all_in(client, [market.yes_id, market.no_id], State.LIVE))
            stop.set()
            await runner

    asyncio.run(asyncio.wait_for(scenario(), TEST_DEADLINE))


async def test_seed_surface_set_tokens_and_run_keep_the_cache_live() -> None:
    async with serving(markets=2, rate_hz=100) as server:
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


async def test_client_on_frame_sees_every_frame_after_it_was_applied() -> None:
    async with serving(markets=2, rate_hz=0) as server:
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


def _explode(*args: Any) -> None:
    raise RuntimeError("user bug")


@pytest.mark.parametrize(("option", "min_errors"), [("on_event", 2), ("on_frame", 21)])
async def test_client_failing_user_callback_is_counted_and_the_reader_goes_on(option: str, min_errors: int) -> None:
    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, **{option: _explode}, **FAST)
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(all_in(client, server.token_ids, State.LIVE))
            await server.step(20)
            await wait_until(lambda: books_match(client, server, server.token_ids))
            assert client.stats()["callback_errors"] >= min_errors
            assert client.stats()["connections"][0]["reconnects"] == 0


async def test_client_state_events_say_who_changed_the_row() -> None:
    async with serving(markets=1, rate_hz=0) as server:
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

    assert causes[0] == ("STALE", "subscribed", CAUSE_MARKED)
    assert ("LIVE", "snapshot", CAUSE_CORE) in causes
    assert ("STALE", "closed by the server or the network", CAUSE_MARKED) in causes
    assert causes[-2:] == [("STALE", "client stopped", CAUSE_STOPPED)] * 2
    assert {cause for _, _, cause in causes} == {CAUSE_MARKED, CAUSE_CORE, CAUSE_STOPPED}
