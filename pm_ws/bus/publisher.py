"""Publish what a :class:`~pm_ws.MarketClient` receives and does to a NATS JetStream stream.

The publisher sits beside the client's hot path, never in it: it attaches to a client through
:meth:`~pm_ws.MarketClient.add_tap`, the client's ``feed`` is unchanged, then ``on_frame`` appends the frame
(its bytes and a 17-byte record header) to a bounded list and returns. A task on the same loop cuts that list
into batches and publishes them; another heartbeats and asks JetStream for an acknowledgement every
``heartbeat_interval`` (the stream sequence it returns is where a late joiner starts reading); a third writes
snapshots into the stream, in order with the frames, and points the key-value bucket at them.

Bounded: records not yet handed to NATS take at most ``max_pending_bytes``; beyond, records are
dropped and counted (``stats()["overflow_records"]``) but still numbered, so every consumer sees
the hole, turns the rows concerned STALE and asks for snapshots.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from ..client import DEFAULT_URL, MarketClient
from .connection import DEFAULT_NATS_URL, connect, logger
from .wire import BATCH_HEADER, BATCH_MAGIC, KIND_BINARY, KIND_META, KIND_PIECE, KIND_SNAPSHOT, KIND_TEXT, PIECE_FIRST
from .wire import PIECE_HEADER, PIECE_LAST, RECORD_HEADER
from .wire import Subjects, encode_snapshot, snapshot_key

__all__ = ["NatsPublisher"]

ACK_TIMEOUT_NS = 5_000_000_000  # an acknowledgement later than this counts as failed
SNAPSHOT_SLICE = 64  # tokens snapshotted per loop turn: a round never holds the loop for long
NO_OWNER = 0  # the owner field of records that are not frames
# The client's store operations (MarketClient.add_tap's on_store) as the wire names them
_OPERATIONS = {
    "add": "add", "remove": "remove", "mark_stale": "stale", "set_owner": "owner", "resolve": "resolve",
    "load_book": "load_book", "replay": "replay",
}  # fmt: skip


class NatsPublisher:
    """Publish a client's frames and store operations to JetStream so consumers rebuild its rows exactly.

    Parameters
    ----------
    servers : str or list of str
        NATS URL(s): ``nats://``, ``tls://``; ``user:password@`` in the URL works too.
    stream : str
        Stream name; subjects, bucket and heartbeats derive from it (see ``pm_ws.bus.wire``).
    max_pending_bytes : int
        Bound of the records not yet handed to NATS (overflow is counted, and consumers go STALE).
    max_batch_bytes : int
        Largest batch (one NATS message); keep it below the server's ``max_payload`` (1 MiB default).
    heartbeat_interval : float
        Seconds between heartbeats and JetStream acknowledgements.
    snapshot_interval : float
        Seconds between two snapshot rounds of every token (consumers also ask for rounds).
    retention : float
        Seconds the stream keeps messages (``max_age``); keep it well above ``snapshot_interval``.
    **connect_options
        Passed to ``nats.connect``: ``user``, ``password``, ``token``, ``nkeys_seed``,
        ``user_credentials``, ``tls``, ``tls_hostname`` ... Never logged.
    """

    def __init__(
        self,
        servers: str | list[str] = DEFAULT_NATS_URL,
        *,
        stream: str = "PMWS",
        max_pending_bytes: int = 16 * 2**20,
        max_batch_bytes: int = 512 * 1024,
        heartbeat_interval: float = 0.5,
        snapshot_interval: float = 60.0,
        retention: float = 900.0,
        **connect_options: Any,
    ) -> None:
        if not (heartbeat_interval > 0 and snapshot_interval > 0 and retention > 0):
            raise ValueError("heartbeat_interval, snapshot_interval and retention must be > 0")
        self.subjects = Subjects.of(stream)
        self.servers = servers
        self.max_pending_bytes = max_pending_bytes
        self.max_batch_bytes = max_batch_bytes
        self.heartbeat_interval = heartbeat_interval
        self.snapshot_interval = snapshot_interval
        self.retention = retention
        self._connect_options = connect_options
        self.instance = int.from_bytes(os.urandom(8), "little") >> 1  # > 0, fits JSON readers' int64
        self.store: Any = None  # the store of the client attached
        self._detach: Callable[[], None] | None = None
        self._seq = 0  # number of the last record made
        self._pending: list[bytes] = []  # records not yet handed to NATS
        self._pending_first = 1
        self._pending_bytes = 0
        self._dropping = False
        self._snapshot_tokens: list[str] = []  # tokens whose snapshot records are in _pending
        self._want_ack = True
        self._acked_stream_seq = 0  # stream sequence of the last acknowledged batch
        self._acks: deque[tuple[int, asyncio.Future[Any]]] = deque()
        self._wake = asyncio.Event()
        self._snapshot_due = asyncio.Event()
        self._requested: set[str] | None = None  # tokens consumers asked for (empty set: all)
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.counters = dict.fromkeys(
            ("records", "frames", "batches", "bytes", "overflow_records", "lost_records", "acks", "ack_failures",
             "snapshots", "snapshot_rounds", "resnapshot_requests", "disconnects", "pieced_records"), 0,
        )  # fmt: skip
        self._meta({"op": "hello"})

    # ------------------------------------------------------------------ wiring to a client

    def attach(self, client: MarketClient) -> None:
        """Publish ``client``'s frames and store operations from now on; it may be running already.

        The rows it holds now go out as ``held`` operations and snapshot records (consumers rebuild
        them from those); everything after, from the client's tap (:meth:`~pm_ws.MarketClient.add_tap`).
        """
        if self.store is not None:
            raise RuntimeError("this NatsPublisher already publishes a client")
        store = self.store = client.store
        for token in store.tokens():
            self._meta({"op": "held", "tokens": [token], "owner": store.owner(token)})
            self._snapshot(token)
        self._detach = client.add_tap(on_frame=self.on_frame, on_store=self.on_store)

    def client(self, url: str = DEFAULT_URL, **client_options: Any) -> MarketClient:
        """A new :class:`~pm_ws.MarketClient` (``client_options`` as it takes them), attached to this publisher."""
        client = MarketClient(url, **client_options)
        self.attach(client)
        return client

    def on_frame(self, frame: str | bytes, recv_ns: int, owner: int) -> None:
        """Queue one frame exactly as the client fed it (the client's tap calls this after ``feed``)."""
        if isinstance(frame, str):
            self._record(recv_ns, owner, KIND_TEXT, frame.encode("utf-8", "surrogatepass"))
        else:
            self._record(recv_ns, owner, KIND_BINARY, bytes(frame))
        self.counters["frames"] += 1

    def on_store(self, op: str, tokens: list[str], options: dict[str, Any]) -> None:
        """Queue one store operation the client made (the client's tap calls this right after it)."""
        self._meta({"op": _OPERATIONS[op], "tokens": tokens, **options})

    def _meta(self, operation: dict[str, Any]) -> None:
        self._record(time.time_ns(), NO_OWNER, KIND_META, orjson.dumps(operation))

    def _record(self, recv_ns: int, owner: int, kind: int, payload: bytes) -> bool:
        # A record bigger than a batch goes as consecutive pieces (a consumer applies it after the last)
        room = self.max_batch_bytes - RECORD_HEADER.size - PIECE_HEADER.size
        if RECORD_HEADER.size + len(payload) <= self.max_batch_bytes or room <= 0:
            return self._put(recv_ns, owner, kind, payload)
        self.counters["pieced_records"] += 1
        kept = True
        for start in range(0, len(payload), room):
            flags = (PIECE_FIRST if start == 0 else 0) | (PIECE_LAST if start + room >= len(payload) else 0)
            piece = PIECE_HEADER.pack(kind, flags) + payload[start : start + room]
            kept = self._put(recv_ns, owner, KIND_PIECE, piece) and kept
        return kept

    def _put(self, recv_ns: int, owner: int, kind: int, payload: bytes) -> bool:
        self._seq += 1
        size = RECORD_HEADER.size + len(payload)
        pending = self._pending
        if (self._dropping and pending) or self._pending_bytes + size > self.max_pending_bytes:
            self._dropping = True  # until the sender took what is pending: records stay contiguous per batch
            self.counters["overflow_records"] += 1
            return False
        if not pending:
            self._pending_first = self._seq
            self._dropping = False
        pending.append(RECORD_HEADER.pack(recv_ns, owner, kind, len(payload)) + payload)
        self._pending_bytes += size
        self.counters["records"] += 1
        if not self._wake.is_set():
            self._wake.set()
        return True

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        """Connect, make sure the stream and the bucket exist, start publishing."""
        subjects = self.subjects
        self._nc = await connect(
            self.servers, f"pm_ws publisher {subjects.stream}", self._disconnected, self._reconnected,
            self._connect_options,
        )  # fmt: skip
        self._js = self._nc.jetstream()
        config = StreamConfig(
            name=subjects.stream, subjects=[subjects.data], storage=StorageType.FILE, max_age=self.retention,
            discard=DiscardPolicy.OLD,
        )  # fmt: skip
        try:
            await self._js.add_stream(config)
        except BadRequestError:  # exists with other limits: take ours
            await self._js.update_stream(config)
        self._kv = await self._js.create_key_value(bucket=subjects.bucket, history=1, ttl=self.retention)
        await self._nc.subscribe(subjects.resnapshot, cb=self._on_resnapshot)
        self.max_batch_bytes = min(self.max_batch_bytes, self._nc.max_payload - BATCH_HEADER.size)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._send_loop(), name="pm_ws.bus.send"),
            loop.create_task(self._heartbeat_loop(), name="pm_ws.bus.heartbeat"),
            loop.create_task(self._snapshot_loop(), name="pm_ws.bus.snapshots"),
        ]
        logger.info("publishing to stream %s as instance %x", subjects.stream, self.instance)

    async def close(self) -> None:
        """Publish what is pending (the client's last STALE marks too), then disconnect."""
        if self._detach is not None:
            self._detach()  # after its last STALE marks: the client exits first in the usual nesting
            self._detach = None
        if self._nc is None:
            return
        deadline = time.monotonic() + 2.0
        while (self._pending or self._wake.is_set()) and self._nc.is_connected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._nc.drain()
        except Exception as exc:  # already closed or disconnected: nothing more to send
            logger.info("publisher: drain: %r", type(exc).__name__)
        self._nc = None

    async def __aenter__(self) -> NatsPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def stats(self) -> dict[str, Any]:
        """Counters plus ``instance``, ``seq`` (last record), ``pending_bytes``, ``acked_stream_seq``, ``connected``."""
        return {
            **self.counters,
            "instance": self.instance,
            "seq": self._seq,
            "pending_bytes": self._pending_bytes,
            "acked_stream_seq": self._acked_stream_seq,
            "connected": bool(self._nc is not None and self._nc.is_connected),
        }

    def request_snapshots(self, tokens: Iterable[str] = ()) -> None:
        """Snapshot ``tokens`` (every token when empty) as soon as possible."""
        wanted = set(tokens)
        if self._requested is None:
            self._requested = wanted
        elif not wanted:
            self._requested = set()
        elif self._requested:
            self._requested |= wanted
        self._snapshot_due.set()

    # ------------------------------------------------------------------ tasks

    async def _send_loop(self) -> None:
        subject = self.subjects.data
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                continue
            records, first = self._pending, self._pending_first
            snapshot_tokens, self._snapshot_tokens = self._snapshot_tokens, []
            self._pending, self._pending_bytes = [], 0
            start = 0
            while start < len(records):
                end, size = start, 0
                while end < len(records) and (end == start or size + len(records[end]) <= self.max_batch_bytes):
                    size += len(records[end])
                    end += 1
                data = BATCH_HEADER.pack(BATCH_MAGIC, self.instance, first + start, end - start)
                data += b"".join(records[start:end])
                # the bucket points at the first batch of the drain: at or before each snapshot record in it
                await self._send(subject, data, end - start, snapshot_tokens if start == 0 else [])
                start = end

    async def _send(self, subject: str, data: bytes, count: int, snapshot_tokens: list[str]) -> None:
        # One batch; acknowledged when an ack is due or the batch carries snapshots the bucket must point at
        try:
            if self._want_ack or snapshot_tokens:
                self._want_ack = False
                future = await self._js.publish_async(subject, data, wait_stall=1.0)
                self._acks.append((time.monotonic_ns() + ACK_TIMEOUT_NS, future))
                future.add_done_callback(lambda done: self._acked(done, snapshot_tokens))
            else:
                await self._nc.publish(subject, data)
        except Exception as exc:  # disconnected and the reconnect buffer is full, closed, stalled
            self.counters["lost_records"] += count
            logger.warning("publisher: %d records lost (%s); consumers will see the gap", count, type(exc).__name__)
            return
        self.counters["batches"] += 1
        self.counters["bytes"] += len(data)

    def _acked(self, future: asyncio.Future[Any], snapshot_tokens: list[str]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.counters["ack_failures"] += 1
            self.request_snapshots(snapshot_tokens or ())
            return
        self.counters["acks"] += 1
        stream_seq = future.result().seq
        self._acked_stream_seq = max(self._acked_stream_seq, stream_seq)
        if snapshot_tokens:
            pointer = orjson.dumps({"instance": self.instance, "stream_seq": stream_seq})
            self._tasks.append(asyncio.ensure_future(self._point(snapshot_tokens, pointer)))

    async def _point(self, tokens: list[str], pointer: bytes) -> None:
        # The bucket says, per token, which stream message holds its latest snapshot
        try:
            for token in tokens:
                await self._kv.put(snapshot_key(token), pointer)
        except Exception as exc:
            logger.warning("publisher: snapshot pointers not written (%s)", type(exc).__name__)
        finally:
            task = asyncio.current_task()
            if task in self._tasks:
                self._tasks.remove(task)

    async def _heartbeat_loop(self) -> None:
        beat = self.subjects.heartbeat
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            self._want_ack = True
            if not self._pending:
                self._meta({"op": "mark"})  # gives the ack a batch and consumers a number to check
            now = time.monotonic_ns()
            while self._acks and (self._acks[0][1].done() or self._acks[0][0] < now):
                self._acks.popleft()[1].cancel()  # a late ack counts as failed (no-op when done)
            if self._nc.is_connected:  # a beat buffered while disconnected would arrive late and lie
                await self._nc.publish(beat, orjson.dumps({"instance": self.instance, "seq": self._seq}))

    async def _on_resnapshot(self, msg: Any) -> None:
        self.counters["resnapshot_requests"] += 1
        try:
            tokens = [str(token) for token in orjson.loads(msg.data or b"[]")]
        except (orjson.JSONDecodeError, TypeError):
            tokens = []
        self.request_snapshots(tokens)

    async def _snapshot_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._snapshot_due.wait(), self.snapshot_interval)
            except TimeoutError:
                pass
            self._snapshot_due.clear()
            requested, self._requested = self._requested, None
            if self.store is None:
                continue
            tokens = self.store.tokens() if not requested else [t for t in requested if t in self.store]
            self.counters["snapshot_rounds"] += 1
            for start in range(0, len(tokens), SNAPSHOT_SLICE):
                for token in tokens[start : start + SNAPSHOT_SLICE]:
                    if token in self.store:
                        self._snapshot(token)
                await asyncio.sleep(0)  # the client's readers run between slices
            await asyncio.sleep(min(1.0, self.snapshot_interval))  # rounds at most once a second

    def _snapshot(self, token: str) -> None:
        store = self.store
        snapshot = encode_snapshot(token, store.export_token(token))
        if self._record(time.time_ns(), store.owner(token), KIND_SNAPSHOT, snapshot):
            self._snapshot_tokens.append(token)
            self.counters["snapshots"] += 1

    def _disconnected(self) -> None:
        self.counters["disconnects"] += 1

    def _reconnected(self) -> None:
        self._want_ack = True
        self.request_snapshots()  # records may have died with the old socket: consumers will ask anyway
