"""Latency over loopback at a paced rate: from the server's write of a frame to the receiver holding it.

Run from the repo root: ``python -m benchmarks.latency [--rate 5000] [--frames 5000] [--rounds 3] [--loop uvloop]``.

The ``benchmarks.e2e`` server process writes each frame of its stream alone, ``1 / rate`` apart, and
reports when it wrote each (``time.monotonic_ns``, one clock for every process on the machine). Each
receiver stamps every frame it gets with the same clock:
  raw            an asyncio protocol after a hand-made upgrade, splitting the bytes into frames and
                 stamping them in ``data_received`` (the floor: no library, no task switch)
  raw-stream     the same through asyncio streams, ``await reader.read()``: a coroutine reader's floor
  bare           ``async for frame in ws`` of websockets
  client         ``MarketClient`` on websockets, stamped in ``on_frame`` (after the dispatcher applied it)
  bare-picows    a picows listener copying each frame's text out
  client-picows  ``MarketClient(..., transport="picows")``, stamped in ``on_frame``
Printed: p50 and p99 of write-to-receipt in µs pooled over the rounds, the best round's p50 (min of N: the
fair figure on a shared machine), and each p50 against the floor's.
``--loop uvloop`` runs the receivers on uvloop's event loop instead of asyncio's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import cast

import orjson

from benchmarks.e2e import LOOPS, MAX_FRAME_BYTES, MODES, ServerProcess, run_on
from pm_ws.client import MarketClient

RATE_HZ = 5_000.0
N_FRAMES = 5_000
ROUNDS = 3
RECEIVERS = ("raw", "raw-stream", "bare", "client") + tuple(mode for mode in MODES if "picows" in mode)
TARGET_P50 = 1.20  # MarketClient on picows: p50 within 20 % of the floor's


def subscription(token_ids: list[str]) -> bytes:
    return orjson.dumps({"assets_ids": token_ids, "type": "market"})


async def until(stamps: list[int], total: int) -> None:
    while len(stamps) < total:
        await asyncio.sleep(0.005)


def upgrade_request(host: str, port: str) -> bytes:
    """A hand-made websocket upgrade request (the raw receivers check nothing of the answer but its end)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def masked_subscription(token_ids: list[str]) -> bytes:
    """The subscription as a client text frame, masked with a zero key: the payload goes as it is."""
    payload = subscription(token_ids)
    size = len(payload)
    header = bytes((0x81, 0xFE)) + size.to_bytes(2, "big") if size >= 126 else bytes((0x81, 0x80 | size))
    return header + b"\0\0\0\0" + payload


def take_whole_frames(buffer: bytearray) -> int:
    """Remove the whole server frames at the start of ``buffer`` (split by their headers); return how many."""
    at = count = 0
    while len(buffer) - at >= 2:
        size, start = buffer[at + 1] & 0x7F, at + 2
        if size == 126:
            size, start = int.from_bytes(buffer[at + 2 : at + 4], "big"), at + 4
        elif size == 127:
            size, start = int.from_bytes(buffer[at + 2 : at + 10], "big"), at + 10
        if len(buffer) < start + size:
            break
        at = start + size
        count += 1
    del buffer[:at]
    return count


class RawFloor(asyncio.Protocol):
    """The floor: a plain asyncio protocol after a hand-made upgrade, splitting the bytes into frames by
    their headers and stamping each in ``data_received`` (no websocket library, no task switch)."""

    def __init__(self, host: str, port: str, token_ids: list[str], total: int) -> None:
        self.stamps: list[int] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._request = upgrade_request(host, port)
        self._subscription = masked_subscription(token_ids)
        self._total = total
        self._buffer = bytearray()
        self._upgraded = False
        self._transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)  # uvloop's is no asyncio.Transport subclass
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()  # every whole frame in these bytes arrived now
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            del buffer[: end + 4]
            self._upgraded = True
            assert self._transport is not None  # connection_made came first
            self._transport.write(self._subscription)
        self.stamps += [now] * take_whole_frames(buffer)
        if len(self.stamps) >= self._total and not self.done.done():
            self.done.set_result(None)


async def receive_raw(url: str, token_ids: list[str], total: int) -> list[int]:
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    transport, floor = await asyncio.get_running_loop().create_connection(
        lambda: RawFloor(host, port, token_ids, total), host, int(port))
    await floor.done
    transport.close()
    return floor.stamps


