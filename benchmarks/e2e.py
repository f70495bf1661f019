"""End-to-end throughput over loopback: a bare ``websockets`` receive loop vs ``MarketClient``.

Run from the repo root: ``python -m benchmarks.e2e [--frames 50000] [--rounds 3] [--loop uvloop]``.

A ``FakeMarketServer`` runs in its own process (the machine has 2 cores: server on one, client
on the other). Each client that subscribes first gets the server's own initial dump, then a
pre-rendered stream: the snapshot the stream starts from plus N frames from
``FakeMarketServer.frames(..., trades=True)`` (~87% price_change, 9% book, 4% trade, 10+10
levels, ~600 B). The stream is framed once up front and written to the connection's transport
in one piece, so the sender costs nothing per frame and the client side is what is measured.

Receivers, each on a fresh connection, in interleaved rounds:
  bare           ``async for frame in ws: count += 1`` (the websockets floor)
  bare+core      the same loop calling ``Dispatcher.feed(frame)`` of the selected core
  bare+seed      the same loop calling the seed-style handler (benchmarks/seed_reference.py)
  client         ``pm_ws.client.MarketClient`` (its own read loop, watchdogs, dispatcher)
  bare-picows    a picows listener copying each frame's text out and counting it (the picows floor)
  client-picows  ``MarketClient(..., transport="picows")``
The picows receivers need ``pip install 'pm_ws[fast]'`` and are left out without it. ``--loop uvloop``
runs every receiver on uvloop's event loop (also in the fast extra) instead of asyncio's.
Measured between the first and the last poll (every 0.5 ms) that saw the stream moving, so
connection setup is excluded: wall-clock frames/s, and CPU time of the client process per frame
(the fair comparison on a shared machine, where other load steals wall time at random).
Target: client >= 95% of bare by CPU per frame (README, Performance).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from multiprocessing.connection import Connection
from typing import Any, NamedTuple, TypeVar

import orjson
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.feeders import BAD_STATS
from benchmarks.seed_reference import SeedHandler
from pm_ws import IMPLEMENTATION, BookStore, Dispatcher
from pm_ws.client import MarketClient
from pm_ws.testing import FakeMarketServer

N_FRAMES = 50_000
ROUNDS = 3
POLL_SECONDS = 0.0005
MAX_FRAME_BYTES = 32 * 2**20  # as MarketClient
SERVER_SEED = 7
MARKETS = 8
WEBSOCKETS_MODES = ("bare", "bare+core", "bare+seed", "client")
PICOWS_MODES = ("bare-picows", "client-picows")
MODES = WEBSOCKETS_MODES + (PICOWS_MODES if importlib.util.find_spec("picows") else ())
TARGET_SHARE = 0.95  # of the bare loop's speed (CPU per frame), for MarketClient
LOOPS = ("asyncio", "uvloop")  # the event loop the receivers run on (--loop)

T = TypeVar("T")


def run_on(loop: str, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` in a fresh event loop of the kind ``loop`` names (one of :data:`LOOPS`)."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    return asyncio.run(coroutine)


def ws_text_frame(payload: bytes) -> bytes:
    """Frame ``payload`` as one unmasked server-to-client text frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 2**16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


def serve(pipe: Connection, n_frames: int, pace_hz: float) -> None:
    """Server process: report (url, token ids, frames per stream), stream to every subscriber until told to stop.

    With ``pace_hz`` each frame is written alone at its due time, and the ``time.monotonic_ns()`` of
    each write (the clock is the same in every process) goes back over ``pipe`` after the stream.
    """
    asyncio.run(_serve(pipe, n_frames, pace_hz))


async def _serve(pipe: Connection, n_frames: int, pace_hz: float) -> None:
    server = FakeMarketServer(markets=MARKETS, seed=SERVER_SEED, rate_hz=0)
    start = server.initial_dump()  # rendered before frames() moves the books on
    frames = [ws_text_frame(frame.encode()) for frame in [start, *server.frames(n_frames, trades=True)[:n_frames]]]
    stream = b"".join(frames)
    async with server:
        pipe.send((server.url, server.token_ids, len(frames)))
        streamed: set[int] = set()
        while not pipe.poll():
            for conn in server.connections:
                # sent_frames >= 1: the server's own initial dump is out, the socket is ours
                if conn.id not in streamed and conn.subscribed and conn.sent_frames and not conn.closed:
                    streamed.add(conn.id)
                    if pace_hz:
                        pipe.send(write_paced(conn.websocket.transport, frames, pace_hz))
                    else:
                        conn.websocket.transport.write(stream)
            await asyncio.sleep(0.002)


