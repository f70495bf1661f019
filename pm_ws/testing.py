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
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import time
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import Any, NamedTuple

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ._decimal_text import PRICE_DECIMALS, SIZE_DECIMALS, units_text
from .row import PRICE_SCALE, SIZE_SCALE

__all__ = ["FakeConnection", "FakeMarket", "FakeMarketServer", "FakeRestServer", "MALFORMED_KINDS", "TICK_SIZES"]

# Every tick size Polymarket uses, in price units (1e-4)
TICK_SIZES = {"0.1": 1000, "0.01": 100, "0.005": 50, "0.0025": 25, "0.001": 10, "0.0001": 1}

LOOPBACK_HOSTS = ("127.0.0.1", "::1")  # not "localhost": it may bind two sockets on two ports
MAX_FRAME_BYTES = 64 * 2**20  # inbound limit, generous like the real server
CLOSE_TIMEOUT_SECONDS = 1.0  # a test server must shut down fast
INVALID_SUBSCRIPTION = (1008, "invalid subscription payload")  # real close for a bad first frame
REJECTED = (1013, "try again later")
NO_NEW_ASSETS_EVERY = 100  # book changes between `NO NEW ASSETS` frames to custom-feature clients
SUBSCRIPTION_POLL_SECONDS = 0.002
FLUSH_TIMEOUT_SECONDS = 5.0  # longest an async method waits for its frames to reach the sockets
BURST_CHUNK = 1000  # frames generated between two chances for the writers to run
NOT_READING_RCVBUF = 4096  # receive buffer of a connection that stopped reading: its client blocks soon
HUGE_FRAME_BYTES = 17 * 2**20  # above the Dispatcher's default 16 MiB, below the client's 32 MiB

# Names of the frames send_malformed() cycles through, in order
MALFORMED_KINDS = (
    "truncated_json", "unknown_event", "wrong_types", "bad_number", "price_out_of_range",
    "unknown_text", "invalid_utf8_binary", "array_of_non_objects", "too_deep", "huge",
)  # fmt: skip

_PRICE_TEXT = tuple(units_text(units, PRICE_DECIMALS) for units in range(PRICE_SCALE + 1))


