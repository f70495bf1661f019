"""Latency over loopback at a paced rate: from the server's write of a frame to the receiver holding it.

Run from the repo root: ``python -m benchmarks.latency [--rate 5000] [--frames 5000] [--rounds 3]``.

The ``benchmarks.e2e`` server process writes each frame of its stream alone, ``1 / rate`` apart, and
reports when it wrote each (``time.monotonic_ns``, one clock for every process on the machine). Each
receiver stamps every frame it gets with the same clock:
  raw            a TCP socket after a hand-made upgrade, splitting the bytes into frames (the floor)
  bare           ``async for frame in ws`` of websockets
  client         ``MarketClient`` on websockets, stamped in ``on_frame`` (after the dispatcher applied it)
  bare-picows    a picows listener copying each frame's text out
  client-picows  ``MarketClient(..., transport="picows")``, stamped in ``on_frame``
Printed: p50 and p99 of write-to-receipt in µs, pooled over the rounds, and each p50 against the floor's.
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

import orjson

from benchmarks.e2e import MAX_FRAME_BYTES, MODES, ServerProcess
from pm_ws.client import MarketClient

RATE_HZ = 5_000.0
N_FRAMES = 5_000
ROUNDS = 3
RECEIVERS = ("raw", "bare", "client") + tuple(mode for mode in MODES if "picows" in mode)
TARGET_P50 = 1.20  # MarketClient on picows: p50 within 20 % of the floor's


def subscription(token_ids: list[str]) -> bytes:
    return orjson.dumps({"assets_ids": token_ids, "type": "market"})


async def until(stamps: list[int], total: int) -> None:
    while len(stamps) < total:
        await asyncio.sleep(0.005)


async def receive_raw(url: str, token_ids: list[str], total: int) -> list[int]:
    """The floor: bytes off a TCP socket, split into frames by their headers, no websocket library."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    payload = subscription(token_ids)  # masked with a zero key: the payload goes as it is
    header = bytes((0x81, 0xFE)) + len(payload).to_bytes(2, "big") if len(payload) >= 126 else bytes((0x81, 0x80 | len(payload)))
    writer.write(header + b"\0\0\0\0" + payload)
    stamps: list[int] = []
    buffer = b""
    clock = time.monotonic_ns
    while len(stamps) < total:
        buffer += await reader.read(1 << 20)
        now = clock()
        while len(buffer) >= 2:  # every whole frame in the buffer arrived now
            size, start = buffer[1] & 0x7F, 2
            if size == 126:
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + size:
                break
            buffer = buffer[start + size :]
            stamps.append(now)
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
    args = parser.parse_args(argv)

    latencies: dict[str, list[float]] = {name: [] for name in RECEIVERS}
    server = ServerProcess(args.frames, pace_hz=args.rate)
    with server as (url, token_ids, total):
        for _ in range(args.rounds):
            for name in RECEIVERS:
                stamps = asyncio.run(RECEIVE[name](url, token_ids, total))  # type: ignore[arg-type]
                sent = server.write_times()  # the paced stream: every frame after the server's own dump
                received = stamps[1 : 1 + len(sent)]
                latencies[name] += [(got - put) / 1e3 for got, put in zip(received, sent, strict=True)]
    print(f"latency over loopback, server write -> receiver, {args.rate:,.0f} frames/s, {args.frames} frames, "
          f"{args.rounds} rounds")
    print(f"{'receiver':<15}{'p50 µs':>9}{'p99 µs':>9}{'p50 of floor':>14}")
    floor = percentile(latencies["raw"], 50)
    for name, values in latencies.items():
        p50 = percentile(values, 50)
        print(f"{name:<15}{p50:>9.1f}{percentile(values, 99):>9.1f}{p50 / floor:>14.2f}")
    if "client-picows" in latencies:
        share = percentile(latencies["client-picows"], 50) / floor
        print(f"latency: MarketClient on picows p50 is {share:.2f}x the raw floor (target <= {TARGET_P50:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
