"""A fake Polymarket market-channel server on 127.0.0.1, for tests, benchmarks and the demo.

:class:`FakeMarketServer` is a real ``websockets`` server that speaks the CLOB market channel the
way the real one does: the first frame must be a subscription, ``PING`` gets
``PONG``, ``operation`` frames (un)subscribe on the same socket, the initial books arrive as ONE
array frame with levels worst-to-best (best LAST), every number is a normalised decimal string.
Behind it run binary markets whose YES/NO books are exact integers (prices in 1e-4, sizes in 1e-6)
and mirror each other (a YES bid at p is a NO ask at 1-p with the same size). Random orders arrive
and cancel (one ``price_change`` frame per change, carrying the mirrored entries of both tokens
with absolute sizes and the best bid/ask after the change), and every ``trade_every`` changes a
trade prints (``last_trade_price``, then a ``book`` refresh per token). :meth:`FakeMarketServer.truth`
returns the server's book in the shape of ``BookStore.book(token, depth=None)``, so a test can check
that a client reproduced it exactly.

Faults are switched on demand: clean close, abrupt TCP abort, a half-open server that reads and writes
nothing, a server that sends but stops reading, a data stall that still answers ``PING``, withheld snapshots,
raw and malformed frames, tick-size changes, bursts, and connections rejected right after the handshake.

Example
-------
::

    import asyncio
    import json
    import websockets
    from pm_ws.testing import FakeMarketServer

    async def main():
        async with FakeMarketServer(markets=2, seed=1, rate_hz=0) as server:
            async with websockets.connect(server.url) as ws:
                await ws.send(json.dumps({"assets_ids": server.token_ids, "type": "market"}))
                books = json.loads(await ws.recv())   # ONE array frame: a `book` per token
                await server.step(5)                  # five price_change frames, then:
                changes = [json.loads(await ws.recv()) for _ in range(5)]
                server.abort_all()                    # ...or any other fault switch
            bids, asks = server.truth(server.token_ids[0])   # best first, integer units

    asyncio.run(main())

``rate_hz > 0`` also changes the books in the background; ``rate_hz=0`` makes a test fully driven
by :meth:`~FakeMarketServer.step`. For benchmarks that need no socket, :meth:`~FakeMarketServer.initial_dump`
and :meth:`~FakeMarketServer.frames` render the same frames as strings.

The server only ever listens on a loopback address.

Its parts, one job each: ``_fake_market`` (the simulated books and the frames they render, no
sockets), ``_fake_connection`` (one client's writer and the protocol of its frames), ``_fake_faults``
(delivery to subscribers and the fault switches), ``_loopback`` (start/stop, ``async with``, the URL;
shared with ``_fake_rest``, the HTTP side). This module puts them together and is the public entry.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ._fake_connection import FakeConnection, keep_newest
from ._fake_faults import MALFORMED_KINDS, FaultSwitches
from ._fake_market import TICK_SIZES, FakeMarket, SimulatedMarkets, check_tick, now_ms
from ._loopback import LoopbackServer

__all__ = ["FakeConnection", "FakeMarket", "FakeMarketServer", "FakeRestServer", "MALFORMED_KINDS", "TICK_SIZES"]

MAX_FRAME_BYTES = 64 * 2**20  # inbound limit, generous like the real server
CLOSE_TIMEOUT_SECONDS = 1.0  # a test server must shut down fast
INVALID_SUBSCRIPTION = (1008, "invalid subscription payload")  # real close for a bad first frame
REJECTED = (1013, "try again later")
NO_NEW_ASSETS_EVERY = 100  # book changes between `NO NEW ASSETS` frames to custom-feature clients
SUBSCRIPTION_POLL_SECONDS = 0.002
BURST_CHUNK = 1000  # frames generated between two chances for the writers to run


def __getattr__(name: str) -> Any:
    # The HTTP side (Gamma listing, CLOB books) needs aiohttp, the pm_ws[exchange] extra: imported on first use
    if name == "FakeRestServer":
        from ._fake_rest import FakeRestServer

        return FakeRestServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class FakeMarketServer(FaultSwitches, LoopbackServer):
    """A market-channel WebSocket server on 127.0.0.1 with simulated binary markets and fault switches.

    Parameters
    ----------
    host : str
        Loopback address to listen on: ``"127.0.0.1"`` or ``"::1"``.
    port : int
        TCP port; 0 picks a free one (read it back from :attr:`url`).
    markets : int
        Number of binary markets (two tokens each); ignored when ``token_ids`` is given.
    seed : int
        Seed of every random choice: ids, initial books and the sequence of changes.
    rate_hz : float
        Book changes per second made by a background task while the server runs; 0 disables it.
    tick : str or sequence of str
        Tick size of every market, or one per market (cycled): "0.1", "0.01", "0.005", "0.0025",
        "0.001" or "0.0001".
    levels : int
        Typical number of price levels per side.
    trade_every : int
        A trade prints after every ``trade_every`` changes made by :meth:`step` or the background
        task; 0 disables trades.
    token_ids : sequence of str, optional
        Use these token ids (YES, NO, YES, NO, ...) instead of generated ones.
    keep_received : int
        Frames from clients kept per connection and in :attr:`received`: the newest ones, between
        ``keep_received`` and twice that (a long churn test must not grow without bound).

    Raises
    ------
    ValueError
        On a non-loopback host, an unknown tick size, an odd or duplicated ``token_ids`` list, or
        non-positive ``markets``/``levels``.
    """

    SCHEME = "ws"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        markets: int = 2,
        seed: int = 0,
        rate_hz: float = 20.0,
        tick: str | Sequence[str] = "0.01",
        levels: int = 10,
        trade_every: int = 20,
        token_ids: Sequence[str] | None = None,
        keep_received: int = 10_000,
    ) -> None:
        LoopbackServer.__init__(self, host, port)
        if keep_received < 1:
            raise ValueError(f"keep_received must be positive, was {keep_received}")
        SimulatedMarkets.__init__(
            self, markets=markets, seed=seed, tick=tick, levels=levels, trade_every=trade_every, token_ids=token_ids
        )
        FaultSwitches.__init__(self)
        self._keep_received = keep_received
        self._rate_hz = rate_hz
        self._connections: list[FakeConnection] = []
        self._received: list[tuple[int, str]] = []
        self._conn_ids = itertools.count(1)
        self._changes = 0
        self._server: Server | None = None
        self._driver: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def _listen(self) -> int:
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            ping_interval=None,  # the real server never speaks first
            close_timeout=CLOSE_TIMEOUT_SECONDS,
            max_size=MAX_FRAME_BYTES,
        )
        if self._rate_hz > 0:  # the background changes
            self._driver = asyncio.create_task(self._drive())
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        # stop the background changes, close every connection (code 1001), stop listening
        if self._driver is not None:
            self._driver.cancel()
            with suppress(asyncio.CancelledError):
                await self._driver
            self._driver = None
        for conn in self._live.values():
            if conn.frozen or self._not_reading:  # it would never answer the close handshake
                conn.websocket.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ inspection

    @property
    def connections(self) -> list[FakeConnection]:
        """Every connection ever accepted, oldest first (closed ones included)."""
        return self._connections

    @property
    def received(self) -> list[tuple[int, str]]:
        """The frames clients sent, in arrival order, as ``(connection id, text)`` (the newest ``keep_received``
        at least)."""
        return self._received

    async def wait_subscribed(self, token_ids: Iterable[str] | None = None, timeout: float = 2.0) -> FakeConnection:
        """Wait until one open connection is subscribed to every token in ``token_ids`` (default: all).

        A client's subscription reaches the server a little after the client sent it; tests that
        :meth:`step` right after subscribing wait here first so the changes are not missed.

        Returns
        -------
        FakeConnection
            The first open connection subscribed to all of them.

        Raises
        ------
        TimeoutError
            If no connection is subscribed to them within ``timeout`` seconds.
        """
        wanted = set(self.token_ids if token_ids is None else token_ids)
        async with asyncio.timeout(timeout):
            while True:
                for conn in self._live.values():
                    if wanted <= conn.subscribed:
                        return conn
                await asyncio.sleep(SUBSCRIPTION_POLL_SECONDS)

    # ------------------------------------------------------------------ market activity

    async def step(self, n: int = 1) -> None:
        """Make ``n`` random book changes now and send them to subscribers.

        Each change is one ``price_change`` frame with the mirrored YES/NO entries; a trade follows
        every ``trade_every`` changes. Returns once the frames are written to every open connection
        (at most 5 s: frames to a client that stopped reading stay queued).
        """
        self._advance(n)
        await self._flush()

    async def trade(self, token_id: str | None = None) -> None:
        """Print a trade on a token (a random one by default) and send it to subscribers.

        The trade takes (part of) the best level it crosses; subscribers of the token get a
        ``last_trade_price``, then each token of the market gets a ``book`` refresh (no ``tick_size``).
        """
        self._send_trade(token_id)
        await self._flush()

    async def burst(self, n: int) -> None:
        """Send ``n`` ``price_change`` frames back to back, as fast as the sockets take them (no trades)."""
        for start in range(0, n, BURST_CHUNK):
            for _ in range(min(BURST_CHUNK, n - start)):
                book, frame = self._random_change()
                self._send_market(book, frame)
            await asyncio.sleep(0)  # let the writers start while the rest is generated
        await self._flush()

    async def change_tick(self, token_id: str, tick: str) -> None:
        """Change the tick size of a token's market and re-grid its book.

        Both tokens of the market get a ``tick_size_change``; unless the tick is unchanged (a no-op
        change, which real servers send too) each then gets a ``book`` refresh of the re-gridded
        book. A coarser tick moves bids down and asks up to the new grid, merging levels.
        """
        check_tick(tick)
        book = self._book_of[token_id]
        old_text = book.tick_text
        changed = tick != old_text
        if changed:
            self._regrid(book, tick)
        timestamp = now_ms()
        for token in book.market[1:]:
            self._send_data(token, self._tick_size_change_event(token, book.market, tick, old_text, timestamp))
        if changed:
            for token in book.market[1:]:
                self._send_book(token)
        await self._flush()

    async def open_market(self, *, tick: str = "0.01", copies: int = 1) -> FakeMarket:
        """Open a new binary market and announce it with ``new_market`` to custom-feature connections.

        The real announcement is global (every connection gets it, whatever it subscribed) and
        repeated; ``copies`` sends it that many times (0: not announced, as when the event is lost).
        Its book starts changing at once.
        """
        check_tick(tick)
        market = self._add_market(tick)
        self._send_custom([self._new_market_event(market, tick)] * copies)
        await self._flush()
        return market

    async def resolve_market(self, condition_id: str, winner: str | None = None, *, announce: bool = True) -> None:
        """Resolve a market: ``market_resolved`` (winner: ``winner`` or its YES token) to custom-feature
        connections (``announce=False``: the event is lost); its book stops changing (it keeps answering
        :meth:`truth`). KeyError: not an open market."""
        market, winner = self._settle(condition_id, winner)
        if not announce:
            return
        self._send_custom([self._market_resolved_event(market, winner)])
        await self._flush()

    # ------------------------------------------------------------------ connection handling

    async def _handle(self, websocket: ServerConnection) -> None:
        conn = FakeConnection(next(self._conn_ids), websocket)
        self._connections.append(conn)
        if self._rejecting:
            conn.closed = True
            await websocket.close(*REJECTED)
            return
        self._live[conn.id] = conn
        writer = asyncio.create_task(conn._write_loop())
        try:
            if self._unresponsive:
                conn._freeze(True)
            async for message in websocket:
                if conn.frozen:  # was buffered before the freeze; a dead peer never reads it
                    continue
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                keep_newest(conn.received, text, self._keep_received)
                keep_newest(self._received, (conn.id, text), self._keep_received)
                if conn._subscription_seen:
                    self._send_books(conn, conn._answer(text))
                    continue
                assets = conn._subscribe_first(text)
                if assets is None:
                    await websocket.close(*INVALID_SUBSCRIPTION)
                    break
                self._send_books(conn, assets)
                if self._not_reading:
                    conn._read(False)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            del self._live[conn.id]
            writer.cancel()
            with suppress(asyncio.CancelledError):
                await writer

    # ------------------------------------------------------------------ the background changes

    def _advance(self, n: int) -> None:
        if not self._books:  # every market resolved: nothing trades
            return
        for _ in range(n):
            book, frame = self._random_change()
            self._send_market(book, frame)
            self._changes += 1
            if self._trade_every and self._changes % self._trade_every == 0:
                self._send_trade(None)
            if self._changes % NO_NEW_ASSETS_EVERY == 0 and not self._stalled:
                for conn in self._live.values():
                    if conn.custom_features:
                        conn._enqueue("NO NEW ASSETS")

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self._rate_hz
        due_at = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, due_at - loop.time()))
            behind = int((loop.time() - due_at) / period)
            self._advance(1 + min(behind, 1000))  # catch up after a busy loop, within reason
            due_at += (1 + behind) * period
