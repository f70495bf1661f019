"""Soak: a MarketClient against a FakeMarketServer at a high change rate, with faults injected at random.

    python benchmarks/soak.py --duration 120 [--seed N] [--tokens N] [--rate HZ] [--checkpoint-every S] [--overlap]

Prints a summary table and exits 1 on any violation (0 otherwise). What runs, all in one event loop:

- a rate driver: ``server.step()`` at ``--rate`` book changes per second (a trade after every 20);
- a fault director: shuffled rounds of every fault kind of the client issue (clean close, TCP abort,
  half-open, data stall with PONG, withheld snapshot, malformed/unknown/oversized frames, tick-size
  change, burst, accept-then-close), each followed by a wait until every token reads LIVE again
  (a token still not LIVE after ``RECOVERY_TIMEOUT`` is a violation), then a random pause; a round
  that started before the end is finished, so every kind runs at least once;
- a reader: every ``SAMPLE_PERIOD`` it copies the token rows out of ``store.view`` and checks each LIVE
  row's top of book against the server's history (below), that its connection is open, and that it was
  confirmed (``CONFIRM_TS_NS``) at most ``confirm_interval + snapshot_timeout`` ago, the client's promise
  (counted as "LIVE rows older than the promise");
- checkpoints every ``--checkpoint-every`` seconds and at the end (below).

``--overlap`` starts faults of different kinds without waiting for recovery; it is not the CI mode. It
found a core-level issue, now fixed: a ``book`` without ``tick_size`` (a post-trade refresh) turned a
STALE row LIVE with the TICK from before the loss, though the tick had changed meanwhile.

LIVE rows against the server's history. Frames are in flight, so a LIVE row may be behind the server,
but only in one way. Each server connection has one writer that sends frames in the order they were
made, and every frame is made at the moment of the change it reports (or, for a ``book``, from the book
at that moment). Number the server's changes of a token 0, 1, 2, ... ("versions"). A client row that
turned LIVE on a ``book`` made at version v and then applied the price changes that followed on the same
socket holds exactly the server's book of some version >= v, and that version can only grow until the
row leaves LIVE; the next LIVE comes from a newer ``book``. So the soak keeps, per token, the server's
top of book after every change (bid px/sz, ask px/sz, and the level counts and tick, which the row also
holds), and requires every sampled LIVE row to equal the top of some version >= the token's floor; the
floor is raised to the matched version (never backwards) and to the version a ``book`` was made at, when
the client reads that ``book`` (the ``on_frame`` hook sees it right after it was applied; the server's
``book`` renderer is wrapped to map each book's hash to its version). Matching the earliest such version
is enough: if any non-decreasing assignment of versions explains the samples, the earliest-match one
does. Two faults lose frames on an open socket by design (half-open: the server drops what it would
send; data stall: it sends no data); they last longer than the client's detection deadline
(``inbound_timeout`` / ``confirm_interval + snapshot_timeout``) plus a margin, so the client must have
marked its rows STALE before the server resumes (a shorter stall would be undetectable by any client:
the protocol's checksum covers prices, not sizes).

Checkpoints: the rate driver and the director pause, the soak waits until every token is LIVE and
quiescent (every open socket: frames the server wrote == frames the client read), then requires
``store.book(t, depth=None) == server.truth(t)`` and the row's TICK == ``server.tick(t)`` for every
token, checks the counters, records the RSS (``/proc/self/statm``: this process holds the client AND
the server), prunes the server's logs of closed connections and the soak's history, and resumes.

Counters (the identities checked at every checkpoint and at the end):

- ``sent = read + lost``: sent is what the server wrote over every connection (``sent_frames``); read is
  what the client's reader took off its sockets and fed (``on_frame`` calls == dispatcher ``frames`` ==
  sum of the client's per-connection ``frames``); lost >= 0 are frames written to a socket that died
  before the client read them, and at every checkpoint each open socket has lost nothing;
- ``read = ctl_* + rej_unknown_text + rej_oversized + rej_invalid_json + accepted``, with the soak's
  own count of text frames, frames above the dispatcher's limit, and JSON frames that orjson and the
  depth limit (32) accept;
- ``event objects in accepted frames = events (applied) + rej_unknown_event + rej_bad_event +
  rej_bad_number (rejected) + skip_unsubscribed + skip_duplicate (skipped)``;
- ``checksum_mismatch + crossed_book == 0``: the server never sends a bad book, so a mismatch means a
  book diverged.

The soak wraps three private methods of its own FakeMarketServer instance (``_random_change``,
``_trade``, ``_regrid``: every change of a book) and one renderer (``_book_event``) to observe versions,
and reads the client's private connection list to pair each client socket with its server connection
and to see whether a LIVE token's connection is open.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from pm_ws import IMPLEMENTATION
from pm_ws._transport import TRANSPORTS
from pm_ws.backoff import ExponentialBackoff
from pm_ws.client import ClientEvent, MarketClient
from pm_ws.row import (
    ASK_LEVELS, ASK_PX, ASK_SZ, BID_LEVELS, BID_PX, BID_SZ, CONFIRM_TS_NS, PRICE_SCALE, STATE, TICK, State,
)  # fmt: skip
from pm_ws.testing import TICK_SIZES, FakeMarket, FakeMarketServer

FAULT_KINDS = (
    "clean_close", "tcp_abort", "half_open", "data_stall", "withheld_snapshot",
    "malformed", "tick_change", "burst", "accept_then_close",
)  # fmt: skip
DISPATCHER_MAX_FRAME_BYTES = 16 * 2**20  # the dispatcher's default limit (rej_oversized above it)
MAX_JSON_DEPTH = 32
JSON_WHITESPACE = " \t\n\r"
SAMPLE_PERIOD = 0.001  # seconds between two reads of every LIVE row
DRIVER_PERIOD = 0.005  # seconds between two server.step() calls
RECOVERY_TIMEOUT = 15.0  # seconds after a fault ended within which every token must read LIVE again
QUIESCE_TIMEOUT = 15.0  # seconds a checkpoint waits for LIVE + nothing in flight
DETECTION_MARGIN = 0.5  # seconds a frame-losing fault outlasts the client's deadline
TICKS = ("0.01", "0.001", "0.005")
# Bytes the RSS may grow from the first checkpoint to the end. Not 0: glibc raises its mmap threshold
# after the first 17 MiB frame is freed, so later ones come from the heap and up to a few stay resident
RSS_GROWTH_LIMIT = 64 * 2**20


@dataclass
class SoakConfig:
    """What to run: duration, load, and the client's deadlines (short, so faults recover fast)."""

    duration: float = 120.0
    seed: int = 0
    tokens: int = 20
    rate: float = 500.0
    checkpoint_every: float = 30.0
    fault_gap: tuple[float, float] = (0.2, 1.0)  # random pause between two faults, seconds
    ping_interval: float = 0.2
    inbound_timeout: float = 1.0
    snapshot_timeout: float = 0.5
    confirm_interval: float = 1.0
    backoff: tuple[float, float] = (0.05, 0.5)
    kinds: tuple[str, ...] = FAULT_KINDS
    recovery_timeout: float = RECOVERY_TIMEOUT
    overlap: bool = False  # faults of different kinds overlap, no recovery wait (not the CI mode)
    fault_hold: float | None = None  # seconds a frame-losing fault lasts; None: the client's deadline + margin
    transport: str = "websockets"  # the client's websocket library: "websockets" or "picows"
    verbose: bool = False


