"""``pm-ws watch`` and ``record``: the commands that hold a live market-channel connection.

``LiveView`` (the table with its event notes and deadlines) also draws ``pm-ws demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import sys
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Protocol

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidURI

from . import __version__
from ._exit import CliError, ExitCode
from ._row_output import LivePipe, output_for
from ._token_selection import exchange_filter, select_tokens
from ._watch_view import LABEL_WIDTH, RateMeter, TopTable, can_encode, screen_for, short_token, shorten, state_counts
from ._core import BookStore
from .client import CAUSE_MARKED, ClientEvent, MarketClient
from .gamma import MarketFilter
from .recording import FORMAT_VERSION, RecordingWriter
from .shared import SharedTableError

TOOL = f"pm-ws {__version__}"  # the recordings' "tool"
CONNECT_CHECK_TIMEOUT = 10.0  # seconds to wait for the first handshake before calling a URL unreachable
NOTE_GATHER_SECONDS = 0.05  # events closer than this share one note
PIPE_CHECK_PERIOD = 0.1  # with --json/--csv: how soon a reader gone away (`| head`) ends the command
PROGRESS_PERIOD_TERMINAL = 0.5
PROGRESS_PERIOD_LOG = 5.0


async def check_reachable(url: str) -> None:
    """Open and close one WebSocket to ``url`` so a wrong URL fails now, in one line, not in a retry loop."""
    try:
        async with asyncio.timeout(CONNECT_CHECK_TIMEOUT):
            async with connect(url, ping_interval=None, compression=None, open_timeout=None):
                pass
    except InvalidURI as exc:
        raise CliError(f"invalid WebSocket URL {url!r}: {exc}", ExitCode.USAGE) from None
    except TimeoutError:
        message = f"cannot reach {url}: no handshake within {CONNECT_CHECK_TIMEOUT:g} s"
        raise CliError(message, ExitCode.UNREACHABLE) from None
    except (OSError, InvalidHandshake) as exc:
        raise CliError(f"cannot reach {url}: {exc}", ExitCode.UNREACHABLE) from None


def shared_store(name: str | None, capacity: int) -> BookStore | None:
    """The store ``--share NAME`` publishes as a shared table (None without it); exit 2 if NAME is in use.

    Give it to the client and call its ``close_shared()`` when done (``pm-ws peek NAME`` then sees the
    table closed, the name unlinked).
    """
    if name is None:
        return None
    try:
        return BookStore(capacity, shared=name)
    except SharedTableError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None


def fail_without_books(client: MarketClient, book_timeout: float | None, elapsed: float) -> None:
    """Give up (exit 3) when no token got a book within --book-timeout: the server takes unknown ids silently."""
    if book_timeout is None or elapsed < book_timeout or client.dispatcher.stats()["ev_book"]:
        return
    tokens = ", ".join(short_token(t) for t in client.store.tokens())
    message = f"no order book for any token after {book_timeout:g} s ({tokens}): unknown token ids?"
    raise CliError(message, ExitCode.NOT_FOUND)


class LiveView:
    """Draw the table for a running client, note connection and state events, enforce the deadlines."""

    def __init__(self, client: MarketClient, labels: dict[str, str], args: argparse.Namespace, title: str) -> None:
        self.client = client
        self.screen, self.refresh = screen_for(sys.stdout, plain=args.plain, refresh=args.refresh)
        self.ascii_only = not can_encode(sys.stdout, "×…→")
        self.table = TopTable(client.store, labels, ascii_only=self.ascii_only)
        self.duration: float | None = args.duration
        self.book_timeout: float | None = getattr(args, "book_timeout", None)
        self.labels = labels
        self.title = title if client.store.shared is None else f"{title} shared as {client.store.shared}"
        self.frame_rate = RateMeter()
        self.started = time.monotonic()
        self._events = client.events()  # registered now: the first connection's events are not missed
        self._pending_events: list[ClientEvent] = []
        self._note_timer: asyncio.TimerHandle | None = None
        output = output_for(args, labels)  # --json or --csv: lines for a pipe instead of the table
        self.pipe = None if output is None else LivePipe(client, output)
        if self.pipe is not None:
            self.refresh = PIPE_CHECK_PERIOD

    def note(self, text: str) -> None:
        """Show a one-line event note (under the table, or as a log line, or as a --json note)."""
        if self.pipe is not None:
            self.pipe.note(text)
        else:
            self.screen.note(text)

    async def run(self) -> int:
        """Refresh until --duration passes (exit 0) or no book arrives in time (exit 3)."""
        notes = asyncio.create_task(self._note_events())
        try:
            while True:
                now = time.monotonic()
                if self.pipe is None:
                    self.draw(now)
                elif self.pipe.broken:
                    raise BrokenPipeError  # `| head` has what it wanted: pm-ws exits 0
                else:
                    self.pipe.poll()
                elapsed = now - self.started
                if self.duration is not None and elapsed >= self.duration:
                    return ExitCode.OK
                fail_without_books(self.client, self.book_timeout, elapsed)
                wait = self.refresh if self.duration is None else min(self.refresh, self.duration - elapsed)
                await asyncio.sleep(max(0.0, wait))
        finally:
            self._events.close()
            notes.cancel()
            with suppress(asyncio.CancelledError):
                await notes
            if self._note_timer is not None:  # a note printed after the screen is restored would garble it
                self._note_timer.cancel()
            self.screen.close()
            if self.pipe is not None:
                self.pipe.close()

    def draw(self, now: float) -> None:
        """Draw the header line and the table once."""
        client_stats = self.client.stats(tokens=False)  # per-token entries cost ~1 µs each
        stats = client_stats["dispatcher"]
        rate = self.frame_rate.update(stats["frames"], now)
        rejected = sum(value for key, value in stats.items() if key.startswith("rej_"))
        reconnects = sum(conn["reconnects"] for conn in client_stats["connections"])
        header = (
            f"{self.title}  {now - self.started:.0f}s  frames {stats['frames']:,} ({rate:.0f}/s)  "
            f"reconnects {reconnects}  rejected {rejected}  {state_counts(self.client.store)}"
        )
        self.screen.show([header, *self.table.lines(now_monotonic=now)])

    def _name(self, token: str) -> str:
        label = self.labels.get(token)
        return f"{short_token(token)} {shorten(label, LABEL_WIDTH)}" if label else short_token(token)

    async def _note_events(self) -> None:
        # Events come in bursts (a disconnect stales every token): gather 50 ms of them, then note
        loop = asyncio.get_running_loop()
        async for event in self._events:
            if self.pipe is not None:
                self.pipe.event(event)
                continue
            if not self._pending_events:
                self._note_timer = loop.call_later(NOTE_GATHER_SECONDS, self._note_pending)
            self._pending_events.append(event)

    def _note_pending(self) -> None:
        arrow = "->" if self.ascii_only else "→"
        events, self._pending_events = self._pending_events, []
        groups: dict[tuple[str, str], list[str]] = {}
        for event in events:
            if event.kind == "state" and event.token_id is not None:
                reason = str(event.data.get("reason", ""))
                if reason != "subscribed":  # every new token starts STALE: not news
                    groups.setdefault((event.data["state"].name, reason), []).append(self._name(event.token_id))
            elif event.kind == "connected":
                subscribed = _count(event.data["tokens"], "token")
                self.note(f"connection {event.data['connection']} open, subscribed to {subscribed}")
            elif event.kind == "disconnected":
                self.note(f"connection {event.data['connection']} lost: {event.data['reason']}")
        for (state, reason), names in groups.items():
            who = ", ".join(names) if len(names) <= 2 else _count(len(names), "token")
            if reason == "resync":  # the dispatcher asked for a fresh book; the row may already be fine
                self.note(f"re-syncing {who} (row {state})")
            else:
                self.note(f"{arrow} {state}: {who} ({reason})")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


async def watch(args: argparse.Namespace) -> int:
    """Run ``pm-ws watch``."""
    where = exchange_filter(args)
    if where is not None:
        await check_reachable(args.url)
        follower = exchange_follower(args, where)
        async with follower:
            await first_listing(follower, args)
            return await LiveView(follower.client, follower.labels, args, f"pm-ws watch --all {args.url}").run()
    tokens, labels = await select_tokens(args)
    await check_reachable(args.url)
    client = MarketClient(args.url, capacity=len(tokens), store=shared_store(args.share, len(tokens)))
    try:
        await client.subscribe(tokens)
        async with client:
            return await LiveView(client, labels, args, f"pm-ws watch {args.url}").run()
    finally:
        client.store.close_shared()


async def record(args: argparse.Namespace) -> int:
    """Run ``pm-ws record``."""
    where = exchange_filter(args)
    tokens = [] if where is not None else (await select_tokens(args))[0]
    await check_reachable(args.url)
    try:
        writer = RecordingWriter(args.out, overwrite=args.overwrite)
    except FileExistsError:
        raise CliError(f"{args.out} already exists (use --overwrite to replace it)", ExitCode.BAD_FILE) from None
    except OSError as exc:
        raise CliError(f"cannot create {args.out}: {exc.strerror or exc}", ExitCode.BAD_FILE) from None
    recorder = DiskFullGuard(writer)
    try:
        if where is None:
            client = await recording_client(args.url, tokens, recorder)
            async with client:
                code = await _show_progress(client, recorder, args)
        else:
            recorder.write_meta({"type": "start", "format": FORMAT_VERSION, "url": args.url, "tool": TOOL})
            follower = exchange_follower(
                args, where, on_event=_StaleNotes(recorder), on_frame=recorder.write_frame,
                on_tokens=lambda kind, tokens: recorder.write_meta({"type": kind, "tokens": tokens}),
            )  # fmt: skip
            async with follower:
                await first_listing(follower, args)
                code = await _show_progress(follower.client, recorder, args)
    finally:
        recorder.close()
    if recorder.disk_full is not None:
        message = (
            f"disk full while recording {args.out} ({recorder.disk_full.strerror}): it keeps {recorder.kept_frames:,} "
            f"frames in its first {recorder.kept_bytes:,} bytes, readable; the frames after them are lost"
        )
        raise CliError(message, ExitCode.DISK_FULL)
    return code


def exchange_follower(args: argparse.Namespace, where: MarketFilter, **options: Any) -> Any:
    """The ``ExchangeFollower`` of ``--all`` (its module needs the exchange extra: a one-line error without it)."""
    try:
        from .exchange import ExchangeFollower
    except ImportError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
    return ExchangeFollower(args.url, gamma_url=args.gamma_url, clob_url=args.clob_url, where=where, **options)


async def first_listing(follower: Any, args: argparse.Namespace) -> None:
    """Wait for the follower's first listing; exit 5 when Gamma gives none within --book-timeout."""
    try:
        await asyncio.wait_for(follower.listed.wait(), args.book_timeout)
    except TimeoutError:
        message = f"no market listing from {args.gamma_url} within {args.book_timeout:g} s"
        raise CliError(message, ExitCode.UNREACHABLE) from None


