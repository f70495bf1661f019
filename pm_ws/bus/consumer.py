"""Rebuild a publisher's books from a NATS JetStream stream: the same rows, or none LIVE.

The consumer feeds the publisher's records to its own :class:`~pm_ws.Dispatcher` in stream order: the same
frames with the same receive times and owners (the client connection each came on), and the same store
operations (add, set owner, remove, mark STALE), so while it stays in step its rows and books are
byte-identical to the publisher's.

It knows when it is not in step, and then no row of it is LIVE until it is again:

- a record number skipped (the publisher overflowed, NATS lost messages, retention purged them):
  every row turns STALE ("awaiting") and the consumer asks the publisher for snapshots;
- no heartbeat for ``stale_after`` seconds (publisher dead, or it lost NATS; counted from the start
  until the first one), or this consumer's NATS connection dropped: the same, and snapshots are not
  applied until a heartbeat comes again (a silent publisher's snapshots prove nothing about now);
- a new publisher instance: its first record (``hello``) empties the store, the rest rebuilds it.

An awaiting row turns LIVE only from a snapshot record of its token: ``BookStore.restore_token`` gives it
the publisher's whole state (row, levels, tick flags, owner); SEQ and EPOCH are the publisher's unless that
would move them back in the consumer's slot, so a late joiner's rows are byte-identical to the publisher's,
and a consumer that lost track keeps its own, higher SEQ and EPOCH (see the README's bus section). Frames
keep applying meanwhile, but a ``book`` frame cannot make an awaiting row LIVE (it is marked STALE again at once).

A late joiner starts from the key-value bucket: it reads, per token, where the latest snapshot is,
and reads the stream from the oldest of those places on.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from .._core import BookStore
from ..client_events import ClientEvent, EventStream
from ..row import STATE, State
from .connection import DEFAULT_NATS_URL, connect, logger
from .wire import KIND_META, KIND_PIECE, KIND_SNAPSHOT, KIND_TEXT, PIECE_FIRST, PIECE_HEADER, PIECE_LAST
from .wire import MalformedBatch, Subjects, decode_snapshot, parse_batch, snapshot_token

__all__ = ["CAUSE_BUS", "CAUSE_PUBLISHER", "NatsConsumer"]

CAUSE_PUBLISHER = "publisher"  # a "state" event's cause: the publisher's client changed the row
CAUSE_BUS = "bus"  # the consumer itself: gap, silent publisher, lost NATS, or a snapshot applied
RESNAPSHOT_GAP = 1.0  # seconds between two snapshot requests of one consumer
WATCH_TICK = 0.05  # seconds between two heartbeat-deadline checks
WAIT_FOR_STREAM = 0.5  # seconds between two looks for a stream that does not exist yet

_LIVE = int(State.LIVE)
_STALE = int(State.STALE)


class NatsConsumer:
    """A :class:`~pm_ws.BookStore` kept equal to a publisher's through NATS JetStream.

    Parameters
    ----------
    servers : str or list of str
        NATS URL(s).
    stream : str
        The publisher's stream name.
    capacity : int
        Slots of the store made when ``store`` is None (at least the publisher's token count).
    store : BookStore, optional
        The store to fill, e.g. a shared table (``BookStore(capacity, shared=NAME)``): the consumer beats it.
    stale_after : float
        Seconds without a heartbeat after which every row turns STALE (default 2.0; the publisher
        beats every 0.5 s).
    **connect_options
        Passed to ``nats.connect`` (credentials, ``tls`` ...). Never logged.

    ``store`` and ``dispatcher`` are the usual core objects: read ``store.view`` as from a client.
    """

    def __init__(
        self,
        servers: str | list[str] = DEFAULT_NATS_URL,
        *,
        stream: str = "PMWS",
        capacity: int = 4096,
        store: BookStore | None = None,
        stale_after: float = 2.0,
        **connect_options: Any,
    ) -> None:
        if not stale_after > 0:
            raise ValueError(f"stale_after must be > 0, was {stale_after!r}")
        self.subjects = Subjects.of(stream)
        self.servers = servers
        self.stale_after = stale_after
        self._connect_options = connect_options
        self.store = store if store is not None else BookStore(capacity)
        self._core = sys.modules[type(self.store).__module__]
        self.dispatcher = self._new_dispatcher()
        self._replayer: Any = None  # the dispatcher of the publisher's "replay" operations, made on the first
        self.instance = 0  # the publisher instance followed (0: none yet)
        self.position = 0  # number of its last record applied
        self.stream_seq = 0  # stream sequence of the last message handled
        self.awaiting: set[str] = set()  # rows kept from LIVE until their snapshot
        self._pieces: list[bytes] = []  # the pieces so far of a record bigger than a batch
        self._last_beat_ns = 0  # monotonic; 0: none since (re)start
        self._heard_ns = 0  # monotonic: the last heartbeat, or the start (the first beat's deadline runs from it)
        self._silent = False  # no heartbeat within stale_after: nothing turns LIVE until the next one
        self._last_request_ns = 0
        self._streams: list[EventStream] = []
        self._nc: Any = None
        self._subscription: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.counters = dict.fromkeys(
            ("messages", "records", "frames", "operations", "snapshots_applied", "snapshots_skipped", "snapshots_held",
             "gaps", "duplicates", "foreign", "malformed", "silences", "disconnects", "resets", "resnapshot_requests"),
            0,
        )  # fmt: skip

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        """Connect and start following the stream (returns once subscribed, or keeps trying in the background)."""
        self._nc = await connect(
            self.servers, f"pm_ws consumer {self.subjects.stream}", self._disconnected, self._reconnected,
            self._connect_options,
        )  # fmt: skip
        await self._nc.subscribe(self.subjects.heartbeat, cb=self._on_heartbeat)
        self._heard_ns = time.monotonic_ns()
        self._tasks = [asyncio.create_task(self._watch(), name="pm_ws.bus.watch")]
        if not await self._follow():
            self._tasks.append(asyncio.create_task(self._follow_when_ready(), name="pm_ws.bus.follow"))

    async def close(self) -> None:
        """Stop following; every row turns STALE."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._nc is not None:
            try:
                await self._nc.close()
            except Exception as exc:
                logger.info("consumer: close: %r", type(exc).__name__)
            self._nc = None
        self._await_all("consumer stopped")
        for stream in self._streams:
            stream.end()

    async def __aenter__(self) -> NatsConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def events(self, maxsize: int = 4096) -> EventStream:
        """Cold events as from ``MarketClient.events()``: ``state`` (cause ``publisher`` or ``bus``), ``trade``,
        ``new_market``, ``market_resolved``."""
        stream = EventStream(maxsize, self._streams.remove)
        self._streams.append(stream)
        return stream

    def stats(self) -> dict[str, Any]:
        """``bus``: counters, ``instance``, ``position``, ``stream_seq``, ``awaiting``, ``heartbeat_age`` (s or None),
        ``connected``; ``tokens``: ``{token: {"state": State}}``; ``dispatcher``: its counters."""
        view, slot_of = self.store.view, self.store.slot
        beat = self._last_beat_ns
        return {
            "bus": {
                **self.counters,
                "instance": self.instance,
                "position": self.position,
                "stream_seq": self.stream_seq,
                "awaiting": len(self.awaiting),
                "heartbeat_age": (time.monotonic_ns() - beat) / 1e9 if beat else None,
                "connected": bool(self._nc is not None and self._nc.is_connected),
            },
            "tokens": {token: {"state": State(view[slot_of(token), STATE])} for token in self.store.tokens()},
            "dispatcher": self.dispatcher.stats(),
        }

    # ------------------------------------------------------------------ the stream

    async def _follow(self) -> bool:
        # Subscribe from the oldest snapshot the bucket points at; False when the stream is not there yet
        js = self._nc.jetstream()
        try:
            info = await js.stream_info(self.subjects.stream)
        except NotFoundError:
            return False
        start = await self._start_sequence(js, info.state.first_seq)
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start, 1))
        self._subscription = await js.subscribe(
            self.subjects.data, stream=self.subjects.stream, cb=self._on_message, ordered_consumer=True,
            config=config, idle_heartbeat=1.0,
        )  # fmt: skip
        logger.info("consumer: following %s from stream sequence %d", self.subjects.stream, start)
        return True

    async def _follow_when_ready(self) -> None:
        while not await self._follow():
            await asyncio.sleep(WAIT_FOR_STREAM)

    async def _start_sequence(self, js: Any, first_seq: int) -> int:
        # The newest instance's oldest snapshot pointer still in the stream; else the stream's start
        try:
            kv = await js.key_value(self.subjects.bucket)
            keys = await kv.keys()
        except Exception:  # no bucket or no keys yet
            return first_seq
        pointers = []
        for key in keys:
            try:
                entry = await kv.get(key)
                pointer = orjson.loads(entry.value or b"")
                pointers.append((int(pointer["instance"]), int(pointer["stream_seq"])))
            except Exception:
                self.counters["malformed"] += 1
        if not pointers:
            return first_seq
        newest = max(pointers, key=lambda pointer: pointer[1])[0]
        usable = [seq for instance, seq in pointers if instance == newest and seq >= first_seq]
        return min(usable) if usable else first_seq

    async def _on_message(self, msg: Any) -> None:
        self.counters["messages"] += 1
        try:
            self.stream_seq = msg.metadata.sequence.stream
        except Exception:
            pass
        try:
            batch = parse_batch(msg.data)
        except MalformedBatch:
            self.counters["foreign" if msg.data[:3] != b"PMB" else "malformed"] += 1
            return
        if batch.instance != self.instance:
            self._follow_instance(batch.instance, batch.first)
        elif batch.first > self.position + 1:
            self.counters["gaps"] += 1
            self._pieces = []
            self._await_all(f"records {self.position + 1}-{batch.first - 1} missed")
        number = batch.first - 1
        for recv_ns, owner, kind, payload in batch.records():
            number += 1
            if number <= self.position:
                self.counters["duplicates"] += 1
                continue
            self.position = number
            self.counters["records"] += 1
            try:
                if kind == KIND_PIECE:
                    whole = self._assemble(payload)
                    if whole is None:
                        continue
                    kind, payload = whole
                self._apply(recv_ns, owner, kind, payload)
            except Exception as exc:  # a record the publisher cannot have made: lose track rather than guess
                self.counters["malformed"] += 1
                logger.warning("consumer: record %d of %x not applied: %r", number, batch.instance, exc)
                self._await_all("malformed record")

    def _assemble(self, piece: memoryview) -> tuple[int, memoryview] | None:
        # (kind, payload) of the whole record at its last piece; a piece without its first loses track
        kind, flags = PIECE_HEADER.unpack_from(piece)
        if flags & PIECE_FIRST:
            self._pieces = []
        elif not self._pieces:
            self._await_all("a record's first piece missed")
            return None
        self._pieces.append(piece[PIECE_HEADER.size :].tobytes())
        if not flags & PIECE_LAST:
            return None
        whole, self._pieces = b"".join(self._pieces), []
        return kind, memoryview(whole)

    def _follow_instance(self, instance: int, first: int) -> None:
        # Another publisher run: from its first record (hello) we rebuild exactly; from its middle, by snapshots
        if self.instance:
            self.counters["resets"] += 1
        self.instance = instance
        self.position = first - 1
        self._pieces = []
        if first > 1:
            self._await_all("new publisher instance")

    def _apply(self, recv_ns: int, owner: int, kind: int, payload: memoryview) -> None:
        if kind == KIND_SNAPSHOT:
            token = snapshot_token(payload)
            if self._silent:
                self.counters["snapshots_held"] += 1  # the row stays awaiting: the next beat asks again
            elif token in self.awaiting or token not in self.store:
                self._restore(*decode_snapshot(payload))
            else:
                self.counters["snapshots_skipped"] += 1
            return
        if kind == KIND_META:
            self.counters["operations"] += 1
            self._operate(orjson.loads(bytes(payload)))
            return
        frame = payload.tobytes()
        self.counters["frames"] += 1
        self.dispatcher.feed(frame.decode("utf-8", "surrogatepass") if kind == KIND_TEXT else frame, recv_ns, owner)
        if self.awaiting and b'"book"' in frame:  # only a book can make a STALE row LIVE
            self._hold_awaiting()

    def _operate(self, operation: dict[str, Any]) -> None:
        op = operation.get("op")
        tokens = [str(token) for token in operation.get("tokens", ())]
        if op == "hello":
            for token in self.store.tokens():
                self.store.remove(token)
            self.awaiting.clear()
            self.dispatcher = self._new_dispatcher()
            self._replayer = None
        elif op == "add":
            for token in tokens:
                self.store.add(token)
        elif op == "owner":
            for token in tokens:
                self.store.set_owner(token, int(operation["owner"]))
        elif op == "held":  # a row the publisher held when it attached: its snapshot record follows
            for token in tokens:
                self.store.add(token, int(operation["owner"]))
                self.awaiting.add(token)
        elif op == "remove":
            for token in tokens:
                self.store.remove(token)
                self.awaiting.discard(token)
        elif op == "resolve":
            for token in tokens:
                won = operation.get("won")
                self.store.resolve(token, None if won is None else bool(won))
        elif op == "load_book":
            bids = [(int(price), int(size)) for price, size in operation["bids"]]
            asks = [(int(price), int(size)) for price, size in operation["asks"]]
            for token in tokens:
                self.store.load_book(
                    token, bids, asks, int(operation["tick"]), int(operation["exch_ts_ms"]),
                    int(operation["recv_ts_ns"]),
                )  # fmt: skip
        elif op == "replay":  # buffered deltas on a REST book, through a dispatcher of their own as the publisher's
            if self._replayer is None:
                self._replayer = self._core.Dispatcher(self.store)
            self._replayer.feed(str(operation["frame"]), int(operation["recv_ts_ns"]))
        elif op == "stale":
            marked = self._states(tokens)
            self.store.mark_stale(tokens)
            for token, state in marked.items():
                if state != _STALE:
                    self._emit_state(token, State.STALE, "publisher row STALE", CAUSE_PUBLISHER)
        elif op != "mark":
            raise ValueError(f"unknown store operation {op!r}")

    def _restore(self, token: str, blob: bytes) -> None:
        store = self.store
        if token not in store:
            store.add(token)
        store.restore_token(token, blob)  # the owner too: a late joiner missed the operation that gave it
        self.awaiting.discard(token)
        self.counters["snapshots_applied"] += 1
        self._emit_state(token, State(store.view[store.slot(token), STATE]), "snapshot", CAUSE_BUS)

    def _hold_awaiting(self) -> None:
        view, slot_of = self.store.view, self.store.slot
        live = [token for token in self.awaiting if view[slot_of(token), STATE] == _LIVE]
        if live:
            self.store.mark_stale(live)

    def _await_all(self, reason: str) -> None:
        # Lost track: nothing LIVE until snapshots say what the publisher holds
        tokens = self.store.tokens()
        if not tokens:
            return
        previous = self._states(tokens)
        self.awaiting.update(tokens)
        self.store.mark_stale(tokens)
        for token, state in previous.items():
            if state != _STALE:
                self._emit_state(token, State.STALE, reason, CAUSE_BUS)
        self._ask_for_snapshots()

    def _ask_for_snapshots(self) -> None:
        now = time.monotonic_ns()
        if self._silent or self._nc is None or not self._nc.is_connected:
            return  # the next heartbeat asks
        if now - self._last_request_ns < RESNAPSHOT_GAP * 1e9:
            return
        self._last_request_ns = now
        self.counters["resnapshot_requests"] += 1
        asyncio.ensure_future(self._nc.publish(self.subjects.resnapshot, b"[]"))

    # ------------------------------------------------------------------ liveness

    async def _on_heartbeat(self, msg: Any) -> None:
        self._last_beat_ns = self._heard_ns = time.monotonic_ns()
        was_silent, self._silent = self._silent, False
        if self.awaiting or was_silent:  # snapshots held while silent may have been of tokens not held yet
            self._ask_for_snapshots()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_TICK)
            self.store.beat()  # readers of a shared table: this process is alive
            if not self._silent and time.monotonic_ns() - self._heard_ns > self.stale_after * 1e9:
                self._silent = True
                self.counters["silences"] += 1
                self._await_all("publisher silent")

    def _disconnected(self) -> None:
        self.counters["disconnects"] += 1
        self._silent = True
        self._await_all("NATS connection lost")

    def _reconnected(self) -> None:
        self._last_beat_ns = 0

    # ------------------------------------------------------------------ helpers

    def _new_dispatcher(self) -> Any:
        return self._core.Dispatcher(self.store, on_event=self._core_event, emit_trades=True)

    def _states(self, tokens: Iterable[str]) -> dict[str, int]:
        view, store = self.store.view, self.store
        return {token: view[store.slot(token), STATE] for token in tokens if token in store}

    def _core_event(self, event_type: str, payload: dict[str, Any]) -> None:
        if not self._streams:
            return
        if event_type == "last_trade_price":
            self._emit("trade", payload.get("asset_id"), payload)
        else:
            self._emit(event_type, None, payload)

    def _emit_state(self, token: str, state: State, reason: str, cause: str) -> None:
        self._emit("state", token, {"state": state, "reason": reason, "cause": cause})

    def _emit(self, kind: str, token: str | None, data: dict[str, Any]) -> None:
        if self._streams:
            event = ClientEvent(kind, token, data)
            for stream in self._streams:
                stream.put(event)
