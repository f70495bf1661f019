"""The async HTTP client behind every REST call (Gamma listing and lookups, CLOB books): aiohttp.

One :class:`HttpClient` holds one ``aiohttp.ClientSession`` (keep-alive connections reused across
requests), a timeout per attempt, retries with exponential backoff on 429, 5xx, timeouts and
connection errors (a ``Retry-After`` header is honoured, capped), and ONE request-rate limit shared
by every request it makes, so discovery, re-listing and REST bootstraps together stay under it.
A body that is not JSON is an error at once, never retried: the server answered, and asking again
rarely helps. aiohttp is the ``pm_ws[exchange]`` extra; importing this module without it raises
:class:`ExchangeExtraMissing` with the install line.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from types import TracebackType
from typing import Any

import orjson

from .errors import PmWsError

EXTRA_HINT = "pip install 'pm_ws[exchange]'"


class ExchangeExtraMissing(PmWsError, ImportError):
    """The REST features need the ``pm_ws[exchange]`` extra (aiohttp)."""


try:
    import aiohttp
except ImportError as exc:  # pragma: no cover - exercised only by an install without the extra
    raise ExchangeExtraMissing(f"REST access (Gamma, CLOB books) needs aiohttp: {EXTRA_HINT}") from exc

USER_AGENT = "pm-ws (https://github.com/pm_ws)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_MAX = 60.0  # seconds: a larger Retry-After is capped (a caller's deadline should decide)


class HttpError(PmWsError):
    """A request failed for good: ``status`` is the last HTTP status, None when none came."""

    def __init__(self, message: str, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # what went wrong, without the URL


class NotJsonError(HttpError):
    """The server answered 2xx with a body that is not JSON."""


class RateLimit:
    """A token bucket: at most ``rate`` requests per second on average, bursts of ``burst``.

    ``acquire`` waits its turn; waiters are served in call order.
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        if not rate > 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, were {rate!r} and {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()
        self.waited = 0.0  # seconds spent waiting, all callers together

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1:
                delay = (1 - self._tokens) / self.rate
                self.waited += delay
                await asyncio.sleep(delay)
                self._stamp = time.monotonic()
                self._tokens = 1.0
            self._tokens -= 1


class HttpClient:
    """JSON over HTTP with connection reuse, timeouts, retries and one global rate limit.

    Parameters
    ----------
    timeout : float
        Seconds per attempt (connect + answer).
    retries : int
        Attempts after the first one for 429, 5xx, timeouts and connection errors.
    backoff : float
        First retry delay in seconds, doubled per retry (with jitter), at most ``backoff_max``;
        a ``Retry-After`` header replaces it (capped at 60 s).
    rate : float
        Requests per second, all requests of this client together.
    burst : int
        Requests that may go at once before ``rate`` applies.
    max_connections : int
        Open connections kept at most (per client).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.25,
        backoff_max: float = 8.0,
        rate: float = 25.0,
        burst: int = 10,
        max_connections: int = 16,
    ) -> None:
        if not timeout > 0 or retries < 0 or backoff < 0 or max_connections < 1:
            raise ValueError("timeout must be > 0, retries and backoff >= 0, max_connections >= 1")
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.backoff_max = float(backoff_max)
        self.limit = RateLimit(rate, burst)
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self.counters = {"requests": 0, "retries": 0, "throttled": 0, "server_errors": 0, "failures": 0}

    async def get_json(self, url: str, params: dict[str, str] | None = None) -> Any:
        """GET ``url`` (with query ``params``) and decode its JSON answer.

        Raises
        ------
        HttpError
            An HTTP error status (after the retries for 429/5xx), or the server unreachable.
        NotJsonError
            A 2xx answer that is not JSON.
        """
        return await self._request("GET", url, params, None)

    async def post_json(self, url: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``url`` and decode its JSON answer (same errors as :meth:`get_json`)."""
        return await self._request("POST", url, None, orjson.dumps(body))

    def stats(self) -> dict[str, Any]:
        """Counters: requests sent, retries, 429s, 5xx answers, failed calls, seconds waited on the rate limit."""
        return {**self.counters, "rate_waited": round(self.limit.waited, 3)}

    async def close(self) -> None:
        """Close the pooled connections (the client opens new ones if used again)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _open_session(self) -> aiohttp.ClientSession:
        # Created on first use: a session binds to the running loop
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                raise_for_status=False,
            )
        return self._session

    async def _request(self, method: str, url: str, params: dict[str, str] | None, data: bytes | None) -> Any:
        counters = self.counters
        headers = {"Content-Type": "application/json"} if data is not None else None
        for attempt in range(self.retries + 1):
            await self.limit.acquire()
            counters["requests"] += 1
            retry_after: float | None = None
            try:
                async with self._open_session().request(
                    method, url, params=params, data=data, headers=headers
                ) as response:
                    status = response.status
                    body = await response.read()
                    if 200 <= status < 300:
                        return _decode(body, url)
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                problem = f"answered HTTP {status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                status, reason = None, f"{type(exc).__name__} {exc}".rstrip()
                problem = f"cannot be reached: {reason}"
            if status is not None and status not in RETRY_STATUSES:
                counters["failures"] += 1
                raise HttpError(f"{url} {problem}", status, problem)
            if status == 429:
                counters["throttled"] += 1
            elif status is not None:
                counters["server_errors"] += 1
            if attempt == self.retries:
                counters["failures"] += 1
                raise HttpError(f"{url} {problem} (after {self.retries} retries)", status, problem)
            counters["retries"] += 1
            await asyncio.sleep(self._delay(attempt, retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        ceiling = min(self.backoff_max, self.backoff * 2**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # equal jitter: never zero, never in lockstep


def _decode(body: bytes, url: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise NotJsonError(f"{url} answered something that is not JSON") from None


def _retry_after(value: str | None) -> float | None:
    # Seconds ("3") or an HTTP date; None when absent or unreadable
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)
