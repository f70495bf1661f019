"""Soak: a MarketClient against a FakeMarketServer at a high change rate, with faults injected at random.

    python benchmarks/soak.py --duration 120 [--seed N] [--tokens N] [--rate HZ] [--checkpoint-every S] [--overlap]
    python -m benchmarks.soak --exchange --seconds 90 [--seed N] [--markets N] [--rate HZ] [--no-silent-streams]

``--exchange`` runs the whole-exchange soak instead (:class:`ExchangeSoak`: an ExchangeFollower on the fake
exchange while markets open and resolve, with WebSocket and HTTP faults and withheld snapshots); it shares
the LIVE-row checker below (:class:`TopHistory`, :class:`LiveRowCheck`).

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
``_trade``, ``_regrid``: every change of a book), one renderer (``_book_event``) and ``_add_market`` (a
market opened) to observe versions,
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
    ASK_LEVELS, ASK_PX, ASK_SZ, BID_LEVELS, BID_PX, BID_SZ, CONFIRM_TS_NS, PRICE_SCALE, STATE, TICK, TOKEN_TAG, State,
    token_tag,
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
class Deadlines:
    """The client's deadlines in a soak (short, so faults recover fast)."""

    ping_interval: float = 0.2
    inbound_timeout: float = 1.0
    snapshot_timeout: float = 0.5
    confirm_interval: float = 1.0
    backoff: tuple[float, float] = (0.05, 0.5)

    def client_options(self) -> dict[str, Any]:
        """The MarketClient options they make (no connection stagger)."""
        low, high = self.backoff
        return {
            "ping_interval": self.ping_interval, "inbound_timeout": self.inbound_timeout,
            "snapshot_timeout": self.snapshot_timeout, "confirm_interval": self.confirm_interval,
            "connect_stagger": 0.0, "backoff": lambda: ExponentialBackoff(low, high),
        }  # fmt: skip


@dataclass
class SoakConfig(Deadlines):
    """What to run: duration, load, and the client's deadlines."""

    duration: float = 120.0
    seed: int = 0
    tokens: int = 20
    rate: float = 500.0
    checkpoint_every: float = 30.0
    fault_gap: tuple[float, float] = (0.2, 1.0)  # random pause between two faults, seconds
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
    wrong_live: int = 0  # LIVE rows sampled whose top the server never had since their floor
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

    def add(self, market: FakeMarket) -> None:
        """A market opened by the server: its tokens' history starts at version 0."""
        for token in market[1:]:
            self.tops[token] = [self._top(token)]
            self.base[token] = self.floor[token] = 0

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


SAMPLED_FIELDS = [*ROW_FIELDS, CONFIRM_TS_NS, STATE]  # what a reader copies of a row
SAMPLED_CONFIRM, SAMPLED_STATE = len(ROW_FIELDS), len(ROW_FIELDS) + 1


class LiveRowCheck:
    """One sampled LIVE row (``SAMPLED_FIELDS``): confirmed within the client's promise, its connection open,
    and its top a server top of a version >= the token's floor (a wrong-LIVE read otherwise)."""

    def __init__(self, history: TopHistory, result: SoakResult, promise: float) -> None:
        self.history = history
        self.result = result
        self.promise_ns = int(promise * 1e9)
        self.reported: dict[str, Top] = {}  # token -> the wrong top last reported (one line while it stays)

    def __call__(self, token: str, row: list[int], now: int, up: bool) -> None:
        result, history = self.result, self.history
        result.live_rows_checked += 1
        age = now - row[SAMPLED_CONFIRM]
        result.oldest_confirmation = max(result.oldest_confirmation, age / 1e9)
        if age > self.promise_ns:
            result.overdue_live_rows += 1
            result.violation(f"LIVE row of {token[:12]}... last confirmed {age / 1e9:.3f}s ago")
        if not up:
            result.violation(f"LIVE row of {token[:12]}... while its connection is not open")
        top = tuple(row[:SAMPLED_CONFIRM])
        if not history.match(token, top):  # type: ignore[arg-type]
            result.wrong_live += 1
            if self.reported.get(token) == top:
                return
            self.reported[token] = top  # type: ignore[assignment]
            result.violation(
                f"LIVE row of {token[:12]}... shows {top}, not a server top since version "
                f"{history.floor[token]} (latest {history.latest(token)}: {history.tops[token][-1]})"
            )


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
    add_market = server._add_market

    def recorded_add_market(tick: str) -> FakeMarket:
        market = add_market(tick)
        history.add(market)
        return market

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
    server._add_market = recorded_add_market  # type: ignore[method-assign]


