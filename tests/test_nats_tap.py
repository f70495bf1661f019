"""MarketClient.add_tap, the hook the bus publisher attaches with: a store fed by the tap holds the client's rows.

No NATS here: the tap's frames (with their owners) and store operations are applied, as they come, to a
fresh store and dispatcher of the same core, which must equal the client's store after every frame.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from client_helpers import FAST, serving, wait_until
from pm_ws import N_FIELDS
from pm_ws.client import MarketClient
from pm_ws.row import State


def rows_and_books(store: Any) -> dict[str, tuple[tuple[int, ...], Any, int]]:
    view = store.view
    return {
        token: (tuple(view[store.slot(token), i] for i in range(N_FIELDS)), store.book(token, None), store.owner(token))
        for token in store.tokens()
    }


class Mirror:
    """A store rebuilt from a client's tap alone; counts the frames after which it differed."""

    def __init__(self, client: MarketClient) -> None:
        self.client = client
        core = sys.modules[type(client.store).__module__]
        self.store = core.BookStore(len(client.store) + 16)
        self.dispatcher = core.Dispatcher(self.store, emit_trades=True)
        self.frames = self.differed = 0
        self.owners: set[int] = set()

    def on_frame(self, frame: str | bytes, recv_ns: int, owner: int) -> None:
        self.dispatcher.feed(frame, recv_ns, owner)
        self.frames += 1
        self.owners.add(owner)
        if rows_and_books(self.store) != rows_and_books(self.client.store):
            self.differed += 1

    def on_store(self, op: str, tokens: list[str], options: dict[str, Any]) -> None:
        for token in tokens:
            if op == "add":
                self.store.add(token)
            elif op == "remove":
                self.store.remove(token)
            elif op == "set_owner":
                self.store.set_owner(token, options["owner"])
        if op == "mark_stale":
            self.store.mark_stale(tokens)


async def test_tap_rebuilds_rows_across_split_connections_faults_and_unsubscribe() -> None:
    async with serving(markets=4, rate_hz=0) as server:
        # YES tokens first, NO after: each market's pair is split over two connections, and both sockets
        # receive the market's price_change frames (each entry applies on its owner's socket only)
        order = [market.yes_id for market in server.markets] + [market.no_id for market in server.markets]
        recorded: list[tuple[str | bytes, int]] = []
        client = MarketClient(server.url, capacity=16, max_tokens_per_connection=3, **FAST,
                              on_frame=lambda frame, recv_ns: recorded.append((frame, recv_ns)))  # fmt: skip
        mirror = Mirror(client)
        remove_tap = client.add_tap(on_frame=mirror.on_frame, on_store=mirror.on_store)
        await client.subscribe(order)
        async with client:
            await wait_until(lambda: all(client.store.top(t).state == State.LIVE for t in order), what="LIVE")
            for round_ in range(6):
                await server.step(40)
                await server.trade()
                if round_ == 2:
                    server.abort_all()  # every row STALE, then fresh books
                if round_ == 4:
                    await client.unsubscribe(order[:1])
                await asyncio.sleep(0.05)
            await wait_until(lambda: client.dispatcher.stats()["ev_price_change"] > 100, what="frames")
        assert len(client.stats()["connections"]) == 3 and mirror.owners == {1, 2, 3}
        assert client.dispatcher.stats()["skip_foreign"] > 0  # frames for foreign tokens did come
        assert mirror.frames == len(recorded) > 200  # the tap saw what on_frame saw
        assert mirror.differed == 0
        assert rows_and_books(mirror.store) == rows_and_books(client.store)  # the final STALE marks too
        assert mirror.dispatcher.stats() == client.dispatcher.stats()
        remove_tap()
        assert client._frame_feed() != client.dispatcher.feed  # on_frame still taps


async def test_tap_added_to_a_running_client_applies_from_the_next_frame() -> None:
    async with serving(markets=2, rate_hz=0) as server:
        client = MarketClient(server.url, capacity=8, max_tokens_per_connection=2, **FAST)
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(lambda: all(client.store.top(t).state == State.LIVE for t in server.token_ids))
            assert client._frame_feed() == client.dispatcher.feed  # no tap: the reader pays nothing
            await server.step(30)
            frames_before = sum(c["frames"] for c in client.stats()["connections"])
            seen: list[int] = []
            remove_tap = client.add_tap(on_frame=lambda frame, recv_ns, owner: seen.append(owner))
            await server.step(30)
            await wait_until(lambda: sum(c["frames"] for c in client.stats()["connections"]) >= frames_before + 60)
            frames = sum(c["frames"] for c in client.stats()["connections"])
            assert len(seen) == frames - frames_before  # every frame read after add_tap, none before
            remove_tap()
            await server.step(10)
            await wait_until(lambda: sum(c["frames"] for c in client.stats()["connections"]) >= frames + 20)
            assert len(seen) == frames - frames_before  # removed: no more calls
