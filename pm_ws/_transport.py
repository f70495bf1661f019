"""The one place the socket library is used: open a websocket; send, read, close or abort it.

A shard sees its socket only as a :class:`Socket` and catches only :data:`CONNECT_ERRORS` and
:data:`SocketClosed`. Two transports back it: ``websockets`` (the default) and picows
(``pm_ws._transport_picows``, imported only when chosen: the plain install does not have it).
Both hand whole messages to a :class:`~pm_ws._inbox.FrameBuffer` inside the callback that parsed them, and
each received chunk's messages to the shard's ``deliver`` right there, so a burst of frames costs one call,
no task switch and no per-frame coroutine.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections import deque
from collections.abc import Callable
from ssl import SSLContext
from typing import Any, Literal, Protocol, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import State as SocketState

from ._inbox import FrameBuffer

CLOSE_TIMEOUT = 1.0  # seconds a clean close handshake may take before the socket is aborted

TRANSPORTS = ("websockets", "picows")  # MarketClient(transport=...): the first is the default


_TEXT, _BINARY, _CONTINUATION = Opcode.TEXT, Opcode.BINARY, Opcode.CONT

CONNECT_ERRORS = (OSError, asyncio.TimeoutError, WebSocketException)  # a failed attempt: log, back off
SocketClosed = ConnectionClosed  # what send() and reading raise once the socket is closed (picows: a subclass)


class Socket(Protocol):
    """One open websocket as a shard uses it."""

    on_end: Callable[[], None] | None
    """Called synchronously, inside the callback that learns the peer sends nothing more."""

    frames: deque[str | bytes]
    """The inbound messages received and not read yet, oldest first: the reader pops them."""

    deliver: Callable[[], None] | None
    """Called synchronously, inside the callback that queued a received chunk's messages (None: wake the reader)."""

    @property
    def close_code(self) -> int | None:
        """The close code once the socket is closed (None before, or without a close frame)."""

    @property
    def local_address(self) -> Any:
        """This end's socket address."""

    async def readable(self) -> bool:
        """Wait until :attr:`frames` holds a message: True; False once the socket ended and none is left."""

    def stop(self) -> None:
        """Stop reading: no more deliveries, and :meth:`readable` answers False once :attr:`frames` is empty."""

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


class WebsocketsSocket(ClientConnection, FrameBuffer):
    """A websockets client connection that queues its messages and reports the end of its data stream synchronously.

    Data frames go from the protocol callback that parsed them straight into the :class:`FrameBuffer`
    (websockets' own message queue and ``recv()`` are left out: they cost a chain of coroutines per
    frame), handed over at the end of each ``data_received``. ``on_end`` runs inside the protocol callback
    that sees a close frame, the end of the stream or the lost transport, so the tokens go STALE before any
    other task (the trader's) can run again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_buffer(self.protocol.max_message_size or 0)  # websockets enforces it too (0: no limit here)

    def process_event(self, event: Any) -> None:
        if self.response is None or self._ended:  # the handshake, or frames after a failure
            super().process_event(event)
            return
        frame: Frame = event
        opcode = frame.opcode
        if opcode is _TEXT and frame.fin and not self._fragments:  # the hot path: one whole text frame
            try:
                self.text(frame.data.decode())  # type: ignore[union-attr]  # bytes when received
            except UnicodeDecodeError as exc:
                self._fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
        elif opcode is _TEXT or opcode is _BINARY or opcode is _CONTINUATION:
            text = None if opcode is _CONTINUATION else opcode is _TEXT
            if (code := self.fragment(text, bytes(frame.data), frame.fin)) is not None:
                self._fail(code, "invalid message")
        else:  # control frames: websockets answers PING and handles CLOSE itself
            super().process_event(event)

    def _fail(self, code: int, reason: str) -> None:
        # A message websockets' recv() would refuse: close with its code, as recv() would
        self.protocol.fail(CloseCode(code), reason)
        self.send_data()
        self.end()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.protocol.state is not SocketState.OPEN:
            self.end()
        self.chunk_end()

    def eof_received(self) -> None:
        super().eof_received()
        self.end()  # the peer sends nothing more (connection_lost comes later)

    def connection_lost(self, exc: Exception | None) -> None:
        self.end()
        super().connection_lost(exc)

    def abort(self) -> None:
        if self.state is not SocketState.CLOSED:
            self.transport.abort()
