"""``pm-ws demo``: the embedded fake market server (``pm_ws.testing``) on loopback, watched.

The only module of the command line that imports the fake server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import ExitStack, suppress
from typing import Any

from ._live import LiveView, shared_store
from ._record import create_recording, recording_client
from .backoff import ExponentialBackoff
from .client import MarketClient
from .gamma import MarketFilter
from .testing import FakeMarketServer

DEMO_TICKS = ("0.01", "0.01", "0.001")  # one market starts on a sub-cent grid
DEMO_OUTAGE_SECONDS = 1.0  # how long the demo server refuses connections after an abort
DEMO_RESOLVE_GRACE = 5.0  # seconds a resolved market's rows stay on screen (RESOLVED) before they go


async def demo(args: argparse.Namespace) -> int:
    """Run ``pm-ws demo``: a lively fake market on loopback, watched."""
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    if args.all:
        return await _demo_exchange(args, seed)
    server = FakeMarketServer(markets=args.markets, seed=seed, rate_hz=args.rate, tick=DEMO_TICKS, trade_every=15)
    async with server:
        labels = {}
        for number, market in enumerate(server.markets, 1):
            labels[market.yes_id] = f"market {number} YES"
            labels[market.no_id] = f"market {number} NO"
        # short backoff: the refused reconnects of an outage end in a recovery within ~1 s of it
        options: dict[str, Any] = {
            "store": shared_store(args.share, len(server.token_ids)),
            "backoff": lambda: ExponentialBackoff(0.1, 1.0),
        }
        with ExitStack() as files:
            if args.record is None:
                client = MarketClient(server.url, capacity=len(server.token_ids), **options)
                await client.subscribe(server.token_ids)
            else:  # what the table shows, frame by frame, for `pm-ws replay`, `export` and `plot`
                writer = create_recording(args.record, overwrite=args.overwrite)
                files.callback(writer.close)
                client = await recording_client(server.url, server.token_ids, writer, **options)
            try:
                async with client:
                    view = LiveView(client, labels, args, f"pm-ws demo {server.url} (seed {seed})")
                    return await _run_directed(view, _direct(server, view, args.fault_every, random.Random(seed)))
            finally:
                client.store.close_shared()


async def _run_directed(view: LiveView, director: Coroutine[Any, Any, None]) -> int:
    """Run the view while ``director`` stages the server's events; stop the director with the view."""
    task = asyncio.create_task(director)
    try:
        return await view.run()
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def _direct(server: FakeMarketServer, view: LiveView, fault_every: float, rng: random.Random) -> None:
    """Stage the demo's events: a tick-size change, then a fault every ``fault_every`` seconds."""
    yes = server.markets[0].yes_id

    async def tick_change() -> None:
        tick = "0.001" if server.tick(yes) == 100 else "0.01"
        view.note(f"server: tick size of {view.labels[yes]} changes to {tick}")
        await server.change_tick(yes, tick)

    async def abort() -> None:
        view.note(f"server: abrupt TCP disconnect, new connections refused for {DEMO_OUTAGE_SECONDS:g} s")
        server.reject_connections(True)
        server.abort_all()
        await asyncio.sleep(DEMO_OUTAGE_SECONDS)
        server.reject_connections(False)
        view.note("server: accepting connections again")

    async def malformed() -> None:
        view.note("server: 5 malformed frames and a burst of 200 price changes")
        await server.send_malformed(5)
        await server.burst(200)

    async def close() -> None:
        view.note("server: clean close (1011) of every connection")
        await server.close_all(1011, "demo")

    script: list[Callable[[], Awaitable[None]]] = [malformed, close, tick_change, abort]
    # the first tick change and fault come early, so `demo --duration 5` shows a full recovery
    await asyncio.sleep(min(1.0, fault_every / 2))
    await tick_change()
    await asyncio.sleep(min(1.0, fault_every / 2))
    await abort()
    for step in itertools.count():
        await asyncio.sleep(fault_every * rng.uniform(0.8, 1.2))
        await script[step % len(script)]()


async def _demo_exchange(args: argparse.Namespace, seed: int) -> int:
    """``pm-ws demo --all``: the fake exchange (WebSocket, Gamma, CLOB REST) followed whole, markets opening and
    resolving."""
    from ._live import exchange_follower  # the exchange extra (aiohttp) is needed from here on
    from .testing import FakeRestServer

    server = FakeMarketServer(markets=args.markets, seed=seed, rate_hz=args.rate, tick=DEMO_TICKS, trade_every=15)
    async with server, FakeRestServer(server, all_order_books=True) as rest:
        endpoints = argparse.Namespace(url=server.url, gamma_url=rest.url, clob_url=rest.url)
        follower = exchange_follower(endpoints, MarketFilter(), resolve_grace=DEMO_RESOLVE_GRACE, relist_interval=30.0)
        async with follower:
            await follower.listed.wait()
            view = LiveView(follower.client, follower.labels, args, f"pm-ws demo --all {rest.url} (seed {seed})")
            return await _run_directed(view, _open_and_resolve(server, view, args.fault_every, random.Random(seed)))


async def _open_and_resolve(server: FakeMarketServer, view: LiveView, every: float, rng: random.Random) -> None:
    """Open a market, then resolve the oldest open one, in turn, every ``every`` seconds or so."""
    await asyncio.sleep(min(1.0, every / 2))
    for step in itertools.count():
        if step % 2 == 0:
            market = await server.open_market(copies=2)  # announced twice, as the server repeats it
            view.note(f"server: new_market {market.condition_id[:10]}…, 2 tokens")
        else:
            market = server.markets[len(server.resolved)]  # markets resolve oldest first
            winner = rng.choice((market.yes_id, market.no_id))
            view.note(f"server: market_resolved {market.condition_id[:10]}…, RESOLVED for {DEMO_RESOLVE_GRACE:g} s")
            await server.resolve_market(market.condition_id, winner)
        await asyncio.sleep(every * rng.uniform(0.8, 1.2))
