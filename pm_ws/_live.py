"""``pm-ws watch``: the table of a live market-channel connection, and what the live commands share.

``LiveView`` (the table or the ``--json``/``--csv`` lines, with event notes and deadlines) also draws
``pm-ws demo``; ``pm-ws record`` lives in ``_record``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from contextlib import suppress
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidURI

from ._core import BookStore
from ._depth_view import table_for
from ._exit import CliError, ExitCode
from ._row_output import LivePipe, output_for
from ._table_layout import cut
from ._token_selection import exchange_filter, select_tokens
from ._watch_view import LABEL_WIDTH, RateMeter, can_encode, screen_for, short_token
from .client import ClientEvent, MarketClient
from .gamma import MarketFilter
from .shared import SharedTableError

CONNECT_CHECK_TIMEOUT = 10.0  # seconds to wait for the first handshake before calling a URL unreachable
NOTE_GATHER_SECONDS = 0.05  # events closer than this share one note
PIPE_CHECK_PERIOD = 0.1  # with --json/--csv: how soon a reader gone away (`| head`) ends the command


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
    reconnects = sum(conn["reconnects"] for conn in client.stats(tokens=False)["connections"])
    why = "unknown token ids?"
    if reconnects and not client.dispatcher.stats()["frames"]:
        why = f"every connection ended without a frame ({plural(reconnects, 'reconnect')})"
    message = f"no order book for any token after {book_timeout:g} s ({tokens}): {why}"
    raise CliError(message, ExitCode.NOT_FOUND)


class LiveView:
    """Draw the table for a running client, note connection and state events, enforce the deadlines."""

    def __init__(self, client: MarketClient, labels: dict[str, str], args: argparse.Namespace, title: str) -> None:
        self.client = client
        self.screen, self.refresh = screen_for(sys.stdout, plain=args.plain, refresh=args.refresh)
        self.ascii_only = not can_encode(sys.stdout, "×…→")
        self.table = table_for(client.store, labels, args, ascii_only=self.ascii_only)
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
            f"reconnects {reconnects}  rejected {rejected}"
        )
        self.screen.show_table(header, self.table, now_monotonic=now)

    def _name(self, token: str) -> str:
        label = self.labels.get(token)
        return f"{short_token(token)} {cut(label, LABEL_WIDTH)}" if label else short_token(token)

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
                subscribed = plural(event.data["tokens"], "token")
                self.note(f"connection {event.data['connection']} open, subscribed to {subscribed}")
            elif event.kind == "disconnected":
                self.note(f"connection {event.data['connection']} lost: {event.data['reason']}")
        for (state, reason), names in groups.items():
            who = ", ".join(names) if len(names) <= 2 else plural(len(names), "token")
            if reason == "resync":  # the dispatcher asked for a fresh book; the row may already be fine
                self.note(f"re-syncing {who} (row {state})")
            else:
                self.note(f"{arrow} {state}: {who} ({reason})")


def plural(n: int, noun: str) -> str:
    """``"1 token"``, ``"3 tokens"``."""
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


