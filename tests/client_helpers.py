"""What the MarketClient tests share: fast deadlines, polling, the LIVE-while-down guard, a running client.

The tests run the client against the real loopback :class:`~pm_ws.testing.FakeMarketServer` with
deadlines of a few hundred milliseconds. Fault tests log what they measured (logger
``pm_ws.tests.faults``); run ``pytest -o log_cli=true --log-cli-level=INFO -k fault tests/test_client_faults.py``
to read the figures of the README's fault matrix.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from websockets.protocol import State as SocketState

from pm_ws._transport import WebsocketsSocket
from pm_ws.backoff import ExponentialBackoff
from pm_ws.client import ClientEvent, MarketClient
from pm_ws.row import State
from pm_ws.testing import FakeMarketServer

figures = logging.getLogger("pm_ws.tests.faults")

TEST_DEADLINE = 10.0  # seconds; a hung test fails instead of stalling the suite

# Deadlines short enough for a fast suite, long enough for a loaded 2-core machine
FAST: dict[str, Any] = {
    "ping_interval": 0.1,
    "inbound_timeout": 0.5,
    "snapshot_timeout": 0.3,
    "confirm_interval": 0.6,
    "connect_stagger": 0.0,
    "backoff": functools.partial(ExponentialBackoff, 0.02, 0.2),
}


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[FakeMarketServer]:
    """A started :class:`FakeMarketServer`; the block must end within ``TEST_DEADLINE`` (a hang fails)."""
    async with FakeMarketServer(**options) as server:
        async with asyncio.timeout(TEST_DEADLINE):
            yield server


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> float:
    """Poll ``predicate`` every millisecond; return the seconds it took."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.001)
    return time.perf_counter() - start


def socket_down(socket: Any) -> bool:
    """Whether the transport itself says the socket is down (a close frame came, or the connection is gone)."""
    if isinstance(socket, WebsocketsSocket):
        return socket.state is not SocketState.OPEN
    transport = socket._transport  # a picows WSTransport
    return bool(transport.is_disconnected or transport.close_handshake is not None)


def asyncio_transport(socket: Any) -> asyncio.Transport:
    """The asyncio transport under a client socket of either transport."""
    if isinstance(socket, WebsocketsSocket):
        return socket.transport
    return socket._transport.underlying_transport  # a picows WSTransport's


def states(client: MarketClient, tokens: list[str]) -> list[State]:
    return [client.store.top(token).state for token in tokens]


def all_in(client: MarketClient, tokens: list[str], state: State) -> Callable[[], bool]:
    return lambda: all(value is state for value in states(client, tokens))


def none_live(client: MarketClient, tokens: list[str]) -> Callable[[], bool]:
    return lambda: all(value is not State.LIVE for value in states(client, tokens))


def books_match(client: MarketClient, server: FakeMarketServer, tokens: list[str]) -> bool:
    return all(client.store.book(token, depth=None) == server.truth(token) for token in tokens)


def frames_of(server: FakeMarketServer, conn_id: int) -> list[Any]:
    """What one connection sent: parsed JSON objects, control words as str."""
    conn = next(c for c in server.connections if c.id == conn_id)
    return [text if text.strip().upper() == "PING" else orjson.loads(text) for text in conn.received]


class StaleGuard:
    """Fail if a token reads LIVE while the client itself considers its connection down.

    Checked synchronously at each ``disconnected`` event and by a sampler every millisecond.
    """

    def __init__(self, client: MarketClient) -> None:
        self.client = client
        self.violations: list[str] = []
        self.disconnects = 0

    def on_event(self, event: ClientEvent) -> None:
        if event.kind == "disconnected":
            self.disconnects += 1
            self.check(f"at disconnect of connection {event.data['connection']}")

    def check(self, when: str) -> None:
        stats = self.client.stats()
        down = {conn["id"] for conn in stats["connections"] if conn["state"] != "open"}
        for token, row in stats["tokens"].items():
            if row["connection"] in down and row["state"] is State.LIVE:
                self.violations.append(f"{token[:8]} LIVE {when}")

    async def sample(self) -> None:
        while True:
            self.check("while sampling")
            await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def started(
    server: FakeMarketServer, *, tokens: list[str] | None = None, store: Any = None, **options: Any
) -> AsyncIterator[tuple[MarketClient, StaleGuard]]:
    """A running client subscribed to ``tokens`` (default: all), every token LIVE, guarded."""
    tokens = server.token_ids if tokens is None else tokens

    def on_event(event: ClientEvent) -> None:
        guard.on_event(event)

    client = MarketClient(server.url, store=store, on_event=on_event, **(FAST | options))
    guard = StaleGuard(client)
    await client.subscribe(tokens)
    async with client:
        await wait_until(all_in(client, tokens, State.LIVE), what="first books")
        sampler = asyncio.create_task(guard.sample())
        try:
            yield client, guard
        finally:
            sampler.cancel()
    assert guard.violations == []
    assert_subscription_first(server)


def assert_subscription_first(server: FakeMarketServer) -> None:
    """Every socket's first frame is the subscription, and no later frame carries `type`."""
    for conn in server.connections:
        if not conn.received:
            continue
        first = orjson.loads(conn.received[0])
        assert first["type"] == "market" and first["initial_dump"] is True, conn.received[0]
        later = [text for text in conn.received[1:] if text != "PING"]
        assert all("type" not in orjson.loads(text) for text in later), later


async def record_session(path: Any) -> list[str]:
    """Record (``pm-ws record``'s client) a session on a quiet FakeMarketServer: books, trades, a lost
    connection (every row STALE, then LIVE again) and a tick change; return the tokens. For the tests of
    replay, export and plot.
    """
    from pm_ws._record import recording_client
    from pm_ws.recording import RecordingWriter

    async with serving(markets=2, seed=4, rate_hz=0, trade_every=3) as server:
        tokens = server.token_ids
        with RecordingWriter(path) as writer:
            client = await recording_client(server.url, tokens, writer)
            async with client:
                await wait_until(all_in(client, tokens, State.LIVE), what="books")
                for _ in range(6):
                    await server.step(2)
                    await asyncio.sleep(0.01)  # frames apart in time, so time slices have something to cut
                server.abort_all()
                await wait_until(none_live(client, tokens), what="STALE rows")
                await wait_until(all_in(client, tokens, State.LIVE), timeout=5.0, what="recovery")
                await server.change_tick(tokens[0], "0.001")
                for _ in range(6):
                    await server.step(2)
                    await asyncio.sleep(0.01)
                await wait_until(all_in(client, tokens, State.LIVE), what="LIVE after the tick change")
                await asyncio.sleep(0.1)
    return tokens
