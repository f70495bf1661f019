"""ExchangeFollower against the fake exchange: discovery, new_market, market_resolved, re-listing, REST bootstrap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from pm_ws._http import HttpClient
from pm_ws.exchange import ExchangeFollower
from pm_ws.row import State
from pm_ws.testing import FakeMarketServer, FakeRestServer


def state(follower: ExchangeFollower, token: str) -> State:
    return State(follower.store.top(token).state)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@asynccontextmanager
async def exchange(
    markets: int = 6, *, all_order_books: bool = True, rate_hz: float = 0, **options: Any
) -> AsyncIterator[tuple[FakeMarketServer, FakeRestServer, ExchangeFollower]]:
    async with FakeMarketServer(markets=markets, seed=5, rate_hz=rate_hz, levels=4, trade_every=0) as ws:
        async with FakeRestServer(ws, all_order_books=all_order_books) as rest:
            settings: dict[str, Any] = {
                "gamma_url": rest.url, "clob_url": rest.url, "resolve_grace": 0.3, "subscribe_delay": 0.05,
                "capacity": 256, "connect_stagger": 0.0, "snapshot_timeout": 5.0,
                "http": HttpClient(timeout=2.0, backoff=0.01, rate=1000, burst=100),
            }  # fmt: skip
            follower = ExchangeFollower(ws.url, **{**settings, **options})
            async with follower:
                await asyncio.wait_for(follower.listed.wait(), 5)
                await ws.wait_subscribed(list(follower.client._owner), 5)  # announcements reach open sockets only
                yield ws, rest, follower


def all_live(follower: ExchangeFollower, tokens: list[str]) -> Callable[[], bool]:
    return lambda: all(token in follower.store and state(follower, token) is State.LIVE for token in tokens)


async def test_discovery_subscribes_every_order_book_market_and_all_go_live() -> None:
    async with exchange(9, all_order_books=False) as (ws, rest, follower):
        wanted = [t for i, m in enumerate(ws.markets) if (i + 1) % 3 for t in m[1:]]
        assert sorted(follower.client._owner) == sorted(wanted)
        await until(all_live(follower, wanted))
        assert follower.stats()["exchange"]["listings"] == 1


async def test_a_new_market_is_live_within_two_seconds_and_repeats_are_dropped() -> None:
    async with exchange() as (ws, rest, follower):
        started = time.monotonic()
        market = await ws.open_market(copies=5)
        await until(all_live(follower, list(market[1:])), 2.0)
        assert time.monotonic() - started < 2.0
        assert follower.stats()["exchange"]["announced"] == 1
        assert follower.client.dispatcher.stats()["skip_duplicate"] == 4


async def test_a_resolved_market_is_final_at_once_then_unsubscribed_and_its_slots_freed() -> None:
    async with exchange() as (ws, rest, follower):
        market = ws.markets[1]
        await until(all_live(follower, list(market[1:])))
        held = len(follower.store)
        await ws.resolve_market(market.condition_id, market.no_id)
        await until(lambda: state(follower, market.yes_id) is State.RESOLVED)
        store = follower.store
        assert (store.resolution(market.yes_id), store.resolution(market.no_id)) == (False, True)
        await ws.step(20)  # a book refresh or a delta must not revive a resolved row
        assert state(follower, market.no_id) is State.RESOLVED
        await until(lambda: market.yes_id not in store and market.no_id not in store, 3.0)
        assert len(store) == held - 2 and market.condition_id not in follower.markets


async def test_relisting_catches_lost_openings_and_resolutions() -> None:
    async with exchange(relist_interval=0.3) as (ws, rest, follower):
        opened = await ws.open_market(copies=0)
        gone = ws.markets[0]
        await ws.resolve_market(gone.condition_id, gone.yes_id, announce=False)
        await until(all_live(follower, list(opened[1:])), 3.0)
        await until(lambda: gone.condition_id not in follower.markets, 3.0)
        counters = follower.stats()["exchange"]
        assert counters["resolved_by_listing"] == 1 and counters["announced"] == 0


async def test_listing_survives_http_faults() -> None:
    async with FakeMarketServer(markets=4, seed=5, rate_hz=0) as ws, FakeRestServer(ws, all_order_books=True) as rest:
        rest.fail_next(2, 503)
        rest.fail_next(1, 429, retry_after=0.1)
        http = HttpClient(timeout=2.0, backoff=0.01, rate=1000, burst=100)
        follower = ExchangeFollower(ws.url, gamma_url=rest.url, clob_url=rest.url, http=http, capacity=64)
        async with follower:
            await asyncio.wait_for(follower.listed.wait(), 5)
            assert len(follower.markets) == 4
            assert follower.stats()["http"]["retries"] == 3


async def test_tokens_without_a_websocket_snapshot_go_live_through_the_rest_book() -> None:
    options = {"snapshot_timeout": 0.3, "bootstrap_after": 0.6}
    async with exchange(6, **options) as (ws, rest, follower):
        starved = [ws.markets[2].yes_id, ws.markets[2].no_id, ws.markets[4].yes_id]
        ws.withhold_snapshot(starved)
        # re-subscribing is the only way they could get a book: force them through it
        await follower.client.unsubscribe(starved)
        await follower.client.subscribe(starved)
        started = time.monotonic()
        while not all_live(follower, starved)():  # the deltas that confirm the REST books
            assert time.monotonic() - started < 10
            await ws.step(5)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # nothing in flight: the server's truth is what the client has seen
        for token in starved:
            assert follower.store.book(token, None) == ws.truth(token)
        boot = follower.stats()["bootstrap"]
        assert boot["books_loaded"] >= 3 and boot["errors"] == 0


async def test_deltas_during_a_slow_rest_request_are_merged() -> None:
    options = {"snapshot_timeout": 0.2, "bootstrap_after": 0.3}
    async with exchange(2, **options) as (ws, rest, follower):
        token = ws.markets[0].yes_id
        ws.withhold_snapshot([token])
        await follower.client.unsubscribe([token])
        await follower.client.subscribe([token])
        rest.set_delay(0.3)  # deltas while the request waits are in the snapshot (older): dropped
        rest.hold_books(0.3)  # deltas while the taken snapshot travels are newer: replayed
        await until(lambda: follower.stats()["bootstrap"]["in_flight"] == 1, 3.0)
        for _ in range(10):  # deltas before the REST snapshot is taken, and after it
            await ws.step(3)
            await asyncio.sleep(0.05)
        await until(lambda: follower.stats()["bootstrap"]["books_loaded"] == 1, 3.0)
        while state(follower, token) is not State.LIVE:
            await ws.step(1)
            await asyncio.sleep(0.01)
        assert follower.store.book(token, None) == ws.truth(token)
        boot = follower.stats()["bootstrap"]
        assert boot["replayed"] > 0 and boot["older_dropped"] > 0


async def test_a_token_handed_to_the_rest_bootstrap_does_not_rebuild_its_connection() -> None:
    # Its first re-drive found nothing; the REST book is asked before its second miss, which would abort the socket
    async with exchange(4, snapshot_timeout=1.0, bootstrap_after=1.2) as (ws, rest, follower):
        token = ws.markets[1].yes_id
        ws.withhold_snapshot([token])
        await follower.client.unsubscribe([token])
        await follower.client.subscribe([token])
        started = time.monotonic()
        await until(lambda: follower.stats()["bootstrap"]["books_loaded"] == 1, 3.0)
        await asyncio.sleep(started + 2.5 - time.monotonic())  # past the second miss, still UNCONFIRMED
        assert state(follower, token) is State.UNCONFIRMED
        while state(follower, token) is not State.LIVE:
            await ws.step(2)
            await asyncio.sleep(0.02)
        connections = follower.stats()["connections"]
        assert [(c["aborts"], c["reconnects"], c["awaiting_snapshot"]) for c in connections] == [(0, 0, 0)]
        assert follower.stats()["bootstrap"]["books_loaded"] == 1


async def test_missing_books_stops_awaiting_a_rest_loaded_or_resolved_token() -> None:
    from pm_ws._watchdogs import missing_books

    async with exchange(4, bootstrap_after=None) as (ws, rest, follower):
        shard = follower.client._shards[0]
        loaded, resolved = ws.markets[2].yes_id, ws.markets[3].yes_id
        ws.withhold_snapshot([loaded, resolved])
        await follower.client.unsubscribe([loaded, resolved])
        await follower.client.subscribe([loaded, resolved])
        await until(lambda: {loaded, resolved} <= set(shard.awaiting))
        follower.store.load_book(loaded, [(4000, 1_000_000)], [(6000, 1_000_000)], 100, 1, 1)
        follower.store.resolve(resolved, True)
        missing_books(shard, time.monotonic_ns() + 10**12)  # far past every deadline
        assert loaded not in shard.awaiting and resolved not in shard.awaiting
        assert shard.aborts == 0 and shard.redrives == 0
