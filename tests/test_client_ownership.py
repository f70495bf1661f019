"""MarketClient: every token is owned by one connection; a frame changes only rows its own connection owns."""

from __future__ import annotations

import asyncio

import pytest

from client_helpers import all_in, books_match, figures, serving, started, states, wait_until
from pm_ws.row import MISMATCHES, State

pytestmark = pytest.mark.usefixtures("transport")  # every test over websockets, then picows


async def test_client_ownership_book_on_another_socket_leaves_a_stale_row_stale() -> None:
    # Market 0 on connection A, market 1 on connection B; B's socket dies and stays in backoff
    async with serving(markets=2, rate_hz=0) as server:
        theirs = server.token_ids[2:]
        async with started(server, max_tokens_per_connection=2) as (client, guard):
            conn_a, conn_b = (next(c for c in server.connections if t in c.subscribed) for t in server.token_ids[::2])
            assert conn_a is not conn_b
            server.reject_connections(True)
            conn_b.websocket.transport.abort()
            await wait_until(all_in(client, theirs, State.STALE), what="B's tokens STALE")
            frames_before = client.stats()["connections"][0]["frames"]

            await server.send_raw(server.initial_dump(theirs), conn=conn_a)  # B's books, on A's socket
            await wait_until(lambda: client.stats()["connections"][0]["frames"] > frames_before, what="A read it")

            assert states(client, theirs) == [State.STALE, State.STALE]
            assert client.dispatcher.stats()["skip_foreign"] == len(theirs)
            server.reject_connections(False)  # B's own socket comes back with its own books
            await wait_until(all_in(client, theirs, State.LIVE), what="B LIVE on its own socket")
            assert guard.violations == []


async def test_client_ownership_split_pairs_in_any_order_raise_no_spurious_flags() -> None:
    # All YES tokens first, then all NO: every market's pair lands on two connections, and both
    # sockets receive the market's price_change frames
    async with serving(markets=4, rate_hz=300) as server:
        order = [market.yes_id for market in server.markets] + [market.no_id for market in server.markets]
        async with started(server, tokens=order, max_tokens_per_connection=3) as (client, _):
            stats = client.stats()
            connection_of = {token: row["connection"] for token, row in stats["tokens"].items()}
            assert all(connection_of[m.yes_id] != connection_of[m.no_id] for m in server.markets)
            await asyncio.sleep(0.8)
            await server.step(300)
            await wait_until(lambda: books_match(client, server, order), what="books = truth")
            counters = client.dispatcher.stats()
            mismatches = [client.store.view[client.store.slot(token), MISMATCHES] for token in order]
            assert all_in(client, order, State.LIVE)()

    figures.info(
        "split pairs on %d connections: %d price_change events, %d entries skipped as foreign, %d mismatch/crossed",
        len(stats["connections"]),
        counters["ev_price_change"],
        counters["skip_foreign"],
        counters["checksum_mismatch"] + counters["crossed_book"],
    )
    assert counters["checksum_mismatch"] == counters["crossed_book"] == 0
    assert mismatches == [0] * len(order)
    assert counters["skip_foreign"] > 0
