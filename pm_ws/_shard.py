"""One shard: a share of the client's tokens and the life of the socket that carries them.

A shard connects, sends the subscription, reads frames into the shared dispatcher, writes operation frames and
PING, runs the watchdogs when the client's tick asks, re-drives tokens, aborts a socket it gave up on and
reconnects with its backoff. Its bookkeeping (tokens, re-drives, counters) survives reconnects. What it shares
with the other shards (store, dispatcher, settings, events, the resync queue, the connect stagger) it reaches
through its owner, the :class:`~pm_ws.MarketClient`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable
from ssl import SSLContext
from typing import Any, Literal, NamedTuple, Protocol

from ._core import IMPLEMENTATION, BookStore
from ._market_frames import operation_frame, subscription_frame
from ._transport import CONNECT_ERRORS, Socket, SocketClosed, open_socket
from .backoff import ExponentialBackoff
from .row import EPOCH, STATE, State

logger = logging.getLogger("pm_ws")

HOUSEKEEPING_NS = 5_000_000  # while frames flow, run the housekeeping checks every 5 ms
ERROR_RETRY_DELAY = 1.0  # seconds before reconnecting when the shard's backoff itself failed
# Longest control word (``PONG``, ``INVALID OPERATION``, ``NO NEW ASSETS``): a batch whose frames average no more
# than this carries no market data (a mixed batch may count as none: a silence is then seen longer, never shorter)
CONTROL_WORD_BYTES = 20

_LIVE = int(State.LIVE)
_REST_BUILT = (_LIVE, int(State.UNCONFIRMED))  # the states of a REST book a silence may have left behind


class ShardState(enum.Enum):
    """Where a shard's socket is in its life; ``MarketClient.stats()`` shows the value."""

    IDLE = "idle"  # not started yet
    CONNECTING = "connecting"  # waiting for its connect slot, then the handshake
    SUBSCRIBING = "subscribing"  # socket open, the subscription frame on its way
    OPEN = "open"  # subscribed: reader, writer and watchdogs run
    DISCONNECTED = "disconnected"  # the socket died; its tokens are STALE
    BACKOFF = "backoff"  # waiting to reconnect
    CLOSING = "closing"  # the client is stopping: the socket was given up and is being closed
    CLOSED = "closed"  # the shard's task ended


_UP = (ShardState.SUBSCRIBING, ShardState.OPEN)  # states with a socket whose frames count


class Watchdog(NamedTuple):
    """A check a shard runs while its socket is up; it acts itself (re-drive, abort)."""

    check: Callable[[Shard, int], None]  # check(shard, now_monotonic_ns)
    deadline: str | None  # the MarketClient parameter (seconds) that sets its deadline, if any


class ShardOwner(Protocol):
    """What a shard uses of the client that owns it (the :class:`~pm_ws.MarketClient`)."""

    url: str
    ssl: SSLContext | None
    proxy: str | Literal[True] | None
    _log_url: str  # the url without credentials
    ping_interval: float
    inbound_timeout: float
    snapshot_timeout: float
    confirm_interval: float  # inf: no probing
    write_timeout: float  # inf: no write deadline
    custom_features: bool
    compression: bool
    transport: str  # "websockets" or "picows"
    max_frame_bytes: int
    store: BookStore
    dispatcher: Any
    _stopping: bool
    _tick: float  # seconds between two runs of the watchdogs (the client runs every OPEN shard's in one task)
    _watchdogs: tuple[Watchdog, ...]  # run every tick
    _housekeeping: tuple[Watchdog, ...]  # run every HOUSEKEEPING_NS while frames flow

    def _emit(self, kind: str, token_id: str | None, data: dict[str, Any]) -> None: ...

    def _mark_stale(self, tokens: list[str], reason: str, states: tuple[int, ...] = ...) -> None: ...

    def _row(self, token: str, field: int) -> int: ...

    def _route_resyncs(self, tokens: list[str], now: int) -> None: ...

    def _frame_feed(self) -> Callable[[str | bytes, int, int], int]: ...

    async def _connect_slot(self) -> None: ...