@dataclass
class SoakResult:
    """Everything the summary prints; ``violations`` is empty on success."""

    config: SoakConfig
    elapsed: float = 0.0
    started: float = field(default_factory=time.monotonic)
    violations: list[str] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    recovered: Counter[str] = field(default_factory=Counter)
    worst_detection: dict[str, float] = field(default_factory=dict)  # fault start -> first token not LIVE
    worst_recovery: dict[str, float] = field(default_factory=dict)  # fault end -> every token LIVE
    client_events: Counter[str] = field(default_factory=Counter)
    checkpoints: int = 0
    samples: int = 0
    live_rows_checked: int = 0
    overdue_live_rows: int = 0  # LIVE rows sampled older than the promise since their last confirmation
    oldest_confirmation: float = 0.0  # seconds: the largest confirmation age of a LIVE row sampled
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds, bytes)
    counters: dict[str, int] = field(default_factory=dict)
    audit: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    changes: int = 0

    def violation(self, text: str) -> None:
        if len(self.violations) < 1000:
            self.violations.append(f"{time.monotonic() - self.started:8.2f}s {text}")


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc/self/statm``, second field, in pages)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


Top = tuple[int, int, int, int, int, int, int]
ROW_FIELDS = [BID_PX, BID_SZ, ASK_PX, ASK_SZ, BID_LEVELS, ASK_LEVELS, TICK]  # a Top, as the row holds it


