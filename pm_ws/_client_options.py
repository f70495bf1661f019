"""Checks of MarketClient's constructor parameters: a setting the client cannot run is refused at construction.

Each check returns the value the client keeps, or raises ``TypeError`` (wrong kind of value) or
``ValueError`` (right kind, out of range) naming the parameter.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

from .backoff import ExponentialBackoff

MIN_PING_INTERVAL = 0.05  # seconds: below this PING is a flood, not a keep-alive
SWITCHABLE = ("confirm_interval", "write_timeout")  # deadlines that None or inf switches off

BackoffFactory = Callable[[], ExponentialBackoff]


def seconds(name: str, value: object, *, minimum: float = 0.0, zero: bool = False) -> float:
    """A duration: a finite real number > 0 (>= 0 with ``zero``) and >= ``minimum``; None or inf for a
    :data:`SWITCHABLE` one means off and is kept as ``inf``."""
    if value is None and name in SWITCHABLE:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, was {value!r}")
    value = float(value)
    if value == math.inf and name in SWITCHABLE:
        return math.inf
    if not (math.isfinite(value) and (value > 0 or zero and value == 0) and value >= minimum):
        bound = f">= {minimum:g}" if minimum or zero else "> 0"
        off = " (None or inf switches it off)" if name in SWITCHABLE else ""
        raise ValueError(f"{name} must be a finite number of seconds {bound}{off}, was {value!r}")
    return value


def count(name: str, value: object, minimum: int) -> int:
    """A whole number >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, was {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, was {value!r}")
    return int(value)


def market_url(url: object) -> SplitResult:
    """A ``ws://`` or ``wss://`` URL with a host and a valid port, split."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, was {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"url must be ws://host[:port]/... or wss://host[:port]/..., was {loggable(parts)!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port outside 0..65535
    except ValueError:
        raise ValueError(f"url has an invalid port: {loggable(parts)!r}") from None
    return parts


def loggable(parts: SplitResult) -> str:
    """The URL without its credentials (``user:password@``), fit for logs and messages."""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host).geturl()


def backoff_factory(backoff: BackoffFactory | ExponentialBackoff | None) -> BackoffFactory | None:
    """A factory of one :class:`ExponentialBackoff` per connection: a factory as given, or copies of an instance."""
    if backoff is None:
        return None
    if isinstance(backoff, ExponentialBackoff):
        return backoff.copy
    if not callable(backoff):
        raise TypeError(f"backoff must be an ExponentialBackoff or a zero-argument factory of one, was {backoff!r}")
    return backoff