class Shard:
    """One websocket's share of the tokens and its bookkeeping (state survives reconnects)."""

    def __init__(self, ident: int, owner: ShardOwner, backoff: ExponentialBackoff) -> None:
        self.id = ident
        self.owner = owner
        self.number = ident + 1  # its tokens' owner in the store: only this socket's frames change their rows
        self.backoff = backoff
        self.tokens: dict[str, None] = {}  # wanted on this shard, in subscription order
        self.server_tokens: set[str] = set()  # what the current socket's server was told
        self.redrive: dict[str, None] = {}  # to unsubscribe + subscribe on the next flush, in order
        self.deferred: dict[str, int] = {}  # resyncs held back by the minimum gap: token -> due ns
        self.last_redrive: dict[str, int] = {}  # token -> ns of its last re-drive
        self.awaiting: dict[str, tuple[int, int]] = {}  # token -> (deadline ns, EPOCH when asked)
        self.redriven: set[str] = set()  # awaiting tokens already re-driven once since their last book
        self.probe: dict[str, None] = {}  # LIVE tokens to re-drive on the next flush, staying LIVE
        self.probed: dict[str, int] = {}  # token -> its CONFIRM_TS_NS when last probed
        self.rebuilt_for: set[str] = set()  # tokens that already cost this shard a rebuild
        # Tokens whose book came from REST while on this socket: no fresh book of theirs may come from the server,
        # so a data silence (see silence_ended) turns them STALE, for the REST bootstrap to fetch again
        self.rest_books: set[str] = set()
        self.silences = 0  # data silences longer than confirm_interval seen, on every socket so far
        self.dirty = False  # tokens or redrive changed since the last flush
        self.flush_waiters: list[asyncio.Future[None]] = []
        self.flush_due = math.inf  # loop time by which the oldest flush waiter's frames must be sent
        self.wake = asyncio.Event()  # pokes the writer
        self.task: asyncio.Task[None] | None = None
        self.socket: Socket | None = None
        self.state = ShardState.IDLE
        self.healthy = False  # the current socket delivered a book: its server is proven (backoff reset)
        self.next_check_ns = 0  # deadlines and stamps in time.monotonic_ns()
        self.next_confirm_ns = 0  # when the next LIVE row falls due for a probe or STALE
        self.last_frame_ns = 0
        self.last_data_ns = -math.inf  # the last batch with market data on this socket (PONGs aside)
        self.frames = 0
        self.bytes = 0
        self.connects = 0
        self.reconnects = 0
        self.redrives = 0
        self.probes = 0
        self.aborts = 0
        self.pings = 0

    @property
    def up(self) -> bool:
        """Whether the shard has a socket whose frames count (subscribing or open)."""
        return self.state in _UP

    @property
    def retired(self) -> bool:
        """A shard left without tokens is closed for good: the client never gives it tokens again."""
        return not self.tokens

    # ------------------------------------------------------------------ tokens

    def forget(self, token: str) -> None:
        """Drop ``token`` and everything this shard remembers of it."""
        del self.tokens[token]
        self.redrive.pop(token, None)
        self.deferred.pop(token, None)
        self.last_redrive.pop(token, None)
        self.awaiting.pop(token, None)
        self.redriven.discard(token)
        self.probe.pop(token, None)
        self.probed.pop(token, None)
        self.rebuilt_for.discard(token)
        self.rest_books.discard(token)
        self.dirty = True

    def maybe_waiting(self) -> list[str]:
        """The tokens that may be without a book: all while the socket is down, else those awaited, to re-drive
        or with a REST book (a silence may have dropped it)."""
        if not self.up:
            return list(self.tokens)
        return [*self.awaiting, *self.redrive, *self.deferred, *self.rest_books]

    def flush_waiter(self) -> asyncio.Future[None] | None:
        """A future set once the writer sent the frames for the current token set (None: no open socket)."""
        # "subscribing": the subscription frame is already on its way, the operation frames follow it
        if self.socket is None or not self.up:
            return None
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if not self.flush_waiters:
            self.flush_due = loop.time() + self.owner.write_timeout
        self.flush_waiters.append(waiter)
        self.wake.set()
        return waiter

    def operation_frames(self) -> list[str]:
        """The diff between wanted and told, as operation frames: unsubscribe first, then subscribe."""
        if not self.dirty:
            return []
        self.dirty = False
        now = time.monotonic_ns()
        row = self.owner._row
        wanted = self.tokens
        told = self.server_tokens
        # A token that read LIVE since its re-drive was asked got a fresh book meanwhile: nothing to redo
        # (and unsubscribing a LIVE token would leave it LIVE while the server sends it nothing)
        redrive = dict.fromkeys(t for t in self.redrive if t in wanted and row(t, STATE) != _LIVE)
        self.redrive.clear()
        # A probe asks the server to confirm a LIVE row with a fresh book; the row stays LIVE meanwhile
        probe = dict.fromkeys(t for t in self.probe if t in told and t not in redrive and row(t, STATE) == _LIVE)
        self.probe.clear()
        unsubscribe = [token for token in told if token not in wanted]
        unsubscribe += [token for token in redrive if token in told]
        unsubscribe += probe
        subscribe = [token for token in wanted if token not in told or token in redrive or token in probe]
        frames = []
        if unsubscribe:
            frames.append(operation_frame("unsubscribe", unsubscribe, None))
        if subscribe:
            frames.append(operation_frame("subscribe", subscribe, self.owner.custom_features))
            deadline = now + int(self.owner.snapshot_timeout * 1e9)
            for token in subscribe:
                if token in probe:
                    continue  # the confirmation watchdog waits for its book
                self.awaiting[token] = (deadline, row(token, EPOCH))
                if token in redrive:
                    self.redriven.add(token)
                    self.last_redrive[token] = now
        self.server_tokens = set(wanted)
        return frames

    # ------------------------------------------------------------------ the socket's life

    def start(self) -> None:
        """Start the task that keeps this shard connected."""
        self.wake = asyncio.Event()
        self.wake.set()
        self.task = asyncio.create_task(self._maintain(), name=f"pm_ws.connection.{self.id}")

    async def _maintain(self) -> None:
        # Connect, serve until the socket dies, back off, again
        owner = self.owner
        try:
            while not owner._stopping and not self.retired:
                try:
                    await owner._connect_slot()
                    if owner._stopping or self.retired:
                        break
                    if self.connects:
                        self.reconnects += 1
                    self.connects += 1
                    self.state = ShardState.CONNECTING
                    try:
                        socket = await open_socket(
                            owner.url,
                            transport=owner.transport,
                            ssl=owner.ssl,
                            proxy=owner.proxy,
                            compression=owner.compression,
                            max_frame_bytes=owner.max_frame_bytes,
                            open_timeout=owner.inbound_timeout,
                        )
                    except CONNECT_ERRORS as exc:
                        logger.warning("connection %d: connect to %s failed: %r", self.id, owner._log_url, exc)
                    else:
                        await self._serve(socket)
                    if owner._stopping or self.retired:
                        break
                    self.state = ShardState.BACKOFF
                    delay = self.backoff.next_delay()
                except Exception:  # a bug here must not leave this shard's tokens STALE for good
                    logger.exception("connection %d: unexpected error, reconnecting", self.id)
                    self.state = ShardState.BACKOFF
                    delay = self._retry_delay()
                logger.info("connection %d: reconnecting in %.3fs", self.id, delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if not (owner._stopping or self.retired):
                raise
        finally:
            self.state = ShardState.CLOSED

    def _retry_delay(self) -> float:
        # After an unexpected error: the shard's backoff, unless that is what failed
        try:
            return self.backoff.next_delay()
        except Exception:
            logger.exception("connection %d: backoff failed, retrying in %gs", self.id, ERROR_RETRY_DELAY)
            return ERROR_RETRY_DELAY

    async def _serve(self, socket: Socket) -> None:
        # Subscribe, then read until the socket dies; the watchdogs and the writer run beside
        owner = self.owner
        now = time.monotonic_ns()
        self.socket = socket
        self.state = ShardState.SUBSCRIBING
        self.healthy = False
        self.last_frame_ns = now
        # Silent from its opening: it may have opened during a silence of the server, which its first data ends
        self.last_data_ns = -math.inf
        self.next_check_ns = 0
        self.rest_books.clear()  # STALE with the socket they came on
        socket.on_end = lambda: self.socket_lost(socket, "closed by the server or the network")
        helpers: list[asyncio.Task[None]] = []
        try:  # from here on the finally closes the socket, whatever fails
            tokens = list(self.tokens)
            self.server_tokens = set(tokens)
            self.redrive.clear()
            self.redriven.clear()
            self.probe.clear()
            self.probed.clear()
            self.next_confirm_ns = 0
            self.deferred.clear()
            self.dirty = False
            deadline = now + int(owner.snapshot_timeout * 1e9)
            self.awaiting = {token: (deadline, owner._row(token, EPOCH)) for token in tokens}
            # A peer that stops reading could block this send; the watchdogs do not run yet
            due = asyncio.get_running_loop().time() + min(owner.write_timeout, owner.inbound_timeout)
            await self._send(socket, [subscription_frame(tokens, owner.custom_features)], due)
            if not self.up:
                return
            self.state = ShardState.OPEN
            logger.info("connection %d: subscribed %d tokens (core=%s)", self.id, len(tokens), IMPLEMENTATION)
            owner._emit("connected", None, {"connection": self.id, "tokens": len(tokens)})
            helpers.append(asyncio.create_task(self._write(socket), name=f"pm_ws.writer.{self.id}"))
            for helper in helpers:
                helper.add_done_callback(lambda task: self._helper_done(socket, task))
            feed = owner._frame_feed()
            number = self.number
            silence_ns = owner.confirm_interval * 1e9  # inf: no probing, no silence either
            # Deadlines run on the monotonic clock (a wall-clock step must not fire or freeze them);
            # the rows get the wall clock, comparable with the exchange's timestamps
            monotonic, wall = time.monotonic_ns, time.time_ns
            frames = socket.frames
            take = frames.popleft
            failure: Exception | None = None

            def batch() -> bool:
                # The hot loop: per frame only the feed. The clocks, counters and checks run once per batch,
                # the frames of one received chunk: they all arrived by then, so the batch's time is every
                # frame's arrival for the inbound watchdog and the rows' receive time for all of them.
                # True when the socket is gone: frames still buffered must not revive its tokens
                nonlocal feed
                now = monotonic()
                if now >= self.next_check_ns:
                    if self.housekeep(now):
                        return True
                    feed = owner._frame_feed()  # a tap added since (MarketClient.add_tap) applies from here
                self.last_frame_ns = now
                count, size = len(frames), sum(map(len, frames))
                self.frames += count
                self.bytes += size
                if size > CONTROL_WORD_BYTES * count:  # market data: before it is fed, a silence it ends is seen
                    if now - self.last_data_ns > silence_ns:
                        self.silence_ended()
                    self.last_data_ns = now
                received = wall()
                while frames:  # socket_lost() empties it: a frame's feed may lose the socket
                    feed(take(), received, number)
                return False

            def deliver() -> None:
                # Inside the transport's protocol callback, as each chunk arrives: no task switch before
                # the books change. What would end the reader ends it (the socket gone, an error)
                nonlocal failure
                try:
                    if not batch():
                        return
                except Exception as exc:  # raised by the reader below, as if it had fed the frame
                    failure = exc
                socket.stop()

            socket.deliver = deliver
            while await socket.readable() and failure is None:  # frames queued before deliver was set
                if batch():
                    break
            if failure is not None:
                raise failure
        except (SocketClosed, asyncio.TimeoutError):
            pass
        except Exception:
            logger.exception("connection %d: unexpected error, reconnecting", self.id)
        finally:
            self.socket_lost(socket, "socket closed")  # synchronous: before anything else can run
            socket.stop()  # no delivery from this socket ever again, whatever it still parses
            for helper in helpers:
                helper.cancel()
            for waiter in self.flush_waiters:
                if not waiter.done():
                    waiter.set_result(None)  # the next subscription frame carries their tokens
            self.flush_waiters.clear()
            self.flush_due = math.inf
            self.socket = None
            socket.abort()
            if helpers:
                await asyncio.gather(*helpers, return_exceptions=True)
            logger.log(
                logging.INFO if owner._stopping or self.retired else logging.WARNING,
                "connection %d: disconnected (close code %s, %d frames so far); %d tokens STALE",
                self.id,
                socket.close_code,
                self.frames,
                len(self.tokens),
            )

    async def _write(self, socket: Socket) -> None:
        # The only sender after the subscription: operation frames in order, PING on cadence
        loop = asyncio.get_running_loop()
        owner = self.owner
        next_ping = loop.time() + owner.ping_interval
        try:
            while True:
                timeout = next_ping - loop.time()
                if timeout > 0 and not self.wake.is_set():
                    try:
                        await asyncio.wait_for(self.wake.wait(), timeout)
                    except asyncio.TimeoutError:
                        pass
                self.wake.clear()
                if self.retired:
                    await socket.close()
                    return
                # Every send of this round within write_timeout, and a waiting subscribe() within its own
                deadline = min(loop.time() + owner.write_timeout, self.flush_due)
                waiters, self.flush_waiters, self.flush_due = self.flush_waiters, [], math.inf
                try:
                    await self._send(socket, self.operation_frames(), deadline)
                finally:  # sent, or the socket died and the next subscription frame carries them
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
                now = loop.time()
                if now >= next_ping:
                    await self._send(socket, ["PING"], now + owner.write_timeout)
                    self.pings += 1
                    next_ping += owner.ping_interval
                    if next_ping <= now:  # fell behind (a stalled loop): keep the cadence, no catch-up burst
                        next_ping = now + owner.ping_interval
        except (SocketClosed, asyncio.TimeoutError):  # a send that timed out aborted the socket
            return

    async def _send(self, socket: Socket, frames: list[str], deadline: float) -> None:
        # A peer that stops reading blocks a send once the socket buffers are full: give the socket up
        # at ``deadline`` (loop time; inf: none), so nothing waits on it for longer
        try:
            async with asyncio.timeout_at(None if deadline == math.inf else deadline):
                for frame in frames:
                    await socket.send(frame)
        except asyncio.TimeoutError:
            self.abort(socket, f"a send did not complete within write_timeout {self.owner.write_timeout:g}s")
            raise

    def watch(self, now: int) -> None:
        """Run the watchdogs once: deadlines that need no frame to fire (the client's tick calls it while OPEN)."""
        socket = self.socket
        try:
            for watchdog in self.owner._watchdogs:
                watchdog.check(self, now)
                if not self.up:
                    return
        except Exception:  # a watchdog that fails on a bug must not leave the socket without deadlines
            logger.exception("connection %d: a watchdog failed", self.id)
            self.abort(socket, "a watchdog failed")

    def housekeep(self, now: int) -> bool:
        """Run the housekeeping checks (resyncs, pending books); True when the socket is gone."""
        if not self.up:
            return True
        self.next_check_ns = now + HOUSEKEEPING_NS
        for watchdog in self.owner._housekeeping:
            watchdog.check(self, now)
            if not self.up:
                return True
        return False

    def _helper_done(self, socket: Socket, task: asyncio.Task[None]) -> None:
        # A writer that died of a bug must not leave a socket without PING
        if task.cancelled() or task.exception() is None:
            return
        logger.error("connection %d: %s failed", self.id, task.get_name(), exc_info=task.exception())
        self.abort(socket, f"{task.get_name()} failed")

    # ------------------------------------------------------------------ fault handling

    def redrive_tokens(self, tokens: list[str], reason: str) -> None:
        """Unsubscribe + subscribe ``tokens`` (those still on this shard) on the next flush."""
        tokens = [token for token in tokens if token in self.tokens]
        if not tokens:
            return
        for token in tokens:
            self.redrive[token] = None
            self.owner._emit("resync", token, {"connection": self.id, "reason": reason})
        self.redrives += len(tokens)
        self.dirty = True
        self.wake.set()
        logger.warning("connection %d: re-driving %d tokens: %s", self.id, len(tokens), reason)

    def probe_tokens(self, tokens: list[str]) -> None:
        """Re-drive LIVE ``tokens`` on the next flush without leaving LIVE: their fresh books confirm them."""
        self.probe.update(dict.fromkeys(tokens))
        self.probes += len(tokens)
        self.dirty = True
        self.wake.set()

    def silence_ended(self) -> None:
        """Market data came after a silence: none (PONGs aside) for longer than ``confirm_interval``, or none
        since the socket opened (it may have opened while the server was silent).

        A server that goes silent on an open socket drops the deltas meanwhile. A book the WebSocket built is
        probed and re-sent (see the ``unconfirmed`` watchdog); a book from REST has only best prices to be
        confirmed by, and the deltas lost lay below them: its row turns STALE (before the data that ended the
        silence can confirm it), and ``silences`` counts one more, so a REST book asked before the silence ended
        is dropped on arrival (the REST bootstrap compares it).
        """
        self.silences += 1
        if self.rest_books:  # a quiet socket without them is no fault
            logger.warning("connection %d: market data after a silence: REST books dropped", self.id)
            self.owner._mark_stale(list(self.rest_books), "silence", _REST_BUILT)

    def abort(self, socket: Socket | None, reason: str) -> None:
        """Kill ``socket``, if it is still this shard's, because a watchdog gave up on it; tokens go STALE first."""
        if socket is None or self.socket is not socket:
            return
        self.aborts += 1
        logger.warning("connection %d: aborting the socket: %s", self.id, reason)
        self.socket_lost(socket, reason)
        socket.abort()

    def socket_lost(self, socket: Socket, reason: str) -> None:
        """Mark this shard's tokens STALE now that ``socket`` is gone.

        Runs inside protocol callbacks too: synchronous, never raises.
        """
        if self.socket is not socket or not self.up:
            return
        self.state = ShardState.CLOSING if self.owner._stopping else ShardState.DISCONNECTED
        self.next_check_ns = 0  # the reader stops at its next batch
        socket.frames.clear()  # the frames still buffered must not revive its tokens
        try:
            self.owner._mark_stale(list(self.tokens), reason)
            if not self.retired:  # closing a shard left without tokens is no fault
                self.owner._emit("disconnected", None, {"connection": self.id, "reason": reason})
        except Exception:  # pragma: no cover - a bug here must not break the event loop's callback
            logger.exception("connection %d: marking tokens stale failed", self.id)
