"""MarketClient's sharding: tokens spread over connections, market pairs kept together, thousands of tokens."""

from __future__ import annotations

import asyncio
import time

from client_helpers import (
    FAST,
    all_in,
    assert_subscription_first,
    books_match,
    figures,
    frames_of,
    serving,
    started,
    wait_until,
)
from pm_ws.client import ClientEvent, MarketClient
from pm_ws.row import State


async def test_client_shards_tokens_over_connections() -> None:
    async with serving(markets=5, rate_hz=50) as server:
        tokens = server.token_ids
        async with started(server, max_tokens_per_connection=4, connect_stagger=0.05) as (client, _):
            conns = client.stats()["connections"]
            assert [c["tokens"] for c in conns] == [4, 4, 2]
            assert sorted(len(c.subscribed) for c in server.connections) == [2, 4, 4]
            await server.step(40)
            await wait_until(lambda: books_match(client, server, tokens), what="books = truth")

    assert len(server.connections) == 3


async def test_client_connect_stagger_spaces_connection_attempts() -> None:
    async with serving(markets=3, rate_hz=0) as server:
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


async def test_client_unsubscribe_and_subscribe_move_tokens_without_disturbing_others() -> None:
    async with serving(markets=4, rate_hz=50) as server:
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


async def test_client_unsubscribe_then_subscribe_again_at_once_gets_a_fresh_book() -> None:
    async with serving(markets=2, rate_hz=50) as server:
        async with started(server, snapshot_timeout=2.0) as (client, _):
            token = server.token_ids[0]
            client._remove_tokens([token])  # both before the writer runs: no frame in between
            await client.subscribe([token])
            # well before snapshot_timeout: the book comes from the re-drive, not from the watchdog
            await wait_until(all_in(client, [token], State.LIVE), timeout=0.5, what="fresh book")
            await wait_until(lambda: books_match(client, server, server.token_ids), what="books = truth")


async def test_client_sharding_fills_connections_in_subscription_order() -> None:
    # Pairs may be split (each token has one owner): connections fill up to max_tokens_per_connection
    async with serving(markets=5, rate_hz=400) as server:
        async with started(server, max_tokens_per_connection=3) as (client, _):
            await asyncio.sleep(0.5)
            stats = client.stats()
    conn_of = [stats["tokens"][token]["connection"] for token in server.token_ids]
    assert [c["tokens"] for c in stats["connections"]] == [3, 3, 3, 1]
    assert conn_of == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert stats["dispatcher"]["checksum_mismatch"] == stats["dispatcher"]["crossed_book"] == 0


async def test_client_two_thousand_tokens_all_live_on_ten_connections() -> None:
    async with serving(markets=1000, rate_hz=200, levels=5) as server:
        tokens = server.token_ids
        client = MarketClient(server.url, **(FAST | {"connect_stagger": 0.02, "snapshot_timeout": 3.0,
                                                      "inbound_timeout": 3.0, "confirm_interval": 10.0}))
        await client.subscribe(tokens)
        async with client:
            took = await wait_until(all_in(client, tokens, State.LIVE), timeout=8.0, what="2000 live")
            stats = client.stats()
            assert [c["tokens"] for c in stats["connections"]] == [200] * 10
            assert sum(c["redrives"] for c in stats["connections"]) == 0
            figures.info("2000 tokens on 10 connections: all LIVE after %.0f ms", took * 1e3)
        assert_subscription_first(server)


async def test_client_stats_without_tokens_and_one_ticking_task_for_all_connections() -> None:
    # stats(tokens=False) costs per connection, not per token; the watchdogs of every connection run
    # in the client's one ticking task (a task per connection would wake the loop once per connection)
    async with serving(markets=20, rate_hz=50) as server:
        async with started(server, max_tokens_per_connection=4, connect_stagger=0.0) as (client, _):
            await wait_until(all_in(client, server.token_ids, State.LIVE), what="all live")
            brief = client.stats(tokens=False)
            assert brief["tokens"] is None and len(brief["connections"]) == 10
            full = client.stats()
            assert list(full["tokens"]) == server.token_ids
            assert all(row["state"] is State.LIVE for row in full["tokens"].values())
            names = [task.get_name() for task in asyncio.all_tasks()]
            assert sum(name.startswith("pm_ws.connection.") for name in names) == 10
            assert not any(name.startswith("pm_ws.watchdog") for name in names)