class FrameSink(Protocol):
    """Where ``recording_client`` writes: a RecordingWriter or a DiskFullGuard around one."""

    def write_frame(self, frame: str | bytes, recv_ns: int) -> None: ...
    def write_meta(self, meta: dict[str, Any], recv_ns: int | None = None) -> None: ...


class DiskFullGuard:
    """A RecordingWriter that stops writing at the first full-disk error and keeps it for the report.

    The writes run in the client's callbacks, which contain every error: without the guard a full disk
    would be counted there and the recording would go on, losing frames. After the error nothing more
    is written (a block after a short one would damage the file in the middle), so every complete
    block before it stays readable; ``kept_frames`` and ``kept_bytes`` say how much that is.
    """

    def __init__(self, writer: RecordingWriter) -> None:
        self.writer = writer
        self.disk_full: OSError | None = None
        # (file bytes, frames) after each of the last two blocks: the last one may have been written
        # short just before the disk filled up, and is then not kept
        self._blocks: deque[tuple[int, int]] = deque([(writer.file_bytes, 0)], maxlen=2)

    @property
    def kept_frames(self) -> int:
        """Frames in the complete blocks on disk."""
        return self._kept()[1]

    @property
    def kept_bytes(self) -> int:
        """Bytes of the file up to the end of its last complete block."""
        return self._kept()[0]

    def write_frame(self, frame: str | bytes, recv_ns: int) -> None:
        """``RecordingWriter.write_frame``, unless the disk is full."""
        self._write(self.writer.write_frame, frame, recv_ns)

    def write_meta(self, meta: dict[str, Any], recv_ns: int | None = None) -> None:
        """``RecordingWriter.write_meta``, unless the disk is full."""
        self._write(self.writer.write_meta, meta, recv_ns)

    def flush_if_due(self) -> None:
        """``RecordingWriter.flush_if_due``, unless the disk is full."""
        self._write(self.writer.flush_if_due)

    def flush(self) -> None:
        """``RecordingWriter.flush``, unless the disk is full."""
        self._write(self.writer.flush)

    def close(self) -> None:
        """Close the file, writing what is pending (after a full disk the writer tries that once more)."""
        try:
            self.writer.close()
        except OSError as exc:
            if not _is_disk_full(exc):
                raise
            self.disk_full = self.disk_full or exc

    def _write(self, operation: Callable[..., None], *args: Any) -> None:
        if self.disk_full is not None:
            return
        try:
            operation(*args)
        except OSError as exc:
            if not _is_disk_full(exc):
                raise
            self.disk_full = exc
            return
        if self.writer.file_bytes != self._blocks[-1][0]:  # a block was written, with every frame so far
            self._blocks.append((self.writer.file_bytes, self.writer.frames))

    def _kept(self) -> tuple[int, int]:
        size = self.writer.path.stat().st_size
        return next(block for block in reversed(self._blocks) if block[0] <= size)