def write_paced(transport: asyncio.WriteTransport, frames: list[bytes], pace_hz: float) -> list[int]:
    """Write ``frames`` one at a time, ``1 / pace_hz`` apart (spinning: a sleep is too coarse); their write times."""
    clock = time.monotonic_ns
    period = round(1e9 / pace_hz)
    due = clock()
    sent = []
    for frame in frames:
        while clock() < due:
            pass
        sent.append(clock())
        transport.write(frame)
        due += period
    return sent


class Throughput(NamedTuple):
    """How fast one receiver took a stream: wall clock, and CPU of this (the client) process."""

    frames_per_s: float  # wall clock: what the machine delivered, hurt by other load on it
    cpu_us_per_frame: float  # process CPU time: robust on a shared machine, the fair comparison


async def stream_rate(count: Callable[[], int], total: int) -> Throughput:
    """Measure between the first and the last poll that saw ``count()`` move towards ``total``."""
    clock, cpu = time.perf_counter, time.process_time
    started_at, started_cpu = clock(), cpu()
    while count() < 2:  # the server's initial dump, then the stream's first frame
        await asyncio.sleep(POLL_SECONDS)
    first_at, first_cpu, first = clock(), cpu(), count()
    while count() < total:
        await asyncio.sleep(POLL_SECONDS)
    frames = count() - first
    if not frames:  # a short stream (the smoke run) arrived within one poll: time it from the start
        first_at, first_cpu, frames = started_at, started_cpu, count()
    return Throughput(frames / (clock() - first_at), (cpu() - first_cpu) * 1e6 / frames)


async def receive_bare(
    url: str, token_ids: list[str], total: int, sink: Callable[[str | bytes], object] | None
) -> Throughput:
    """Receive ``total`` frames with a plain websockets loop, optionally handing each to ``sink``."""
    received = 0

    async def read(ws: ClientConnection) -> None:
        nonlocal received
        if sink is None:
            async for _ in ws:
                received += 1
        else:
            async for frame in ws:
                sink(frame)
                received += 1

    async with connect(url, ping_interval=None, ping_timeout=None, compression=None, max_size=MAX_FRAME_BYTES) as ws:
        await ws.send(orjson.dumps({"assets_ids": token_ids, "type": "market"}).decode())
        reader = asyncio.create_task(read(ws))
        rate = await stream_rate(lambda: received, total)
        reader.cancel()
    return rate