def top_of(book: tuple[list[tuple[int, int]], list[tuple[int, int]]], tick: int) -> Top:
    """A Top: bid px, bid sz, ask px, ask sz (the row's sentinels for an empty side), level counts, tick."""
    bids, asks = book
    bid = bids[0] if bids else (0, 0)
    ask = asks[0] if asks else (PRICE_SCALE, 0)
    return (bid[0], bid[1], ask[0], ask[1], len(bids), len(asks), tick)


class TopHistory:
    """Per token: the server's top of book after each of its changes, numbered by version."""

    def __init__(self, server: FakeMarketServer) -> None:
        self.server = server
        self.tops: dict[str, list[Top]] = {token: [self._top(token)] for token in server.token_ids}
        self.base = dict.fromkeys(server.token_ids, 0)  # version of tops[token][0]
        self.floor = dict.fromkeys(server.token_ids, 0)  # lowest version a LIVE row may show now

    def _top(self, token: str) -> Top:
        return top_of(self.server.truth(token), self.server.tick(token))

    def record(self, market: FakeMarket) -> None:
        for token in market[1:]:
            self.tops[token].append(self._top(token))

    def latest(self, token: str) -> int:
        return self.base[token] + len(self.tops[token]) - 1

    def raise_floor(self, token: str, version: int) -> None:
        if version > self.floor[token]:
            self.floor[token] = version

    def match(self, token: str, top: Top) -> bool:
        """True if ``top`` is the top of a version >= the floor; the floor moves up to it."""
        tops, base = self.tops[token], self.base[token]
        try:
            index = tops.index(top, self.floor[token] - base)
        except ValueError:
            return False
        self.floor[token] = base + index
        if index > 4096:  # keep the list short: nothing below the floor can match again
            del tops[:index]
            self.base[token] = base + index
        return True

    def settle(self) -> None:
        """At a quiescent checkpoint: every row equals the latest version; forget the rest."""
        for token, tops in self.tops.items():
            latest = self.latest(token)
            del tops[:-1]
            self.base[token] = self.floor[token] = latest


class FrameAudit:
    """The client's ``on_frame``: classify what was read, and raise a token's floor on its ``book``."""

    def __init__(self, history: TopHistory, book_versions: dict[tuple[str, str], int]) -> None:
        self.history = history
        self.book_versions = book_versions
        self.counts: Counter[str] = Counter()

    def __call__(self, frame: str | bytes, recv_ns: int) -> None:
        counts = self.counts
        counts["read"] += 1
        size = len(frame) if isinstance(frame, bytes) or frame.isascii() else len(frame.encode())
        if size > DISPATCHER_MAX_FRAME_BYTES:
            counts["oversized"] += 1
            return
        text = frame if isinstance(frame, str) else frame.decode("latin-1")  # binary frames are rare
        if text[:1] not in ("{", "[") and text.strip(JSON_WHITESPACE)[:1] not in ("{", "["):
            counts["text"] += 1
            return
        try:
            doc = orjson.loads(frame)
        except orjson.JSONDecodeError:
            counts["invalid_json"] += 1
            return
        if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(doc) > MAX_JSON_DEPTH:
            counts["invalid_json"] += 1
            return
        counts["accepted"] += 1
        events = doc if isinstance(doc, list) else [doc]
        counts["event_objects"] += len(events)
        for event in events:
            if isinstance(event, dict) and event.get("event_type") == "book":
                key = (str(event.get("asset_id")), str(event.get("hash")))
                version = self.book_versions.pop(key, None)
                if version is not None:
                    self.history.raise_floor(key[0], version)


def _depth(doc: Any) -> int:
    # Nesting depth of a parsed JSON document (the top-level container is depth 1)
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node)
    return deepest


