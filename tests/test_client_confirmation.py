"""MarketClient keeps every LIVE row confirmed: probes quiet rows without leaving LIVE, STALE when unanswered.

The promise: a LIVE row is never older than ``confirm_interval + snapshot_timeout`` since its last
confirmation (``CONFIRM_TS_NS``), and a quiet healthy market never leaves LIVE.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from client_helpers import figures, serving, started, wait_until
from pm_ws.client import ClientEvent, MarketClient
from pm_ws.row import CONFIRM_TS_NS, STATE, State

pytestmark = pytest.mark.usefixtures("transport")  # every test over websockets, then picows

CONFIRM = 0.2  # confirm_interval of these tests, seconds
SNAPSHOT = 0.3  # snapshot_timeout


class ConfirmationWatch:
    """Sample every token's row each millisecond: the oldest confirmation of a LIVE row, LIVE -> STALE turns."""

    def __init__(self, client: MarketClient, tokens: list[str]) -> None:
        self.client = client
        self.slots = [client.store.slot(token) for token in tokens]
        self.tokens = tokens
        self.oldest = dict.fromkeys(tokens, 0)  # ns
        self.left_live: list[str] = []

    def on_event(self, event: ClientEvent) -> None:
        if event.kind == "state" and event.data["state"] is not State.LIVE:
            self.left_live.append(f"{event.token_id}: {event.data['reason']}")

    async def sample(self) -> None:
        view = self.client.store.view
        live = int(State.LIVE)
        while True:
            now = time.time_ns()
            for token, slot in zip(self.tokens, self.slots):
                if view[slot, STATE] == live:
                    self.oldest[token] = max(self.oldest[token], now - view[slot, CONFIRM_TS_NS])
            await asyncio.sleep(0.001)


async def test_client_confirmation_quiet_healthy_market_never_leaves_live() -> None:
    # No market data at all: each row is confirmed only by the books its probes bring
    async with serving(markets=3, rate_hz=0) as server:
        tokens = server.token_ids
        async with started(server, confirm_interval=CONFIRM, snapshot_timeout=SNAPSHOT) as (client, _):
            watch = ConfirmationWatch(client, tokens)
            client._events.on_event = watch.on_event
            sampler = asyncio.create_task(watch.sample())
            await asyncio.sleep(12 * CONFIRM)
            sampler.cancel()
            stats = client.stats()["connections"][0]
            left_live = list(watch.left_live)  # before the client stops

    probes = [
        frame for frame in server.connections[0].received[1:] if frame != "PING" and "unsubscribe" in frame
    ]
    figures.info(
        "quiet market: %d probes of %d tokens in %.1fs at confirm_interval=%g (%d probe frames), oldest LIVE %.0f ms",
        stats["probes"],
        len(tokens),
        12 * CONFIRM,
        CONFIRM,
        len(probes),
        max(watch.oldest.values()) / 1e6,
    )
    assert left_live == []
    assert stats["reconnects"] == 0 and stats["redrives"] == 0
    assert stats["probes"] >= 8 * len(tokens)  # every token probed about once per interval
    assert len(probes) <= stats["probes"] // len(tokens) + 2  # in batches: one frame pair for all of them
    assert set(orjson.loads(probes[0])["assets_ids"]) == set(tokens)
    assert max(watch.oldest.values()) <= (CONFIRM + SNAPSHOT) * 1e9


async def test_client_confirmation_unanswered_probe_turns_stale_within_the_promise() -> None:
    async with serving(markets=2, rate_hz=0) as server:
        tokens = server.token_ids
        withheld, others = tokens[0], tokens[1:]
        async with started(server, confirm_interval=CONFIRM, snapshot_timeout=SNAPSHOT) as (client, _):
            watch = ConfirmationWatch(client, tokens)
            client._events.on_event = watch.on_event
            sampler = asyncio.create_task(watch.sample())
            server.withhold_snapshot(withheld)  # its probes bring no book
            start = time.perf_counter()
            await wait_until(lambda: client.store.top(withheld).state is State.STALE, what="withheld STALE")
            took = time.perf_counter() - start
            await asyncio.sleep(3 * CONFIRM)
            sampler.cancel()
            assert [client.store.top(token).state for token in others] == [State.LIVE] * len(others)
            left_live = list(watch.left_live)  # before the client stops

    figures.info(
        "unanswered probe: STALE after %.0f ms, oldest LIVE confirmation %.0f ms (promise %.0f ms)",
        took * 1e3,
        watch.oldest[withheld] / 1e6,
        (CONFIRM + SNAPSHOT) * 1e3,
    )
    assert took <= CONFIRM + SNAPSHOT + 0.1
    assert max(watch.oldest.values()) <= (CONFIRM + SNAPSHOT) * 1e9
    assert left_live[0] == f"{withheld}: unconfirmed"
    # its neighbours were never unconfirmed (the withheld one's re-drive may then cost one rebuild: the usual recovery)
    assert [entry for entry in left_live if entry.endswith("unconfirmed")] == [f"{withheld}: unconfirmed"], left_live


async def test_client_confirmation_active_market_needs_no_probe() -> None:
    # price_change entries whose best prices match the book confirm the rows: nothing to probe
    async with serving(markets=2, rate_hz=200) as server:
        async with started(server, confirm_interval=CONFIRM, snapshot_timeout=SNAPSHOT) as (client, _):
            await asyncio.sleep(6 * CONFIRM)
            stats = client.stats()["connections"][0]

    assert stats["probes"] == 0 and stats["redrives"] == 0
