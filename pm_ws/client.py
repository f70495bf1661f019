"""The market-channel connection layer: subscriptions, heartbeat, watchdogs, reconnects, sharding.

Pure asyncio on ``websockets``. Every connection feeds its frames, unchanged, to ONE shared
:class:`~pm_ws.Dispatcher`, which applies them to ONE shared :class:`~pm_ws.BookStore`; this module
only decides what to send, when a socket is dead, and which tokens may not be traded on meanwhile.

Per frame the reader does two clock reads (monotonic for the deadlines, wall for the row's
``RECV_TS_NS``), one integer compare, ``feed(frame, wall())`` and four attribute stores (plus the ``on_frame`` call when one was given). Everything else (resync queue,
pending snapshots, timeouts) runs at most every ``HOUSEKEEPING_NS`` from the reader or on the
watchdog's tick, never per frame. Nothing logs per frame.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, NamedTuple

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State as SocketState

from ._core import IMPLEMENTATION, BookStore
from .backoff import ExponentialBackoff
from .row import EPOCH, RECV_TS_NS, STATE, State

__all__ = [
    "CAUSE_CORE",
    "CAUSE_MARKED",
    "CAUSE_STOPPED",
    "DEFAULT_URL",
    "ClientEvent",
    "EventStream",
    "MarketClient",
    "PolymarketMarketWsClient",
]

DEFAULT_URL = "wss://ws-subscriptions-clob.polymarket.com/ws/market"

logger = logging.getLogger("pm_ws")

HOUSEKEEPING_NS = 5_000_000  # while frames flow, look at resyncs and pending snapshots every 5 ms
WATCHDOG_TICK_MAX = 0.05  # seconds: a resync queued by the last frame of a quiet stream waits at most this
CLOSE_TIMEOUT = 1.0  # seconds a clean close handshake may take before the socket is aborted
EVENT_QUEUE_SIZE = 4096  # default bound of an events() iterator
ERROR_RETRY_DELAY = 1.0  # seconds before reconnecting when the connection's backoff itself failed

_LIVE = int(State.LIVE)
_INVALID = int(State.INVALID)
_NOT_STALE = (int(State.SUBSCRIBING), _LIVE, _INVALID)

# ClientEvent "state" data["cause"]: who changed the row
CAUSE_MARKED = "marked"  # the client called store.mark_stale (subscribe of a LIVE row, disconnect, silence)
CAUSE_STOPPED = "stopped"  # the client marked it STALE because it is stopping
CAUSE_CORE = "core"  # the dispatcher set it from a frame; the client only reports it

EventCallback = Callable[["ClientEvent"], None]
FrameCallback = Callable[[str | bytes, int], None]


class ClientEvent(NamedTuple):
    """A cold event: anything but a book update, delivered by ``on_event`` and ``events()``.

    ``kind`` and ``data`` per kind (``token_id`` is None for connection and market events):

    - ``"state"``: a token's row changed state as seen by the client;
      ``{"state": State, "reason": str, "cause": str}``. ``cause`` says who changed the row:
      :data:`CAUSE_MARKED` (the client called ``store.mark_stale``: ``reason`` is ``"subscribed"``
      for a LIVE row of a shared store, ``"silence"`` or the disconnect's reason),
      :data:`CAUSE_STOPPED` (the client marked it STALE because it is stopping; ``reason``
      ``"client stopped"``) or :data:`CAUSE_CORE` (the dispatcher set it from a frame and the client
      reports it: ``reason`` ``"snapshot"`` for a book that arrived, LIVE or INVALID if crossed,
      ``"resync"`` for INVALID, or STALE after a tick change, with a re-drive queued).
      ``reason`` is for people; test ``cause`` in code (e.g. to replay the client's own marks)
    - ``"trade"``: a ``last_trade_price``; ``{"asset_id", "price", "size", "side", "timestamp"}`` as ints
      in pm_ws units (the row already holds it; this is for consumers that want every trade)
    - ``"new_market"``, ``"market_resolved"``: the server's event object, decoded with orjson
    - ``"connected"``: ``{"connection": int, "tokens": int}`` once the subscription was sent
    - ``"disconnected"``: ``{"connection": int, "reason": str}``; its tokens are already STALE
    - ``"resync"``: ``{"connection": int, "reason": str}``; the token is being re-driven
    """

    kind: str
    token_id: str | None
    data: dict[str, Any]


class EventStream:
    """Async iterator over :class:`ClientEvent`; never blocks the reader.

    The queue is bounded: when the consumer lags, the OLDEST event is dropped and ``dropped``
    counts it. Iteration ends once the client's ``run()`` returned and the queue is drained,
    or after :meth:`close`.
    """

    def __init__(self, maxsize: int, on_close: Callable[[EventStream], None]) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, was {maxsize!r}")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[ClientEvent] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._ended = False
        self._on_close = on_close

    def put(self, event: ClientEvent) -> None:
        """Queue ``event`` (drop the oldest one if full); called by the client, never blocks."""
        if self._ended:
            return
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(event)
        self._wake()

    def end(self) -> None:
        """Let iteration stop once the queued events were consumed."""
        self._ended = True
        self._wake()

    def close(self) -> None:
        """Stop receiving events now and end the iteration."""
        self._on_close(self)
        self._items.clear()
        self.end()

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ClientEvent:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        return self._items.popleft()


class _Socket(ClientConnection):
    """A websockets client connection that reports the end of its data stream synchronously.

    ``on_end`` runs inside the protocol callback that sees a close frame, the end of the stream or
    the lost transport, so the tokens go STALE before any other task (the trader's) can run again.
    """

    on_end: Callable[[], None] | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.on_end is not None and self.protocol.state is not SocketState.OPEN:
            self.on_end()

    def eof_received(self) -> None:
        super().eof_received()
        if self.on_end is not None:  # the peer sends nothing more (connection_lost comes later)
            self.on_end()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_end is not None:
            self.on_end()
        super().connection_lost(exc)


class _Connection:
    """One websocket's share of the tokens and its bookkeeping (state survives reconnects)."""

    def __init__(self, ident: int, backoff: ExponentialBackoff) -> None:
        self.id = ident
        self.backoff = backoff
        self.tokens: dict[str, None] = {}  # wanted on this connection, in subscription order
        self.server_tokens: set[str] = set()  # what the current socket's server was told
        self.redrive: dict[str, None] = {}  # to unsubscribe + subscribe on the next flush, in order
        self.deferred: dict[str, int] = {}  # resyncs held back by the minimum gap: token -> due ns
        self.last_redrive: dict[str, int] = {}  # token -> ns of its last re-drive
        self.awaiting: dict[str, tuple[int, int]] = {}  # token -> (deadline ns, EPOCH when asked)
        self.redriven: set[str] = set()  # awaiting tokens already re-driven once since their last book
        self.dirty = False  # tokens or redrive changed since the last flush
        self.flush_waiters: list[asyncio.Future[None]] = []
        self.wake = asyncio.Event()  # pokes the writer
        self.task: asyncio.Task[None] | None = None
        self.ws: _Socket | None = None
        self.state = "idle"
        self.lost = True  # no live socket
        self.healthy = False  # the current socket delivered a snapshot
        self.retired = False
        self.next_check_ns = 0  # deadlines and stamps in time.monotonic_ns()
        self.last_frame_ns = 0
        self.last_data_ns = 0
        self.frames = 0
        self.bytes = 0
        self.connects = 0
        self.reconnects = 0
        self.redrives = 0
        self.aborts = 0
        self.pings = 0


class MarketClient:
    """Keep a :class:`~pm_ws.BookStore` current from the Polymarket market channel.

    Tokens are spread over connections of at most ``max_tokens_per_connection`` each, in the
    order they were subscribed, two by two: pass each market's YES and NO next to each other so
    they share a socket (a market's ``price_change`` frames carry both tokens; two sockets
    delivering them would apply each entry twice, out of order). Each connection sends
    the subscription first, text ``PING`` every ``ping_interval`` after it, and reconnects with
    ``backoff`` when the socket dies. The store's row ``STATE`` is the trader's contract:
    only ``LIVE`` rows are current.

    Faults handled:

    - no inbound frame (``PONG`` included) for ``inbound_timeout``: socket aborted, reconnect;
    - a token without its ``book`` ``snapshot_timeout`` after asking, or a connection with tokens
      and no data for ``silence_timeout`` while ``PONG`` still flows: those tokens are re-driven
      (unsubscribe + subscribe on the same socket); if the re-drive brings no book within
      ``snapshot_timeout`` the connection is rebuilt (once per token; after that the token is
      just re-driven every ``snapshot_timeout`` so it cannot keep disturbing its neighbours);
    - tokens the dispatcher queues for resync (checksum mismatch, crossed book, tick change)
      are re-driven the same way, at most once per ``RESYNC_GAP``;
    - any disconnect: every token of that connection turns STALE inside the callback that saw
      it, before other code runs; after reconnect each turns LIVE only on its fresh ``book``.
      The backoff is reset only once a new connection delivered a snapshot.

    Parameters
    ----------
    url : str
        Market channel endpoint.
    store : BookStore, optional
        Store to fill; a new one of ``capacity`` slots by default. The dispatcher comes from the
        same core implementation as the store. The client owns the rows of its tokens: remove
        them with :meth:`unsubscribe`, never with ``store.remove``.
    capacity : int
        Slots of the store created when ``store`` is None.
    max_tokens_per_connection : int
        Shard size; the real server silently drops snapshots beyond ~500 per connection.
    ping_interval : float
        Seconds between text ``PING`` frames (sent only after the subscription).
    inbound_timeout : float
        Seconds without any inbound frame before the socket is aborted; keep it above
        ``ping_interval``. Also the handshake timeout.
    snapshot_timeout : float
        Seconds a token may wait for its ``book`` before it is re-driven.
    silence_timeout : float
        Seconds a connection with tokens may go without data (PONG does not count) before all its
        tokens are marked STALE and re-driven.
    backoff : callable, optional
        Zero-argument factory of :class:`~pm_ws.ExponentialBackoff` (one per connection);
        ``ExponentialBackoff()`` (0.25 s doubling to 30 s, full jitter) by default.
    custom_features : bool
        Ask for ``best_bid_ask``, ``new_market`` and ``market_resolved``.
    compression : bool
        Negotiate permessage-deflate. Off by default: inflating a ~600 B frame costs about 2 us
        in zlib, ten times the whole dispatcher, to save ~480 B of wire; only slow links gain.
    connect_stagger : float
        Minimum seconds between two connection attempts of this client (many shards do not
        hit the server at once, at start or after a mass disconnect).
    max_frame_bytes : int
        Largest frame the socket takes (the initial dump for N tokens is one frame); a bigger one
        closes the connection (1009). The dispatcher still rejects, counts and skips frames above
        its own limit (16 MiB), so one huge frame below this costs no reconnect.
    on_event : callable, optional
        ``on_event(ClientEvent)`` for cold events, called synchronously from the reader: keep it
        short and never block. Exceptions are counted in ``stats()`` and logged once.
    on_frame : callable, optional
        ``on_frame(frame, recv_ns)`` for every inbound frame of every socket, exactly as fed to the
        dispatcher (``str`` or ``bytes``) with the receive time it was fed with, called right after
        ``feed`` returned (the row already shows it) and before the next frame is read; e.g. to
        record the stream. Same rules as ``on_event``; when None the reader pays nothing for it.

    Raises
    ------
    ValueError
        If a parameter is out of range.
    """

    RESYNC_GAP = 1.0  # seconds between resyncs of one token: a crossed server book cannot loop hot

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        store: BookStore | None = None,
        capacity: int = 4096,
        max_tokens_per_connection: int = 200,
        ping_interval: float = 10.0,
        inbound_timeout: float = 30.0,
        snapshot_timeout: float = 30.0,
        silence_timeout: float = 120.0,
        backoff: Callable[[], ExponentialBackoff] | None = None,
        custom_features: bool = True,
        compression: bool = False,
        connect_stagger: float = 0.1,
        max_frame_bytes: int = 32 * 2**20,
        on_event: EventCallback | None = None,
        on_frame: FrameCallback | None = None,
    ) -> None:
        for name, value in (
            ("ping_interval", ping_interval),
            ("inbound_timeout", inbound_timeout),
            ("snapshot_timeout", snapshot_timeout),
            ("silence_timeout", silence_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, was {value!r}")
        if max_tokens_per_connection < 1:
            raise ValueError(f"max_tokens_per_connection must be >= 1, was {max_tokens_per_connection!r}")
        if connect_stagger < 0:
            raise ValueError(f"connect_stagger must be >= 0, was {connect_stagger!r}")
        if ping_interval >= inbound_timeout:
            logger.warning(
                "ping_interval %.3gs >= inbound_timeout %.3gs: a quiet healthy connection will be aborted",
                ping_interval,
                inbound_timeout,
            )
        self.url = url
        self.store: BookStore = store if store is not None else BookStore(capacity)
        core = sys.modules[type(self.store).__module__]  # a compiled store needs the compiled dispatcher
        self.dispatcher = core.Dispatcher(self.store, on_event=self._on_core_event, emit_trades=True)
        self.max_tokens_per_connection = max_tokens_per_connection
        self.ping_interval = float(ping_interval)
        self.inbound_timeout = float(inbound_timeout)
        self.snapshot_timeout = float(snapshot_timeout)
        self.silence_timeout = float(silence_timeout)
        self.custom_features = custom_features
        self.compression = compression
        self.connect_stagger = float(connect_stagger)
        self.max_frame_bytes = max_frame_bytes
        self._backoff_factory = backoff if backoff is not None else ExponentialBackoff
        self._on_event = on_event
        self._on_frame = on_frame
        self._streams: list[EventStream] = []
        self._connections: list[_Connection] = []
        self._retiring: set[asyncio.Task[None]] = set()  # tasks of connections closing for lack of tokens
        self._owner: dict[str, _Connection] = {}
        self._rebuilt_for: set[str] = set()  # tokens that already cost their connection a rebuild
        self._next_id = 0
        self._next_connect_at = 0.0
        self._running = False
        self._stopping = False
        self._stop = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._done: asyncio.Event | None = None
        self._callback_errors = 0
        # The watchdog's tick: fine enough for the shortest deadline, never a busy loop
        shortest = min(self.inbound_timeout, self.snapshot_timeout, self.silence_timeout)
        self._tick = min(max(shortest / 10, 0.005), WATCHDOG_TICK_MAX)

    # ------------------------------------------------------------------ public API

    async def subscribe(self, token_ids: Iterable[str]) -> None:
        """Subscribe to ``token_ids`` (already subscribed ones are ignored).

        New tokens join the first connection with room (an ``operation: subscribe`` frame on
        its open socket; no other token is disturbed) or a new connection. Each token's row
        is ``SUBSCRIBING`` until its ``book`` arrives. Returns once the frames carrying them were
        sent on the connected sockets concerned (or such a socket died: its next one carries
        them); tokens of a connection without a socket (connecting, or waiting to reconnect) go
        in the subscription frame of its next socket.

        Raises
        ------
        ValueError
            If a token id is invalid (nothing of this call is subscribed then).
        CapacityError
            If the store is full (nothing of this call is subscribed then).
        """
        await self._flushed(self._add_tokens(token_ids))

    async def unsubscribe(self, token_ids: Iterable[str]) -> None:
        """Unsubscribe from ``token_ids`` (unknown ones are ignored) and free their rows.

        A connection left without tokens is closed. Returns once the frames were sent.
        """
        await self._flushed(self._remove_tokens(token_ids))

    async def run(self, stop_event: asyncio.Event | None = None) -> None:
        """Maintain every connection until ``stop_event`` is set or :meth:`close` is called.

        On return all sockets are closed, every token of this client is STALE and the
        :meth:`events` iterators end.
        """
        if self._running:
            raise RuntimeError("this MarketClient is already running")
        self._running = True
        self._stopping = False
        self._done = asyncio.Event()
        logger.info(
            "pm_ws client starting (core=%s): %d tokens on %d connections to %s",
            IMPLEMENTATION,
            len(self._owner),
            len(self._connections),
            self.url,
        )
        for conn in self._connections:
            self._start(conn)
        waiters = [asyncio.ensure_future(self._stop.wait())]
        if stop_event is not None:
            waiters.append(asyncio.ensure_future(stop_event.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await self._shutdown()

    async def close(self) -> None:
        """Stop :meth:`run` and wait until it returned (no-op when not running)."""
        task = self._run_task
        pending = task is not None and not task.done()  # started by ``async with``, not running yet
        if not (self._running or pending):
            return  # a stop set now would end the next run() at once
        self._stop.set()
        if self._running and self._done is not None:
            await self._done.wait()
        elif task is not None:
            await asyncio.wait([task])

    async def __aenter__(self) -> MarketClient:
        self._run_task = asyncio.create_task(self.run(), name="pm_ws.MarketClient.run")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._run_task is not None:
            task, self._run_task = self._run_task, None
            if not task.done():  # close() may have ended it: a stop set now would end the next run()
                self._stop.set()
            await task

    def events(self, maxsize: int = EVENT_QUEUE_SIZE) -> EventStream:
        """Return a new async iterator over cold events, registered from this call on.

        Each iterator has its own bounded queue (``maxsize``); a slow consumer loses the oldest
        events (counted in ``EventStream.dropped``), never slows the reader.
        """
        stream = EventStream(maxsize, self._forget_stream)
        self._streams.append(stream)
        return stream

    def stats(self) -> dict[str, Any]:
        """Return a snapshot of the client's health (cheap enough for a UI refresh, not per frame).

        Returns
        -------
        dict
            ``connections``: list of dicts (``id``, ``state``, ``tokens``, ``frames``, ``bytes``,
            ``reconnects``, ``redrives``, ``aborts`` (sockets the watchdogs killed), ``pings``,
            ``awaiting_snapshot``, ``last_frame_age`` in seconds or None);
            ``tokens``: ``{token_id: {"state": State, "epoch": int, "age": seconds since the row
            last changed or None, "connection": int}}``;
            ``dispatcher``: the dispatcher's counters; ``events_dropped``; ``callback_errors``.
        """
        now = time.time_ns()  # the rows' RECV_TS_NS clock
        mono = time.monotonic_ns()  # the connections' deadline clock
        view = self.store.view
        slot_of = self.store.slot
        tokens: dict[str, dict[str, Any]] = {}
        for token, conn in self._owner.items():
            slot = slot_of(token)
            recv_ns = view[slot, RECV_TS_NS]
            tokens[token] = {
                "state": State(view[slot, STATE]),
                "epoch": view[slot, EPOCH],
                "age": (now - recv_ns) / 1e9 if recv_ns else None,
                "connection": conn.id,
            }
        connections = [
            {
                "id": conn.id,
                "state": conn.state,
                "tokens": len(conn.tokens),
                "frames": conn.frames,
                "bytes": conn.bytes,
                "reconnects": conn.reconnects,
                "redrives": conn.redrives,
                "aborts": conn.aborts,
                "pings": conn.pings,
                "awaiting_snapshot": len(conn.awaiting),
                "last_frame_age": (mono - conn.last_frame_ns) / 1e9 if conn.last_frame_ns else None,
            }
            for conn in self._connections
        ]
        return {
            "connections": connections,
            "tokens": tokens,
            "dispatcher": self.dispatcher.stats(),
            "events_dropped": sum(stream.dropped for stream in self._streams),
            "callback_errors": self._callback_errors,
        }

    # ------------------------------------------------------------------ subscriptions

    def _add_tokens(self, token_ids: Iterable[str]) -> set[_Connection]:
        added = [token for token in dict.fromkeys(_as_ids(token_ids)) if token not in self._owner]
        created: list[str] = []
        try:
            for token in added:
                if token not in self.store:  # the store may be shared with the caller
                    self.store.add(token)  # validates the id
                    created.append(token)
        except Exception:
            for token in created:
                self.store.remove(token)
            raise
        # A row the caller's store already holds is not maintained by us yet
        self._mark_stale(added, "subscribed", (_LIVE, _INVALID))
        touched: set[_Connection] = set()
        # Neighbours in the list share a connection: a market's YES and NO must not be split, or both
        # sockets deliver the market's price_change frames and the duplicates trip the checksum
        step = 2 if self.max_tokens_per_connection >= 2 else 1
        for start in range(0, len(added), step):
            pair = added[start : start + step]
            conn = self._connection_with_room(len(pair))
            for token in pair:
                conn.tokens[token] = None
                self._owner[token] = conn
                if token in conn.server_tokens:  # unsubscribed and back before the flush: the server
                    conn.redrive[token] = None  # still has it and would send no book without a re-drive
            conn.dirty = True
            touched.add(conn)
        for conn in touched:
            if self._running and conn.task is None:
                self._start(conn)
            conn.wake.set()
        return touched

    def _remove_tokens(self, token_ids: Iterable[str]) -> set[_Connection]:
        touched: set[_Connection] = set()
        for token in dict.fromkeys(_as_ids(token_ids)):
            conn = self._owner.pop(token, None)
            if conn is None:
                continue
            del conn.tokens[token]
            conn.redrive.pop(token, None)
            conn.deferred.pop(token, None)
            conn.last_redrive.pop(token, None)
            conn.awaiting.pop(token, None)
            conn.redriven.discard(token)
            self._rebuilt_for.discard(token)
            self.store.remove(token)
            conn.dirty = True
            touched.add(conn)
        for conn in touched:
            if not conn.tokens:
                self._retire(conn)
            conn.wake.set()
        return touched

    def _connection_with_room(self, needed: int) -> _Connection:
        for conn in self._connections:
            if not conn.retired and len(conn.tokens) + needed <= self.max_tokens_per_connection:
                return conn
        conn = _Connection(self._next_id, self._backoff_factory())
        self._next_id += 1
        self._connections.append(conn)
        return conn

    def _retire(self, conn: _Connection) -> None:
        conn.retired = True
        self._connections.remove(conn)
        if conn.task is None:
            return
        self._retiring.add(conn.task)  # its writer closes the socket; shutdown still waits for it
        conn.task.add_done_callback(self._retiring.discard)
        if conn.ws is None:
            conn.task.cancel()  # connecting or in backoff: nothing to close cleanly

    async def _flushed(self, conns: set[_Connection]) -> None:
        # Wait until each open socket concerned sent the frames for the current token sets
        waiters = []
        for conn in conns:
            # "subscribing": the subscription frame is already on its way, their frames follow it
            if conn.ws is not None and not conn.lost and conn.state in ("subscribing", "open"):
                waiter = asyncio.get_running_loop().create_future()
                conn.flush_waiters.append(waiter)
                conn.wake.set()
                waiters.append(waiter)
        if waiters:
            await asyncio.gather(*waiters)

    def _operation_frames(self, conn: _Connection) -> list[str]:
        # The diff between wanted and told, as operation frames: unsubscribe first, then subscribe
        if not conn.dirty:
            return []
        conn.dirty = False
        now = time.monotonic_ns()
        wanted = conn.tokens
        told = conn.server_tokens
        # A token that read LIVE since its re-drive was asked got a fresh book meanwhile: nothing to redo
        # (and unsubscribing a LIVE token would leave it LIVE while the server sends it nothing)
        redrive = dict.fromkeys(t for t in conn.redrive if t in wanted and self._row(t, STATE) != _LIVE)
        conn.redrive.clear()
        unsubscribe = [token for token in told if token not in wanted]
        unsubscribe += [token for token in redrive if token in told]
        subscribe = [token for token in wanted if token not in told or token in redrive]
        frames = []
        if unsubscribe:
            frames.append(_operation_frame("unsubscribe", unsubscribe, None))
        if subscribe:
            frames.append(_operation_frame("subscribe", subscribe, self.custom_features))
            deadline = now + int(self.snapshot_timeout * 1e9)
            for token in subscribe:
                conn.awaiting[token] = (deadline, self._row(token, EPOCH))
                if token in redrive:
                    conn.redriven.add(token)
                    conn.last_redrive[token] = now
        conn.server_tokens = set(wanted)
        return frames

    # ------------------------------------------------------------------ connection tasks

    def _start(self, conn: _Connection) -> None:
        conn.wake = asyncio.Event()
        conn.wake.set()
        conn.task = asyncio.create_task(self._maintain(conn), name=f"pm_ws.connection.{conn.id}")

    async def _maintain(self, conn: _Connection) -> None:
        # One connection's life: connect, serve until the socket dies, back off, again
        try:
            while not self._stopping and not conn.retired:
                try:
                    await self._connect_slot()
                    if self._stopping or conn.retired:
                        break
                    if conn.connects:
                        conn.reconnects += 1
                    conn.connects += 1
                    conn.state = "connecting"
                    try:
                        ws = await connect(
                            self.url,
                            ping_interval=None,  # the server wants text PING; ours are sent by the writer
                            ping_timeout=None,
                            compression="deflate" if self.compression else None,
                            max_size=self.max_frame_bytes,
                            open_timeout=self.inbound_timeout,
                            close_timeout=CLOSE_TIMEOUT,
                            create_connection=_Socket,
                        )
                    except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
                        logger.warning("connection %d: connect to %s failed: %r", conn.id, self.url, exc)
                    else:
                        await self._serve(conn, ws)  # type: ignore[arg-type]
                    if self._stopping or conn.retired:
                        break
                    conn.state = "backoff"
                    delay = conn.backoff.next_delay()
                except Exception:  # a bug here must not leave this connection's tokens STALE for good
                    logger.exception("connection %d: unexpected error, reconnecting", conn.id)
                    conn.state = "backoff"
                    delay = self._retry_delay(conn)
                logger.info("connection %d: reconnecting in %.3fs", conn.id, delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if not (self._stopping or conn.retired):
                raise
        finally:
            conn.state = "closed"

    def _retry_delay(self, conn: _Connection) -> float:
        # After an unexpected error: the connection's backoff, unless that is what failed
        try:
            return conn.backoff.next_delay()
        except Exception:
            logger.exception("connection %d: backoff failed, retrying in %gs", conn.id, ERROR_RETRY_DELAY)
            return ERROR_RETRY_DELAY

    async def _connect_slot(self) -> None:
        # Space this client's connection attempts by connect_stagger
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now, self._next_connect_at)
        self._next_connect_at = at + self.connect_stagger
        if at > now:
            await asyncio.sleep(at - now)

    async def _serve(self, conn: _Connection, ws: _Socket) -> None:
        # Subscribe, then read until the socket dies; the watchdog and the writer run beside
        now = time.monotonic_ns()
        conn.ws = ws
        conn.lost = False
        conn.healthy = False
        conn.state = "subscribing"
        conn.last_frame_ns = conn.last_data_ns = now
        conn.next_check_ns = 0
        ws.on_end = lambda: self._socket_lost(conn, ws, "closed by the server or the network")
        helpers: list[asyncio.Task[None]] = []
        try:  # from here on the finally closes the socket, whatever fails
            tokens = list(conn.tokens)
            conn.server_tokens = set(tokens)
            conn.redrive.clear()
            conn.redriven.clear()
            conn.deferred.clear()
            conn.dirty = False
            deadline = now + int(self.snapshot_timeout * 1e9)
            conn.awaiting = {token: (deadline, self._row(token, EPOCH)) for token in tokens}
            # A peer that stops reading could block this send; the watchdog does not run yet
            await asyncio.wait_for(ws.send(self._subscription_frame(tokens)), self.inbound_timeout)
            if conn.lost:
                return
            conn.state = "open"
            logger.info("connection %d: subscribed %d tokens (core=%s)", conn.id, len(tokens), IMPLEMENTATION)
            self._emit("connected", None, {"connection": conn.id, "tokens": len(tokens)})
            helpers.append(asyncio.create_task(self._write(conn, ws), name=f"pm_ws.writer.{conn.id}"))
            helpers.append(asyncio.create_task(self._watch(conn, ws), name=f"pm_ws.watchdog.{conn.id}"))
            for helper in helpers:
                helper.add_done_callback(lambda task: self._helper_done(conn, ws, task))
            feed = self.dispatcher.feed if self._on_frame is None else self._tapped_feed(self._on_frame)
            # Deadlines run on the monotonic clock (a wall-clock step must not fire or freeze them);
            # the rows get the wall clock, comparable with the exchange's timestamps
            monotonic, wall = time.monotonic_ns, time.time_ns
            # The hot loop: keep it this small
            async for frame in ws:
                now = monotonic()
                if now >= conn.next_check_ns and self._housekeep(conn, now):
                    break  # the socket is gone: frames still buffered must not revive its tokens
                conn.frames += 1
                conn.bytes += len(frame)
                conn.last_frame_ns = now
                if feed(frame, wall()):
                    conn.last_data_ns = now
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
        except Exception:
            logger.exception("connection %d: unexpected error, reconnecting", conn.id)
        finally:
            self._socket_lost(conn, ws, "socket closed")  # synchronous: before anything else can run
            for helper in helpers:
                helper.cancel()
            for waiter in conn.flush_waiters:
                if not waiter.done():
                    waiter.set_result(None)  # the next subscription frame carries their tokens
            conn.flush_waiters.clear()
            conn.ws = None
            if ws.state is not SocketState.CLOSED:
                ws.transport.abort()
            if helpers:
                await asyncio.gather(*helpers, return_exceptions=True)
            logger.log(
                logging.INFO if self._stopping or conn.retired else logging.WARNING,
                "connection %d: disconnected (close code %s, %d frames so far); %d tokens STALE",
                conn.id,
                ws.close_code,
                conn.frames,
                len(conn.tokens),
            )

    async def _write(self, conn: _Connection, ws: _Socket) -> None:
        # The only sender after the subscription: operation frames in order, PING on cadence
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping_interval
        try:
            while True:
                timeout = next_ping - loop.time()
                if timeout > 0 and not conn.wake.is_set():
                    try:
                        await asyncio.wait_for(conn.wake.wait(), timeout)
                    except asyncio.TimeoutError:
                        pass
                conn.wake.clear()
                if conn.retired:
                    await ws.close()
                    return
                waiters, conn.flush_waiters = conn.flush_waiters, []
                try:
                    for frame in self._operation_frames(conn):
                        await ws.send(frame)
                finally:  # sent, or the socket died and the next subscription frame carries them
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
                now = loop.time()
                if now >= next_ping:
                    await ws.send("PING")
                    conn.pings += 1
                    next_ping += self.ping_interval
                    if next_ping <= now:  # fell behind (a stalled loop): keep the cadence, no catch-up burst
                        next_ping = now + self.ping_interval
        except ConnectionClosed:
            return

    async def _watch(self, conn: _Connection, ws: _Socket) -> None:
        # Deadlines that need no frame to fire: inbound silence, data silence, missing books
        inbound_ns = int(self.inbound_timeout * 1e9)
        silence_ns = int(self.silence_timeout * 1e9)
        while not conn.lost:
            await asyncio.sleep(self._tick)
            now = time.monotonic_ns()
            if now - conn.last_frame_ns > inbound_ns:
                self._abort(conn, ws, f"no inbound frame for {self.inbound_timeout:g}s")
                return
            if self._housekeep(conn, now):
                return
            if conn.tokens and now - conn.last_data_ns > silence_ns:
                conn.last_data_ns = now  # one re-drive per silence period
                tokens = list(conn.tokens)
                self._mark_stale(tokens, "silence")
                self._redrive(conn, tokens, f"no data for {self.silence_timeout:g}s")

    def _helper_done(self, conn: _Connection, ws: _Socket, task: asyncio.Task[None]) -> None:
        # A writer or watchdog that died of a bug must not leave a socket without PING or deadlines
        if task.cancelled() or task.exception() is None:
            return
        logger.error("connection %d: %s failed", conn.id, task.get_name(), exc_info=task.exception())
        self._abort(conn, ws, f"{task.get_name()} failed")

    # ------------------------------------------------------------------ fault handling

    def _housekeep(self, conn: _Connection, now: int) -> bool:
        # Resyncs, deferred resyncs, pending snapshots. True when the socket is gone.
        if conn.lost:
            return True
        conn.next_check_ns = now + HOUSEKEEPING_NS
        resync = self.dispatcher.pending_resync()
        if resync:
            self._route_resync(resync, now)
        if conn.deferred:
            due = [token for token, at in conn.deferred.items() if at <= now]
            for token in due:
                del conn.deferred[token]
            due = [token for token in due if self._row(token, STATE) != _LIVE]  # a book came meanwhile
            if due:
                self._redrive(conn, due, "resync")
        if conn.awaiting:
            self._check_snapshots(conn, now)
        return conn.lost

    def _route_resync(self, tokens: list[str], now: int) -> None:
        # The dispatcher's queue is shared: hand each token to its connection
        gap_ns = int(min(self.RESYNC_GAP, self.snapshot_timeout) * 1e9)
        for token in tokens:
            owner = self._owner.get(token)
            if owner is None:
                continue
            state = State(self._row(token, STATE))
            if state is State.LIVE:
                continue  # a fresh book (e.g. the refresh after a tick change) already arrived
            self._emit("state", token, {"state": state, "reason": "resync", "cause": CAUSE_CORE})
            last = owner.last_redrive.get(token)
            if last is not None and now - last < gap_ns:
                owner.deferred[token] = last + gap_ns
            else:
                self._redrive(owner, [token], f"resync ({state.name})")

    def _check_snapshots(self, conn: _Connection, now: int) -> None:
        view = self.store.view
        slot_of = self.store.slot
        arrived = []
        late = []
        for token, (deadline, epoch) in conn.awaiting.items():
            slot = slot_of(token)
            state = view[slot, STATE]
            if state == _LIVE or (state == _INVALID and view[slot, EPOCH] != epoch):
                arrived.append(token)
            elif now >= deadline:
                late.append(token)
        for token in arrived:
            del conn.awaiting[token]
            conn.redriven.discard(token)
            self._rebuilt_for.discard(token)
            state = State(self._row(token, STATE))
            self._emit("state", token, {"state": state, "reason": "snapshot", "cause": CAUSE_CORE})
        if arrived and not conn.healthy:
            conn.healthy = True
            conn.backoff.reset()  # only a connection that delivered a snapshot proves the server healthy
        if not late:
            return
        for token in late:
            del conn.awaiting[token]
        first = [token for token in late if token not in conn.redriven]
        again = [token for token in late if token in conn.redriven]
        if first:
            self._redrive(conn, first, f"no book after {self.snapshot_timeout:g}s")
        if not again:
            return
        # Rebuild when the whole socket looks dead, or for tokens that have not cost a rebuild yet;
        # a token that stays bookless after its rebuild is only re-driven, its neighbours stay put
        culprits = [token for token in again if token not in self._rebuilt_for]
        if culprits or not any(self._row(token, STATE) == _LIVE for token in conn.tokens):
            self._rebuilt_for.update(culprits)
            self._abort(conn, conn.ws, f"{len(again)} tokens got no book even after a re-drive")
        else:
            self._redrive(conn, again, "no book after a rebuild either")

    def _redrive(self, conn: _Connection, tokens: list[str], reason: str) -> None:
        tokens = [token for token in tokens if token in conn.tokens]
        if not tokens:
            return
        for token in tokens:
            conn.redrive[token] = None
            self._emit("resync", token, {"connection": conn.id, "reason": reason})
        conn.redrives += len(tokens)
        conn.dirty = True
        conn.wake.set()
        logger.warning("connection %d: re-driving %d tokens: %s", conn.id, len(tokens), reason)

    def _abort(self, conn: _Connection, ws: _Socket | None, reason: str) -> None:
        # Kill a socket the watchdogs gave up on; its tokens go STALE first
        if ws is None or conn.ws is not ws:
            return
        conn.aborts += 1
        logger.warning("connection %d: aborting the socket: %s", conn.id, reason)
        self._socket_lost(conn, ws, reason)
        ws.transport.abort()

    def _socket_lost(self, conn: _Connection, ws: _Socket, reason: str) -> None:
        # Runs inside protocol callbacks too: synchronous, never raises
        if conn.ws is not ws or conn.lost:
            return
        conn.lost = True
        conn.next_check_ns = 0  # the reader stops at its next frame
        if not self._stopping:
            conn.state = "disconnected"
        try:
            self._mark_stale(list(conn.tokens), reason)
            if not conn.retired:  # closing a connection left without tokens is no fault
                self._emit("disconnected", None, {"connection": conn.id, "reason": reason})
        except Exception:  # pragma: no cover - a bug here must not break the event loop's callback
            logger.exception("connection %d: marking tokens stale failed", conn.id)

    def _mark_stale(
        self, tokens: list[str], reason: str, states: tuple[int, ...] = _NOT_STALE, cause: str = CAUSE_MARKED
    ) -> None:
        view = self.store.view
        slot_of = self.store.slot
        store = self.store
        stale = [token for token in tokens if token in store and view[slot_of(token), STATE] in states]
        if not stale:
            return
        self.store.mark_stale(stale)
        for token in stale:
            self._emit("state", token, {"state": State.STALE, "reason": reason, "cause": cause})

    async def _shutdown(self) -> None:
        self._stopping = True
        for conn in self._connections:
            self._mark_stale(list(conn.tokens), "client stopped", cause=CAUSE_STOPPED)
            if conn.ws is not None:  # frames still queued or arriving during the close must not revive a row
                self._socket_lost(conn, conn.ws, "client stopped")
        closing = [conn.ws.close() for conn in self._connections if conn.ws is not None]
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
        tasks = [conn.task for conn in self._connections if conn.task is not None] + list(self._retiring)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for conn in self._connections:
            conn.task = None
            conn.state = "closed"
        for stream in self._streams:
            stream.end()
        self._streams.clear()  # ended streams take no more events
        self._stop = asyncio.Event()  # an Event binds to the loop that first waits on it: fresh per run
        self._running = False
        if self._done is not None:
            self._done.set()
        logger.info("pm_ws client stopped; dispatcher counters: %s", self._nonzero_counters())

    # ------------------------------------------------------------------ helpers

    def _subscription_frame(self, tokens: list[str]) -> str:
        return orjson.dumps(
            {
                "assets_ids": tokens,
                "type": "market",
                "initial_dump": True,
                "custom_feature_enabled": self.custom_features,
            }
        ).decode()

    def _tapped_feed(self, on_frame: FrameCallback) -> Callable[[str | bytes, int], int]:
        # Only a client with on_frame pays for the extra call: the reader's loop stays the same
        feed = self.dispatcher.feed

        def tapped(frame: str | bytes, recv_ns: int) -> int:
            applied: int = feed(frame, recv_ns)
            try:
                on_frame(frame, recv_ns)
            except Exception:
                self._callback_failed("on_frame")
            return applied

        return tapped

    def _callback_failed(self, name: str) -> None:
        self._callback_errors += 1
        if self._callback_errors == 1:
            logger.exception("%s callback failed (logged once; see stats()['callback_errors'])", name)

    def _row(self, token: str, field: int) -> int:
        return int(self.store.view[self.store.slot(token), field])

    def _on_core_event(self, event_type: str, payload: dict[str, Any]) -> None:
        # Called by the dispatcher inside feed(): trades and the custom-feature market events
        if self._on_event is None and not self._streams:
            return
        if event_type == "last_trade_price":
            self._emit("trade", payload.get("asset_id"), payload)
        else:
            self._emit(event_type, None, payload)

    def _emit(self, kind: str, token_id: str | None, data: dict[str, Any]) -> None:
        if self._on_event is None and not self._streams:
            return
        event = ClientEvent(kind, token_id, data)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                self._callback_failed("on_event")
        for stream in self._streams:
            stream.put(event)

    def _forget_stream(self, stream: EventStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)

    def _nonzero_counters(self) -> dict[str, int]:
        return {key: value for key, value in self.dispatcher.stats().items() if value}


class PolymarketMarketWsClient(MarketClient):
    """The seed's surface, now on :class:`MarketClient`: one market's YES and NO tokens.

    Parameters
    ----------
    ws_url : str
        Market channel endpoint.
    pm_cache : BookStore
        The store the trader reads.
    ping_interval : float
        Seconds between text ``PING`` frames.
    ping_timeout : float
        Seconds without any inbound frame before the socket is aborted and reconnected.
    """

    def __init__(
        self, ws_url: str, pm_cache: BookStore, ping_interval: float = 20, ping_timeout: float = 60
    ) -> None:
        super().__init__(ws_url, store=pm_cache, ping_interval=ping_interval, inbound_timeout=ping_timeout)
        self.market_id: str | None = None

    def set_tokens(self, yes_token_id: str, no_token_id: str, market_id: str) -> None:
        """Follow this market's two tokens instead of the previous ones (takes effect at once if running)."""
        wanted = [yes_token_id, no_token_id]
        self._add_tokens(wanted)  # first, so the new pair takes the old pair's connection
        self._remove_tokens([token for token in self._owner if token not in wanted])
        self.market_id = market_id


def _as_ids(token_ids: Iterable[str]) -> list[str]:
    if isinstance(token_ids, (str, bytes)):
        raise TypeError("token_ids must be an iterable of ids, not a single id")
    return [token.decode("ascii") if isinstance(token, bytes) else str(token) for token in token_ids]


def _operation_frame(operation: str, tokens: list[str], custom_features: bool | None) -> str:
    body: dict[str, Any] = {"assets_ids": tokens, "operation": operation}
    if custom_features is not None:
        body["custom_feature_enabled"] = custom_features
    return orjson.dumps(body).decode()