def instrument(server: FakeMarketServer, history: TopHistory, book_versions: dict[tuple[str, str], int]) -> None:
    """Wrap this server instance's book mutations and its ``book`` renderer to record versions."""
    random_change, trade, regrid, book_event = server._random_change, server._trade, server._regrid, server._book_event

    def recorded_change() -> Any:
        book, frame = random_change()
        history.record(book.market)
        return book, frame

    def recorded_trade(token_id: str | None) -> Any:
        traded = trade(token_id)
        if traded is not None:
            history.record(traded[2])
        return traded

    def recorded_regrid(book: Any, tick_text: str) -> None:
        regrid(book, tick_text)
        history.record(book.market)

    def recorded_book_event(token_id: str, *, with_tick: bool) -> str:
        frame = book_event(token_id, with_tick=with_tick)
        start = frame.index('"hash":"') + 8
        book_versions[(token_id, frame[start : start + 40])] = history.latest(token_id)
        return frame

    server._random_change = recorded_change  # type: ignore[method-assign]
    server._trade = recorded_trade  # type: ignore[method-assign]
    server._regrid = recorded_regrid  # type: ignore[method-assign]
    server._book_event = recorded_book_event  # type: ignore[method-assign]


class Soak:
    """One soak run: server, client, and the tasks that drive, break and watch them."""

    def __init__(self, config: SoakConfig) -> None:
        self.config = config
        self.result = SoakResult(config)
        self.rng = random.Random(config.seed)
        self.server = FakeMarketServer(markets=config.tokens // 2, seed=config.seed, rate_hz=0)
        self.tokens = self.server.token_ids
        self.history = TopHistory(self.server)
        self.book_versions: dict[tuple[str, str], int] = {}
        instrument(self.server, self.history, self.book_versions)
        self.audit = FrameAudit(self.history, self.book_versions)
        low, high = config.backoff
        self.client = MarketClient(
            "ws://127.0.0.1:1",  # replaced once the server listens
            capacity=len(self.tokens),
            ping_interval=config.ping_interval,
            inbound_timeout=config.inbound_timeout,
            snapshot_timeout=config.snapshot_timeout,
            confirm_interval=config.confirm_interval,
            connect_stagger=0.0,
            backoff=lambda: ExponentialBackoff(low, high),
            on_event=self._on_event,
            on_frame=self.audit,
            transport=config.transport,
        )
        self.running = asyncio.Event()  # cleared while a checkpoint holds the feed
        self.step_lock = asyncio.Lock()
        self.started = 0.0
        self.sent_by_closed = 0  # frames written to server connections pruned at checkpoints
        self.socket_start: dict[int, int] = {}  # client connection id -> its frames when the socket opened
        self.left_live_at: float | None = None  # first time a token left LIVE since the current fault began

    # ------------------------------------------------------------------ run

    async def run(self) -> SoakResult:
        result = self.result
        async with self.server:
            self.client.url = self.server.url
            await self.client.subscribe(self.tokens)
            self.started = result.started = time.monotonic()
            async with self.client:
                if not await self._all_live(RECOVERY_TIMEOUT):
                    result.violation("tokens never all LIVE after the start")
                    return self._finish()
                result.rss.append((self._elapsed(), rss_bytes()))
                self.running.set()
                tasks = [
                    asyncio.create_task(self._drive(), name="soak.driver"),
                    asyncio.create_task(self._sample(), name="soak.reader"),
                ]
                try:
                    await self._direct()
                    await self._checkpoint("final")
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    for task in tasks:
                        if not task.cancelled() and task.exception() is not None:
                            result.violation(f"{task.get_name()} crashed: {task.exception()!r}")
        return self._finish()

    def _finish(self) -> SoakResult:
        result = self.result
        result.elapsed = self._elapsed()
        result.counters = dict(self.client.dispatcher.stats())
        result.audit = dict(self.audit.counts)
        result.changes = self.server._changes
        return result

    def _elapsed(self) -> float:
        return time.monotonic() - self.started if self.started else 0.0

    def _on_event(self, event: ClientEvent) -> None:
        kind = event.kind
        if kind == "state":
            if event.data["state"] is not State.LIVE and self.left_live_at is None:
                self.left_live_at = time.monotonic()
            self.result.client_events[f"state {event.data['state'].name} ({event.data['cause']})"] += 1
            return
        self.result.client_events[kind] += 1
        if kind == "connected":
            ident = event.data["connection"]
            self.socket_start[ident] = next(shard.frames for shard in self.client._shards if shard.id == ident)

    # ------------------------------------------------------------------ tasks

    async def _drive(self) -> None:
        # Book changes at the configured rate; paused while a checkpoint holds the feed
        loop = asyncio.get_running_loop()
        owed = 0.0
        last = loop.time()
        while True:
            await asyncio.sleep(DRIVER_PERIOD)
            if not self.running.is_set():
                await self.running.wait()
                last = loop.time()
            now = loop.time()
            owed = min(owed + (now - last) * self.config.rate, self.config.rate)  # no catch-up storm
            last = now
            if owed >= 1:
                async with self.step_lock:
                    await self.server.step(int(owed))
                owed -= int(owed)

    async def _sample(self) -> None:
        # The trader's view: copy every row, check each LIVE top against the server's history
        store, history, result = self.client.store, self.history, self.result
        rows = np.asarray(store.view)
        slots = np.array([store.slot(token) for token in self.tokens])
        fields = [*ROW_FIELDS, CONFIRM_TS_NS, STATE]
        live = int(State.LIVE)
        owner = self.client._owner
        promise_ns = int((self.config.confirm_interval + self.config.snapshot_timeout) * 1e9)
        while True:
            await asyncio.sleep(SAMPLE_PERIOD)
            snapshot = rows[slots][:, fields].tolist()  # one copy: the rows cannot change during it
            now = time.time_ns()  # the rows' clock
            result.samples += 1
            for token, row in zip(self.tokens, snapshot):
                if row[-1] != live:
                    continue
                result.live_rows_checked += 1
                age = now - row[-2]
                result.oldest_confirmation = max(result.oldest_confirmation, age / 1e9)
                if age > promise_ns:
                    result.overdue_live_rows += 1
                    result.violation(f"LIVE row of {token[:12]}... last confirmed {age / 1e9:.3f}s ago")
                if not owner[token].up:
                    result.violation(f"LIVE row of {token[:12]}... while its connection is not open")
                top = tuple(row[:-2])
                if not history.match(token, top):
                    result.violation(
                        f"LIVE row of {token[:12]}... shows {top}, not a server top since version "
                        f"{history.floor[token]} (latest {history.latest(token)}: {history.tops[token][-1]})"
                    )

    async def _direct(self) -> None:
        # Faults in shuffled rounds of every kind, checkpoints on their schedule, until the end
        config = self.config
        next_checkpoint = config.checkpoint_every
        kinds: list[str] = []
        faults = self._faults()
        overlapping: dict[str, asyncio.Task[Any]] = {}
        while self._elapsed() < config.duration or kinds:  # a started round ends: every kind runs at least once
            if self._elapsed() >= next_checkpoint:
                await asyncio.gather(*overlapping.values())
                await self._checkpoint(f"{self._elapsed():.0f}s")
                next_checkpoint = self._elapsed() + config.checkpoint_every
                continue
            if config.overlap:
                await self._overlap(faults, overlapping)
                continue
            if not kinds:
                kinds = list(config.kinds)
                self.rng.shuffle(kinds)
            kind = kinds.pop()
            result = self.result
            result.injected[kind] += 1
            self.left_live_at = None
            started = time.monotonic()
            noticed = await faults[kind]()
            ended = time.monotonic()
            if noticed is not None:  # the client must notice the fault before it can recover from it
                if await self._until(noticed, config.recovery_timeout):
                    _worst(result.worst_detection, kind, (self.left_live_at or time.monotonic()) - started)
                else:
                    result.violation(f"{kind}: not noticed by the client within {config.recovery_timeout:g}s")
            if await self._all_live(config.recovery_timeout):
                result.recovered[kind] += 1
                _worst(result.worst_recovery, kind, time.monotonic() - ended)
            else:
                result.violation(f"{kind}: tokens not all LIVE {config.recovery_timeout:g}s after it ended")
            if config.verbose:
                print(f"{self._elapsed():8.2f}s {kind} recovered", file=sys.stderr)
            await asyncio.sleep(self.rng.uniform(*config.fault_gap))

    async def _overlap(
        self, faults: dict[str, Callable[[], Awaitable[Any]]], running: dict[str, asyncio.Task[Any]]
    ) -> None:
        # Start a fault of a kind not running now (two of one kind would cut each other short), go on
        kind = self.rng.choice([kind for kind in self.config.kinds if kind not in running])
        self.result.injected[kind] += 1
        running[kind] = task = asyncio.ensure_future(faults[kind]())
        task.add_done_callback(lambda _: running.pop(kind, None))
        await asyncio.sleep(self.rng.uniform(0.02, 0.4))
        if len(running) == len(self.config.kinds):
            await asyncio.wait(list(running.values()), return_when=asyncio.FIRST_COMPLETED)

    def _faults(self) -> dict[str, Callable[[], Awaitable[Callable[[], bool] | None]]]:
        # Each injects one fault and returns how to tell the client noticed it (None: nothing to notice)
        server, config, rng = self.server, self.config, self.rng

        def left_live() -> bool:
            return self.left_live_at is not None

        async def clean_close() -> Callable[[], bool] | None:
            await server.close_all(1011, "soak")
            return left_live

        async def tcp_abort() -> Callable[[], bool] | None:
            server.abort_all()
            return left_live

        async def half_open() -> Callable[[], bool] | None:
            server.set_unresponsive(True)
            await asyncio.sleep(config.fault_hold or config.inbound_timeout + DETECTION_MARGIN)
            server.set_unresponsive(False)
            return left_live

        async def data_stall() -> Callable[[], bool] | None:
            server.set_data_stalled(True)
            promise = config.confirm_interval + config.snapshot_timeout  # no row stays LIVE unconfirmed longer
            await asyncio.sleep(config.fault_hold or promise + DETECTION_MARGIN)
            server.set_data_stalled(False)
            return left_live

        async def withheld_snapshot() -> Callable[[], bool] | None:
            token = rng.choice(self.tokens)
            server.withhold_snapshot(token)
            server.abort_all()  # the reconnect asks for every book; this one does not come
            await asyncio.sleep(2 * config.snapshot_timeout + DETECTION_MARGIN)
            server.withhold_snapshot(token, on=False)
            return left_live

        async def malformed() -> Callable[[], bool] | None:
            await server.send_malformed(rng.randint(1, 10))
            return None

        async def tick_change() -> Callable[[], bool] | None:
            token, tick = rng.choice(self.tokens), rng.choice(TICKS)
            if server.tick(token) == TICK_SIZES[tick]:
                await server.change_tick(token, tick)  # a no-op change: nothing to notice
                return None
            await server.change_tick(token, tick)
            # the refreshed book may turn the rows LIVE before the client reports them STALE
            return lambda: self.client.store.top(token).tick == TICK_SIZES[tick]

        async def burst() -> Callable[[], bool] | None:
            async with self.step_lock:
                await server.burst(rng.randint(500, 3000))
            return None

        async def accept_then_close() -> Callable[[], bool] | None:
            server.reject_connections(True)
            server.abort_all()
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            server.reject_connections(False)
            return left_live

        return {fault.__name__: fault for fault in (clean_close, tcp_abort, half_open, data_stall, withheld_snapshot,
                                                    malformed, tick_change, burst, accept_then_close)}  # fmt: skip

    # ------------------------------------------------------------------ checks

    async def _all_live(self, timeout: float) -> bool:
        view, slots = self.client.store.view, [self.client.store.slot(token) for token in self.tokens]
        live = int(State.LIVE)
        return await self._until(lambda: all(view[slot, STATE] == live for slot in slots), timeout)

    @staticmethod
    async def _until(predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    def _open_sockets(self) -> tuple[dict[Any, int], dict[Any, int]]:
        # {socket address: frames} as the client read them and as the server wrote them
        read = {}
        for shard in self.client._shards:
            socket = shard.socket
            if socket is not None and shard.up and shard.id in self.socket_start:
                read[socket.local_address] = shard.frames - self.socket_start[shard.id]
        written = {
            conn.websocket.remote_address: conn.sent_frames for conn in self.server.connections if not conn.closed
        }
        return read, written

    async def _quiescent(self) -> bool:
        # Every token LIVE, no frame in flight on any open socket, three times in a row
        deadline = time.monotonic() + QUIESCE_TIMEOUT
        calm = 0
        while calm < 3:
            if time.monotonic() > deadline:
                return False
            await self.server.step(0)  # waits until every server writer emptied its queue
            await asyncio.sleep(0.02)
            read, written = self._open_sockets()
            settled = read and read == written and await self._all_live(0)
            awaiting = any(shard.awaiting for shard in self.client._shards)
            calm = calm + 1 if settled and not awaiting else 0
        return True

    async def _checkpoint(self, label: str) -> None:
        result = self.result
        self.running.clear()
        async with self.step_lock:  # the driver's step in progress (if any) has finished
            if not await self._quiescent():
                read, written = self._open_sockets()
                result.violation(f"checkpoint {label}: not quiescent in {QUIESCE_TIMEOUT:g}s ({read} vs {written})")
            else:
                self._compare_books(label)
            self._check_counters(label)
            result.checkpoints += 1
            self._prune()
            gc.collect()
            result.rss.append((self._elapsed(), rss_bytes()))
            if self.config.verbose:
                print(f"{self._elapsed():8.2f}s checkpoint {label}: RSS {result.rss[-1][1] / 2**20:.1f} MiB, "
                      f"{len(result.violations)} violations", file=sys.stderr)  # fmt: skip
        self.running.set()

    def _compare_books(self, label: str) -> None:
        store = self.client.store
        for token in self.tokens:
            if store.book(token, depth=None) != self.server.truth(token):
                self.result.violation(f"checkpoint {label}: book of {token[:12]}... differs from server.truth()")
            if store.top(token).tick != self.server.tick(token):
                self.result.violation(f"checkpoint {label}: TICK of {token[:12]}... differs from server.tick()")
        self.history.settle()

    def _check_counters(self, label: str) -> None:
        stats = self.client.dispatcher.stats()
        audit = self.audit.counts
        read = audit["read"]
        per_connection = sum(conn["frames"] for conn in self.client.stats()["connections"])
        sent = self.sent_by_closed + sum(conn.sent_frames for conn in self.server.connections)
        self.result.sent = sent
        control = stats["ctl_pong"] + stats["ctl_invalid_operation"] + stats["ctl_no_new_assets"]
        rejected = stats["rej_unknown_event"] + stats["rej_bad_event"] + stats["rej_bad_number"]
        skipped = stats["skip_unsubscribed"] + stats["skip_duplicate"]
        identities = {
            "on_frame calls == dispatcher frames": (read, stats["frames"]),
            "dispatcher frames == sum of connection frames": (stats["frames"], per_connection),
            "lost = sent - read >= 0": (min(sent - read, 0), 0),
            "text frames == ctl_* + rej_unknown_text": (audit["text"], control + stats["rej_unknown_text"]),
            "frames above 16 MiB == rej_oversized": (audit["oversized"], stats["rej_oversized"]),
            "invalid JSON frames == rej_invalid_json": (audit["invalid_json"], stats["rej_invalid_json"]),
            "read == text + oversized + invalid JSON + accepted": (
                read,
                audit["text"] + audit["oversized"] + audit["invalid_json"] + audit["accepted"],
            ),
            "event objects == applied + rejected + skipped": (
                audit["event_objects"],
                stats["events"] + rejected + skipped,
            ),
            "checksum_mismatch + crossed_book == 0": (stats["checksum_mismatch"] + stats["crossed_book"], 0),
        }  # fmt: skip
        for name, (left, right) in identities.items():
            if left != right:
                self.result.violation(f"checkpoint {label}: {name} fails: {left} != {right}")

    def _prune(self) -> None:
        # Harness hygiene: the server logs every connection and every inbound frame forever
        server = self.server
        closed = [conn for conn in server.connections if conn.closed]
        self.sent_by_closed += sum(conn.sent_frames for conn in closed)
        server.connections[:] = [conn for conn in server.connections if not conn.closed]
        server.received.clear()
        for conn in server.connections:
            conn.received.clear()
        self.book_versions.clear()  # nothing in flight at a checkpoint


def _worst(worst: dict[str, float], kind: str, seconds: float) -> None:
    worst[kind] = max(worst.get(kind, 0.0), seconds)


def summary(result: SoakResult) -> str:
    """The final table."""
    config = result.config
    counters, audit = result.counters, result.audit
    rss_start, rss_end = result.rss[0][1] if result.rss else 0, result.rss[-1][1] if result.rss else 0
    rss_base = result.rss[1][1] if len(result.rss) > 1 else rss_start
    read = audit.get("read", 0)
    control = sum(value for key, value in counters.items() if key.startswith("ctl_"))
    rejected_whole = sum(counters.get(key, 0) for key in ("rej_oversized", "rej_unknown_text", "rej_invalid_json"))
    rejected = sum(counters.get(key, 0) for key in ("rej_unknown_event", "rej_bad_event", "rej_bad_number"))
    skipped = counters.get("skip_unsubscribed", 0) + counters.get("skip_duplicate", 0)
    rss_series = ", ".join(f"{rss / 2**20:.0f}" for _, rss in result.rss[1:])
    lines = [
        f"pm_ws soak: {result.elapsed:.1f} s, seed {config.seed}, {config.tokens} tokens, {config.rate:g} changes/s, "
        f"core {IMPLEMENTATION}, transport {config.transport}",
        f"  server book changes          {result.changes:,}",
        f"  frames sent by the server    {result.sent:,}",
        f"  frames read by the client    {read:,} (lost with dropped sockets: {result.sent - read:,})",
        f"    control                    {control:,}",
        f"    rejected whole             {rejected_whole:,}",
        f"    accepted                   {audit.get('accepted', 0):,}: {audit.get('event_objects', 0):,} event objects"
        f" = {counters.get('events', 0):,} applied + {rejected:,} rejected + {skipped:,} skipped",
        f"  checkpoints                  {result.checkpoints} (books == server.truth() at each)",
        f"  reader samples               {result.samples:,} ({result.live_rows_checked:,} LIVE rows checked)",
        f"  RSS start / first checkpoint / end   {rss_start / 2**20:.1f} / {rss_base / 2**20:.1f} / "
        f"{rss_end / 2**20:.1f} MiB (checkpoints: {rss_series})",
        "  faults                       injected  recovered  worst detection  worst recovery",
    ]  # fmt: skip
    for kind in FAULT_KINDS:
        lines.append(
            f"    {kind:<26} {result.injected[kind]:>8}  {result.recovered[kind]:>9}  "
            f"{_ms(result.worst_detection.get(kind)):>15}  {_ms(result.worst_recovery.get(kind)):>14}"
        )
    events = ", ".join(f"{kind} {count}" for kind, count in sorted(result.client_events.items()))
    lines.append(f"  client events                {events}")
    promise = config.confirm_interval + config.snapshot_timeout
    lines.append(f"  LIVE rows older than the promise ({promise:g} s since confirmed)   {result.overdue_live_rows}"
                 f" (oldest confirmation of a LIVE row: {result.oldest_confirmation * 1000:.0f} ms)")  # fmt: skip
    lines.append(f"  violations                   {len(result.violations)}")
    lines.extend(f"    {text}" for text in result.violations[:50])
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def check_rss(result: SoakResult) -> None:
    """Flat memory: the RSS at the end may exceed the first checkpoint's by at most RSS_GROWTH_LIMIT."""
    if len(result.rss) > 2:
        growth = result.rss[-1][1] - result.rss[1][1]
        if growth > RSS_GROWTH_LIMIT:
            result.violation(f"RSS grew by {growth / 2**20:.1f} MiB from the first checkpoint to the end")


async def soak(config: SoakConfig) -> SoakResult:
    """Run one soak and return its result (RSS growth included in the violations)."""
    result = await Soak(config).run()
    check_rss(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of faults (default 120)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=20, help="tokens (YES/NO pairs; default 20)")
    parser.add_argument("--rate", type=float, default=500.0, help="server book changes per second (default 500)")
    parser.add_argument("--checkpoint-every", type=float, default=30.0, help="seconds between checkpoints")
    parser.add_argument("--verbose", action="store_true", help="one line per fault and checkpoint on stderr")
    parser.add_argument(
        "--overlap", action="store_true", help="overlapping faults of different kinds, no recovery wait (not the CI mode)"
    )
    parser.add_argument("--transport", choices=TRANSPORTS, default=TRANSPORTS[0], help="the client's websocket library")
    args = parser.parse_args(argv)
    if args.tokens < 2 or args.tokens % 2:
        parser.error("--tokens must be an even number >= 2 (YES/NO pairs)")
    if not args.verbose:  # the client warns on every fault it handles: hundreds of lines
        logging.getLogger("pm_ws").setLevel(logging.ERROR)
    config = SoakConfig(
        duration=args.duration,
        seed=args.seed,
        tokens=args.tokens,
        rate=args.rate,
        checkpoint_every=args.checkpoint_every,
        verbose=args.verbose,
        overlap=args.overlap,
        transport=args.transport,
    )
    result = asyncio.run(soak(config))
    print(summary(result))
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