def __getattr__(name: str) -> Any:
    # The HTTP side (Gamma listing, CLOB books) needs aiohttp, the pm_ws[exchange] extra: imported on first use
    if name == "FakeRestServer":
        from ._fake_rest import FakeRestServer

        return FakeRestServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _hash40(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _keep(log: list[Any], item: Any, newest: int) -> None:
    # Append, dropping the oldest half once the log holds twice ``newest``: amortised O(1) per frame
    log.append(item)
    if len(log) >= 2 * newest:
        del log[:-newest]


def _is_id_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class FakeMarket(NamedTuple):
    """One binary market: its condition id and its two token ids."""

    condition_id: str
    yes_id: str
    no_id: str


class _Book:
    """A market's YES book as exact integers; the NO book is its mirror and is never stored."""

    __slots__ = ("market", "tick", "tick_text", "bids", "asks", "best_bid", "best_ask")

    def __init__(self, market: FakeMarket, tick_text: str) -> None:
        self.market = market
        self.tick_text = tick_text
        self.tick = TICK_SIZES[tick_text]
        self.bids: dict[int, int] = {}  # price units -> size units
        self.asks: dict[int, int] = {}
        self.best_bid = 0  # the wire's sentinels for an empty side
        self.best_ask = PRICE_SCALE

    def set_level(self, is_bid: bool, price: int, size: int) -> None:
        side = self.bids if is_bid else self.asks
        if size:
            side[price] = size
        else:
            side.pop(price, None)
        self.refresh_best()

    def refresh_best(self) -> None:
        self.best_bid = max(self.bids, default=0)
        self.best_ask = min(self.asks, default=PRICE_SCALE)

    def levels(self, token_id: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        # (bids, asks) of either token in wire order: worst to best, best LAST
        if token_id == self.market.yes_id:
            return sorted(self.bids.items()), sorted(self.asks.items(), reverse=True)
        bids = [(PRICE_SCALE - price, size) for price, size in sorted(self.asks.items(), reverse=True)]
        asks = [(PRICE_SCALE - price, size) for price, size in sorted(self.bids.items())]
        return bids, asks


class FakeConnection:
    """One client connection as the server saw it.

    Attributes
    ----------
    id : int
        Sequence number of the connection on this server, from 1.
    subscribed : set[str]
        Asset ids the client is subscribed to (unknown ids included, as the real server accepts them).
    received : list[str]
        The frames the client sent, in order (binary frames decoded as UTF-8 with replacement): the
        last ``keep_received`` of the server at least (older ones are dropped in batches).
    closed : bool
        Whether the connection has ended.
    sent_frames : int
        Frames the server has written to this connection.
    custom_features : bool
        Whether the client asked for ``custom_feature_enabled``.
    frozen : bool
        Whether the connection is half-open (see :meth:`FakeMarketServer.set_unresponsive`).
    websocket : websockets.asyncio.server.ServerConnection
        The underlying connection.
    """

    def __init__(self, conn_id: int, websocket: ServerConnection) -> None:
        self.id = conn_id
        self.subscribed: set[str] = set()
        self.received: list[str] = []
        self.closed = False
        self.sent_frames = 0
        self.custom_features = False
        self.websocket = websocket
        self.frozen = False  # half-open: nothing read, nothing written
        self._subscription_seen = False
        self._outbox: deque[str | bytes] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("frozen" if self.frozen else "open")
        return f"<FakeConnection {self.id} {state} subscribed={len(self.subscribed)} sent={self.sent_frames}>"

    def _enqueue(self, frame: str | bytes) -> None:
        # one writer task per connection keeps frames in the order the books changed
        if self.closed or self.frozen:
            return
        self._outbox.append(frame)
        self._idle.clear()
        self._wake.set()

    def _read(self, on: bool) -> None:
        transport = self.websocket.transport
        if on:
            transport.resume_reading()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:  # the kernel buffers a few KiB more, then the client's sends block
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NOT_READING_RCVBUF)
        transport.pause_reading()

    def _freeze(self, on: bool) -> None:
        self.frozen = on
        transport = self.websocket.transport
        if on:
            transport.pause_reading()
            self._outbox.clear()
            self._idle.set()
        else:
            transport.resume_reading()

    async def _wait_idle(self) -> None:
        await self._idle.wait()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox and not self.frozen:
                    await self.websocket.send(self._outbox.popleft())
                    self.sent_frames += 1
                self._idle.set()
        except ConnectionClosed:
            pass
        finally:
            self._outbox.clear()
            self._idle.set()


class FakeMarketServer:
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
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"FakeMarketServer listens on loopback only, host was {host!r}")
        ticks = [tick] if isinstance(tick, str) else list(tick)
        for text in ticks:
            if text not in TICK_SIZES:
                raise ValueError(f"unknown tick size {text!r}, expected one of {sorted(TICK_SIZES)}")
        if levels < 1:
            raise ValueError(f"levels must be positive, was {levels}")
        if keep_received < 1:
            raise ValueError(f"keep_received must be positive, was {keep_received}")
        self._keep_received = keep_received
        self._host = host
        self._port = port
        self._rate_hz = rate_hz
        self._levels = levels
        self._trade_every = trade_every
        self._rng = random.Random(seed)

        ids = self._make_token_ids(markets, token_ids)
        self._markets = [
            FakeMarket(f"0x{self._rng.getrandbits(256):064x}", ids[i], ids[i + 1]) for i in range(0, len(ids), 2)
        ]
        self._books = [self._initial_book(market, ticks[i % len(ticks)]) for i, market in enumerate(self._markets)]
        self._book_of = {token: book for book in self._books for token in book.market[1:]}
        self._last_trade: dict[str, int] = {}
        for i, book in enumerate(self._books):
            if i % 3 != 2 and book.bids:  # some markets have not traded yet: last_trade_price ""
                self._last_trade[book.market.yes_id] = book.best_bid
                self._last_trade[book.market.no_id] = PRICE_SCALE - book.best_bid

        self._connections: list[FakeConnection] = []
        self._live: dict[int, FakeConnection] = {}
        self._received: list[tuple[int, str]] = []
        self._conn_ids = itertools.count(1)
        self._changes = 0
        self._malformed_next = 0
        self._withheld: set[str] = set()
        self._stalled = False
        self._unresponsive = False
        self._not_reading = False
        self._rejecting = False
        self._resolved: dict[str, str | None] = {}  # condition id -> winning token id (None: unknown)
        self._server: Server | None = None
        self._driver: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start listening (and the background changes when ``rate_hz > 0``)."""
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            ping_interval=None,  # the real server never speaks first
            close_timeout=CLOSE_TIMEOUT_SECONDS,
            max_size=MAX_FRAME_BYTES,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        if self._rate_hz > 0:
            self._driver = asyncio.create_task(self._drive())

    async def stop(self) -> None:
        """Stop the background changes, close every connection (code 1001) and stop listening."""
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

    async def __aenter__(self) -> FakeMarketServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ inspection

    @property
    def url(self) -> str:
        """``ws://<host>:<port>`` of the running server."""
        if self._server is None:
            raise RuntimeError("FakeMarketServer is not running; use `async with` or await start()")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"ws://{host}:{self._port}"

    @property
    def token_ids(self) -> list[str]:
        """Every token the server serves, as YES/NO pairs in market order."""
        return [token for market in self._markets for token in market[1:]]

    @property
    def markets(self) -> list[FakeMarket]:
        """The simulated markets."""
        return list(self._markets)

    @property
    def resolved(self) -> dict[str, str | None]:
        """Markets resolved by :meth:`resolve_market`: condition id -> winning token id."""
        return dict(self._resolved)

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

    def truth(self, token_id: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Return the server's current book of a token, best first.

        Parameters
        ----------
        token_id : str
            A token this server serves.

        Returns
        -------
        tuple of (list of (int, int), list of (int, int))
            ``(bids, asks)`` as ``(price units, size units)``: the shape of
            ``BookStore.book(token_id, depth=None)``.

        Raises
        ------
        KeyError
            If the token is not one of :attr:`token_ids`.
        """
        bids, asks = self._book_of[token_id].levels(token_id)
        return bids[::-1], asks[::-1]

    def condition_id(self, token_id: str) -> str:
        """Return the condition id of a token's market (``KeyError`` if unknown)."""
        return self._book_of[token_id].market.condition_id

    def tick(self, token_id: str) -> int:
        """Return the current tick size of a token in price units (``KeyError`` if unknown)."""
        return self._book_of[token_id].tick

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

    def initial_dump(self, token_ids: Iterable[str] | None = None) -> str:
        """Return the array frame a new subscriber of ``token_ids`` (default: all) gets first.

        Unknown ids are skipped (``"[]"`` when none is known). Nothing is sent; meant for benchmarks
        and socket-free tests.
        """
        wanted = self.token_ids if token_ids is None else token_ids
        return self._books_frame(token for token in wanted if token in self._book_of) or "[]"

    def frames(self, n: int, *, trades: bool = False) -> list[str]:
        """Advance the books by ``n`` changes and return their frames instead of sending them.

        Parameters
        ----------
        n : int
            Number of book changes, one ``price_change`` frame each.
        trades : bool
            Also print a trade every ``trade_every`` changes (``last_trade_price`` plus two ``book``
            frames), giving the mixed stream of a busy market (~87% price_change, 9% book, 4% trade).

        Returns
        -------
        list of str
            The frames in order. Fed after :meth:`initial_dump` into a Dispatcher subscribed to every
            token, they leave it equal to :meth:`truth`. Subscribers of a running server are NOT sent
            these changes (their books fall behind), so use this on a server nobody is connected to.
        """
        out: list[str] = []
        for count in range(1, n + 1):
            out.append(self._random_change()[1])
            traded = self._trade(None) if trades and self._trade_every and count % self._trade_every == 0 else None
            if traded is not None:
                _, frame, market = traded
                out.append(frame)
                out.extend(self._book_event(token, with_tick=False) for token in market[1:])
        return out

    # ------------------------------------------------------------------ faults

    async def close_all(self, code: int = 1011, reason: str = "test") -> None:
        """Close every open connection with a clean close handshake."""
        await asyncio.gather(*(conn.websocket.close(code, reason) for conn in list(self._live.values())))

    def abort_all(self) -> None:
        """Drop every open connection's TCP socket at once: no close frame, no handshake."""
        for conn in list(self._live.values()):
            conn.websocket.transport.abort()
            conn.closed = True

    def set_unresponsive(self, on: bool = True) -> None:
        """Play a half-open server: read nothing, answer nothing (not even protocol pings), send nothing.

        Applies to the open connections and to every connection accepted while it is on (their
        opening handshake still completes). Switching it off resumes reading; frames that were due
        meanwhile are lost, so resumed clients' books fall behind.
        """
        self._unresponsive = on
        for conn in self._live.values():
            conn._freeze(on)

    def stop_reading(self, on: bool = True) -> None:
        """Keep sending market data but read nothing more from the client, so its sends block once
        the socket buffers are full (no ``PONG`` either: only the data keeps the client's inbound clock going).

        Applies to the open connections and to every connection accepted while it is on, right after
        its subscription frame. Switching it off resumes reading.
        """
        self._not_reading = on
        for conn in self._live.values():
            if conn._subscription_seen and not conn.frozen:
                conn._read(not on)

    def set_data_stalled(self, on: bool = True) -> None:
        """Keep answering ``PING`` (and bad frames) but send no market data at all, to every connection.

        The books keep changing meanwhile, so a client resumed after a stall holds outdated books
        and should notice on the next ``price_change`` (its best bid/ask will not match).
        """
        self._stalled = on

    def withhold_snapshot(self, token_ids: str | Iterable[str], on: bool = True) -> None:
        """Never send a ``book`` for these tokens (initial dump, resubscribe, trade or tick refresh)."""
        tokens = {token_ids} if isinstance(token_ids, str) else set(token_ids)
        if on:
            self._withheld |= tokens
        else:
            self._withheld -= tokens

    async def send_raw(
        self, frame: str | bytes | Iterable[str | bytes], conn: FakeConnection | None = None
    ) -> None:
        """Send a frame (``str`` = text frame, ``bytes`` = binary frame), or several in order, to one
        or every open connection.

        Ignores the data-stall switch; a frozen (unresponsive) connection sends nothing. Sending
        the output of :meth:`frames` this way streams pre-rendered frames at socket speed.
        """
        frames = [frame] if isinstance(frame, (str, bytes)) else list(frame)
        for target in self._targets(conn):
            for one in frames:
                target._enqueue(one)
        await self._flush()

    async def send_malformed(self, n: int = 1, conn: FakeConnection | None = None) -> None:
        """Send the next ``n`` bad frames of :data:`MALFORMED_KINDS` (a fixed cycle) to every open connection.

        Each one must be rejected whole by a correct client and changes no book: invalid JSON,
        unknown event, wrong JSON types, a bad number inside an otherwise valid ``price_change``,
        a price above 1, unknown text, non-UTF-8 binary, an array of non-objects, nesting deeper
        than 32 and a 17 MiB frame.
        """
        for _ in range(n):
            kind = MALFORMED_KINDS[self._malformed_next % len(MALFORMED_KINDS)]
            self._malformed_next += 1
            frame = self._malformed(kind)
            for target in self._targets(conn):
                target._enqueue(frame)
        await self._flush()

    async def change_tick(self, token_id: str, tick: str) -> None:
        """Change the tick size of a token's market and re-grid its book.

        Both tokens of the market get a ``tick_size_change``; unless the tick is unchanged (a no-op
        change, which real servers send too) each then gets a ``book`` refresh of the re-gridded
        book. A coarser tick moves bids down and asks up to the new grid, merging levels.
        """
        if tick not in TICK_SIZES:
            raise ValueError(f"unknown tick size {tick!r}, expected one of {sorted(TICK_SIZES)}")
        book = self._book_of[token_id]
        old_text = book.tick_text
        changed = tick != old_text
        if changed:
            self._regrid(book, tick)
        timestamp = _now_ms()
        for token in book.market[1:]:
            self._send_data(
                token,
                f'{{"asset_id":"{token}","event_type":"tick_size_change","market":"{book.market.condition_id}",'
                f'"new_tick_size":"{tick}","old_tick_size":"{old_text}","timestamp":"{timestamp}"}}',
            )
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
        if tick not in TICK_SIZES:
            raise ValueError(f"unknown tick size {tick!r}, expected one of {sorted(TICK_SIZES)}")
        yes_id, no_id = (str(self._rng.randrange(10**76, 2**256)) for _ in range(2))
        market = FakeMarket(f"0x{self._rng.getrandbits(256):064x}", yes_id, no_id)
        book = self._initial_book(market, tick)
        self._markets.append(market)
        self._books.append(book)
        self._book_of[yes_id] = self._book_of[no_id] = book
        ids = orjson.dumps([yes_id, no_id]).decode()
        frame = (
            f'{{"event_type":"new_market","id":"{len(self._markets)}","question":"Market {len(self._markets)}?",'
            f'"market":"{market.condition_id}","slug":"market-{len(self._markets)}","assets_ids":{ids},'
            f'"outcomes":["Yes","No"],"timestamp":"{_now_ms()}","tags":[],"condition_id":"{market.condition_id}",'
            f'"active":true,"clob_token_ids":{ids},"order_price_min_tick_size":"{tick}"}}'
        )
        self._send_custom([frame] * copies)
        await self._flush()
        return market

    async def resolve_market(self, condition_id: str, winner: str | None = None, *, announce: bool = True) -> None:
        """Resolve a market: ``market_resolved`` (winner: ``winner`` or its YES token) to custom-feature
        connections (``announce=False``: the event is lost); its book stops changing (it keeps answering
        :meth:`truth`). KeyError: not an open market."""
        book = next((book for book in self._books if book.market.condition_id == condition_id), None)
        if book is None:
            raise KeyError(f"no open market with condition id {condition_id!r}")
        market = book.market
        winner = market.yes_id if winner is None else winner
        self._books.remove(book)
        self._resolved[condition_id] = winner
        outcome = "Yes" if winner == market.yes_id else "No"
        if not announce:
            return
        self._send_custom(
            [
                f'{{"event_type":"market_resolved","id":"{self._markets.index(market) + 1}",'
                f'"market":"{condition_id}","assets_ids":["{market.yes_id}","{market.no_id}"],'
                f'"winning_asset_id":"{winner}","winning_outcome":"{outcome}","timestamp":"{_now_ms()}","tags":[]}}'
            ]
        )
        await self._flush()

    def reject_connections(self, on: bool = True) -> None:
        """Complete each new WebSocket handshake, then close at once (1013 "try again later")."""
        self._rejecting = on

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
                _keep(conn.received, text, self._keep_received)
                _keep(self._received, (conn.id, text), self._keep_received)
                if conn._subscription_seen:
                    self._answer(conn, text)
                elif not self._subscribe_first(conn, text):
                    await websocket.close(*INVALID_SUBSCRIPTION)
                    break
                elif self._not_reading:
                    conn._read(False)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            del self._live[conn.id]
            writer.cancel()
            with suppress(asyncio.CancelledError):
                await writer

    def _subscribe_first(self, conn: FakeConnection, text: str) -> bool:
        request = _json_object(text)
        if request is None or not _is_id_list(request.get("assets_ids")):
            return False
        channel = request.get("type")
        if not isinstance(channel, str) or channel.lower() != "market":
            return False
        conn._subscription_seen = True
        conn.custom_features = request.get("custom_feature_enabled") is True
        assets = request["assets_ids"]
        conn.subscribed.update(assets)
        if request.get("initial_dump", True) is not False:
            self._send_books(conn, assets)
        return True

    def _answer(self, conn: FakeConnection, text: str) -> None:
        word = text.strip()
        if word.upper() == "PING":
            conn._enqueue("pong" if word.islower() else "PONG")
            return
        request = _json_object(text) or {}
        operation = request.get("operation")
        if operation not in ("subscribe", "unsubscribe") or not _is_id_list(request.get("assets_ids")):
            conn._enqueue("INVALID OPERATION")  # also the reply to a second `type` frame
            return
        if "custom_feature_enabled" in request:
            conn.custom_features = request["custom_feature_enabled"] is True
        assets = request["assets_ids"]
        if operation == "unsubscribe":
            conn.subscribed.difference_update(assets)
            return
        conn.subscribed.update(assets)
        self._send_books(conn, assets)

    def _send_books(self, conn: FakeConnection, assets: Iterable[str]) -> None:
        if self._stalled:
            return
        known = [token for token in dict.fromkeys(assets) if token in self._book_of and token not in self._withheld]
        frame = self._books_frame(known)
        if frame:
            conn._enqueue(frame)

    # ------------------------------------------------------------------ delivery

    def _targets(self, conn: FakeConnection | None) -> list[FakeConnection]:
        if conn is not None:
            return [conn]
        return list(self._live.values())

    def _send_data(self, token_id: str, frame: str) -> None:
        if self._stalled:
            return
        for conn in self._live.values():
            if token_id in conn.subscribed:
                conn._enqueue(frame)

    def _send_book(self, token_id: str) -> None:
        # a refresh, as after a trade: no tick_size
        if token_id not in self._withheld and not self._stalled:  # not rendered when nobody gets it
            self._send_data(token_id, self._book_event(token_id, with_tick=False))

    def _send_trade(self, token_id: str | None) -> None:
        traded = self._trade(token_id)
        if traded is not None:
            token, frame, market = traded
            self._send_data(token, frame)
            for book_token in market[1:]:
                self._send_book(book_token)

    def _send_custom(self, frames: list[str]) -> None:
        # The custom-feature events are global: every connection that asked for them gets them
        if self._stalled:
            return
        for conn in self._live.values():
            if conn.custom_features:
                for frame in frames:
                    conn._enqueue(frame)

    def _send_market(self, book: _Book, frame: str) -> None:
        if self._stalled:
            return
        yes_id, no_id = book.market.yes_id, book.market.no_id
        for conn in self._live.values():
            if yes_id in conn.subscribed or no_id in conn.subscribed:
                conn._enqueue(frame)

    async def _flush(self) -> None:
        # a client that stops reading must not hang the test driving the server
        waits = [asyncio.ensure_future(conn._wait_idle()) for conn in self._live.values() if not conn.frozen]
        if waits:
            _, late = await asyncio.wait(waits, timeout=FLUSH_TIMEOUT_SECONDS)
            for wait in late:
                wait.cancel()

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

    # ------------------------------------------------------------------ the simulated market

    def _make_token_ids(self, markets: int, token_ids: Sequence[str] | None) -> list[str]:
        if token_ids is not None:
            ids = [str(token) for token in token_ids]
            if not ids or len(ids) % 2 or len(set(ids)) != len(ids):
                raise ValueError("token_ids must be a non-empty list of distinct YES, NO pairs")
            return ids
        if markets < 1:
            raise ValueError(f"markets must be positive, was {markets}")
        # uint256 decimal strings of 77-78 digits, like the real CLOB token ids
        return [str(self._rng.randrange(10**76, 2**256)) for _ in range(2 * markets)]

    def _level_size(self) -> int:
        if self._rng.random() < 0.3:
            return self._rng.randint(1, 2000) * SIZE_SCALE  # whole shares
        return self._rng.randint(100, 500_000) * (SIZE_SCALE // 100)  # 1.00 to 5000.00, 2 decimals

    def _initial_book(self, market: FakeMarket, tick_text: str) -> _Book:
        book = _Book(market, tick_text)
        rng, tick = self._rng, book.tick
        top = PRICE_SCALE // tick - 1  # highest valid price, in ticks
        bid = rng.randint(max(1, top // 10), max(1, top * 85 // 100))
        ask = min(top, bid + rng.randint(1, 3))
        while len(book.bids) < self._levels and bid >= 1:
            book.bids[bid * tick] = self._level_size()
            bid -= rng.randint(1, 2)
        while len(book.asks) < self._levels and ask <= top:
            book.asks[ask * tick] = self._level_size()
            ask += rng.randint(1, 2)
        book.refresh_best()
        return book

    def _random_change(self) -> tuple[_Book, str]:
        rng = self._rng
        book = rng.choice(self._books)
        is_bid = rng.random() < 0.5
        side = book.bids if is_bid else book.asks
        count = len(side)
        cancel_odds = 0.1 if count < self._levels else (0.55 if count >= 2 * self._levels else 0.3)
        roll = rng.random()
        price: int | None
        if count > 1 and roll < cancel_odds:
            price, size = rng.choice(list(side)), 0
        else:
            price = rng.choice(list(side)) if count and roll < cancel_odds + 0.35 else self._free_price(book, is_bid)
            if price is None:  # no room on this side (one-tick spread against its edge): resize the other
                is_bid = not is_bid
                price = rng.choice(list(book.bids if is_bid else book.asks))
            size = self._level_size()
        book.set_level(is_bid, price, size)
        return book, self._price_change_event(book, is_bid, price, size)

    def _free_price(self, book: _Book, is_bid: bool) -> int | None:
        # a random grid price on this side that does not cross the book, near the top
        tick, reach = book.tick, self._levels * book.tick
        if is_bid:
            high = book.best_ask - tick
            low = max(tick, (book.best_bid if book.bids else high) - reach)
        else:
            low = book.best_bid + tick
            high = min(PRICE_SCALE - tick, (book.best_ask if book.asks else low) + reach)
        if high < low:
            return None
        return low + tick * self._rng.randrange((high - low) // tick + 1)

    def _trade(self, token_id: str | None) -> tuple[str, str, FakeMarket] | None:
        # take liquidity from the best level; return (token, last_trade_price frame, market)
        rng = self._rng
        book = self._book_of[token_id] if token_id is not None else rng.choice(self._books)
        token = token_id if token_id is not None else rng.choice(book.market[1:])
        is_yes = token == book.market.yes_id
        taker_buys = rng.random() < 0.5
        # a YES buy lifts YES asks; a NO buy lifts NO asks, which are the YES bids mirrored
        hits_bids = taker_buys != is_yes
        if not (book.bids if hits_bids else book.asks):
            taker_buys, hits_bids = not taker_buys, not hits_bids
        side = book.bids if hits_bids else book.asks
        if not side:
            return None
        yes_price = book.best_bid if hits_bids else book.best_ask
        resting = side[yes_price]
        if resting == 1 or rng.random() < 0.3:
            size = resting  # the whole level goes; the last one leaves the side empty for a while
        else:
            size = rng.randint(1, resting - 1)
            if rng.random() < 0.5 and size > SIZE_SCALE // 100:
                size -= size % (SIZE_SCALE // 100)
        book.set_level(hits_bids, yes_price, resting - size)
        price = yes_price if is_yes else PRICE_SCALE - yes_price
        self._last_trade[token] = price
        market = book.market
        trade = (
            f'{{"market":"{market.condition_id}","asset_id":"{token}","price":"{_PRICE_TEXT[price]}",'
            f'"size":"{units_text(size, SIZE_DECIMALS)}","fee_rate_bps":"0","side":"{"BUY" if taker_buys else "SELL"}",'
            f'"timestamp":"{_now_ms()}","event_type":"last_trade_price",'
            f'"transaction_hash":"0x{rng.getrandbits(256):064x}"}}'
        )
        return token, trade, market

    def _regrid(self, book: _Book, tick_text: str) -> None:
        tick = TICK_SIZES[tick_text]
        top = PRICE_SCALE - tick
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        for price, size in book.bids.items():
            snapped = price - price % tick  # bids round down, asks up: the book cannot cross
            if snapped >= tick:
                bids[snapped] = bids.get(snapped, 0) + size
        for price, size in book.asks.items():
            snapped = price + (-price) % tick
            if snapped <= top:
                asks[snapped] = asks.get(snapped, 0) + size
        book.bids, book.asks, book.tick, book.tick_text = bids, asks, tick, tick_text
        book.refresh_best()

    # ------------------------------------------------------------------ rendering

    def _price_change_event(self, book: _Book, is_bid: bool, price: int, size: int) -> str:
        prices, rng, market = _PRICE_TEXT, self._rng, book.market
        size_text = units_text(size, SIZE_DECIMALS)
        best_bid, best_ask = book.best_bid, book.best_ask
        yes_entry = (
            f'{{"asset_id":"{market.yes_id}","price":"{prices[price]}","size":"{size_text}",'
            f'"side":"{"BUY" if is_bid else "SELL"}","hash":"{_hash40(rng)}",'
            f'"best_bid":"{prices[best_bid]}","best_ask":"{prices[best_ask]}"}}'
        )
        no_entry = (
            f'{{"asset_id":"{market.no_id}","price":"{prices[PRICE_SCALE - price]}","size":"{size_text}",'
            f'"side":"{"SELL" if is_bid else "BUY"}","hash":"{_hash40(rng)}",'
            f'"best_bid":"{prices[PRICE_SCALE - best_ask]}","best_ask":"{prices[PRICE_SCALE - best_bid]}"}}'
        )
        first, second = (yes_entry, no_entry) if is_bid else (no_entry, yes_entry)  # BUY entry first, as captured
        return (
            f'{{"market":"{market.condition_id}","price_changes":[{first},{second}],'
            f'"timestamp":"{_now_ms()}","event_type":"price_change"}}'
        )

    def _book_event(self, token_id: str, *, with_tick: bool) -> str:
        book = self._book_of[token_id]
        bids, asks = book.levels(token_id)
        prices = _PRICE_TEXT
        bid_text = ",".join(f'{{"price":"{prices[p]}","size":"{units_text(s, SIZE_DECIMALS)}"}}' for p, s in bids)
        ask_text = ",".join(f'{{"price":"{prices[p]}","size":"{units_text(s, SIZE_DECIMALS)}"}}' for p, s in asks)
        last = self._last_trade.get(token_id)
        last_text = "" if last is None else units_text(last, PRICE_DECIMALS, 3)  # real books say "0.550"
        tick_part = f'"tick_size":"{book.tick_text}",' if with_tick else ""
        return (
            f'{{"market":"{book.market.condition_id}","asset_id":"{token_id}","timestamp":"{_now_ms()}",'
            f'"hash":"{_hash40(self._rng)}","bids":[{bid_text}],"asks":[{ask_text}],{tick_part}'
            f'"event_type":"book","last_trade_price":"{last_text}"}}'
        )

    def _books_frame(self, token_ids: Iterable[str]) -> str:
        # the initial dump / resubscribe reply: ONE array frame, one `book` per token
        events = [self._book_event(token, with_tick=True) for token in token_ids]
        return f"[{','.join(events)}]" if events else ""

    def _malformed(self, kind: str) -> str | bytes:
        market = self._markets[0]
        yes_id, no_id = market.yes_id, market.no_id
        timestamp = _now_ms()
        if kind == "truncated_json":
            whole = self._book_event(yes_id, with_tick=True)
            return whole[: len(whole) // 2]
        if kind == "unknown_event":
            return (
                f'{{"market":"{market.condition_id}","asset_id":"{yes_id}","timestamp":"{timestamp}",'
                f'"event_type":"mystery_event"}}'
            )
        if kind == "wrong_types":
            return (
                f'{{"market":"{market.condition_id}","asset_id":"{yes_id}","timestamp":"{timestamp}",'
                f'"bids":[{{"price":0.5,"size":100}}],"asks":[],"event_type":"book"}}'
            )
        if kind == "bad_number":
            # a valid-looking first entry must not be applied when the second one is broken
            return (
                f'{{"market":"{market.condition_id}","price_changes":['
                f'{{"asset_id":"{yes_id}","price":"0.01","size":"1","side":"BUY"}},'
                f'{{"asset_id":"{no_id}","price":"0.12345","size":"1","side":"SELL"}}],'
                f'"timestamp":"{timestamp}","event_type":"price_change"}}'
            )
        if kind == "price_out_of_range":
            return (
                f'{{"market":"{market.condition_id}","asset_id":"{yes_id}","timestamp":"{timestamp}",'
                f'"bids":[{{"price":"1.5","size":"10"}}],"asks":[],"event_type":"book"}}'
            )
        if kind == "unknown_text":
            return "HELLO FROM THE FAKE SERVER"
        if kind == "invalid_utf8_binary":
            return b'{"event_type":"book","asset_id":"\xff\xfe","bids":[],"asks":[]}'
        if kind == "array_of_non_objects":
            return '[1,"book",null,[],true]'
        if kind == "too_deep":
            return "[" * 40 + "]" * 40
        padding = "x" * HUGE_FRAME_BYTES
        return f'{{"event_type":"book","asset_id":"{yes_id}","bids":[],"asks":[],"padding":"{padding}"}}'
