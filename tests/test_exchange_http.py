"""The HTTP side: HttpClient (retries, Retry-After, rate limit, timeouts) and the Gamma listing against FakeRestServer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from pm_ws._http import HttpClient, HttpError, NotJsonError, RateLimit, _retry_after
from pm_ws.gamma import GammaError, MarketFilter, list_markets, markets_by_condition_ids
from pm_ws.testing import FakeMarketServer, FakeRestServer


@pytest.fixture
async def rest() -> AsyncIterator[FakeRestServer]:
    server = FakeMarketServer(markets=250, seed=3, rate_hz=0, levels=3)
    async with FakeRestServer(server) as fake:
        yield fake


def fast_client(**options: float) -> HttpClient:
    defaults = {"timeout": 2.0, "retries": 3, "backoff": 0.01, "rate": 1000.0, "burst": 100}
    return HttpClient(**{**defaults, **options})  # type: ignore[arg-type]


def with_book(rest: FakeRestServer) -> list[str]:
    return [rest.gamma_market(i)["conditionId"] for i in range(len(rest.market_server.markets)) if (i + 1) % 3]


async def test_listing_walks_every_keyset_page_and_keeps_order_book_markets_only(rest: FakeRestServer) -> None:
    async with fast_client() as http:
        markets = await list_markets(http, rest.url)

    assert [m.condition_id for m in markets] == with_book(rest)
    assert all(len(m.token_ids) == 2 and m.outcomes == ("Yes", "No") for m in markets)
    assert rest.requests == [("GET", "/markets/keyset")] * 3  # 250 markets, 100 a page


async def test_listing_filters_go_to_gamma(rest: FakeRestServer) -> None:
    async with fast_client() as http:
        tagged = await list_markets(http, rest.url, MarketFilter(tag_id=2))
        busy = await list_markets(http, rest.url, MarketFilter(volume_min=8000, liquidity_min=300))

    assert tagged and all(int(rest.gamma_market(int(m.slug.split("-")[1]) - 1)["id"]) % 3 == 1 for m in tagged)
    ids = [int(m.slug.split("-")[1]) for m in busy]
    assert ids and all(i % 10 >= 8 and i % 7 >= 3 and i % 3 for i in ids)


async def test_markets_opening_and_resolving_mid_listing_each_kept_once(rest: FakeRestServer) -> None:
    server = rest.market_server
    first = server.markets[0].condition_id
    opened = []

    async def churn() -> None:
        if not opened:  # after the first page only
            opened.append(await server.open_market())
            await server.resolve_market(first)

    rest.between_pages = churn
    async with fast_client() as http:
        markets = await list_markets(http, rest.url)

    ids = [m.condition_id for m in markets]
    assert len(ids) == len(set(ids))
    # everything active throughout is there; what opened during the walk is there (keyset: appended)
    assert set(with_book(rest)) - {first} - {m.condition_id for m in opened} <= set(ids)
    assert opened[0].condition_id in ids


async def test_a_page_repeating_the_previous_last_market_is_deduplicated(rest: FakeRestServer) -> None:
    rest.repeat_last = True
    async with fast_client() as http:
        markets = await list_markets(http, rest.url)

    assert [m.condition_id for m in markets] == with_book(rest)


async def test_resolved_market_lookup_names_the_winner(rest: FakeRestServer) -> None:
    server = rest.market_server
    market = server.markets[4]
    await server.resolve_market(market.condition_id, market.no_id)
    async with fast_client() as http:
        found = await markets_by_condition_ids(http, [market.condition_id, server.markets[5].condition_id], rest.url)

    assert [(m.closed, m.winner) for m in found] == [(True, market.no_id), (False, None)]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_throttling_and_server_errors_are_retried(rest: FakeRestServer, status: int) -> None:
    rest.fail_next(2, status)
    async with fast_client() as http:
        markets = await list_markets(http, rest.url)
        stats = http.stats()

    assert len(markets) == len(with_book(rest))
    assert stats["retries"] == 2
    assert stats["throttled" if status == 429 else "server_errors"] == 2


async def test_retry_after_is_honoured(rest: FakeRestServer) -> None:
    rest.fail_next(1, 429, retry_after=0.4)
    async with fast_client() as http:
        started = time.monotonic()
        await http.get_json(f"{rest.url}/book", {"token_id": rest.market_server.token_ids[0]})
        elapsed = time.monotonic() - started

    assert elapsed >= 0.4


def test_retry_after_header_forms() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after("3600") == 60.0  # capped
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: at once
    assert _retry_after("soon") is None and _retry_after(None) is None


async def test_errors_past_the_retries_raise(rest: FakeRestServer) -> None:
    rest.fail_next(10, 503)
    async with fast_client(retries=2) as http:
        with pytest.raises(GammaError, match="Gamma API answered HTTP 503"):
            await list_markets(http, rest.url)
        assert http.stats()["failures"] == 1


async def test_client_errors_are_not_retried(rest: FakeRestServer) -> None:
    async with fast_client() as http:
        with pytest.raises(HttpError) as raised:
            await http.get_json(f"{rest.url}/book", {"token_id": "404"})
        assert raised.value.status == 404
        assert http.stats()["retries"] == 0


async def test_malformed_json_is_an_error_at_once(rest: FakeRestServer) -> None:
    rest.garble_next(1)
    async with fast_client() as http:
        with pytest.raises(GammaError, match="not JSON"):
            await list_markets(http, rest.url)
        with pytest.raises(NotJsonError):
            rest.garble_next(1)
            await http.get_json(f"{rest.url}/book", {"token_id": rest.market_server.token_ids[0]})
        assert http.stats()["retries"] == 0


async def test_slow_answers_time_out_and_are_retried(rest: FakeRestServer) -> None:
    rest.set_delay(0.5)
    async with fast_client(timeout=0.1, retries=1) as http:
        with pytest.raises(HttpError, match="cannot be reached"):
            await http.get_json(f"{rest.url}/book", {"token_id": rest.market_server.token_ids[0]})
        assert http.stats()["retries"] == 1
    rest.set_delay(0.05)
    async with fast_client(timeout=1.0) as http:
        book = await http.get_json(f"{rest.url}/book", {"token_id": rest.market_server.token_ids[0]})
    assert book["asset_id"] == rest.market_server.token_ids[0]


async def test_the_rate_limit_spaces_requests() -> None:
    limit = RateLimit(rate=50, burst=2)
    started = time.monotonic()
    await asyncio.gather(*(limit.acquire() for _ in range(12)))
    assert time.monotonic() - started >= 10 / 50 * 0.9  # two at once, then 50 a second


async def test_clob_books_match_the_servers_truth(rest: FakeRestServer) -> None:
    server = rest.market_server
    tokens = server.token_ids[:4]
    async with fast_client() as http:
        one = await http.get_json(f"{rest.url}/book", {"token_id": tokens[0]})
        many = await http.post_json(f"{rest.url}/books", [{"token_id": t} for t in [*tokens, "404"]])

    assert [book["asset_id"] for book in many] == tokens
    bids = [(round(float(level["price"]) * 10_000), round(float(level["size"]) * 1e6)) for level in one["bids"]]
    assert bids[::-1] == server.truth(tokens[0])[0]  # worst first on the wire, as the real CLOB
    assert {"market", "timestamp", "tick_size", "min_order_size", "neg_risk"} <= one.keys()


def test_no_request_leaves_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeRestServer(FakeMarketServer(markets=1, rate_hz=0), host="0.0.0.0")
