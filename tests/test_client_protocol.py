"""MarketClient's wire protocol against the loopback FakeMarketServer: subscription first, PING, operation frames."""

from __future__ import annotations

import asyncio
import time
from types import ModuleType

import pytest

from client_helpers import all_in, books_match, figures, frames_of, serving, started, states, wait_until
from pm_ws.row import State

pytestmark = pytest.mark.usefixtures("transport")  # every test over websockets, then picows


async def test_client_first_frame_is_the_subscription_and_nothing_precedes_it() -> None:
    async with serving(markets=2, rate_hz=0) as server:
        async with started(server):
            await asyncio.sleep(0.25)  # a couple of PINGs
        first, *rest = frames_of(server, server.connections[0].id)

    assert first == {
        "assets_ids": server.token_ids,
        "type": "market",
        "initial_dump": True,
        "custom_feature_enabled": True,
    }
    assert rest and all(frame == "PING" for frame in rest)


async def test_client_custom_features_off_is_sent_as_false() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        async with started(server, custom_features=False):
            pass
        assert frames_of(server, 1)[0]["custom_feature_enabled"] is False


async def test_client_ping_cadence_follows_ping_interval() -> None:
    async with serving(markets=1, rate_hz=200) as server:
        async with started(server, ping_interval=0.1) as (client, _):
            start = time.perf_counter()
            await asyncio.sleep(0.55)
            elapsed = time.perf_counter() - start
            pings = client.stats()["connections"][0]["pings"]
        received = server.connections[0].received

    # data flowing does not replace the heartbeat; the cadence is neither early nor late
    assert received.count("PING") == pings
    assert int(elapsed / 0.1) - 1 <= pings <= int(elapsed / 0.1) + 2
    figures.info("ping cadence: %d PINGs in %.3fs at ping_interval=0.1", pings, elapsed)


async def test_client_pong_keeps_a_quiet_connection_alive() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        async with started(server, inbound_timeout=0.3, confirm_interval=5.0) as (client, _):
            await asyncio.sleep(0.8)  # no market data at all, only PONGs
            assert len(server.connections) == 1
            assert client.stats()["connections"][0]["reconnects"] == 0
            assert states(client, server.token_ids) == [State.LIVE] * 2


async def test_client_books_match_server_truth_after_changes_and_trades(impl: ModuleType) -> None:
    async with serving(markets=3, seed=5, rate_hz=0, trade_every=7) as server:
        async with started(server, store=impl.BookStore(16)) as (client, _):
            await server.step(120)
            await server.trade()
            await server.burst(50)
            await wait_until(lambda: books_match(client, server, server.token_ids), what="books = truth")
            counters = client.stats()["dispatcher"]

    assert counters["ev_price_change"] >= 170
    assert counters["checksum_mismatch"] == counters["crossed_book"] == 0
    assert counters["rej_invalid_json"] == counters["rej_bad_event"] == 0
    assert counters["ctl_invalid_operation"] == 0


async def test_client_subscribe_while_running_uses_an_operation_frame_on_the_same_socket() -> None:
    async with serving(markets=2, rate_hz=100) as server:
        first, second = server.token_ids[:2], server.token_ids[2:]
        async with started(server, tokens=first) as (client, _):
            await client.subscribe(second)
            await wait_until(all_in(client, second, State.LIVE), what="new tokens live")
            await client.unsubscribe(first[:1])
            await asyncio.sleep(0.05)
            assert states(client, first[1:] + second) == [State.LIVE] * 3
            assert first[0] not in client.store
        sent = [frame for frame in frames_of(server, 1) if frame != "PING"]

    assert len(server.connections) == 1
    assert sent[1] == {"assets_ids": second, "operation": "subscribe", "custom_feature_enabled": True}
    assert sent[2] == {"assets_ids": first[:1], "operation": "unsubscribe"}
    assert not any("type" in frame for frame in sent[1:])  # a second `type` frame is INVALID OPERATION