def _is_disk_full(exc: OSError) -> bool:
    return exc.errno == errno.ENOSPC


async def recording_client(url: str, tokens: list[str], writer: FrameSink) -> MarketClient:
    """Make a client subscribed to ``tokens`` whose every frame and own row change goes to ``writer``.

    Replaying the file (frames plus the subscribe and stale meta records) rebuilds the client's
    ``store.view`` byte for byte, up to the moment the client is stopped.
    """
    writer.write_meta({"type": "start", "format": FORMAT_VERSION, "url": url, "tool": TOOL})
    writer.write_meta({"type": "subscribe", "tokens": tokens})
    client = MarketClient(url, capacity=len(tokens), on_event=_StaleNotes(writer), on_frame=writer.write_frame)
    await client.subscribe(tokens)
    return client


class _StaleNotes:
    # The client's own store changes (mark_stale on subscribe, disconnect, an unanswered probe) are not frames:
    # write them as meta records so a replay applies them at the same point. Not the marks of the
    # client stopping: they come after the last frame and would leave a replay with every row STALE
    def __init__(self, writer: FrameSink) -> None:
        self.writer = writer

    def __call__(self, event: ClientEvent) -> None:
        if event.kind == "state" and event.data["cause"] == CAUSE_MARKED:
            self.writer.write_meta({"type": "stale", "tokens": [event.token_id], "reason": event.data["reason"]})