async def receive_raw_stream(url: str, token_ids: list[str], total: int) -> list[int]:
    """A coroutine reader's floor: the same bytes read through asyncio streams (a task switch per read)."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(upgrade_request(host, port))
    await reader.readuntil(b"\r\n\r\n")
    writer.write(masked_subscription(token_ids))
    stamps: list[int] = []
    buffer = bytearray()
    clock = time.monotonic_ns
    while len(stamps) < total:
        buffer += await reader.read(1 << 20)
        stamps += [clock()] * take_whole_frames(buffer)  # every whole frame in the buffer arrived now
    writer.close()
    return stamps


async def receive_bare(url: str, token_ids: list[str], total: int) -> list[int]:
    from websockets.asyncio.client import connect

    stamps: list[int] = []
    clock = time.monotonic_ns
    async with connect(url, ping_interval=None, compression=None, max_size=MAX_FRAME_BYTES) as ws:
        await ws.send(subscription(token_ids).decode())
        async for _ in ws:
            stamps.append(clock())
            if len(stamps) == total:
                break
    return stamps


async def receive_bare_picows(url: str, token_ids: list[str], total: int) -> list[int]:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    stamps: list[int] = []
    clock = time.monotonic_ns

    class Stamper(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            frame.get_payload_as_utf8_text()
            stamps.append(clock())

    transport, _ = await ws_connect(Stamper, url, max_frame_size=MAX_FRAME_BYTES, use_aiofastnet=False)
    transport.send(WSMsgType.TEXT, subscription(token_ids))
    await until(stamps, total)
    transport.disconnect(graceful=False)
    return stamps


async def receive_client(url: str, token_ids: list[str], total: int, transport: str) -> list[int]:
    stamps: list[int] = []
    clock = time.monotonic_ns
    client = MarketClient(url, capacity=max(64, len(token_ids)), transport=transport,
                          on_frame=lambda frame, recv_ns: stamps.append(clock()))
    await client.subscribe(token_ids)
    async with client:
        await until(stamps, total)
    return stamps


RECEIVE: dict[str, Callable[[str, list[str], int], object]] = {
    "raw": receive_raw,
    "raw-stream": receive_raw_stream,
    "bare": receive_bare,
    "client": lambda url, ids, total: receive_client(url, ids, total, "websockets"),
    "bare-picows": receive_bare_picows,
    "client-picows": lambda url, ids, total: receive_client(url, ids, total, "picows"),
}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=RATE_HZ, help="frames per second the server writes")
    parser.add_argument("--frames", type=int, default=N_FRAMES, help="frames per stream")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="streams per receiver (interleaved)")
    parser.add_argument("--loop", choices=LOOPS, default=LOOPS[0],
                        help="the receivers' event loop (uvloop: pip install 'pm_ws[fast]')")
    args = parser.parse_args(argv)

    rounds: dict[str, list[list[float]]] = {name: [] for name in RECEIVERS}  # per receiver, per stream
    assert RECEIVERS[0] == "raw", "the floor comes first"
    server = ServerProcess(args.frames, pace_hz=args.rate)
    with server as (url, token_ids, total):
        for _ in range(args.rounds):
            for name in RECEIVERS:
                stamps = run_on(args.loop, RECEIVE[name](url, token_ids, total))  # type: ignore[arg-type]
                sent = server.write_times()  # the paced stream: every frame after the server's own dump
                received = stamps[1 : 1 + len(sent)]
                rounds[name].append([(got - put) / 1e3 for got, put in zip(received, sent, strict=True)])
    # Pooled over the rounds, and the best round's p50: other load on a shared machine lands at random
    # and only ever adds, so the quietest stream of each receiver is the fair comparison there (min of N)
    pooled = {name: [value for values in streams for value in values] for name, streams in rounds.items()}
    best = {name: min(percentile(values, 50) for values in streams) for name, streams in rounds.items()}
    print(f"latency over loopback, server write -> receiver, {args.rate:,.0f} frames/s, {args.frames} frames, "
          f"{args.rounds} rounds, {args.loop} event loop")
    print(f"{'receiver':<15}{'p50 µs':>9}{'p99 µs':>9}{'of floor':>10}{'best-round p50':>16}{'of floor':>10}")
    floor, best_floor = percentile(pooled["raw"], 50), best["raw"]
    for name, values in pooled.items():
        p50 = percentile(values, 50)
        print(f"{name:<15}{p50:>9.1f}{percentile(values, 99):>9.1f}{p50 / floor:>10.2f}"
              f"{best[name]:>16.1f}{best[name] / best_floor:>10.2f}")
    if "client-picows" in pooled:
        share, best_share = percentile(pooled["client-picows"], 50) / floor, best["client-picows"] / best_floor
        print(f"latency: MarketClient on picows p50 is {share:.2f}x the raw floor pooled, {best_share:.2f}x in the "
              f"best rounds (target <= {TARGET_P50:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
