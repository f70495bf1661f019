"""MarketClient against misuse and hostile peers: user callbacks that raise anything, re-entry,
parameters it cannot run, a peer that stops reading, and the smaller promises of the public surface."""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
import time
from typing import Any

import pytest

from client_helpers import FAST, all_in, asyncio_transport, books_match, figures, serving, started, states, wait_until
from pm_ws.backoff import ExponentialBackoff
from pm_ws.client import ClientEvent, MarketClient
from pm_ws.row import State

# ------------------------------------------------------------------ user callbacks raising BaseException


@pytest.mark.usefixtures("transport")  # over websockets, then picows
@pytest.mark.parametrize("option", ["on_event", "on_frame"])
async def test_client_callback_raising_cancelled_error_is_contained_and_the_connection_goes_on(option: str) -> None:
    raised = 0

    def cancel_once(*args: Any) -> None:
        nonlocal raised
        if not raised:
            raised += 1
            raise asyncio.CancelledError("raised by the user's callback")

    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, **{option: cancel_once}, **FAST)
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(all_in(client, server.token_ids, State.LIVE))
            await server.step(20)
            await wait_until(lambda: books_match(client, server, server.token_ids))
            stats = client.stats()
            assert raised == 1 and stats["callback_errors"] == 1
            assert stats["connections"][0]["reconnects"] == 0 and stats["connections"][0]["state"] == "open"


@pytest.mark.usefixtures("transport")  # over websockets, then picows
async def test_client_on_event_raising_on_disconnect_neither_kills_the_connection_nor_hangs_close() -> None:
    def on_event(event: ClientEvent) -> None:
        if event.kind == "disconnected":
            raise asyncio.CancelledError("raised by the user's callback")

    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, on_event=on_event, **FAST)
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(all_in(client, server.token_ids, State.LIVE))
            server.abort_all()
            await wait_until(lambda: client.stats()["callback_errors"] == 1, what="the failing disconnect event")
            await wait_until(all_in(client, server.token_ids, State.LIVE), what="the reconnect")
            async with asyncio.timeout(2):
                await client.close()  # a second disconnected event raises too
        assert client.stats()["callback_errors"] == 2


# ------------------------------------------------------------------ re-entry


async def test_client_nested_async_with_is_refused_and_the_running_client_goes_on() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        async with started(server) as (client, _):
            with pytest.raises(RuntimeError, match="already running"):
                async with client:
                    pytest.fail("the body of a refused `async with` ran")
            await asyncio.sleep(0.05)
            assert states(client, server.token_ids) == [State.LIVE] * 2
            await server.step(5)
            await wait_until(lambda: books_match(client, server, server.token_ids))
        assert states(client, server.token_ids) == [State.STALE] * 2


async def test_client_async_with_while_run_runs_elsewhere_is_refused_and_leaves_that_run_alone() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, **FAST)
        await client.subscribe(server.token_ids)
        runner = asyncio.create_task(client.run())
        await wait_until(all_in(client, server.token_ids, State.LIVE))
        with pytest.raises(RuntimeError, match="already running"):
            async with client:
                pytest.fail("the body of a refused `async with` ran")
        await asyncio.sleep(0.05)
        assert not runner.done() and states(client, server.token_ids) == [State.LIVE] * 2
        await client.close()
        assert runner.done() and runner.exception() is None


# ------------------------------------------------------------------ a peer that stops reading


@pytest.mark.usefixtures("transport")  # over websockets, then picows
async def test_client_peer_that_stops_reading_costs_the_socket_after_write_timeout_and_subscribe_never_hangs() -> None:
    write_timeout = 0.5
    ids = iter(range(10**6))
    async with serving(markets=1, rate_hz=50) as server:  # data keeps flowing: only the write side is stuck
        client = MarketClient(
            server.url,
            capacity=200_000,
            max_tokens_per_connection=200_000,
            **(FAST | {"snapshot_timeout": 30.0, "inbound_timeout": 5.0, "write_timeout": write_timeout}),
        )
        reasons: list[str] = []
        client._events.on_event = lambda event: event.kind == "disconnected" and reasons.append(event.data["reason"])
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(all_in(client, server.token_ids, State.LIVE))
            # Small buffers on the client's end too: the fault shows after ~100 KiB instead of ~4 MiB
            sock = asyncio_transport(client._shards[0].socket).get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            server.stop_reading()
            start = time.perf_counter()
            longest = 0.0
            while client.stats()["connections"][0]["aborts"] == 0:
                assert time.perf_counter() - start < 8, "no abort after 8 s of a peer that stopped reading"
                batch = [f"{next(ids):0100d}" for _ in range(500)]  # ~50 KB subscribe frames
                began = time.perf_counter()
                await client.subscribe(batch)
                longest = max(longest, time.perf_counter() - began)
            aborted = time.perf_counter() - start
            assert longest <= write_timeout + 0.2
            assert reasons and "write_timeout" in reasons[0]
            server.stop_reading(False)
            await wait_until(all_in(client, server.token_ids, State.LIVE), what="the reconnect")
            assert client.stats()["connections"][0]["reconnects"] >= 1
        figures.info("peer stopped reading: socket aborted %.2fs later; longest subscribe() %.3fs", aborted, longest)


