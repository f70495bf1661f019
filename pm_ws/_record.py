"""``pm-ws record``: every raw frame to a file, with a progress line that says when the feed is dead.

The recording's writer (numbered parts, a full disk latched as exit 7), the client whose frames and own
row changes go to it, and what the recorder tells the user: connections, reconnects, token states, and
how long the feed was down.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Protocol

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from . import __version__
from ._exit import CliError, ExitCode
from ._live import check_reachable, exchange_follower, fail_without_books, first_listing, plural
from ._market_frames import subscription_frame
from ._token_selection import exchange_filter, select_tokens
from ._watch_view import RateMeter, state_counts, terminal_text
from .client import CAUSE_MARKED, ClientEvent, MarketClient
from .recording import FORMAT_VERSION, PartedWriter, RecordingWriter

TOOL = f"pm-ws {__version__}"  # the recordings' "tool"
PROGRESS_PERIOD_TERMINAL = 0.5
PROGRESS_PERIOD_LOG = 5.0
DOWN_ALARM = 1.0  # seconds a connection may be down (a clean close and reconnect) before the recorder shouts
SILENCE_ALARM = 15.0  # seconds without a frame on open connections: more than a PING round trip (10 s)
PROBE_SECONDS = 3.0  # how long the probe that learns a server's close code waits


async def record(args: argparse.Namespace) -> int:
    """Run ``pm-ws record``."""
    where = exchange_filter(args)
    tokens = [] if where is not None else (await select_tokens(args))[0]
    await check_reachable(args.url)
    writer = create_recording(
        args.out, overwrite=args.overwrite, rotate_mb=args.rotate_mb, rotate_minutes=args.rotate_minutes
    )
    recorder = DiskFullGuard(writer)
    notes = _RecorderNotes(recorder)
    code: int = ExitCode.FAILURE
    try:
        if where is None:
            client = await recording_client(args.url, tokens, recorder, notes)
            async with client:
                code = await _show_progress(client, recorder, notes, args)
        else:
            recorder.write_meta({"type": "start", "format": FORMAT_VERSION, "url": args.url, "tool": TOOL})
            follower = exchange_follower(
                args, where, on_event=notes, on_frame=recorder.write_frame,
                on_tokens=lambda kind, tokens: recorder.write_meta({"type": kind, "tokens": tokens}),
            )  # fmt: skip
            async with follower:
                await first_listing(follower, args)
                code = await _show_progress(follower.client, recorder, notes, args)
    except CliError as exc:
        code = exc.exit_code
        raise
    finally:
        recorder.close()
        nothing = code == ExitCode.NOT_FOUND or not writer.frames
        if nothing and recorder.disk_full is None:  # nothing worth keeping: let a retry use the name
            for path in writer.paths:
                with suppress(OSError):
                    path.unlink()
    if recorder.disk_full is not None:
        kept = f"it keeps {writer.kept_frames:,} frames in its first {writer.kept_bytes:,} bytes, readable"
        if writer.parts > 1:
            kept = f"the parts up to it keep {writer.kept_frames:,} frames (it is whole to byte {writer.kept_bytes:,})"
        message = (
            f"disk full while recording {writer.path} ({recorder.disk_full.strerror}): {kept}; "
            "the frames after them are lost"
        )
        raise CliError(message, ExitCode.DISK_FULL)
    return code


def create_recording(
    out: str, *, overwrite: bool, rotate_mb: float | None = None, rotate_minutes: float | None = None
) -> PartedWriter:
    """Open the recording ``out`` (in numbered parts with a rotation limit); file problems are CLI errors."""
    part_bytes = None if rotate_mb is None else max(1, int(rotate_mb * 1e6))
    part_seconds = None if rotate_minutes is None else rotate_minutes * 60
    try:
        return PartedWriter(
            out, part_bytes=part_bytes, part_seconds=part_seconds, overwrite=overwrite, open_file=RecordingWriter
        )
    except FileExistsError as exc:
        raise CliError(f"{exc.filename} already exists (use --overwrite to replace it)", ExitCode.BAD_FILE) from None
    except OSError as exc:
        raise CliError(f"cannot create {exc.filename or out}: {exc.strerror or exc}", ExitCode.BAD_FILE) from None


class FrameSink(Protocol):
    """Where ``recording_client`` writes: a RecordingWriter, or a DiskFullGuard around a PartedWriter."""

    def write_frame(self, frame: str | bytes, recv_ns: int) -> None: ...
    def write_meta(self, meta: dict[str, Any], recv_ns: int | None = None) -> None: ...


class DiskFullGuard:
    """A recording that stops writing at the first full-disk error and keeps it for the report.

    The writes run in the client's callbacks, which contain every error: without the guard a full disk
    would be counted there and the recording would go on, losing frames. After the error nothing more
    is written (the writer refuses), so every complete block before it stays readable: the writer's
    ``kept_frames`` and ``kept_bytes`` say how much that is.
    """

    def __init__(self, writer: PartedWriter) -> None:
        self.writer = writer
        self.disk_full: OSError | None = None

    def write_frame(self, frame: str | bytes, recv_ns: int) -> None:
        """``PartedWriter.write_frame``, unless the disk is full."""
        self._write(self.writer.write_frame, frame, recv_ns)

    def write_meta(self, meta: dict[str, Any], recv_ns: int | None = None) -> None:
        """``PartedWriter.write_meta``, unless the disk is full."""
        self._write(self.writer.write_meta, meta, recv_ns)

    def flush_if_due(self) -> None:
        """``PartedWriter.flush_if_due``, unless the disk is full."""
        self._write(self.writer.flush_if_due)

    def flush(self) -> None:
        """``PartedWriter.flush``, unless the disk is full."""
        self._write(self.writer.flush)

    def close(self) -> None:
        """Close the file, writing what is pending (after a full disk the writer raises its error again)."""
        self._guarded(self.writer.close)

    def _write(self, operation: Callable[..., None], *args: Any) -> None:
        if self.disk_full is None:
            self._guarded(operation, *args)

    def _guarded(self, operation: Callable[..., None], *args: Any) -> None:
        try:
            operation(*args)
        except OSError as exc:
            if not _is_disk_full(exc):
                raise
            self.disk_full = self.disk_full or exc


def _is_disk_full(exc: OSError) -> bool:
    return exc.errno == errno.ENOSPC


async def recording_client(
    url: str,
    tokens: list[str],
    writer: FrameSink,
    notes: Callable[[ClientEvent], None] | None = None,
    **options: Any,
) -> MarketClient:
    """Make a client subscribed to ``tokens`` whose every frame and own row change goes to ``writer``.

    Replaying the file (frames plus the subscribe and stale meta records) rebuilds the client's
    ``store.view`` byte for byte, up to the moment the client is stopped. ``notes`` (default: a
    ``_RecorderNotes`` of ``writer``) gets the client's events and writes the stale meta records;
    ``options`` go to ``MarketClient`` (``store``, ``backoff`` ...).
    """
    writer.write_meta({"type": "start", "format": FORMAT_VERSION, "url": url, "tool": TOOL})
    writer.write_meta({"type": "subscribe", "tokens": tokens})
    on_event = notes or _RecorderNotes(writer)
    client = MarketClient(url, capacity=len(tokens), on_event=on_event, on_frame=writer.write_frame, **options)
    await client.subscribe(tokens)
    return client


class _RecorderNotes:
    """The client's events a recording needs: its own store changes, and why connections were lost.

    The client's own store changes (mark_stale on subscribe, disconnect, an unanswered probe) are not
    frames: they are written as meta records so a replay applies them at the same point. Not the marks
    of the client stopping: they come after the last frame and would leave a replay with every row STALE.
    """

    def __init__(self, writer: FrameSink) -> None:
        self.writer = writer
        self.losses = 0  # connections lost (each one is then reconnected)
        self.last_loss = ""

    def __call__(self, event: ClientEvent) -> None:
        if event.kind == "state" and event.data["cause"] == CAUSE_MARKED:
            self.writer.write_meta({"type": "stale", "tokens": [event.token_id], "reason": event.data["reason"]})
        elif event.kind == "disconnected":
            self.losses += 1
            self.last_loss = str(event.data["reason"])


class FeedWatch:
    """Whether the recorded feed is alive, sampled by the progress loop: connections up, silence, down time.

    The feed is down while a connection that carries tokens is not open (its tokens are not being
    recorded), and silent when no frame arrived for ``SILENCE_ALARM`` seconds although every connection
    is open (a live connection gets at least a PONG every 10 s).
    """

    def __init__(self, client: MarketClient, writer: PartedWriter, notes: _RecorderNotes, now: float) -> None:
        self.client = client
        self.writer = writer
        self.notes = notes
        self.frames = writer.frames
        self.last_frame_at = now
        self.sampled_at = now
        self.down_since: float | None = None
        self.down_seconds = 0.0  # total, over the recording
        self.up = self.total = self.reconnects = 0
        self.alarm = ""  # what is wrong now ("" while the feed is alive)

    def sample(self, now: float) -> str | None:
        """Look at the client; return a line to print when the feed just died or came back."""
        connections = self.client.stats(tokens=False)["connections"]
        carrying = [conn for conn in connections if conn["tokens"]]
        self.total = len(carrying)
        self.up = sum(1 for conn in carrying if conn["state"] == "open")
        self.reconnects = sum(conn["reconnects"] for conn in connections)
        if self.writer.frames != self.frames:
            self.frames, self.last_frame_at = self.writer.frames, now
        if self.up < self.total:
            self.down_seconds += now - self.sampled_at
            self.down_since = self.sampled_at if self.down_since is None else self.down_since
        else:
            self.down_since = None
        self.sampled_at = now
        was = self.alarm
        self.alarm = self._alarm(now)
        if self.alarm and not was:
            return self.alarm
        if was and not self.alarm:
            return f"the feed is back ({self.up}/{self.total} connections up, {self.reconnects} reconnects)"
        return None

    def _alarm(self, now: float) -> str:
        silence = now - self.last_frame_at
        lost = f"connection lost: {self.notes.last_loss or 'no answer'}; reconnecting"
        if self.down_since is not None and now - self.down_since >= DOWN_ALARM:
            if self.up == 0:
                return f"NO FRAMES for {silence:.0f} s - {lost}"
            return f"{self.total - self.up} of {self.total} connections DOWN for {now - self.down_since:.0f} s - {lost}"
        if silence >= SILENCE_ALARM:
            return f"NO FRAMES for {silence:.0f} s although {self.up}/{self.total} connections are open"
        return ""

    def status(self) -> str:
        """The progress line's part on the connections and the tokens."""
        return (
            f"connections {self.up}/{self.total} up, {self.reconnects} reconnects, {state_counts(self.client.store)}"
        )


