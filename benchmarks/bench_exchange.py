"""The whole exchange on one client: ``ExchangeFollower`` against the fake exchange in another process.

Run from the repo root: ``python -m benchmarks.bench_exchange [--markets 10000] [--cycles 1000]``.

The fake exchange (``FakeMarketServer`` + ``FakeRestServer``, every market with an order book) runs in
its own process, driven through a pipe, so the client process's CPU time is the client's alone.
The follower lists every market through Gamma and subscribes 2 tokens per market, 200 per socket
(``--markets 10000``: 20,000 tokens on 100 sockets). Measured, in order:

  start       time from start to every token LIVE (listing, 100 handshakes, 20,000 snapshots)
  rss         resident memory growth per token (follower, store, books, sockets)
  frames      client CPU per frame with the server changing books at ``--rate`` changes/s
  stats       cost of one ``follower.stats()``, with the per-token entries and without
  new_market  time from the announcement to both tokens LIVE (the bound: 2 s + one round trip)
  resolve     time from ``market_resolved`` to the market's slots free (the bound: grace + one tick)
  cycles      RSS before/after ``--cycles`` open/resolve cycles (flat: nothing kept per market)
  bootstrap   1 % of tokens never get a WebSocket snapshot: time to LIVE through the REST bootstrap
              (the bound: snapshot_timeout × (re-drives + 1) + one REST round trip), and whether any
              of them read LIVE with a book other than the server's (checked with the feed paused)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import resource
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from pm_ws._http import HttpClient
from pm_ws.exchange import ExchangeFollower
from pm_ws.row import STATE, State
from pm_ws.testing import FakeMarketServer, FakeRestServer

_LIVE = int(State.LIVE)
_LOADED = (_LIVE, int(State.UNCONFIRMED))
SNAPSHOT_TIMEOUT = 1.0  # seconds: short, so the starved tokens' re-drive and REST bootstrap fit a benchmark
RESOLVE_GRACE = 0.5
DRIVE_SLICE = 0.01  # seconds between two batches of the server's book changes


def serve(pipe: Connection, markets: int, rate: float) -> None:
    """The fake exchange's process: answer the pipe's commands until "stop"."""
    asyncio.run(_serve(pipe, markets, rate))


async def _serve(pipe: Connection, markets: int, rate: float) -> None:
    loop = asyncio.get_running_loop()
    ws = FakeMarketServer(markets=markets, seed=7, rate_hz=0, levels=6, trade_every=0)
    pace = [rate]  # book changes per second, set by "pause"

    async def drive() -> None:  # ws.step in 10 ms slices, carrying the fraction over
        owed = 0.0
        while True:
            await asyncio.sleep(DRIVE_SLICE)
            owed += pace[0] * DRIVE_SLICE
            if owed >= 1:
                await ws.step(int(owed))
                owed -= int(owed)

    async with ws, FakeRestServer(ws, all_order_books=True) as rest:
        driver = asyncio.create_task(drive())
        pipe.send((ws.url, rest.url))
        while True:
            command, argument = await loop.run_in_executor(None, pipe.recv)
            if command == "stop":
                driver.cancel()
                return
            if command == "open":
                market = await ws.open_market(copies=2)
                pipe.send(tuple(market))
            elif command == "resolve":
                await ws.resolve_market(argument)
                pipe.send(None)
            elif command == "withhold":
                ws.withhold_snapshot(argument)
                pipe.send(None)
            elif command == "markets":
                pipe.send([tuple(m) for m in ws.markets])
            elif command == "pause":  # stop the background changes (and let the last ones reach the client)
                pace[0] = argument
                pipe.send(None)
            elif command == "truth":
                pipe.send({token: ws.truth(token) for token in argument})


class Exchange:
    """The server process and its pipe."""

    def __init__(self, markets: int, rate: float) -> None:
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=serve, args=(child, markets, rate), daemon=True)
        self.process.start()
        self.ws_url, self.rest_url = self.pipe.recv()

    async def ask(self, command: str, argument: Any = None) -> Any:
        self.pipe.send((command, argument))
        return await asyncio.get_running_loop().run_in_executor(None, self.pipe.recv)

    def stop(self) -> None:
        self.pipe.send(("stop", None))
        self.process.join(10)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


async def first_loaded(follower: ExchangeFollower, tokens: list[str], started: float) -> list[float]:
    """Seconds from ``started`` to each token's first book (UNCONFIRMED from REST, or LIVE)."""
    done: dict[str, float] = {}
    store = follower.store
    while len(done) < len(tokens):
        for token in tokens:
            if token not in done and token in store and store.view[store.slot(token), STATE] in _LOADED:
                done[token] = time.perf_counter() - started
        await asyncio.sleep(0.01)
    return list(done.values())


def live(follower: ExchangeFollower, tokens: list[str]) -> bool:
    store = follower.store
    view = store.view
    return all(token in store and view[store.slot(token), STATE] == _LIVE for token in tokens)


