"""The market-channel client: public API, sharding of tokens over connections, event fan-out.

Pure asyncio. Every connection (a :class:`~pm_ws._shard.Shard`) feeds its frames, unchanged, to ONE
shared :class:`~pm_ws.Dispatcher`, which applies them to ONE shared :class:`~pm_ws.BookStore`; the
client only decides which tokens go on which connection, when a token is STALE, and who hears about it.

Per frame the reader does two clock reads (monotonic for the deadlines, wall for the row's ``RECV_TS_NS``),
one integer compare, ``feed(frame, wall(), number)`` and three attribute stores (plus the ``on_frame`` and
:meth:`MarketClient.add_tap` calls when there are any). The connection's number makes the dispatcher change
only the rows of tokens that connection owns (the rest is counted ``skip_foreign``). Everything else (resync
queue, pending snapshots, timeouts) runs at most every ``HOUSEKEEPING_NS`` from the reader or on the
watchdog's tick, never per frame. Nothing logs per frame.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from ssl import SSLContext
from typing import Any, Literal

from . import _client_options as options
from ._client_stats import connection_stats, token_stats
from ._core import IMPLEMENTATION, BookStore
from ._event_fanout import EventFanout
from ._shard import Shard, Watchdog
from ._shard_pool import ShardPool
from ._taps import FeedFunction, StoreCallback, Taps, TapFrameCallback
from ._transport import check_transport
from ._watchdogs import DEADLINES, HOUSEKEEPING, WATCHDOGS
from .backoff import ExponentialBackoff
from .client_events import CAUSE_CORE, CAUSE_MARKED, CAUSE_STOPPED, ClientEvent, EventCallback, EventStream
from .row import STATE, State

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

WATCHDOG_TICK_MAX = 0.05  # seconds: a resync queued by the last frame of a quiet stream waits at most this
EVENT_QUEUE_SIZE = 4096  # default bound of an events() iterator

_LIVE = int(State.LIVE)
_INVALID = int(State.INVALID)
_NOT_STALE = (int(State.SUBSCRIBING), _LIVE, _INVALID, int(State.UNCONFIRMED))  # RESOLVED is final

FrameCallback = Callable[[str | bytes, int], None]


class MarketClient:
    """Keep a :class:`~pm_ws.BookStore` current from the Polymarket market channel.

    Tokens fill connections of ``max_tokens_per_connection``; a token's row changes only by frames of
    the connection that owns it. Only ``LIVE`` rows are current: a disconnect turns its rows STALE, each
    LIVE again on its fresh ``book``; a LIVE row is never older than ``confirm_interval + snapshot_timeout``
    since the server last confirmed it. The README (client section, fault matrix) states it all in full.

    Parameters
    ----------
    url : str
        ``ws://`` or ``wss://`` endpoint with a host (credentials in it are never logged).
    store : BookStore, optional
        Store to fill (a new one of ``capacity`` slots by default); remove tokens with :meth:`unsubscribe`.
    capacity : int
        Slots of the store created when ``store`` is None.
    max_tokens_per_connection : int
        Shard size; the real server silently drops snapshots beyond ~500 per connection.
    ping_interval : float
        Seconds between text ``PING`` frames, at least 0.05; keep it below ``inbound_timeout``.
    inbound_timeout : float
        Seconds without any inbound frame before the socket is aborted; also the handshake timeout.
    snapshot_timeout : float
        Seconds a token may wait for its ``book`` before it is re-driven.
    confirm_interval : float or None
        Seconds a LIVE row may go unconfirmed before it is probed; None or ``inf``: no probing.
    write_timeout : float or None
        Seconds a send may take before the socket is aborted; None or ``inf``: no deadline.
    backoff : ExponentialBackoff or callable, optional
        Reconnect delays: a factory or one instance, copied per connection (0.25 s doubling to 30 s).
    custom_features : bool
        Ask for ``best_bid_ask``, ``new_market`` and ``market_resolved``.
    compression : bool
        Negotiate permessage-deflate (off: it costs more CPU than it saves on a fast link).
    connect_stagger : float
        Minimum seconds between two connection attempts of this client.
    max_frame_bytes : int
        Largest frame the socket takes; a bigger one closes the connection (1009).
    on_event : callable, optional
        ``on_event(ClientEvent)`` for cold events, called from the reader: keep it short, never block;
        what it raises is counted in ``stats()["callback_errors"]`` and the connection goes on.
    on_frame : callable, optional
        ``on_frame(frame, recv_ns)`` for every inbound frame, right after it was fed; as ``on_event``.
    ssl : ssl.SSLContext, optional
        TLS settings of a ``wss://`` connection (the default context verifies the server).
    proxy : str or True or None
        None: connect directly, ignoring ``HTTP(S)_PROXY``; a proxy URL; True: the environment's proxy.
    transport : str
        ``"websockets"`` (default) or ``"picows"`` (``pip install 'pm_ws[fast]'``; no ``compression``).

    Every duration is in seconds, finite and > 0 (``connect_stagger`` may be 0).

    Raises
    ------
    TypeError
        If a parameter has the wrong type.
    ValueError
        If a parameter is out of range or the url is not a ws:// or wss:// url with a host and a valid port.
    ImportError
        If ``transport="picows"`` and picows is not installed.
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
        confirm_interval: float | None = 30.0,
        write_timeout: float | None = 5.0,
        backoff: Callable[[], ExponentialBackoff] | ExponentialBackoff | None = None,
        custom_features: bool = True,
        compression: bool = False,
        connect_stagger: float = 0.1,
        max_frame_bytes: int = 32 * 2**20,
        on_event: EventCallback | None = None,
        on_frame: FrameCallback | None = None,
        ssl: SSLContext | None = None,
        proxy: str | Literal[True] | None = None,
        transport: str = "websockets",
    ) -> None:
        given = locals()  # the parameters by name: the watchdogs name their deadlines
        deadlines = {name: options.seconds(name, given[name]) for name in (*DEADLINES, "write_timeout")}
        ping_interval = options.seconds("ping_interval", ping_interval, minimum=options.MIN_PING_INTERVAL)
        url_parts = options.market_url(url)
        self._log_url = options.loggable(url_parts)  # credentials in the URL never reach a log line
        if ssl is not None and url_parts.scheme != "wss":
            raise ValueError(f"ssl= needs a wss:// url, was {self._log_url!r}")
        check_transport(transport, compression=compression)
        if ping_interval >= deadlines["inbound_timeout"]:
            logger.warning(
                "ping_interval %.3gs >= inbound_timeout %.3gs: a quiet healthy connection will be aborted",
                ping_interval,
                deadlines["inbound_timeout"],
            )
        self.url = url
        self.ssl = ssl
        self.proxy = proxy
        self.store: BookStore = store if store is not None else BookStore(capacity)
        core = sys.modules[type(self.store).__module__]  # a compiled store needs the compiled dispatcher
        self._events = EventFanout(on_event)
        self.dispatcher = core.Dispatcher(self.store, on_event=self._events.core_event, emit_trades=True)
        self.max_tokens_per_connection = options.count("max_tokens_per_connection", max_tokens_per_connection, 1)
        self.ping_interval = ping_interval
        self.inbound_timeout = deadlines["inbound_timeout"]
        self.snapshot_timeout = deadlines["snapshot_timeout"]
        self.confirm_interval = deadlines["confirm_interval"]
        self.write_timeout = deadlines["write_timeout"]
        self.custom_features = custom_features
        self.compression = compression
        self.transport = transport
        self.connect_stagger = options.seconds("connect_stagger", connect_stagger, zero=True)
        self.max_frame_bytes = options.count("max_frame_bytes", max_frame_bytes, 1)
        self._backoff_factory = options.backoff_factory(backoff) or ExponentialBackoff
        self._pool = ShardPool(
            self.max_tokens_per_connection, lambda ident: Shard(ident, self, self._backoff_factory())
        )
        # The pool's own list and dict, under the names exchange.py, tests and the soak read
        self._shards = self._pool.shards
        self._owner = self._pool.owner
        self._taps = Taps(self.store, self.dispatcher.feed, self._events.callback_failed, self._feed_changed)
        if on_frame is not None:
            self._taps.add(lambda frame, recv_ns, owner: on_frame(frame, recv_ns), None)
        # A watchdog whose deadline is switched off (inf) does not run at all
        self._watchdogs: tuple[Watchdog, ...] = tuple(
            watchdog for watchdog in WATCHDOGS if watchdog.deadline is None or deadlines[watchdog.deadline] != math.inf
        )
        self._housekeeping: tuple[Watchdog, ...] = HOUSEKEEPING
        self._next_connect_at = 0.0
        self._running = False
        self._stopping = False
        self._stop = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._done: asyncio.Event | None = None
        # The watchdog's tick: fine enough for the shortest deadline, never a busy loop
        shortest = min(deadlines[name] for name in DEADLINES)
        self._tick = min(max(shortest / 10, 0.005), WATCHDOG_TICK_MAX)

    # ------------------------------------------------------------------ public API

    async def subscribe(self, token_ids: Iterable[str]) -> None:
        """Subscribe to ``token_ids`` (already subscribed ones are ignored).

        New tokens join the first connection with room (an ``operation: subscribe`` frame on
        its open socket; no other token is disturbed) or a new connection. Each token's row
        is ``SUBSCRIBING`` until its ``book`` arrives. Returns once the frames carrying them were
        sent on the connected sockets concerned (or such a socket died or was aborted because the
        frames could not be sent within ``write_timeout``: its next one carries them); tokens of a
        connection without a socket (connecting, or waiting to reconnect) go in the subscription
        frame of its next socket.

        Raises
        ------
        TypeError
            If ``token_ids`` is a single id, or holds something that is not a ``str`` (or ``bytes``).
        ValueError
            If a token id is invalid (nothing of this call is subscribed then).
        CapacityError
            If the store is full (nothing of this call is subscribed then).
        """
        await self._flushed(self._add_tokens(token_ids))

    async def unsubscribe(self, token_ids: Iterable[str]) -> None:
        """Unsubscribe from ``token_ids`` (unknown ones are ignored) and free their rows.

        A connection left without tokens is closed. Returns once the frames were sent (or their
        socket died; at most ``write_timeout``).
        """
        await self._flushed(self._remove_tokens(token_ids))

    async def run(self, stop_event: asyncio.Event | None = None) -> None:
        """Maintain every connection until ``stop_event`` is set or :meth:`close` is called.

        On return all sockets are closed, every token of this client is STALE and the
        :meth:`events` iterators end.
        """
        entered = self._run_task  # started by ``async with``: only that task may run
        if self._running or (entered is not None and entered is not asyncio.current_task()):
            raise RuntimeError("this MarketClient is already running")
        self._running = True
        self._stopping = False
        self._events.ended = False
        self._done = asyncio.Event()
        logger.info(
            "pm_ws client starting (core=%s): %d tokens on %d connections to %s",
            IMPLEMENTATION,
            len(self._owner),
            len(self._shards),
            self._log_url,
        )
        for shard in self._shards:
            shard.start()
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._stop.wait())]
        waiters.append(asyncio.ensure_future(self._pool.tick(self.store, self._tick)))
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
        if self._running or self._run_task is not None:  # refused before the body runs; the running one goes on
            raise RuntimeError("this MarketClient is already running")
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
        events (counted in ``EventStream.dropped`` and, for good, in ``stats()["events_dropped"]``),
        never slows the reader. An iterator opened before a ``run()`` ends when that run returns;
        one opened after a run returned and before the next one ends at once.
        """
        return self._events.open_stream(maxsize)

    def stats(self, tokens: bool = True) -> dict[str, Any]:
        """Return a snapshot of the client's health (cheap enough for a UI refresh, not per frame).

        Parameters
        ----------
        tokens : bool
            Include ``tokens``, one entry per subscribed token (about 1 µs each: 20 ms for 20,000
            tokens). False leaves it out (``tokens`` is then None) and the cost grows only with the
            connections: what a UI refreshing several times a second over thousands of tokens wants.

        Returns
        -------
        dict
            ``connections``: list of dicts (``id``, ``state``, ``tokens``, ``frames``, ``bytes``,
            ``reconnects``, ``redrives``, ``aborts`` (sockets the watchdogs killed), ``pings``,
            ``awaiting_snapshot``, ``last_frame_age`` in seconds or None);
            ``tokens``: ``{token_id: {"state": State, "epoch": int, "age": seconds since the row
            last changed or None, "connection": int}}`` (None with ``tokens=False``);
            ``dispatcher``: the dispatcher's counters; ``events_dropped``; ``callback_errors``.
        """
        mono = time.monotonic_ns()  # the connections' deadline clock
        return {
            "connections": [connection_stats(shard, mono) for shard in self._shards],
            "tokens": token_stats(self.store, self._owner) if tokens else None,
            "dispatcher": self.dispatcher.stats(),
            "events_dropped": self._events.dropped(),
            "callback_errors": self._events.callback_errors,
        }

    def add_tap(
        self, on_frame: TapFrameCallback | None = None, on_store: StoreCallback | None = None
    ) -> Callable[[], None]:
        """Watch what this client feeds and does to its rows, from now on (also on a running client).

        ``on_frame(frame, recv_ns, owner)`` gets every inbound frame as fed to the dispatcher, with the
        receive time and the connection number (the token owner) it was fed with, right after ``feed``
        returned. ``on_store(op, tokens, options)`` gets every change the client makes to its store, right
        after it: ``("add", [token], {})``, ``("set_owner", [token], {"owner": n})``, ``("remove", [token],
        {})`` and ``("mark_stale", tokens, {})``; under an ``ExchangeFollower`` also ``("resolve", [token],
        {"won": bool | None})``, ``("load_book", [token], {"bids", "asks", "tick", "exch_ts_ms",
        "recv_ts_ns"})`` (a REST book) and ``("replay", [token], {"frame", "recv_ts_ns"})`` (a delta
        applied on top of it). Fed the same frames and operations in the same order, an
        empty store and dispatcher of the same core hold the same rows. Both callbacks follow
        ``on_event``'s rules (synchronous, short, failures counted in ``stats()["callback_errors"]``).
        On a running client the frame tap applies from the next batch of frames a reader takes (from
        the next frame, unless added from inside a callback of this client, i.e. in the middle of a batch).

        Returns a function that removes the tap.
        """
        return self._taps.add(on_frame, on_store)

    def _feed_changed(self) -> None:
        for shard in self._shards:
            shard.next_check_ns = 0  # each reader takes the new feed before its next frame

    # ------------------------------------------------------------------ subscriptions

    def _add_tokens(self, token_ids: Iterable[str]) -> set[Shard]:
        added = [token for token in dict.fromkeys(_as_ids(token_ids)) if token not in self._owner]
        self._taps.add_rows(added)
        # A row the caller's store already holds is not maintained by us yet
        self._mark_stale(added, "subscribed", (_LIVE, _INVALID))
        touched: set[Shard] = set()
        for token in added:
            shard = self._pool.place(token)
            self._taps.set_owner(token, shard.number)  # only its own socket's frames may change its row
            touched.add(shard)
        for shard in touched:
            if self._running and shard.task is None:
                shard.start()
            shard.wake.set()
        return touched

    def _remove_tokens(self, token_ids: Iterable[str]) -> set[Shard]:
        touched: set[Shard] = set()
        for token in dict.fromkeys(_as_ids(token_ids)):
            shard = self._pool.take(token)
            if shard is None:
                continue
            self._taps.remove_row(token)
            touched.add(shard)
        for shard in touched:
            if shard.retired:
                self._pool.retire(shard)
            shard.wake.set()
        return touched

    async def _flushed(self, shards: set[Shard]) -> None:
        # Wait until each open socket concerned sent the frames for the current token sets
        waiters = [waiter for waiter in (shard.flush_waiter() for shard in shards) if waiter is not None]
        if waiters:
            await asyncio.gather(*waiters)

    # ------------------------------------------------------------------ for the shards

    async def _connect_slot(self) -> None:
        # Space this client's connection attempts by connect_stagger
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now, self._next_connect_at)
        self._next_connect_at = at + self.connect_stagger
        if at > now:
            await asyncio.sleep(at - now)

    def _route_resyncs(self, tokens: list[str], now: int) -> None:
        # The dispatcher's resync queue is shared: hand each token to its shard
        gap_ns = int(min(self.RESYNC_GAP, self.snapshot_timeout) * 1e9)
        for token in tokens:
            shard = self._owner.get(token)
            if shard is None:
                continue
            state = State(self._row(token, STATE))
            if state is State.LIVE:
                continue  # a fresh book (e.g. the refresh after a tick change) already arrived
            self._emit("state", token, {"state": state, "reason": "resync", "cause": CAUSE_CORE})
            last = shard.last_redrive.get(token)
            if last is not None and now - last < gap_ns:
                shard.deferred[token] = last + gap_ns
            else:
                shard.redrive_tokens([token], f"resync ({state.name})")

    def _mark_stale(
        self, tokens: list[str], reason: str, states: tuple[int, ...] = _NOT_STALE, cause: str = CAUSE_MARKED
    ) -> None:
        view = self.store.view
        slot_of = self.store.slot
        store = self.store
        stale = [token for token in tokens if token in store and view[slot_of(token), STATE] in states]
        if not stale:
            return
        self._taps.mark_stale(stale)
        for token in stale:
            self._emit("state", token, {"state": State.STALE, "reason": reason, "cause": cause})

    def _frame_feed(self) -> FeedFunction:
        # What a reader feeds each frame to; only a client with on_frame or a tap pays for the extra call
        return self._taps.feed

    async def _shutdown(self) -> None:
        self._stopping = True
        for shard in self._shards:
            self._mark_stale(list(shard.tokens), "client stopped", cause=CAUSE_STOPPED)
            if shard.socket is not None:  # frames still queued or arriving during the close must not revive a row
                shard.socket_lost(shard.socket, "client stopped")
        await self._pool.close()
        self._events.end_streams()
        self._stop = asyncio.Event()  # an Event binds to the loop that first waits on it: fresh per run
        self._running = False
        if self._done is not None:
            self._done.set()
        logger.info("pm_ws client stopped; dispatcher counters: %s", self._nonzero_counters())

    # ------------------------------------------------------------------ helpers

    def _row(self, token: str, field: int) -> int:
        return int(self.store.view[self.store.slot(token), field])

    def _emit(self, kind: str, token_id: str | None, data: dict[str, Any]) -> None:
        self._events.emit(kind, token_id, data)

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
    ids = list(token_ids)
    for token in ids:
        if not isinstance(token, (str, bytes)):  # str() would turn None into the id "None"
            raise TypeError(f"a token id must be a str, was {token!r:.60}")
    return [token.decode("ascii") if isinstance(token, bytes) else token for token in ids]