async def _show_progress(
    client: MarketClient, recorder: DiskFullGuard, notes: _RecorderNotes, args: argparse.Namespace
) -> int:
    writer = recorder.writer
    terminal = sys.stderr.isatty()
    period = PROGRESS_PERIOD_TERMINAL if terminal else PROGRESS_PERIOD_LOG
    started = time.monotonic()
    rate = RateMeter(window=period)
    rate.update(writer.frames, started)  # the first line's rate is then over its first period, not 0
    feed = FeedWatch(client, writer, notes, started)
    next_line = started + period
    name = os.path.basename(args.out)

    def line(now: float, frames_per_second: float) -> str:
        # what matters first: a narrow terminal cuts the end off
        alarm = f"!! {feed.alarm}; " if feed.alarm else ""
        return (
            f"{alarm}recording {name} {now - started:.0f} s: {feed.status()}; {writer.frames:,} frames "
            f"({frames_per_second:,.0f}/s), {writer.frame_bytes / 1e6:.2f} MB received, "
            f"{writer.file_bytes / 1e6:.2f} MB written{_parts(writer)}"
        )

    def show(text: str, *, final: bool = False) -> None:
        # On a terminal the progress line is redrawn in place, cut to the width (a wrapped line could not be
        # redrawn); a note or the final line ends it
        if terminal and not final:
            width = shutil.get_terminal_size().columns - 1
            text = text[:width]
        print(f"\r{text}\x1b[K" if terminal else text, end="" if terminal and not final else "\n",
              file=sys.stderr, flush=True)  # fmt: skip

    try:
        while recorder.disk_full is None:
            await asyncio.sleep(0.1)
            recorder.flush_if_due()
            now = time.monotonic()
            news = feed.sample(now)
            if news is not None:
                show(f"pm-ws record: {news}", final=True)
                next_line = now
            if args.duration is not None and now - started >= args.duration:
                break
            if now >= next_line:
                next_line = now + period
                show(line(now, rate.update(writer.frames, now)))
            if not writer.frames and args.book_timeout is not None and now - started >= args.book_timeout:
                break  # nothing at all: exit 3 below, saying what the server did
            fail_without_books(client, args.book_timeout, now - started)
        else:
            return ExitCode.DISK_FULL
    finally:
        recorder.flush()
        now = time.monotonic()
        average = writer.frames / max(now - started, 1e-9)
        show(line(now, average) + (" (done)" if recorder.disk_full is None else " (stopped: disk full)"), final=True)
    elapsed = time.monotonic() - started
    if not writer.frames:
        raise CliError(f"nothing recorded in {elapsed:.0f} s: {await _what_happened(client, notes, args.url)}",
                       ExitCode.NOT_FOUND)  # fmt: skip
    if feed.down_seconds >= DOWN_ALARM:
        print(
            f"pm-ws record: warning: the feed was down for {feed.down_seconds:.1f} s of the {elapsed:.1f} s "
            f"recording ({plural(feed.reconnects, 'reconnect')}; last loss: {notes.last_loss or 'none'})",
            file=sys.stderr,
        )  # fmt: skip
    return ExitCode.OK