async def wait_until(check: Any, timeout: float, step: float = 0.005) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"not within {timeout} s")
        await asyncio.sleep(step)
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    exchange = Exchange(args.markets, 0.0)
    try:
        markets = await exchange.ask("markets")
        tokens = [token for market in markets for token in market[1:]]
        starved = tokens[:: max(1, round(100 / args.starved_percent))] if args.starved_percent else []
        await exchange.ask("withhold", starved)
        rss_before = rss_bytes()
        http = HttpClient(timeout=10.0, rate=50, burst=20)
        follower = ExchangeFollower(
            exchange.ws_url, gamma_url=exchange.rest_url, clob_url=exchange.rest_url, http=http,
            resolve_grace=RESOLVE_GRACE, subscribe_delay=0.05, relist_interval=3600, snapshot_timeout=SNAPSHOT_TIMEOUT,
            capacity=len(tokens) + 2 * args.cycles + 64, connect_stagger=0.0, transport=args.transport,
        )  # fmt: skip
        started = time.perf_counter()
        async with follower:
            loaded = asyncio.create_task(first_loaded(follower, starved, started))
            fed = [t for t in tokens if t not in set(starved)]
            await wait_until(lambda: live(follower, fed), 900, 0.05)
            took = time.perf_counter() - started
            sockets = len(follower.client._shards)
            print(f"start       {len(fed):,} tokens ({len(tokens):,} listed) on {sockets} sockets LIVE {took:.2f} s "
                  f"after start ({args.starved_percent:g} % starved left out)")
            if starved:
                at = await loaded
                await exchange.ask("pause", args.rate)  # deltas: the WebSocket confirmations of the REST books
                await wait_until(lambda: live(follower, starved), 120, 0.01)
                total = time.perf_counter() - started
                bound = SNAPSHOT_TIMEOUT * (1 + 1)
                print(f"bootstrap   {len(starved)} starved tokens: REST books loaded {min(at):.2f}..{max(at):.2f} s "
                      f"after start (bound: the listing + {bound:g} s + one REST round trip), all LIVE {total:.2f} s "
                      f"after start (their first confirming delta); {follower.stats()['bootstrap']}")
            print(f"rss         {(rss_bytes() - rss_before) / len(tokens):,.0f} B per token")

            # CPU per frame at --rate changes/s (a change is one frame to one socket)
            await exchange.ask("pause", args.rate)
            await asyncio.sleep(1.0)
            frames0 = follower.client.dispatcher.stats()["frames"]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(args.seconds)
            frames = follower.client.dispatcher.stats()["frames"] - frames0
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            print(f"frames      {frames / wall:,.0f} frames/s, {cpu / max(frames, 1) * 1e6:.1f} µs CPU per frame "
                  f"({cpu / wall:.0%} of a core)")

            # wrong-LIVE check of the bootstrapped tokens: feed paused, the last frames arrived
            await exchange.ask("pause", 0.0)
            await asyncio.sleep(0.5)
            truth = await exchange.ask("truth", starved)
            wrong = [t for t in starved if live(follower, [t]) and follower.store.book(t, None) != truth[t]]
            print(f"bootstrap   wrong-LIVE books among the starved tokens: {len(wrong)}")

            for per_token in (True, False):
                n = 50 if per_token else 2000
                t0 = time.perf_counter()
                for _ in range(n):
                    follower.stats(tokens=per_token)
                print(f"stats       {(time.perf_counter() - t0) / n * 1e3:.3f} ms per follower.stats(tokens={per_token})")

            latencies = []
            for _ in range(5):
                t0 = time.perf_counter()
                market = await exchange.ask("open")
                await wait_until(lambda: live(follower, list(market[1:])), 10)
                latencies.append(time.perf_counter() - t0)
            print(f"new_market  LIVE in {min(latencies) * 1e3:.0f}..{max(latencies) * 1e3:.0f} ms (bound 2 s + RTT)")

            market = markets[1]
            t0 = time.perf_counter()
            await exchange.ask("resolve", market[0])
            held = len(follower.store)
            freed = await wait_until(lambda: market[1] not in follower.store and market[2] not in follower.store, 10)
            print(f"resolve     slots free {freed:.2f} s after market_resolved (grace {RESOLVE_GRACE} s), "
                  f"store {held} -> {len(follower.store)}")

            rss0 = rss_bytes()
            t0 = time.perf_counter()
            for cycle in range(args.cycles):
                market = await exchange.ask("open")
                await wait_until(lambda: market[1] in follower.store, 10, 0.002)
                await exchange.ask("resolve", market[0])
                if cycle == args.cycles // 10:
                    rss0 = rss_bytes()  # after warm-up (allocator pools, the dispatcher's dedup set)
            await wait_until(lambda: not follower._resolved_at, 10)
            print(f"cycles      {args.cycles} open/resolve cycles in {time.perf_counter() - t0:.1f} s: RSS "
                  f"{(rss_bytes() - rss0) / 1e6:+.2f} MB after warm-up, store {len(follower.store)} tokens, "
                  f"markets followed {len(follower.markets)}")
    finally:
        exchange.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markets", type=int, default=10_000, help="binary markets (2 tokens each)")
    parser.add_argument("--rate", type=float, default=5_000, help="book changes per second for the CPU figure")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the CPU measurement")
    parser.add_argument("--cycles", type=int, default=1_000, help="open/resolve cycles")
    parser.add_argument("--transport", default="websockets", help="the client's websocket library (or picows)")
    parser.add_argument("--starved-percent", type=float, default=1.0, help="tokens that never get a WS snapshot")
    args = parser.parse_args(argv)
    logging.getLogger("pm_ws").setLevel(logging.ERROR)  # the starved tokens' re-drives are expected
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
