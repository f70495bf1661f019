"""The fake exchange's HTTP side on 127.0.0.1: Gamma's market listing and CLOB's books, with fault switches.

:class:`FakeRestServer` serves what a :class:`~pm_ws.testing.FakeMarketServer` simulates, so the
listing, the WebSocket and the REST books always agree:

- ``GET /markets/keyset``: the active markets (``closed=false``) or the resolved ones
  (``closed=true``), by ascending numeric id, ``limit`` clamped to 100, ``after_cursor`` from the
  previous page's ``next_cursor`` (absent on the last page); filters ``condition_ids``, ``tag_id``,
  ``volume_num_min`` and ``liquidity_num_min``. Every third market has no order book
  (``enableOrderBook`` false) unless ``all_order_books`` is set. Markets carry ``volumeNum``
  (1,000 × (id mod 10)), ``liquidityNum`` (100 × (id mod 7)) and one tag (id mod 3 + 1).
- ``GET /book?token_id=`` and ``POST /books`` (``[{"token_id": ...}, ...]``): the server's current
  book in the CLOB shape, levels worst to best, timestamp now; 404 for an unknown token.

Fault switches: :meth:`~FakeRestServer.set_delay` (slow answers), :meth:`~FakeRestServer.hold_books`
(a book snapshot sent late, older than the WebSocket's deltas meanwhile), :meth:`~FakeRestServer.fail_next`
(429 with ``Retry-After`` or any 5xx for the next n requests), :meth:`~FakeRestServer.garble_next`
(malformed JSON), :attr:`~FakeRestServer.between_pages` (a callback run after each listing page, e.g.
to open or resolve markets mid-listing) and :attr:`~FakeRestServer.repeat_last` (each page repeats
the previous page's last market, as an offset-paginated listing does when a market opens ahead).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from ._decimal_text import PRICE_DECIMALS, SIZE_DECIMALS, units_text
from ._loopback import LoopbackServer

__all__ = ["FakeRestServer"]

PAGE_LIMIT = 100


class MarketSource(Protocol):
    """What is served of a :class:`~pm_ws.testing.FakeMarketServer` (not imported: testing re-exports this module)."""

    @property
    def markets(self) -> list[Any]: ...  # FakeMarket: (condition_id, yes_id, no_id)

    @property
    def resolved(self) -> dict[str, str | None]: ...

    def truth(self, token_id: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]: ...

    def tick(self, token_id: str) -> int: ...

    def condition_id(self, token_id: str) -> str: ...


class FakeRestServer(LoopbackServer):
    """Gamma and CLOB REST on 127.0.0.1 for the markets of ``market_server``; :attr:`url` is both the Gamma
    and the CLOB base URL.

    Parameters
    ----------
    market_server : pm_ws.testing.FakeMarketServer
        The simulated exchange whose markets and books are served.
    host, port : str, int
        Loopback address; port 0 picks a free one (read :attr:`url`).
    all_order_books : bool
        Every market has an order book (otherwise every third one has none, as on Gamma).
    """

    SCHEME = "http"

    def __init__(
        self, market_server: MarketSource, *, host: str = "127.0.0.1", port: int = 0, all_order_books: bool = False
    ) -> None:
        super().__init__(host, port)
        self.market_server = market_server
        self.all_order_books = all_order_books
        self._runner: web.AppRunner | None = None
        self.delay = 0.0
        self.hold = 0.0  # seconds a rendered book answer waits before it is sent
        self._failures: list[tuple[int, float | None]] = []  # (status, Retry-After) for the next requests
        self._garbled = 0
        self.between_pages: Callable[[], Any] | None = None  # may return an awaitable
        self.repeat_last = False
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in arrival order

    # ------------------------------------------------------------------ lifecycle

    async def _listen(self) -> int:
        app = web.Application()
        app.router.add_get("/markets/keyset", self._markets)
        app.router.add_get("/book", self._book)
        app.router.add_post("/books", self._books)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port: int = self._runner.addresses[0][1]
        return port

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ fault switches

    def set_delay(self, seconds: float) -> None:
        """Answer every request ``seconds`` late (0: at once)."""
        self.delay = seconds

    def hold_books(self, seconds: float) -> None:
        """Take each ``/book``/``/books`` snapshot at once but send it ``seconds`` later (0: at once):
        the WebSocket's deltas meanwhile are newer than the snapshot."""
        self.hold = seconds

    def fail_next(self, n: int = 1, status: int = 429, retry_after: float | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (and a ``Retry-After`` header when given)."""
        self._failures.extend([(status, retry_after)] * n)

    def garble_next(self, n: int = 1) -> None:
        """Answer the next ``n`` requests 200 with a body that is not JSON."""
        self._garbled += n

    # ------------------------------------------------------------------ Gamma

    def gamma_market(self, index: int) -> dict[str, Any]:
        """Market number ``index`` (0-based, id ``index + 1``) as Gamma lists it."""
        server = self.market_server
        market = server.markets[index]
        ident = index + 1
        winner = server.resolved.get(market.condition_id, "")
        closed = market.condition_id in server.resolved
        prices = ["1" if token == winner else "0" for token in market[1:]] if closed else ["0.5", "0.5"]
        return {
            "id": str(ident),
            "conditionId": market.condition_id,
            "question": f"Market {ident}?",
            "slug": f"market-{ident}",
            "clobTokenIds": orjson.dumps(list(market[1:])).decode(),  # a JSON string, as Gamma sends it
            "outcomes": '["Yes", "No"]',
            "outcomePrices": orjson.dumps(prices).decode(),
            "active": True,
            "closed": closed,
            "enableOrderBook": self.all_order_books or ident % 3 != 0,
            "volumeNum": 1000.0 * (ident % 10),
            "liquidityNum": 100.0 * (ident % 7),
            "tags": [{"id": str(ident % 3 + 1)}],
        }

    async def _markets(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        if fault is not None:
            return fault
        query = request.query
        limit = min(int(query.get("limit", "20")), PAGE_LIMIT)
        after = int(query.get("after_cursor", "0"))
        closed = query.get("closed")
        wanted_ids = set(query["condition_ids"].split(",")) if "condition_ids" in query else None
        keep: list[dict[str, Any]] = []
        for index in range(after, len(self.market_server.markets)):  # id = index + 1: keyset by id
            market = self.gamma_market(index)
            if not _kept(market, query, closed, wanted_ids):
                continue
            keep.append(market)
            if len(keep) > limit:
                break
        page = keep[:limit]
        body: dict[str, Any] = {"markets": [self.gamma_market(after - 1), *page] if self.repeat_last and after else page}
        if len(keep) > limit:
            body["next_cursor"] = page[-1]["id"]
        response = web.json_response(body, dumps=_dumps)
        if self.between_pages is not None:
            result = self.between_pages()
            if asyncio.iscoroutine(result):
                await result
        return response

    # ------------------------------------------------------------------ CLOB

    def clob_book(self, token_id: str) -> dict[str, Any]:
        """The server's current book of ``token_id`` as ``GET /book`` answers it (KeyError: unknown)."""
        server = self.market_server
        bids, asks = server.truth(token_id)  # best first; the wire is worst first
        condition_id = server.condition_id(token_id)
        return {
            "market": condition_id,
            "asset_id": token_id,
            "timestamp": str(time.time_ns() // 1_000_000),
            "hash": "0" * 40,
            "bids": [_level(price, size) for price, size in reversed(bids)],
            "asks": [_level(price, size) for price, size in reversed(asks)],
            "min_order_size": "5",
            "tick_size": units_text(server.tick(token_id), PRICE_DECIMALS),
            "neg_risk": False,
            "last_trade_price": "0.5",
        }

    async def _book(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        if fault is not None:
            return fault
        try:
            book = self.clob_book(request.query.get("token_id", ""))
        except KeyError:
            return web.json_response({"error": "No orderbook exists for the requested token id"}, status=404)
        await asyncio.sleep(self.hold)
        return web.json_response(book, dumps=_dumps)

    async def _books(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        if fault is not None:
            return fault
        try:
            asked = orjson.loads(await request.read())
            tokens = [str(item["token_id"]) for item in asked]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return web.json_response({"error": "Invalid payload"}, status=400)
        books = []
        for token in tokens:
            try:
                books.append(self.clob_book(token))
            except KeyError:
                continue  # unknown tokens are left out of the answer
        await asyncio.sleep(self.hold)
        return web.json_response(books, dumps=_dumps)

    # ------------------------------------------------------------------ faults

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        self.requests.append((request.method, request.path))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._failures:
            status, retry_after = self._failures.pop(0)
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
            return web.Response(status=status, text="try again later", headers=headers)
        if self._garbled:
            self._garbled -= 1
            return web.Response(status=200, text="<html>502 Bad Gateway</html>", content_type="application/json")
        return None


def _kept(market: dict[str, Any], query: Any, closed: str | None, wanted_ids: set[str] | None) -> bool:
    if wanted_ids is not None:
        return market["conditionId"] in wanted_ids  # a lookup by id returns open and closed markets
    if closed == "false" and market["closed"] or closed == "true" and not market["closed"]:
        return False
    if "tag_id" in query and query["tag_id"] not in {tag["id"] for tag in market["tags"]}:
        return False
    if "volume_num_min" in query and market["volumeNum"] < float(query["volume_num_min"]):
        return False
    return not ("liquidity_num_min" in query and market["liquidityNum"] < float(query["liquidity_num_min"]))


def _level(price: int, size: int) -> dict[str, str]:
    return {"price": units_text(price, PRICE_DECIMALS), "size": units_text(size, SIZE_DECIMALS)}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