# ------------------------------------------------------------------ parameters the client cannot run


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"inbound_timeout": math.inf}, ValueError),
        ({"snapshot_timeout": math.nan}, ValueError),
        ({"snapshot_timeout": None}, TypeError),
        ({"write_timeout": 0}, ValueError),
        ({"ping_interval": 1e-9}, ValueError),
        ({"ping_interval": math.inf}, ValueError),
        ({"max_frame_bytes": 0}, ValueError),
        ({"max_frame_bytes": -1}, ValueError),
        ({"max_frame_bytes": 1.5}, TypeError),
        ({"max_tokens_per_connection": 0}, ValueError),
        ({"connect_stagger": -1}, ValueError),
        ({"connect_stagger": math.inf}, ValueError),
        ({"backoff": 3}, TypeError),
        ({"url": ""}, ValueError),
        ({"url": "http://127.0.0.1:1"}, ValueError),
        ({"url": "ws://127.0.0.1:99999"}, ValueError),
        ({"url": "ws:///market"}, ValueError),
        ({"url": b"ws://127.0.0.1:1"}, TypeError),
        ({"url": "ws://127.0.0.1:1", "ssl": ssl.create_default_context()}, ValueError),
    ],
)
def test_client_refuses_at_construction_what_it_cannot_run(options: dict[str, Any], error: type[Exception]) -> None:
    settings = {"url": "ws://127.0.0.1:1"} | options
    with pytest.raises(error):
        MarketClient(**settings)


async def test_client_inf_or_none_switches_a_watchdog_off() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        for off in (None, math.inf):
            async with started(server, confirm_interval=off, write_timeout=off) as (client, _):
                await asyncio.sleep(1.0)  # FAST's confirm_interval is 0.6 s: the quiet market would be probed
                stats = client.stats()["connections"][0]
                assert stats["probes"] == 0 and stats["redrives"] == 0
                assert stats["aborts"] == 0 and stats["reconnects"] == 0


async def test_client_takes_one_backoff_instance_and_copies_it_per_connection() -> None:
    shared = ExponentialBackoff(0.02, 0.2)
    async with serving(markets=2, rate_hz=0) as server:
        options = FAST | {"backoff": shared, "max_tokens_per_connection": 2}
        async with started(server, **options) as (client, _):
            backoffs = [shard.backoff for shard in client._shards]
            assert len(backoffs) == 2 and shared not in backoffs and backoffs[0] is not backoffs[1]
            assert all(b.min_seconds == 0.02 and b.max_seconds == 0.2 for b in backoffs)
            server.abort_all()
            await wait_until(all_in(client, server.token_ids, State.LIVE), what="the reconnect")


# ------------------------------------------------------------------ smaller promises


@pytest.mark.parametrize("bad", [[None], [123], ["1", 2.0], "12", b"12"])
async def test_client_subscribe_and_unsubscribe_take_only_collections_of_string_ids(bad: Any) -> None:
    client = MarketClient("ws://127.0.0.1:1", **FAST)
    for call in (client.subscribe, client.unsubscribe):
        with pytest.raises(TypeError):
            await call(bad)
    assert len(client.store) == 0


async def test_client_events_opened_after_run_returned_end_at_once_and_dropped_events_stay_counted() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, **FAST)
        lagging = client.events(maxsize=1)
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(all_in(client, server.token_ids, State.LIVE))
            await wait_until(lambda: lagging.dropped > 0)
            dropped = client.stats()["events_dropped"]
        assert client.stats()["events_dropped"] >= dropped > 0
        late = client.events()
        async with asyncio.timeout(1):
            assert [event async for event in late] == []


@pytest.mark.usefixtures("transport")  # over websockets, then picows
async def test_client_never_logs_the_credentials_of_its_url(caplog: pytest.LogCaptureFixture) -> None:
    async with serving(markets=1, rate_hz=0) as server:
        address = server.url.removeprefix("ws://")
        url = f"ws://trader:s3cret@{address}"
        client = MarketClient(url, **FAST)
        await client.subscribe(server.token_ids)
        with caplog.at_level("DEBUG", logger="pm_ws"):
            async with client:
                await wait_until(all_in(client, server.token_ids, State.LIVE))
                await server.stop()  # connect attempts now fail and are logged with the url
                await wait_until(lambda: "failed" in caplog.text, what="a failed connect")
        assert address in caplog.text
        assert "s3cret" not in caplog.text and "trader" not in caplog.text


@pytest.mark.usefixtures("transport")  # over websockets, then picows
@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy"])  # the one websockets reads for ws://
async def test_client_ignores_proxy_variables_unless_asked(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with serving(markets=1, rate_hz=0) as server:
        async with started(server):
            pass  # connected directly
        client = MarketClient(server.url, proxy=True, **FAST)
        await client.subscribe(server.token_ids)
        async with client:
            await asyncio.sleep(0.3)
            assert client.stats()["connections"][0]["state"] != "open" and not server.connections[1:]
