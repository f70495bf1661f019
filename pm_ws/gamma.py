"""Resolve market slugs and condition ids to CLOB token ids through Polymarket's public Gamma REST API.

Blocking ``urllib`` calls run in a worker thread (``asyncio.to_thread``); nothing here is on the
market-data path. The base URL is a parameter so tests can point it at a loopback fake.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from .errors import PmWsError

DEFAULT_GAMMA_URL = "https://gamma-api.polymarket.com"
USER_AGENT = "pm-ws (https://github.com/pm_ws)"


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


async def markets_by_slug(slug: str, base_url: str = DEFAULT_GAMMA_URL, *, timeout: float = 10.0) -> list[GammaMarket]:
    """Find the markets of a market slug, or of an event slug (every market of that event).

    Raises
    ------
    MarketNotFoundError
        Neither a market nor an event has that slug.
    GammaError
        The API could not be reached or answered something that is not a list of markets.
    """
    markets = await _get_markets(base_url, "/markets", {"slug": slug}, timeout)
    if not markets:
        events = await _get_json(base_url, "/events", {"slug": slug}, timeout)
        markets = [
            market for event in _as_list(events, "/events") for market in _as_list(event.get("markets", []), "/events")
        ]
    return _with_tokens(markets, f"slug {slug!r}", base_url)


async def markets_by_condition_id(
    condition_id: str, base_url: str = DEFAULT_GAMMA_URL, *, timeout: float = 10.0
) -> list[GammaMarket]:
    """Find the market with this condition id (``0x`` + 64 hex digits).

    Raises
    ------
    MarketNotFoundError
        No market has that condition id.
    GammaError
        The API could not be reached or answered something that is not a list of markets.
    """
    markets = await _get_markets(base_url, "/markets", {"condition_ids": condition_id}, timeout)
    return _with_tokens(markets, f"condition id {condition_id!r}", base_url)


async def _get_markets(base_url: str, path: str, query: dict[str, str], timeout: float) -> list[dict[str, Any]]:
    return _as_list(await _get_json(base_url, path, query, timeout), path)


async def _get_json(base_url: str, path: str, query: dict[str, str], timeout: float) -> Any:
    if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
        raise GammaError(f"the Gamma API URL must start with http:// or https://, was {base_url!r}")
    url = f"{base_url.rstrip('/')}{path}?{urllib.parse.urlencode(query)}"
    return await asyncio.to_thread(_fetch_json, url, timeout)


def _fetch_json(url: str, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise GammaError(f"Gamma API answered HTTP {exc.code} for {url}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GammaError(f"cannot reach the Gamma API at {url}: {reason}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise GammaError(f"the Gamma API answered something that is not JSON for {url}") from None


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
    return GammaMarket(
        condition_id=str(raw.get("conditionId", "")),
        question=str(raw.get("question", "")),
        slug=str(raw.get("slug", "")),
        token_ids=_string_list(raw.get("clobTokenIds")),
        outcomes=_string_list(raw.get("outcomes")),
    )


def _string_list(value: Any) -> tuple[str, ...]:
    # Gamma sends these as a JSON-encoded string ("[\"1\", \"2\"]"); other endpoints send a real list
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else []
        except ValueError:
            return ()
    if not isinstance(value, list):
        return ()
    return tuple(str(item) for item in value if isinstance(item, (str, int)))
