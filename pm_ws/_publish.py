"""``pm-ws publish`` and ``pm-ws watch --nats``: a client's books onto NATS JetStream, and from it into a table.

NATS credentials come from the URL (``nats://user:password@host``, ``nats://token@host``, ``tls://`` for
TLS) or from the environment (:data:`NATS_ENV`); neither is ever printed (URLs are shown redacted).
Needs the ``pm_ws[nats]`` extra, imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from ._exit import CliError, ExitCode
from ._live import check_reachable, exchange_follower, fail_without_books, first_listing, shared_store
from ._token_selection import exchange_filter, select_tokens
from ._depth_view import table_for
from ._watch_view import RateMeter, can_encode, screen_for, state_counts

PROGRESS_PERIOD = 1.0  # seconds between two progress lines of pm-ws publish
CONSUMER_CAPACITY = 4096  # rows of watch --nats (the publisher's tokens)

# Environment variable -> nats.connect option; files are named by path, as nats.connect takes them
NATS_ENV = {
    "PM_WS_NATS_USER": "user",
    "PM_WS_NATS_PASSWORD": "password",
    "PM_WS_NATS_TOKEN": "token",
    "PM_WS_NATS_CREDS": "user_credentials",  # a .creds file (JWT + NKey)
    "PM_WS_NATS_NKEY_SEED": "nkeys_seed",  # an NKey seed file
}


def nats_options(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``nats.connect`` credentials the environment gives (:data:`NATS_ENV`)."""
    return {option: environ[name] for name, option in NATS_ENV.items() if environ.get(name)}


def _bus() -> ModuleType:
    try:
        from . import bus
    except ImportError:  # nats-py missing
        raise CliError("the NATS bus needs the nats extra: pip install 'pm_ws[nats]'", ExitCode.USAGE) from None
    return bus


async def _started(part: Any) -> None:
    try:
        await part.start()
    except ConnectionError as exc:  # its message names the servers without credentials
        raise CliError(str(exc), ExitCode.UNREACHABLE) from None


async def publish(args: argparse.Namespace) -> int:
    """Run ``pm-ws publish``: the client's frames and store operations to the stream, until stopped.

    With ``--all`` the client is an exchange follower's: its resolutions, REST books and the deltas replayed
    on them are store operations too, so consumers follow every row exactly.
    """
    bus = _bus()
    where = exchange_filter(args)
    tokens = [] if where is not None else (await select_tokens(args))[0]
    await check_reachable(args.url)
    publisher = bus.NatsPublisher(args.nats.split(","), stream=args.stream, **nats_options(os.environ))
    follower = exchange_follower(args, where) if where is not None else None
    if follower is not None:
        client = follower.client
        publisher.attach(client)
        running: Any = follower
    else:
        client = running = publisher.client(args.url, capacity=len(tokens))
        await client.subscribe(tokens)
    await _started(publisher)
    target = f"stream {args.stream} at {bus.redact(args.nats)}"
    started = time.monotonic()
    try:
        async with running:  # its last STALE marks are published before the publisher closes
            if follower is not None:
                await first_listing(follower, args)
            while args.duration is None or time.monotonic() - started < args.duration:
                await asyncio.sleep(PROGRESS_PERIOD)
                if follower is None:  # --all: a listing of no market is no failure
                    fail_without_books(client, args.book_timeout, time.monotonic() - started)
                print(_progress(publisher.stats(), client.store, target), file=sys.stderr, flush=True)
    finally:
        await publisher.close()
    return ExitCode.OK


def _progress(stats: dict[str, Any], store: Any, where: str) -> str:
    lost = stats["overflow_records"] + stats["lost_records"]
    return (
        f"publishing to {where}: {stats['frames']:,} frames, {stats['records']:,} records in "
        f"{stats['batches']:,} batches ({stats['bytes'] / 1e6:.2f} MB), {lost} lost, "
        f"{'connected' if stats['connected'] else 'DISCONNECTED'}; {state_counts(store)}"
    )


async def watch_bus(args: argparse.Namespace) -> int:
    """Run ``pm-ws watch --nats``: the table of a consumer's rows, rebuilt from the stream."""
    if args.tokens or args.market or args.slug or args.all:
        message = "watch --nats shows the publisher's tokens: name no TOKEN_ID, --market, --slug or --all"
        raise CliError(message, ExitCode.USAGE)
    bus = _bus()
    store = shared_store(args.share, CONSUMER_CAPACITY)
    consumer = bus.NatsConsumer(
        args.nats.split(","), stream=args.stream, capacity=CONSUMER_CAPACITY, store=store, **nats_options(os.environ)
    )
    try:
        await _started(consumer)
        return await _show(consumer, args, bus.redact(args.nats))
    finally:
        await consumer.close()
        consumer.store.close_shared()


async def _show(consumer: Any, args: argparse.Namespace, where: str) -> int:
    screen, refresh = screen_for(sys.stdout, plain=args.plain, refresh=args.refresh)
    table = table_for(consumer.store, {}, args, ascii_only=not can_encode(sys.stdout, "×…"))
    title = f"pm-ws watch {where} stream {args.stream}"
    rate = RateMeter()
    started = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            bus_stats = consumer.stats()["bus"]
            age = bus_stats["heartbeat_age"]
            header = (
                f"{title}  {now - started:.0f}s  records {bus_stats['records']:,} "
                f"({rate.update(bus_stats['records'], now):.0f}/s)  gaps {bus_stats['gaps']}  "
                f"publisher {'silent' if age is None or age > consumer.stale_after else 'alive'}"
            )
            screen.show_table(header, table, now_monotonic=now)  # the state summary goes where it stays visible
            if args.duration is not None and now - started >= args.duration:
                return ExitCode.OK
            wait = refresh if args.duration is None else min(refresh, args.duration - (now - started))
            await asyncio.sleep(max(0.0, wait))
    finally:
        screen.close()
