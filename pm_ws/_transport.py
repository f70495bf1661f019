"""The one place the socket library is used: open a websocket; send, read, close or abort it.

A shard sees its socket only as a :class:`Socket` and catches only :data:`CONNECT_ERRORS` and
:data:`SocketClosed`. Two transports back it: ``websockets`` (the default) and picows
(``pm_ws._transport_picows``, imported only when chosen: the plain install does not have it).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Callable
from ssl import SSLContext
from typing import Any, Literal, Protocol, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State as SocketState

CLOSE_TIMEOUT = 1.0  # seconds a clean close handshake may take before the socket is aborted

TRANSPORTS = ("websockets", "picows")  # MarketClient(transport=...): the first is the default


CONNECT_ERRORS = (OSError, asyncio.TimeoutError, WebSocketException)  # a failed attempt: log, back off
SocketClosed = ConnectionClosed  # what send() and reading raise once the socket is closed (picows: a subclass)


class Socket(Protocol):
    """One open websocket as a shard uses it."""

    on_end: Callable[[], None] | None
    """Called synchronously, inside the callback that learns the peer sends nothing more."""

    @property
    def close_code(self) -> int | None:
        """The close code once the socket is closed (None before, or without a close frame)."""

    @property
    def local_address(self) -> Any:
        """This end's socket address."""

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        """The inbound frames, until the socket is closed."""

    async def send(self, message: str) -> None:
        """Send one text frame; raises :data:`SocketClosed` once the socket is closed."""

    async def close(self) -> None:
        """Close cleanly (the handshake is bounded by ``CLOSE_TIMEOUT``)."""

    def abort(self) -> None:
        """Drop the connection now, without a close handshake (no-op once closed)."""


def check_transport(transport: str, *, compression: bool) -> None:
    """Raise unless ``transport`` is one of :data:`TRANSPORTS` that is installed and can honour the settings."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, was {transport!r}")
    if transport == "picows":
        if importlib.util.find_spec("picows") is None:
            raise ImportError("transport='picows' needs picows: pip install 'pm_ws[fast]'")
        if compression:
            raise ValueError("transport='picows' has no permessage-deflate: use compression=False")


async def open_socket(
    url: str,
    *,
    transport: str,
    ssl: SSLContext | None,
    proxy: str | Literal[True] | None,
    compression: bool,
    max_frame_bytes: int,
    open_timeout: float,
) -> Socket:
    """Connect to ``url`` over ``transport`` (through ``proxy`` unless None; True: the environment's); raises
    one of :data:`CONNECT_ERRORS` when the attempt fails."""
    if transport == "picows":
        from . import _transport_picows

        return await _transport_picows.open_socket(
            url,
            ssl=ssl,
            proxy=proxy,
            max_frame_bytes=max_frame_bytes,
            open_timeout=open_timeout,
            close_timeout=CLOSE_TIMEOUT,
        )
    tls: dict[str, Any] = {} if ssl is None else {"ssl": ssl}  # websockets: ssl=None means "no TLS" on wss://
    socket = await connect(
        url,
        proxy=proxy,
        **tls,
        ping_interval=None,  # the server wants text PING; the shard's writer sends them
        ping_timeout=None,
        compression="deflate" if compression else None,
        max_size=max_frame_bytes,
        open_timeout=open_timeout,
        close_timeout=CLOSE_TIMEOUT,
        create_connection=WebsocketsSocket,
    )
    return cast(WebsocketsSocket, socket)


class WebsocketsSocket(ClientConnection):
    """A websockets client connection that reports the end of its data stream synchronously.

    ``on_end`` runs inside the protocol callback that sees a close frame, the end of the stream or
    the lost transport, so the tokens go STALE before any other task (the trader's) can run again.
    """

    on_end: Callable[[], None] | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.on_end is not None and self.protocol.state is not SocketState.OPEN:
            self.on_end()

    def eof_received(self) -> None:
        super().eof_received()
        if self.on_end is not None:  # the peer sends nothing more (connection_lost comes later)
            self.on_end()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_end is not None:
            self.on_end()
        super().connection_lost(exc)

    def abort(self) -> None:
        if self.state is not SocketState.CLOSED:
            self.transport.abort()