async def receive_bare_picows(url: str, token_ids: list[str], total: int) -> Throughput:
    """Receive ``total`` frames with a picows listener that copies each text payload out and counts it."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    class Counter(WSListener):
        received = 0

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            frame.get_payload_as_utf8_text()  # what any reader must do: the frame dies with this callback
            self.received += 1

    transport, counter = await ws_connect(Counter, url, max_frame_size=MAX_FRAME_BYTES, use_aiofastnet=False)
    assert isinstance(counter, Counter)
    try:
        transport.send(WSMsgType.TEXT, orjson.dumps({"assets_ids": token_ids, "type": "market"}))
        return await stream_rate(lambda: counter.received, total)
    finally:
        transport.disconnect(graceful=False)


async def receive_client(
    url: str, token_ids: list[str], total: int, transport: str = "websockets"
) -> tuple[Throughput, dict[str, int]]:
    """Receive ``total`` frames with MarketClient; return its throughput and non-zero bad counters."""
    client = MarketClient(url, capacity=max(64, len(token_ids)), transport=transport)
    await client.subscribe(token_ids)
    async with client:
        rate = await stream_rate(lambda: client.dispatcher.stats()["frames"], total)
    stats = client.dispatcher.stats()
    return rate, {key: stats[key] for key in BAD_STATS if stats[key]}


async def receive(mode: str, url: str, token_ids: list[str], total: int) -> tuple[Throughput, dict[str, int]]:
    """Run one receiver ``mode`` on a fresh connection; return its throughput and problems seen."""
    if mode == "client":
        return await receive_client(url, token_ids, total)
    if mode == "client-picows":
        return await receive_client(url, token_ids, total, "picows")
    if mode == "bare-picows":
        return await receive_bare_picows(url, token_ids, total), {}
    if mode == "bare":
        return await receive_bare(url, token_ids, total, None), {}
    if mode == "bare+seed":
        return await receive_bare(url, token_ids, total, SeedHandler(token_ids).feed), {}
    store = BookStore(capacity=max(64, len(token_ids)))
    for token_id in token_ids:
        store.add(token_id)
    dispatcher = Dispatcher(store)
    rate = await receive_bare(url, token_ids, total, dispatcher.feed)
    stats = dispatcher.stats()
    return rate, {key: stats[key] for key in BAD_STATS if stats[key]}


class ServerProcess:
    """The FakeMarketServer process; a context manager yielding (url, token ids, frames per stream)."""

    def __init__(self, n_frames: int, pace_hz: float = 0.0) -> None:
        self._pipe, child = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=serve, args=(child, n_frames, pace_hz), daemon=True
        )

    def __enter__(self) -> tuple[str, list[str], int]:
        self._process.start()
        if not self._pipe.poll(60):
            raise RuntimeError("the FakeMarketServer process did not start within 60 s")
        url, token_ids, n_stream = self._pipe.recv()
        return url, token_ids, 1 + n_stream  # plus the server's own initial dump

    def write_times(self) -> list[int]:
        """With ``pace_hz``: the monotonic ns at which the last stream's frames were written."""
        if not self._pipe.poll(60):
            raise RuntimeError("the paced stream did not end within 60 s")
        return list(self._pipe.recv())

    def __exit__(self, *exc_info: object) -> None:
        self._pipe.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=N_FRAMES, help="frames per stream")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="streams per receiver (interleaved)")
    parser.add_argument("--loop", choices=LOOPS, default=LOOPS[0],
                        help="the receivers' event loop (uvloop: pip install 'pm_ws[fast]')")
    args = parser.parse_args(argv)

    runs: dict[str, list[Throughput]] = {mode: [] for mode in MODES}
    failed = False
    with ServerProcess(args.frames) as (url, token_ids, total):
        for _ in range(args.rounds):
            for mode in MODES:
                throughput, problems = run_on(args.loop, receive(mode, url, token_ids, total))
                runs[mode].append(throughput)
                if problems:
                    print(f"e2e: {mode} did not apply every event: {problems}")
                    failed = True
    wall = {mode: max(run.frames_per_s for run in values) for mode, values in runs.items()}
    cpu = {mode: min(run.cpu_us_per_frame for run in values) for mode, values in runs.items()}
    print(f"end to end over loopback, {total} frames per stream, core={IMPLEMENTATION}, {args.rounds} rounds, "
          f"{args.loop} event loop")
    print(f"{'receiver':<15}{'frames/s best':>15}{'median':>10}{'of bare':>9}{'CPU µs/frame min':>18}{'of bare':>9}")
    for mode, values in runs.items():
        median = statistics.median(run.frames_per_s for run in values)
        print(f"{mode:<15}{wall[mode]:>15,.0f}{median:>10,.0f}{wall[mode] / wall['bare']:>9.0%}"
              f"{cpu[mode]:>18.2f}{cpu['bare'] / cpu[mode]:>9.0%}")
    print(f"e2e: MarketClient keeps {cpu['bare'] / cpu['client']:.0%} of the bare loop by client CPU per frame, "
          f"{wall['client'] / wall['bare']:.0%} by wall-clock frames/s (target >= {TARGET_SHARE:.0%})")
    if "client-picows" in runs:
        print(f"e2e: MarketClient on picows takes {wall['client-picows'] / wall['client']:.1f}x the frames/s of "
              f"MarketClient on websockets, {cpu['client'] / cpu['client-picows']:.1f}x fewer CPU µs per frame")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
