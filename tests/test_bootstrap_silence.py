"""A REST book against a silent stream: the server stops sending market data on an open socket (PONGs still
answered) and drops the deltas meanwhile. A REST book has only best prices to be confirmed by, and the deltas
lost lay below them: a row whose book came from REST must never read LIVE with a book the server left.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from test_exchange_follow import exchange, state, until

from pm_ws.exchange import ExchangeFollower
from pm_ws.row import State
from pm_ws.testing import FakeMarket, FakeMarketServer, FakeRestServer

pytest.importorskip("aiohttp")

CONFIRM_INTERVAL = 0.5  # a silence is a data gap longer than this
SILENCE = 1.0  # seconds the server drops every frame but PONG
# A long snapshot_timeout: the probes the silence causes are not answered in time, and no row may go STALE for
# it (nor the socket be rebuilt), so only the rule under test can keep a REST book from the confirming delta
OPTIONS: dict[str, Any] = {
    "confirm_interval": CONFIRM_INTERVAL, "snapshot_timeout": 5.0, "bootstrap_after": 0.3, "ping_interval": 0.1,
}  # fmt: skip


async def change_below_the_top(ws: FakeMarketServer, market: FakeMarket, index: int = 0) -> None:
    """Resize the ``index``-th worst YES bid (below the best): one delta that leaves both tokens' best prices."""
    book = ws._book_of[market.yes_id]
    price = sorted(book.bids)[index]
    assert price < book.best_bid
    size = book.bids[price] + 1_000_000
    book.set_level(True, price, size)
    ws._send_market(book, ws._price_change_event(book, True, price, size))  # dropped while stalled
    await ws._flush()


def wrong_live(follower: ExchangeFollower, ws: FakeMarketServer, tokens: tuple[str, ...]) -> list[str]:
    return [t for t in tokens if state(follower, t) is State.LIVE and follower.store.book(t, None) != ws.truth(t)]


@asynccontextmanager
async def rest_built(**options: Any) -> AsyncIterator[tuple[FakeMarketServer, FakeRestServer, ExchangeFollower]]:
    """One market whose two tokens' WebSocket snapshots never come: both get REST books (UNCONFIRMED).

    The socket then carries no LIVE row: nothing but the market data itself can tell it went silent.
    """
    async with exchange(1, **{**OPTIONS, **options}) as (ws, rest, follower):
        market = ws.markets[0]
        ws.withhold_snapshot(market[1:])
        await follower.client.unsubscribe(list(market[1:]))
        await follower.client.subscribe(list(market[1:]))
        await until(lambda: all(state(follower, t) is State.UNCONFIRMED for t in market[1:]), 3.0)
        yield ws, rest, follower


async def test_an_unconfirmed_rest_book_is_not_confirmed_after_a_silence() -> None:
    async with rest_built() as (ws, rest, follower):
        market = ws.markets[0]
        ws.set_data_stalled(True)
        await change_below_the_top(ws, market, 0)  # lost
        await asyncio.sleep(SILENCE)
        ws.set_data_stalled(False)
        await change_below_the_top(ws, market, 1)  # best prices equal the REST books': it would confirm them
        await asyncio.sleep(0.1)

        assert wrong_live(follower, ws, market[1:]) == []
        assert all(state(follower, t) is State.STALE for t in market[1:])
        # Fetched again, confirmed by the deltas that follow: LIVE with the server's book
        while not all(state(follower, t) is State.LIVE for t in market[1:]):
            await ws.step(1)
            await asyncio.sleep(0.02)
        assert wrong_live(follower, ws, market[1:]) == []
        connection = follower.stats()["connections"][0]
        assert connection["reconnects"] == 0 and connection["silences"] >= 1


async def test_a_live_rest_built_row_goes_stale_after_a_silence() -> None:
    async with rest_built() as (ws, rest, follower):
        market = ws.markets[0]
        while not all(state(follower, t) is State.LIVE for t in market[1:]):
            await change_below_the_top(ws, market, 0)  # confirms without moving the top
            await asyncio.sleep(0.02)
        ws.set_data_stalled(True)
        await change_below_the_top(ws, market, 0)  # lost
        await asyncio.sleep(SILENCE)
        ws.set_data_stalled(False)
        await change_below_the_top(ws, market, 1)  # confirms the LIVE rows again, unless they left LIVE
        await asyncio.sleep(0.1)

        assert wrong_live(follower, ws, market[1:]) == []
        assert all(state(follower, t) is State.STALE for t in market[1:])


async def test_a_rest_book_asked_before_a_silence_ended_is_dropped() -> None:
    async with rest_built() as (ws, rest, follower):
        market, boot = ws.markets[0], follower.bootstrap
        assert boot is not None
        ws.set_data_stalled(True)  # a first silence: the REST books go STALE, to be asked again
        await asyncio.sleep(SILENCE)
        ws.set_data_stalled(False)
        await change_below_the_top(ws, market, 0)
        await until(lambda: all(state(follower, t) is State.STALE for t in market[1:]), 1.0)
        rest.hold_books(SILENCE + CONFIRM_INTERVAL)  # taken at once, answered after the next silence ended
        await until(lambda: boot.stats()["in_flight"] == 2, 3.0)
        ws.set_data_stalled(True)
        await change_below_the_top(ws, market, 1)  # lost, and after the REST snapshots
        await asyncio.sleep(CONFIRM_INTERVAL + 0.2)
        ws.set_data_stalled(False)
        dropped = boot.stats()["connection_changed"]
        await change_below_the_top(ws, market, 2)  # ends the silence while the REST books travel
        await until(lambda: boot.stats()["in_flight"] == 0, 3.0)

        assert boot.stats()["connection_changed"] == dropped + 2
        assert wrong_live(follower, ws, market[1:]) == []
        rest.hold_books(0.0)
        while not all(state(follower, t) is State.LIVE for t in market[1:]):  # asked again, confirmed
            await ws.step(1)
            await asyncio.sleep(0.02)
        assert wrong_live(follower, ws, market[1:]) == []


async def test_a_rest_book_on_a_socket_opened_during_a_silence_is_dropped_at_its_first_data() -> None:
    # The socket sees less of the silence than confirm_interval: the silence began before it opened
    async with rest_built(confirm_interval=2.0) as (ws, rest, follower):
        market, shard = ws.markets[0], follower.client._shards[0]
        connects = shard.connects
        ws.set_data_stalled(True)
        ws.abort_all()
        await until(lambda: shard.connects > connects and shard.up, 3.0)
        # REST books taken and loaded on the new socket while the server is silent
        await until(lambda: all(state(follower, t) is State.UNCONFIRMED for t in market[1:]), 3.0)
        await change_below_the_top(ws, market, 0)  # lost
        ws.set_data_stalled(False)
        await change_below_the_top(ws, market, 1)  # the socket's first data
        await asyncio.sleep(0.1)

        assert wrong_live(follower, ws, market[1:]) == []
        assert all(state(follower, t) is State.STALE for t in market[1:])
