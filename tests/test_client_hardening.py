"""MarketClient against misuse and hostile peers: user callbacks that raise anything, re-entry,
parameters it cannot run, a peer that stops reading, and the smaller promises of the public surface."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from client_helpers import FAST, all_in, books_match, figures, serving, started, states, wait_until
from pm_ws.client import ClientEvent, MarketClient
from pm_ws.row import State

# ------------------------------------------------------------------ user callbacks raising BaseException


@pytest.mark.parametrize("option", ["on_event", "on_frame"])
async def test_client_callback_raising_cancelled_error_is_contained_and_the_connection_goes_on(option: str) -> None:
    raised = 0

    def cancel_once(*args: Any) -> None:
        nonlocal raised
        if not raised:
            raised += 1
            raise asyncio.CancelledError("raised by the user's callback")

    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, **{option: cancel_once}, **FAST)
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(all_in(client, server.token_ids, State.LIVE))
            await server.step(20)
            await wait_until(lambda: books_match(client, server, server.token_ids))
            stats = client.stats()
            assert raised == 1 and stats["callback_errors"] == 1
            assert stats["connections"][0]["reconnects"] == 0 and stats["connections"][0]["state"] == "open"


async def test_client_on_event_raising_on_disconnect_neither_kills_the_connection_nor_hangs_close() -> None:
    def on_event(event: ClientEvent) -> None:
        if event.kind == "disconnected":
            raise asyncio.CancelledError("raised by the user's callback")

    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, on_event=on_event, **FAST)
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(all_in(client, server.token_ids, State.LIVE))
            server.abort_all()
            await wait_until(lambda: client.stats()["callback_errors"] == 1, what="the failing disconnect event")
            await wait_until(all_in(client, server.token_ids, State.LIVE), what="the reconnect")
            async with asyncio.timeout(2):
                await client.close()  # a second disconnected event raises too
        assert client.stats()["callback_errors"] == 2


# ------------------------------------------------------------------ re-entry


async def test_client_nested_async_with_is_refused_and_the_running_client_goes_on() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        async with started(server) as (client, _):
            with pytest.raises(RuntimeError, match="already running"):
                async with client:
                    pytest.fail("the body of a refused `async with` ran")
            await asyncio.sleep(0.05)
            assert states(client, server.token_ids) == [State.LIVE] * 2
            await server.step(5)
            await wait_until(lambda: books_match(client, server, server.token_ids))
        assert states(client, server.token_ids) == [State.STALE] * 2


async def test_client_async_with_while_run_runs_elsewhere_is_refused_and_leaves_that_run_alone() -> None:
    async with serving(markets=1, rate_hz=0) as server:
        client = MarketClient(server.url, **FAST)
        await client.subscribe(server.token_ids)
        runner = asyncio.create_task(client.run())
        await wait_until(all_in(client, server.token_ids, State.LIVE))
        with pytest.raises(RuntimeError, match="already running"):
            async with client:
                pytest.fail("the body of a refused `async with` ran")
        await asyncio.sleep(0.05)
        assert not runner.done() and states(client, server.token_ids) == [State.LIVE] * 2
        await client.close()
        assert runner.done() and runner.exception() is None