def _parts(writer: PartedWriter) -> str:
    return f" in {plural(writer.parts, 'part')} (now {writer.path.name})" if writer.parted else ""


async def _what_happened(client: MarketClient, notes: _RecorderNotes, url: str) -> str:
    """Why a recording got no frame: the server closed every connection (and how), or it sent nothing."""
    if not notes.losses:
        return f"the server at {url} sent no frame"
    how = await _close_seen_by_a_probe(url, client.store.tokens())
    if how:
        return f"the server closed the connection {plural(notes.losses, 'time')} after the subscription ({how})"
    return f"the connection was lost {plural(notes.losses, 'time')} ({notes.last_loss})"


async def _close_seen_by_a_probe(url: str, tokens: list[str]) -> str:
    # The client does not keep close codes: subscribe once more on a socket of our own and see how it ends
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            async with connect(url, ping_interval=None, compression=None, open_timeout=None) as socket:
                await socket.send(subscription_frame(tokens, custom_features=False))
                await socket.recv()
    except ConnectionClosed as exc:
        if exc.rcvd is None:
            return "without a close frame"
        reason = f" {terminal_text(exc.rcvd.reason)!r}" if exc.rcvd.reason else ""
        return f"close code {exc.rcvd.code}{reason}"
    except (OSError, TimeoutError, InvalidHandshake):
        pass
    return ""