async def _show_progress(client: MarketClient, recorder: DiskFullGuard, args: argparse.Namespace) -> int:
    writer = recorder.writer
    terminal = sys.stderr.isatty()
    period = PROGRESS_PERIOD_TERMINAL if terminal else PROGRESS_PERIOD_LOG
    started = time.monotonic()
    rate = RateMeter()
    next_line = started + period

    def line(now: float, frames_per_second: float) -> str:
        return (
            f"recording {args.out}: {writer.frames:,} frames, {writer.frame_bytes / 1e6:.2f} MB received, "
            f"{writer.file_bytes / 1e6:.2f} MB written, {frames_per_second:.0f} frames/s, {now - started:.0f} s"
        )

    try:
        while recorder.disk_full is None:
            await asyncio.sleep(0.1)
            recorder.flush_if_due()
            now = time.monotonic()
            if args.duration is not None and now - started >= args.duration:
                return ExitCode.OK
            if now >= next_line:
                next_line = now + period
                text = line(now, rate.update(writer.frames, now))
                end = "" if terminal else "\n"
                print(f"\r{text}\x1b[K" if terminal else text, end=end, file=sys.stderr, flush=True)
            fail_without_books(client, args.book_timeout, now - started)
        return ExitCode.DISK_FULL
    finally:
        recorder.flush()
        now = time.monotonic()
        average = writer.frames / max(now - started, 1e-9)
        text = line(now, average) + (" (done)" if recorder.disk_full is None else " (stopped: disk full)")
        print(f"\r{text}\x1b[K" if terminal else text, file=sys.stderr, flush=True)
