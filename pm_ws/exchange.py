"""Follow the whole exchange on one :class:`~pm_ws.MarketClient`: every active market, as markets open and resolve.

:class:`ExchangeFollower` lists every active, order-book-enabled market through Gamma (optionally
filtered), subscribes their tokens, and keeps the set current:

- ``new_market`` (global and repeated by the server; the dispatcher drops repeats, the follower
  drops markets it already follows) → the market's tokens are subscribed within
  ``subscribe_delay`` seconds, several markets per operation frame;
- ``market_resolved`` → the market's rows turn ``RESOLVED`` at once (a final state; the winner is
  ``store.resolution(token)``), and are unsubscribed after ``resolve_grace`` seconds, which frees
  their slots (a reused slot's SEQ/EPOCH never go back);
- every ``relist_interval`` seconds the listing is walked again, because the events are not
  always delivered: markets it shows that are not followed are subscribed; followed markets it no
  longer shows are looked up by condition id and resolved (winner from Gamma when it is known), or
  unsubscribed if still open (they left the filter);
- a token still without a book ``bootstrap_after`` seconds after it asked (its re-drives did not
  help) gets its book from the CLOB REST API (see :mod:`pm_ws._bootstrap`).

Needs the ``pm_ws[exchange]`` extra (aiohttp).

Example
-------
::

    from pm_ws.exchange import ExchangeFollower

    async def main():
        follower = ExchangeFollower()                      # every active market
        async with follower:                               # runs until the block ends
            await follower.listed.wait()                   # the first listing is subscribed
            store = follower.store                         # rows of every token
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import orjson

from ._bootstrap import RestBootstrap
from ._http import HttpClient
from .client import DEFAULT_URL, ClientEvent, EventCallback, MarketClient
from .errors import CapacityError
from .row import TOKEN_ID
from .gamma import (
    DEFAULT_CLOB_URL, DEFAULT_GAMMA_URL, GammaError, GammaMarket, MarketFilter, list_markets, markets_by_condition_ids,
    string_list,
)

__all__ = ["ExchangeFollower"]

logger = logging.getLogger("pm_ws")

TICK = 0.1  # seconds between two rounds of the follower's upkeep
LISTING_RETRY = 5.0  # seconds before a failed listing is tried again
# Default wait before a REST book: past the first re-drive's deadline, before the second miss would rebuild
BOOTSTRAP_AFTER_TIMEOUTS = 1.5
# Every upkeep round looks for tokens waiting too long among those their connections await: a token is
# due between its first re-drive and its second miss (which rebuilds its connection, every neighbour STALE
# too), a window of snapshot_timeout / 2; a coarser scan misses it and withheld tokens rebuild their
# connection again and again. Every BOOTSTRAP_FULL_SCAN_EVERY rounds every token is looked at: a connection
# gives up awaiting a token (its probes and re-drives spent) that can still be without a book
BOOTSTRAP_FULL_SCAN_EVERY = 50


class ExchangeFollower:
    """Keep every active market (that ``where`` keeps) subscribed on one :class:`~pm_ws.MarketClient`.

    Parameters
    ----------
    url : str
        Market channel endpoint.
    gamma_url, clob_url : str
        Gamma and CLOB REST base URLs.
    where : MarketFilter
        Which active markets to follow (all by default).
    relist_interval : float
        Seconds between two full listings.
    resolve_grace : float
        Seconds a resolved market's rows stay (``RESOLVED``) before they are unsubscribed.
    subscribe_delay : float
        Announced markets are gathered this long, then subscribed together.
    bootstrap_after : float or None
        Seconds without a book before a token's REST book is asked; by default
        ``snapshot_timeout`` × 1.5 (its first re-drive found nothing either, and the second miss,
        which would rebuild its connection, has not come yet); None switches the REST bootstrap off.
        A token handed to the REST bootstrap no longer costs its connection a rebuild.
    http : HttpClient, optional
        The HTTP client (its rate limit covers every REST request); a default one otherwise.
    on_event, on_frame : callable, optional
        As for :class:`~pm_ws.MarketClient` (the follower sees the events and frames first).
    on_tokens : callable, optional
        ``on_tokens("subscribe" | "unsubscribe", tokens)``, called just before the follower subscribes or
        unsubscribes tokens (a recorder writes them down, so a replay adds and removes the same rows).
    **client_options
        Passed to :class:`~pm_ws.MarketClient` (``capacity`` defaults to 65,536 here;
        ``custom_features`` is always on).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        gamma_url: str = DEFAULT_GAMMA_URL,
        clob_url: str = DEFAULT_CLOB_URL,
        where: MarketFilter = MarketFilter(),
        relist_interval: float = 300.0,
        resolve_grace: float = 60.0,
        subscribe_delay: float = 0.2,
        bootstrap_after: float | None = -1.0,
        http: HttpClient | None = None,
        on_event: EventCallback | None = None,
        on_frame: Callable[[str | bytes, int], None] | None = None,
        on_tokens: Callable[[str, list[str]], None] | None = None,
        **client_options: Any,
    ) -> None:
        for name, value in (("relist_interval", relist_interval), ("subscribe_delay", subscribe_delay)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, was {value!r}")
        if not resolve_grace >= 0:
            raise ValueError(f"resolve_grace must be >= 0, was {resolve_grace!r}")
        self.gamma_url = gamma_url
        self.where = where
        self.relist_interval = float(relist_interval)
        self.resolve_grace = float(resolve_grace)
        self.subscribe_delay = float(subscribe_delay)
        self.http = http if http is not None else HttpClient()
        self._user_event = on_event
        self._user_frame = on_frame
        self._on_tokens = on_tokens
        client_options.setdefault("capacity", 65_536)
        client_options["custom_features"] = True
        self.client = MarketClient(url, on_event=self._on_event, on_frame=self._on_frame, **client_options)
        self.store = self.client.store
        if bootstrap_after is not None and bootstrap_after < 0:
            bootstrap_after = self.client.snapshot_timeout * BOOTSTRAP_AFTER_TIMEOUTS
        self.bootstrap = (
            RestBootstrap(self.client._taps, self.http, clob_url, bootstrap_after, self._connection, self._rest_loaded)
            if bootstrap_after is not None
            else None
        )
        self.markets: dict[str, tuple[str, ...]] = {}  # followed: condition id -> token ids
        self.labels: dict[str, str] = {}  # token id -> "<outcome> <question>" of followed (and announced) markets
        self.listed = asyncio.Event()  # set once the first listing is subscribed
        self._announced: dict[str, tuple[str, ...]] = {}  # new_market not subscribed yet
        self._resolved_at: dict[str, float] = {}  # condition id -> when it resolved (monotonic s)
        self._next_listing = 0.0
        self._rounds = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._run_task: asyncio.Task[None] | None = None
        self.counters = {
            "listings": 0, "listing_errors": 0, "announced": 0, "announced_duplicate": 0, "resolved": 0,
            "resolved_by_listing": 0, "left_filter": 0, "unsubscribed": 0, "capacity_full": 0,
        }  # fmt: skip

    # ------------------------------------------------------------------ public API

    async def run(self, stop_event: asyncio.Event | None = None) -> None:
        """List, subscribe and follow until ``stop_event`` is set or :meth:`close` is called."""
        stop = stop_event if stop_event is not None else asyncio.Event()
        self._stop = stop
        client = asyncio.create_task(self.client.run(stop), name="pm_ws.exchange.client")
        try:
            while not stop.is_set() and not client.done():
                await self._upkeep()
                try:
                    await asyncio.wait_for(stop.wait(), TICK)
                except asyncio.TimeoutError:
                    pass
        finally:
            stop.set()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(client, *self._tasks, return_exceptions=True)
            await self.http.close()

    async def close(self) -> None:
        """Stop :meth:`run` and wait until it returned."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        if self._run_task is not None:
            await asyncio.gather(self._run_task, return_exceptions=True)

    async def __aenter__(self) -> ExchangeFollower:
        self._stop = asyncio.Event()
        self._run_task = asyncio.create_task(self.run(self._stop), name="pm_ws.exchange")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def stats(self, tokens: bool = True) -> dict[str, Any]:
        """``MarketClient.stats(tokens)`` plus ``exchange`` (markets followed, counters), ``bootstrap`` and ``http``."""
        stats = self.client.stats(tokens)
        stats["exchange"] = {"markets": len(self.markets), "resolving": len(self._resolved_at), **self.counters}
        stats["bootstrap"] = self.bootstrap.stats() if self.bootstrap is not None else None
        stats["http"] = self.http.stats()
        return stats

    # ------------------------------------------------------------------ events (from the reader)

    def _on_frame(self, frame: str | bytes, recv_ns: int) -> None:
        if self.bootstrap is not None:
            self.bootstrap.on_frame(frame, recv_ns)
        if self._user_frame is not None:
            self._user_frame(frame, recv_ns)

    def _on_event(self, event: ClientEvent) -> None:
        if event.kind == "new_market":
            self._announce(event.data)
        elif event.kind == "market_resolved":
            self._resolve_event(event.data)
        if self._user_event is not None:
            self._user_event(event)

    def _announce(self, payload: dict[str, Any]) -> None:
        condition_id = _text(payload.get("market") or payload.get("condition_id"))
        tokens = _ids(payload.get("clob_token_ids") or payload.get("assets_ids"))
        if not condition_id or not tokens:
            return
        if condition_id in self.markets or condition_id in self._announced or condition_id in self._resolved_at:
            self.counters["announced_duplicate"] += 1
            return
        self.counters["announced"] += 1
        self._announced[condition_id] = tokens
        self._label(tokens, string_list(payload.get("outcomes")), _text(payload.get("question")))

    def _resolve_event(self, payload: dict[str, Any]) -> None:
        condition_id = _text(payload.get("market") or payload.get("condition_id"))
        winner = _text(payload.get("winning_asset_id")) or None
        self._resolve(condition_id, winner)

    def _resolve(self, condition_id: str, winner: str | None) -> None:
        # RESOLVED at once (final, the winner recorded), unsubscribed after the grace period
        self._announced.pop(condition_id, None)
        tokens = self.markets.get(condition_id)
        if tokens is None or condition_id in self._resolved_at:
            return
        store, taps = self.store, self.client._taps
        for token in tokens:
            if token in store:
                taps.resolve(token, None if winner is None else token == winner)
        self._resolved_at[condition_id] = time.monotonic()
        self.counters["resolved"] += 1

    # ------------------------------------------------------------------ upkeep (every TICK)

    async def _upkeep(self) -> None:
        now = time.monotonic()
        if now >= self._next_listing and not any(t.get_name() == "listing" for t in self._tasks):
            self._next_listing = now + self.relist_interval
            self._spawn(self._listing(), "listing")
        if self._announced:
            announced, self._announced = self._announced, {}
            await asyncio.sleep(self.subscribe_delay)  # gather the announcements of a burst
            announced.update(self._announced)
            self._announced = {}
            await self._follow(announced)
        due = [cid for cid, at in self._resolved_at.items() if now - at >= self.resolve_grace]
        if due:
            await self._drop(due)
        self._rounds += 1
        if self.bootstrap is not None:
            full = self._rounds % BOOTSTRAP_FULL_SCAN_EVERY == 0
            candidates = list(self.client._owner) if full else self._maybe_waiting(self.bootstrap)
            tokens = self.bootstrap.due(candidates, time.monotonic_ns())
            if tokens:
                self._stop_awaiting(tokens)
                self._spawn(self.bootstrap.fetch(tokens), "bootstrap")

    async def _listing(self) -> None:
        try:
            markets = await list_markets(self.http, self.gamma_url, self.where)
        except GammaError as exc:
            self.counters["listing_errors"] += 1
            self._next_listing = time.monotonic() + LISTING_RETRY
            logger.warning("market listing failed (retrying in %gs): %s", LISTING_RETRY, exc)
            return
        self.counters["listings"] += 1
        listed = {market.condition_id: market for market in markets}
        for cid, market in listed.items():
            if cid not in self.markets:
                self._label(market.token_ids, market.outcomes, market.question)
        await self._follow({cid: m.token_ids for cid, m in listed.items() if cid not in self.markets})
        gone = [cid for cid in self.markets if cid not in listed and cid not in self._resolved_at]
        if gone:
            await self._settle(gone)
        self.listed.set()

    async def _settle(self, gone: list[str]) -> None:
        # Followed markets the listing no longer shows: resolved (winner if Gamma knows it) or out of the filter
        try:
            found: dict[str, GammaMarket] = {
                m.condition_id: m for m in await markets_by_condition_ids(self.http, gone, self.gamma_url)
            }
        except GammaError as exc:
            logger.warning("looking up %d markets gone from the listing failed: %s", len(gone), exc)
            return
        left = []
        for cid in gone:
            market = found.get(cid)
            if market is None or market.closed:
                self.counters["resolved_by_listing"] += 1
                self._resolve(cid, market.winner if market is not None else None)
            else:
                left.append(cid)
        if left:
            self.counters["left_filter"] += len(left)
            await self._drop(left)

    async def _follow(self, markets: dict[str, tuple[str, ...]]) -> None:
        tokens: list[str] = []
        for condition_id, ids in markets.items():
            if condition_id in self.markets or condition_id in self._resolved_at:
                continue
            self.markets[condition_id] = ids
            tokens.extend(ids)  # a market's tokens side by side: they share a connection
        if not tokens:
            return
        try:
            if self._on_tokens is not None:
                self._on_tokens("subscribe", tokens)
            await self.client.subscribe(tokens)
        except CapacityError as exc:
            self.counters["capacity_full"] += 1
            logger.error("cannot follow %d more tokens: %s", len(tokens), exc)
            for condition_id in markets:
                self.markets.pop(condition_id, None)

    async def _drop(self, condition_ids: list[str]) -> None:
        tokens: list[str] = []
        for condition_id in condition_ids:
            self._resolved_at.pop(condition_id, None)
            tokens.extend(self.markets.pop(condition_id, ()))
        if self.bootstrap is not None:
            self.bootstrap.forget(tokens)
        for token in tokens:
            self.labels.pop(token, None)
        self.counters["unsubscribed"] += len(tokens)
        if self._on_tokens is not None:
            self._on_tokens("unsubscribe", tokens)
        await self.client.unsubscribe(tokens)

    def _label(self, tokens: tuple[str, ...], outcomes: tuple[str, ...], question: str) -> None:
        for index, token in enumerate(tokens):
            outcome = outcomes[index] if index < len(outcomes) else f"#{index}"
            self.labels[token] = f"{outcome} {question}".strip()

    def _maybe_waiting(self, bootstrap: RestBootstrap) -> list[str]:
        # A token without a book is awaited by its connection, about to be re-driven, on a connection that
        # is down, or already followed by the bootstrap: only those rows are read, not every row
        owner = self.client._owner
        candidates = dict.fromkeys(bootstrap.waiting_since)
        for shard in self.client._shards:
            candidates.update(dict.fromkeys(shard.maybe_waiting()))
        return [token for token in candidates if token in owner]

    def _connection(self, token: str) -> object | None:
        # The open socket that delivers a token's deltas and how often its connection went silent: a REST book is
        # merged only if the same socket delivered all along, never silent meanwhile (None: no open socket)
        shard = self.client._owner.get(token)
        if shard is None or not shard.up or shard.socket is None:
            return None
        return (shard.socket, shard.silences)

    def _rest_loaded(self, token: str) -> None:
        # Its connection turns the row STALE on a silence: no fresh book of it may come to replace the deltas lost
        shard = self.client._owner.get(token)
        if shard is not None:
            shard.rest_books.add(token)

    def _stop_awaiting(self, tokens: list[str]) -> None:
        # The REST bootstrap takes over: a further miss of these tokens must not rebuild their connection
        # (and disturb every neighbour); if the REST book does not come, the bootstrap asks again
        owner = self.client._owner
        for token in tokens:
            shard = owner.get(token)
            if shard is not None:
                shard.awaiting.pop(token, None)
                shard.redriven.discard(token)

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("exchange follower task %s failed", task.get_name(), exc_info=task.exception())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _ids(value: Any) -> tuple[str, ...]:
    # A list of ids, or a JSON-encoded list (Gamma's habit, seen on the channel too)
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return ()
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str) and TOKEN_ID.fullmatch(item))
