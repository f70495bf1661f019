"""Polymarket's public Gamma REST API: every active market (paginated), or the markets of a slug or condition id.

Requests go through :class:`~pm_ws._http.HttpClient` (aiohttp: pooled connections, timeouts, retries
honouring ``Retry-After``, one rate limit); nothing here is on the market-data path. Base URLs are
parameters so tests point them at the loopback fake (:mod:`pm_ws._fake_rest`).

The full listing walks ``GET /markets/keyset`` (at most ``PAGE_LIMIT`` markets a page; the answer's
``next_cursor`` goes back as ``after_cursor``; absent on the last page). Gamma's documented limits
(docs.polymarket.com/api-reference/rate-limits): ``/markets`` 300 requests per 10 s, listings of
``/markets`` and ``/events`` together 900 per 10 s, Gamma as a whole 4,000 per 10 s, enforced by
Cloudflare throttling. Markets open and close while a listing runs: a market is kept once (by
condition id) whatever the pages repeat, and the follower's periodic re-listing catches the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .errors import PmWsError

if TYPE_CHECKING:  # aiohttp is the pm_ws[exchange] extra: pm-ws starts without it, a Gamma call then says so
    from ._http import HttpClient

DEFAULT_GAMMA_URL = "https://gamma-api.polymarket.com"
DEFAULT_CLOB_URL = "https://clob.polymarket.com"  # the CLOB REST API (books), for the REST bootstrap
PAGE_LIMIT = 100  # markets per keyset page: Gamma clamps larger pages to this
LOOKUP_RETRIES = 2  # a one-off lookup (the CLI's --slug) gives up sooner than a listing
DEFAULT_LOOKUP_TIMEOUT = 15.0  # seconds for a whole lookup, retries included (a server trickling bytes too)


class GammaError(PmWsError):
    """The Gamma API could not be reached or answered something unusable."""


class MarketNotFoundError(PmWsError, LookupError):
    """No market (with CLOB token ids) matches the slug or condition id asked for."""


@dataclass(frozen=True)
class GammaMarket:
    """One binary (or multi-outcome) market as Gamma describes it."""

    condition_id: str
    question: str
    slug: str
    token_ids: tuple[str, ...]  # clobTokenIds, in outcome order
    outcomes: tuple[str, ...]  # "Yes", "No", ... (same length as token_ids when Gamma sends them)
    closed: bool = False
    winner: str | None = None  # the winning token id of a resolved market (outcomePrices "1"), if known


@dataclass(frozen=True)
class MarketFilter:
    """What a full listing keeps: Gamma filters on the server side, the order book flag on ours.

    ``tag_id`` (Gamma's numeric tag), ``volume_min`` and ``liquidity_min`` (USDC) map to Gamma's
    ``tag_id``, ``volume_num_min`` and ``liquidity_num_min``. Markets without an order book
    (``enableOrderBook`` false) or without CLOB token ids are always left out.
    """

    tag_id: int | None = None
    volume_min: float | None = None
    liquidity_min: float | None = None

    def query(self) -> dict[str, str]:
        query = {"closed": "false", "active": "true", "limit": str(PAGE_LIMIT)}
        if self.tag_id is not None:
            query["tag_id"] = str(self.tag_id)
        if self.volume_min is not None:
            query["volume_num_min"] = repr(float(self.volume_min))
        if self.liquidity_min is not None:
            query["liquidity_num_min"] = repr(float(self.liquidity_min))
        return query


async def list_markets(
    http: HttpClient, base_url: str = DEFAULT_GAMMA_URL, where: MarketFilter = MarketFilter()
) -> list[GammaMarket]:
    """Every active, order-book-enabled market that ``where`` keeps, each once, in Gamma's order.

    Raises
    ------
    GammaError
        A page could not be fetched (after the client's retries) or is not a keyset page.
    """
    found: dict[str, GammaMarket] = {}
    async for page in _keyset_pages(http, base_url, where.query()):
        for raw in page:
            if raw.get("enableOrderBook") is False or raw.get("closed") is True:
                continue
            market = _market(raw)
            if market.token_ids and market.condition_id not in found:  # pages may repeat an entry
                found[market.condition_id] = market
    return list(found.values())


async def markets_by_condition_ids(
    http: HttpClient, condition_ids: list[str], base_url: str = DEFAULT_GAMMA_URL
) -> list[GammaMarket]:
    """The markets of these condition ids, open or closed (closed ones carry their winner when known)."""
    markets: list[GammaMarket] = []
    for start in range(0, len(condition_ids), PAGE_LIMIT):  # Gamma takes at most 100 ids a request
        query = {"condition_ids": ",".join(condition_ids[start : start + PAGE_LIMIT]), "limit": str(PAGE_LIMIT)}
        async for page in _keyset_pages(http, base_url, query):
            markets.extend(_market(raw) for raw in page)
    return markets


async def _keyset_pages(http: HttpClient, base_url: str, query: dict[str, str]) -> AsyncIterator[list[dict[str, Any]]]:
    cursor: str | None = None
    while True:
        params = query if cursor is None else {**query, "after_cursor": cursor}
        answer = await _get_json(base_url, "/markets/keyset", params, http)
        if not isinstance(answer, dict):
            raise GammaError("the Gamma API answered /markets/keyset with something that is not a keyset page")
        yield _as_list(answer.get("markets"), "/markets/keyset")
        next_cursor = answer.get("next_cursor")
        if not next_cursor or not isinstance(next_cursor, str) or next_cursor == cursor:
            return  # the last page (a cursor that does not move would loop forever)
        cursor = next_cursor


async def markets_by_slug(
    slug: str, base_url: str = DEFAULT_GAMMA_URL, *, timeout: float = 10.0, http: HttpClient | None = None
) -> list[GammaMarket]:
    """Find the markets of a market slug, or of an event slug (every market of that event).

    Raises
    ------
    MarketNotFoundError
        Neither a market nor an event has that slug.
    GammaError
        The API could not be reached or answered something that is not a list of markets.
    """
    async with _client(http, timeout) as client:
        markets = _as_list(await _get_json(base_url, "/markets", {"slug": slug}, client), "/markets")
        if not markets:
            events = await _get_json(base_url, "/events", {"slug": slug}, client)
            markets = [
                market
                for event in _as_list(events, "/events")
                for market in _as_list(event.get("markets", []), "/events")
            ]
    return _with_tokens(markets, f"slug {slug!r}", base_url)


async def markets_by_condition_id(
    condition_id: str, base_url: str = DEFAULT_GAMMA_URL, *, timeout: float = 10.0, http: HttpClient | None = None
) -> list[GammaMarket]:
    """Find the market with this condition id (``0x`` + 64 hex digits).

    Raises
    ------
    MarketNotFoundError
        No market has that condition id.
    GammaError
        The API could not be reached or answered something that is not a list of markets.
    """
    async with _client(http, timeout) as client:
        answer = await _get_json(base_url, "/markets", {"condition_ids": condition_id}, client)
    return _with_tokens(_as_list(answer, "/markets"), f"condition id {condition_id!r}", base_url)


class _client:  # noqa: N801 - used like a function: `async with _client(http, timeout) as client`
    """The caller's client, or a one-off client closed on exit."""

    def __init__(self, http: HttpClient | None, timeout: float) -> None:
        self.owned = http is None
        self.http = http if http is not None else _http_module().HttpClient(timeout=timeout, retries=LOOKUP_RETRIES)

    async def __aenter__(self) -> HttpClient:
        return self.http

    async def __aexit__(self, *exc_info: object) -> None:
        if self.owned:
            await self.http.close()


async def _get_json(base_url: str, path: str, query: dict[str, str], http: HttpClient) -> Any:
    if not base_url.startswith(("http://", "https://")):
        raise GammaError(f"the Gamma API URL must start with http:// or https://, was {base_url!r}")
    url = f"{base_url.rstrip('/')}{path}"
    errors = _http_module()
    try:
        return await http.get_json(url, query)
    except errors.NotJsonError:
        raise GammaError(f"the Gamma API answered something that is not JSON for {url}") from None
    except errors.HttpError as exc:
        if exc.status is not None:
            raise GammaError(f"Gamma API answered HTTP {exc.status} for {url}") from None
        raise GammaError(f"cannot reach the Gamma API at {url}: {exc.reason}") from None


def _http_module() -> Any:
    try:
        from . import _http
    except ImportError as exc:  # the extra is missing: a GammaError the CLI reports in one line
        raise GammaError(str(exc)) from None
    return _http


def _as_list(value: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise GammaError(f"the Gamma API answered {path} with something that is not a list of objects")
    return value


def _with_tokens(markets: list[dict[str, Any]], what: str, base_url: str) -> list[GammaMarket]:
    if not markets:
        raise MarketNotFoundError(f"no market with {what} on {base_url}")
    found = [_market(raw) for raw in markets]
    found = [market for market in found if market.token_ids]
    if not found:
        raise MarketNotFoundError(f"the market with {what} has no CLOB token ids (not traded on the order book)")
    return found


def _market(raw: dict[str, Any]) -> GammaMarket:
    token_ids = string_list(raw.get("clobTokenIds"))
    prices = string_list(raw.get("outcomePrices"))
    closed = raw.get("closed") is True
    winners = [token for token, price in zip(token_ids, prices) if price in ("1", "1.0")]
    return GammaMarket(
        condition_id=str(raw.get("conditionId", "")),
        question=str(raw.get("question", "")),
        slug=str(raw.get("slug", "")),
        token_ids=token_ids,
        outcomes=string_list(raw.get("outcomes")),
        closed=closed,
        winner=winners[0] if closed and len(winners) == 1 else None,
    )


def string_list(value: Any) -> tuple[str, ...]:
    """The strings of a list, or of a JSON-encoded list (Gamma's ``clobTokenIds``, ``outcomes``); () otherwise."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value) if value else []
        except orjson.JSONDecodeError:
            return ()
    if not isinstance(value, list):
        return ()
    return tuple(str(item) for item in value if isinstance(item, (str, int)))