def observe(server: FakeMarketServer) -> tuple[TopHistory, dict[tuple[str, str], int], FrameAudit]:
    """The server's top history (its changes instrumented), the versions of its ``book`` frames, the client's audit."""
    history = TopHistory(server)
    book_versions: dict[tuple[str, str], int] = {}
    instrument(server, history, book_versions)
    return history, book_versions, FrameAudit(history, book_versions)


class Soak:
    """One soak run: server, client, and the tasks that drive, break and watch them."""

    def __init__(self, config: SoakConfig) -> None:
        self.config = config
        self.result = SoakResult(config)
        self.rng = random.Random(config.seed)
        self.server = FakeMarketServer(markets=config.tokens // 2, seed=config.seed, rate_hz=0)
        self.tokens = self.server.token_ids
        self.history, self.book_versions, self.audit = observe(self.server)
        self.client = MarketClient(
            "ws://127.0.0.1:1",  # replaced once the server listens
            capacity=len(self.tokens),
            **config.client_options(),
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
        store, result = self.client.store, self.result
        rows = np.asarray(store.view)
        slots = np.array([store.slot(token) for token in self.tokens])
        check = LiveRowCheck(self.history, result, self.config.confirm_interval + self.config.snapshot_timeout)
        live = int(State.LIVE)
        owner = self.client._owner
        while True:
            await asyncio.sleep(SAMPLE_PERIOD)
            snapshot = rows[slots][:, SAMPLED_FIELDS].tolist()  # one copy: the rows cannot change during it
            now = time.time_ns()  # the rows' clock
            result.samples += 1
            for token, row in zip(self.tokens, snapshot):
                if row[SAMPLED_STATE] == live:
                    check(token, row, now, owner[token].up)

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


# ---------------------------------------------------------------------- the exchange soak (--exchange)

WS_FAULTS = ("clean_close", "tcp_abort", "malformed", "silent_stream")
HTTP_FAULTS = ("http_429", "http_5xx", "http_garbled", "http_slow", "stale_rest_book", "page_change")
EXCHANGE_FAULT_KINDS = WS_FAULTS + HTTP_FAULTS


@dataclass
class ExchangeSoakConfig(Deadlines):
    """What the exchange soak runs: the fake exchange, its schedule of openings and resolutions, the follower."""

    duration: float = 60.0
    seed: int = 0
    markets: int = 110  # open at the start: more than one Gamma page (100), so a page can change mid-listing
    rate: float = 300.0
    open_every: float = 0.7  # seconds between two market openings (the same rate of resolutions keeps the count)
    withheld_share: float = 0.05  # tokens whose WebSocket snapshot never comes: REST bootstrap only
    # Seconds an opened market may take to read LIVE (a resolved one RESOLVED): an announcement lost with a
    # socket leaves it to the next listing, which a garbled page delays by the follower's LISTING_RETRY (5 s)
    live_bound: float = 15.0
    fault_gap: tuple[float, float] = (0.2, 0.8)
    fault_hold: float = 2.0  # seconds a slow or stale REST side lasts
    trade_every: int = 0  # trades (the server's default is 20): a withheld token misses them, see ExchangeSoak
    kinds: tuple[str, ...] = EXCHANGE_FAULT_KINDS
    relist_interval: float = 2.0
    resolve_grace: float = 1.0
    verbose: bool = False


@dataclass
class ExchangeSoakResult(SoakResult):
    """The soak's result plus what the exchange soak counts."""

    opened: int = 0
    opened_live: int = 0
    worst_open_to_live: float = 0.0
    resolved: int = 0
    resolved_final: int = 0
    freed: int = 0
    withheld: int = 0
    withheld_live: int = 0  # withheld tokens read LIVE at least once: their books came from REST
    unconfirmed_reads: int = 0
    resolved_reads: int = 0
    follower: dict[str, Any] = field(default_factory=dict)


class ExchangeSoak:
    """ExchangeFollower on the fake exchange (FakeMarketServer + FakeRestServer) while markets open and
    resolve and WebSocket and HTTP faults are injected; a reader checks every row all along.

    The reader copies every followed token's row every ``SAMPLE_PERIOD`` and counts as violations: a LIVE row
    whose top is not a server top since its floor (the first soak's check, REST-bootstrapped books included:
    a REST snapshot is the server's book at one version, and the deltas after it move it version by version);
    a RESOLVED row that changes afterwards, or whose ``store.resolution`` is not the server's winner; an
    opened market not LIVE within ``live_bound``; a resolved market not RESOLVED within ``live_bound`` or its
    tokens still held ``resolve_grace + live_bound`` after the resolution. At the end (faults off) every open
    market must read LIVE, then (changes paused) every LIVE row's book must equal ``server.truth()`` (a withheld
    token may be STALE by then: its probe is never answered and no delta confirms it).
    """

    def __init__(self, config: ExchangeSoakConfig) -> None:
        from pm_ws._http import HttpClient
        from pm_ws.exchange import ExchangeFollower
        from pm_ws.testing import FakeRestServer

        self.config = config
        self.result = ExchangeSoakResult(SoakConfig(duration=config.duration, seed=config.seed, rate=config.rate))
        self.rng = random.Random(config.seed)
        # No trades by default: a trade changes a book through a ``book`` refresh only, which a withheld token
        # never gets (its LIVE row then shows a book the server left: the checker's teeth, in the tests)
        self.ws = FakeMarketServer(markets=config.markets, seed=config.seed, rate_hz=0, trade_every=config.trade_every)
        self.rest = FakeRestServer(self.ws, all_order_books=True)
        self.history, self.book_versions, self.audit = observe(self.ws)
        self.follower = ExchangeFollower(
            "ws://127.0.0.1:1",  # replaced once the servers listen
            relist_interval=config.relist_interval,
            resolve_grace=config.resolve_grace,
            subscribe_delay=0.05,
            http=HttpClient(timeout=2.0, backoff=0.05, backoff_max=0.5, rate=200, burst=50),
            on_frame=self.audit,
            capacity=4 * config.markets + 256,
            **config.client_options(),
        )
        self.store = self.follower.store
        self.withheld: set[str] = set()
        self.opening: dict[str, tuple[float, FakeMarket]] = {}  # condition id -> (opened at, market): not LIVE yet
        self.resolving: dict[str, tuple[float, FakeMarket, str]] = {}  # not RESOLVED yet: (at, market, winner)
        self.freeing: dict[str, tuple[float, FakeMarket]] = {}  # RESOLVED, tokens still held
        self.final_rows: dict[str, list[int]] = {}  # token -> its first RESOLVED row (every field)
        self.ever_live: set[str] = set()
        self.started = 0.0

    async def run(self) -> ExchangeSoakResult:
        result, config = self.result, self.config
        async with self.ws, self.rest:
            follower = self.follower
            follower.client.url = self.ws.url
            follower.gamma_url = self.rest.url
            if follower.bootstrap is not None:
                follower.bootstrap.clob_url = self.rest.url
            self._withhold(self.ws.token_ids, config.withheld_share)
            self.started = result.started = time.monotonic()
            running = asyncio.Event()
            running.set()
            async with follower:
                tasks = [
                    asyncio.create_task(self._drive(running), name="soak.driver"),
                    asyncio.create_task(self._sample(), name="soak.reader"),
                    asyncio.create_task(self._schedule(), name="soak.schedule"),
                    asyncio.create_task(self._direct(), name="soak.faults"),
                ]
                try:
                    await asyncio.wait(tasks[2:], timeout=config.duration + 30)
                    await self._final(running, tasks[0])
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    for task in tasks:
                        if not task.cancelled() and task.exception() is not None:
                            result.violation(f"{task.get_name()} crashed: {task.exception()!r}")
                result.follower = follower.stats(tokens=False)
        result.elapsed = time.monotonic() - self.started
        result.audit = dict(self.audit.counts)
        result.changes = self.ws._changes
        return result

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _withhold(self, tokens: list[str], share: float) -> None:
        chosen = [token for token in tokens if self.rng.random() < share]
        self.ws.withhold_snapshot(chosen)
        self.withheld.update(chosen)
        self.result.withheld += len(chosen)

    # ------------------------------------------------------------------ the exchange

    async def _drive(self, running: asyncio.Event) -> None:
        # Book changes at the configured rate over the open markets, until the final check
        period, owed = DRIVER_PERIOD, 0.0
        while running.is_set():
            await asyncio.sleep(period)
            owed += period * self.config.rate
            if owed >= 1:
                await self.ws.step(int(owed))
                owed -= int(owed)

    async def _schedule(self) -> None:
        # Alternately open a market (announced 0-3 times: 0 leaves it to the re-listing) and resolve one
        rng, ws = self.rng, self.ws
        while self._elapsed() < self.config.duration:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * self.config.open_every)
            self._open(await ws.open_market(tick=rng.choice(TICKS), copies=rng.choice((0, 1, 1, 2, 3))))
            await asyncio.sleep(rng.uniform(0.5, 1.5) * self.config.open_every)
            await self._resolve_one(announce=rng.random() < 0.8)

    def _open(self, market: FakeMarket) -> None:
        self._withhold(list(market[1:]), self.config.withheld_share)
        self.opening[market.condition_id] = (time.monotonic(), market)
        self.result.opened += 1

    async def _resolve_one(self, *, announce: bool) -> None:
        # A random open market that has been LIVE (so every market is seen live before it goes)
        ws, rng = self.ws, self.rng
        candidates = [m for m in ws.markets if m.condition_id not in ws.resolved and m.condition_id not in self.opening]
        if not candidates:
            return
        market = rng.choice(candidates)
        winner = rng.choice(market[1:])
        self.resolving[market.condition_id] = (time.monotonic(), market, winner)
        self.result.resolved += 1
        await ws.resolve_market(market.condition_id, winner, announce=announce)

    # ------------------------------------------------------------------ faults

    async def _direct(self) -> None:
        # Shuffled rounds of every kind, a random pause after each, until the end (a started round ends)
        faults = self._faults()
        kinds: list[str] = []
        while self._elapsed() < self.config.duration or kinds:
            if not kinds:
                kinds = list(self.config.kinds)
                self.rng.shuffle(kinds)
            kind = kinds.pop()
            self.result.injected[kind] += 1
            await faults[kind]()
            if self.config.verbose:
                print(f"{self._elapsed():8.2f}s {kind}", file=sys.stderr)
            await asyncio.sleep(self.rng.uniform(*self.config.fault_gap))

    def _faults(self) -> dict[str, Callable[[], Awaitable[None]]]:
        ws, rest, rng, config = self.ws, self.rest, self.rng, self.config

        async def clean_close() -> None:
            await ws.close_all(1011, "soak")

        async def tcp_abort() -> None:
            ws.abort_all()

        async def malformed() -> None:
            await ws.send_malformed(rng.randint(1, 10))

        async def silent_stream() -> None:  # open sockets, PONGs, no data: no row may stay LIVE past the promise,
            # nor a REST book (which has no fresh `book` to come) be confirmed after it
            ws.set_data_stalled(True)
            await asyncio.sleep(config.confirm_interval + config.snapshot_timeout + DETECTION_MARGIN)
            ws.set_data_stalled(False)

        async def http_429() -> None:
            rest.fail_next(rng.randint(1, 3), 429, retry_after=rng.choice((None, 0.1, 0.3)))
            ws.abort_all()  # the withheld tokens need REST books again

        async def http_5xx() -> None:
            rest.fail_next(rng.randint(1, 3), rng.choice((500, 502, 503)))
            ws.abort_all()

        async def http_garbled() -> None:
            rest.garble_next(rng.randint(1, 2))
            ws.abort_all()

        async def http_slow() -> None:
            rest.set_delay(rng.uniform(0.2, 1.0))
            ws.abort_all()
            await asyncio.sleep(config.fault_hold)
            rest.set_delay(0.0)

        async def stale_rest_book() -> None:  # REST snapshots older than the deltas that follow them
            rest.hold_books(rng.uniform(0.05, 0.4))
            ws.abort_all()
            await asyncio.sleep(config.fault_hold)
            rest.hold_books(0.0)

        async def page_change() -> None:  # a market opens (unannounced) or resolves while a listing is paged
            async def change() -> None:
                rest.between_pages = None
                if rng.random() < 0.5:
                    self._open(await ws.open_market(tick=rng.choice(TICKS), copies=0))
                else:
                    await self._resolve_one(announce=False)

            rest.repeat_last = rng.random() < 0.5
            rest.between_pages = change
            await asyncio.sleep(config.relist_interval + 0.5)
            rest.between_pages, rest.repeat_last = None, False

        kinds = (clean_close, tcp_abort, malformed, silent_stream, http_429, http_5xx, http_garbled, http_slow,
                 stale_rest_book, page_change)  # fmt: skip
        return {fault.__name__: fault for fault in kinds}

    # ------------------------------------------------------------------ the reader

    async def _sample(self) -> None:
        # Every row of every held token, each SAMPLE_PERIOD: LIVE ones against the history, RESOLVED ones frozen
        store, result, config = self.store, self.result, self.config
        rows = np.asarray(store.view)
        check = LiveRowCheck(self.history, result, config.confirm_interval + config.snapshot_timeout)
        owner = self.follower.client._owner
        live, unconfirmed, resolved = int(State.LIVE), int(State.UNCONFIRMED), int(State.RESOLVED)
        tags: dict[str, int] = {}
        tokens: list[str] = []
        slots = np.array([], dtype=np.intp)
        held = -1
        while True:
            await asyncio.sleep(SAMPLE_PERIOD)
            if len(owner) != held:  # tokens added or removed: their slots again
                tokens = [token for token in owner if token in store and token in self.history.tops]
                slots = np.array([store.slot(token) for token in tokens], dtype=np.intp)
                tags = {token: tags.get(token) or token_tag(token) for token in tokens}
                held = len(owner)
            snapshot = rows[slots].tolist()
            now = time.time_ns()
            result.samples += 1
            for token, row in zip(tokens, snapshot):
                if row[TOKEN_TAG] != tags[token]:  # removed since (its slot free or reused): rebuilt next round
                    held = -1
                    continue
                state = row[STATE]
                if state == live:
                    check(token, [row[index] for index in SAMPLED_FIELDS], now, owner[token].up)
                    self.ever_live.add(token)
                elif state == resolved:
                    result.resolved_reads += 1
                    final = self.final_rows.setdefault(token, row)
                    if row != final:
                        result.violation(f"RESOLVED row of {token[:12]}... changed: {final} -> {row}")
                        self.final_rows[token] = row
                elif state == unconfirmed:
                    result.unconfirmed_reads += 1
            self._deadlines()

    def _deadlines(self) -> None:
        # Openings LIVE, resolutions RESOLVED (with the server's winner) and freed, each in its bound
        result, config, store, now = self.result, self.config, self.store, time.monotonic()
        for cid, (at, market) in list(self.opening.items()):
            if all(token in store and store.top(token).state is State.LIVE for token in market[1:]):
                del self.opening[cid]
                result.opened_live += 1
                result.worst_open_to_live = max(result.worst_open_to_live, now - at)
            elif cid in self.ws.resolved:
                del self.opening[cid]  # resolved by a mid-listing change before it was ever seen
            elif now - at > config.live_bound:
                del self.opening[cid]
                result.violation(f"market {cid[:12]}... opened {now - at:.1f}s ago, not LIVE")
        for cid, (at, market, winner) in list(self.resolving.items()):
            held = [token for token in market[1:] if token in store]
            if held and all(store.top(token).state is State.RESOLVED for token in held) or not held:
                del self.resolving[cid]
                result.resolved_final += 1
                self.freeing[cid] = (at, market)
                for token in held:
                    if store.resolution(token) is not (token == winner):
                        won = store.resolution(token)
                        result.violation(f"{token[:12]}... resolution {won}, the server's winner: {token == winner}")
            elif now - at > config.live_bound:
                del self.resolving[cid]
                result.violation(f"market {cid[:12]}... resolved {now - at:.1f}s ago, rows not RESOLVED")
        for cid, (at, market) in list(self.freeing.items()):
            if not any(token in store for token in market[1:]):
                del self.freeing[cid]
                result.freed += 1
            elif now - at > config.resolve_grace + config.live_bound:
                del self.freeing[cid]
                result.violation(f"market {cid[:12]}... resolved {now - at:.1f}s ago, its slots still held")

    async def _final(self, running: asyncio.Event, driver: asyncio.Task[None]) -> None:
        # Faults off: every open market LIVE and nothing pending (the books keep changing: a REST book needs a
        # WebSocket change to be confirmed); then changes paused, every book equal to the server's truth
        ws, rest, store, result = self.ws, self.rest, self.store, self.result
        rest.set_delay(0.0)
        rest.hold_books(0.0)
        ws.set_data_stalled(False)
        open_tokens = [token for m in ws.markets if m.condition_id not in ws.resolved for token in m[1:]]

        def live(token: str) -> bool:
            return token in store and store.top(token).state is State.LIVE

        deadline = time.monotonic() + self.config.live_bound + self.config.relist_interval
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if all(map(live, open_tokens)) and not self.opening and not self.resolving and not self.freeing:
                break
        running.clear()
        await driver
        await ws.step(0)  # every frame written
        await asyncio.sleep(0.2)  # and read
        # A withheld token may have gone STALE in the pause: its probe (a re-subscription) is never answered, and
        # no delta confirms it; it was LIVE at the end of the wait above
        differ = [
            token for token in open_tokens
            if (store.book(token, depth=None) != ws.truth(token) if live(token) else token not in self.withheld)
        ]  # fmt: skip
        for token in differ[:20]:
            result.violation(f"final: {token[:12]}... not LIVE with the server's book ({store.top(token).state.name})")
        for pending, what in ((self.opening, "not LIVE"), (self.resolving, "not RESOLVED"), (self.freeing, "held")):
            for cid in pending:
                result.violation(f"final: market {cid[:12]}... still {what}")
        result.withheld_live = len(self.withheld & self.ever_live)
        result.checkpoints += 1


def exchange_summary(result: ExchangeSoakResult) -> str:
    """The exchange soak's table."""
    config, follower = result.config, result.follower
    bootstrap, http = follower.get("bootstrap") or {}, follower.get("http") or {}
    exchange = follower.get("exchange", {})
    faults = ", ".join(f"{kind} {result.injected[kind]}" for kind in EXCHANGE_FAULT_KINDS)
    lines = [
        f"pm_ws exchange soak: {result.elapsed:.1f} s, seed {config.seed}, {config.rate:g} changes/s, "
        f"core {IMPLEMENTATION}",
        f"  markets opened / LIVE in bound   {result.opened} / {result.opened_live} "
        f"(worst open -> LIVE {result.worst_open_to_live * 1000:.0f} ms)",
        f"  markets resolved / RESOLVED / freed   {result.resolved} / {result.resolved_final} / {result.freed}",
        f"  withheld snapshots / read LIVE   {result.withheld} / {result.withheld_live} (REST books loaded "
        f"{bootstrap.get('books_loaded', 0)}, requests {bootstrap.get('requests', 0)}, errors "
        f"{bootstrap.get('errors', 0)}, replayed deltas {bootstrap.get('replayed', 0)}, superseded by the WebSocket "
        f"{bootstrap.get('superseded', 0)}, dropped on a new socket or a silence "
        f"{bootstrap.get('connection_changed', 0)})",
        f"  follower   listings {exchange.get('listings', 0)} (errors {exchange.get('listing_errors', 0)}), "
        f"announced {exchange.get('announced', 0)}, resolved {exchange.get('resolved', 0)} (by listing "
        f"{exchange.get('resolved_by_listing', 0)}), unsubscribed {exchange.get('unsubscribed', 0)}",
        f"  http   requests {http.get('requests', 0)}, retries {http.get('retries', 0)}, throttled "
        f"{http.get('throttled', 0)}, server errors {http.get('server_errors', 0)}, failures {http.get('failures', 0)}",
        f"  faults   {faults}",
        f"  server book changes {result.changes:,}; frames read {result.audit.get('read', 0):,}",
        f"  reads checked   {result.samples:,} samples: {result.live_rows_checked:,} LIVE rows, "
        f"{result.unconfirmed_reads:,} UNCONFIRMED, {result.resolved_reads:,} RESOLVED",
        f"  wrong-LIVE reads   {result.wrong_live}",
        f"  violations   {len(result.violations)}",
    ]  # fmt: skip
    lines.extend(f"    {text}" for text in result.violations[:50])
    return "\n".join(lines)


async def exchange_soak(config: ExchangeSoakConfig) -> ExchangeSoakResult:
    """Run one exchange soak and return its result."""
    return await ExchangeSoak(config).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", "--seconds", type=float, default=120.0, help="seconds of faults (default 120)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--exchange", action="store_true",
        help="the exchange soak: ExchangeFollower on the fake exchange (WebSocket + Gamma/CLOB REST), markets "
        "opening and resolving, WebSocket and HTTP faults, withheld snapshots (REST bootstrap)",
    )  # fmt: skip
    parser.add_argument("--markets", type=int, default=110, help="--exchange: markets open at the start (default 110)")
    parser.add_argument(
        "--silent-streams", action=argparse.BooleanOptionalAction, default=True,
        help="--exchange: streams that go silent while the server drops the deltas, PONGs still answered "
        "(default on; --no-silent-streams leaves them out)",
    )  # fmt: skip
    parser.add_argument("--tokens", type=int, default=20, help="tokens (YES/NO pairs; default 20)")
    parser.add_argument(
        "--rate", type=float, default=None, help="server book changes per second (default 500; --exchange 300)"
    )
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
    if args.exchange:
        exchange_config = ExchangeSoakConfig(
            duration=args.duration, seed=args.seed, markets=args.markets, verbose=args.verbose,
            rate=300.0 if args.rate is None else args.rate,
            kinds=tuple(kind for kind in EXCHANGE_FAULT_KINDS if args.silent_streams or kind != "silent_stream"),
        )  # fmt: skip
        exchange_result = asyncio.run(exchange_soak(exchange_config))
        print(exchange_summary(exchange_result))
        return 1 if exchange_result.violations else 0
    config = SoakConfig(
        duration=args.duration,
        seed=args.seed,
        tokens=args.tokens,
        rate=500.0 if args.rate is None else args.rate,
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
