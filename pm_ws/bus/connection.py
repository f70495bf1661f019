"""One NATS connection for a publisher or a consumer: reconnect forever, log without credentials."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client

logger = logging.getLogger("pm_ws.bus")

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
CONNECT_TIMEOUT = 5.0  # seconds for the first connection (refused credentials are retried until then)
RECONNECT_WAIT = 0.25  # seconds between reconnect attempts: NATS restarts are short, staleness is decided elsewhere
_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")


def redact(text: object) -> str:
    """``text`` with any ``user:password@`` or ``token@`` of a URL replaced by ``***@``."""
    return _USERINFO.sub("***@", str(text))


async def connect(
    servers: str | list[str],
    name: str,
    on_disconnected: Callable[[], None],
    on_reconnected: Callable[[], None],
    options: dict[str, Any],
) -> Client:
    """Connect to ``servers`` with ``options`` (``user``/``password``, ``token``, ``nkeys_seed``,
    ``user_credentials``, ``tls`` ... as ``nats.connect`` takes them), reconnecting forever.

    Credentials go to NATS only: every log line passes through :func:`redact`.
    """

    async def error_cb(exc: Exception) -> None:
        logger.warning("%s: NATS error: %s", name, redact(exc))

    async def disconnected_cb() -> None:
        logger.warning("%s: disconnected from NATS", name)
        on_disconnected()

    async def reconnected_cb() -> None:
        logger.info("%s: reconnected to NATS", name)
        on_reconnected()

    settings: dict[str, Any] = {"max_reconnect_attempts": -1, "reconnect_time_wait": RECONNECT_WAIT}
    settings.update(options)
    callbacks: dict[str, Callable[..., Awaitable[None]]] = {
        "error_cb": error_cb, "disconnected_cb": disconnected_cb, "reconnected_cb": reconnected_cb,
    }  # fmt: skip
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await nats.connect(servers, name=name, **callbacks, **settings)
    except Exception as exc:  # the servers list may carry credentials: say which without them
        where = redact(servers if isinstance(servers, str) else ",".join(servers))
        # refused credentials are retried until the deadline too: a timeout says nothing more
        why = f"no connection within {CONNECT_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else redact(exc)
        raise ConnectionError(f"cannot connect to NATS at {where}: {why}") from None
