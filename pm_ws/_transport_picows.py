"""The picows transport: a :class:`~pm_ws._transport.Socket` on picows, the Cython websocket client.

Imported only when a client is built with ``transport="picows"`` (``pip install 'pm_ws[fast]'``), so
the plain install never needs picows. picows hands each frame to a callback while it still points into
the read buffer; the socket copies the payload out (``str`` for a text frame, ``bytes`` for binary, as
``websockets`` delivers them) into its :class:`~pm_ws._inbox.FrameBuffer`, and hands the chunk's frames
over at the frame picows marks the last of the bytes it read.
Where the optional ``pm_ws._picows_listener`` was built for the installed picows, it takes the whole
text frames in C and passes the rest to :meth:`PicowsSocket.take_frame`; without it that method takes them all.
"""

from __future__ import annotations

import asyncio
import urllib.request
from ssl import SSLContext
from typing import Any, Literal
from urllib.parse import urlsplit

import picows
from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from websockets.exceptions import ConnectionClosed

from ._core import NO_EXTENSIONS
from ._inbox import FrameBuffer


def _listener_base() -> type[WSListener]:
    # The compiled listener, if built against this very picows (it reads picows's objects in C); else picows's
    # own. PM_WS_NO_EXTENSIONS=1 leaves it out too, as it does the compiled core
    if NO_EXTENSIONS:
        return WSListener
    try:
        from ._picows_listener import PICOWS_VERSION, TextFrameListener
    except Exception:  # noqa: BLE001 - not built, or built for a picows whose layout differs: the Python listener
        return WSListener
    return TextFrameListener if PICOWS_VERSION == picows.__version__ else WSListener


Listener = _listener_base()
COMPILED_LISTENER = Listener is not WSListener  # whole text frames taken in C

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_PING = WSMsgType.PING
_ABNORMAL = 1006  # close code of a connection that ended without a close frame (RFC 6455 §7.1.5)


class TransportClosed(ConnectionClosed):
    """A send on a closed picows socket: the shard's ``SocketClosed`` (websockets' class), without close frames."""

    def __init__(self) -> None:
        super().__init__(None, None)


class PicowsSocket(Listener, FrameBuffer):  # type: ignore[valid-type,misc]  # the base is chosen at import
    """One picows connection as a shard uses it: the listener picows calls, and the reader's buffer."""

    def __init__(self, max_frame_bytes: int, close_timeout: float) -> None:
        super().__init__()
        self._init_buffer(max_frame_bytes)
        self._close_timeout = close_timeout
        self._transport: WSTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._writable: asyncio.Future[None] | None = None  # set while the peer's buffers are full
        self.disconnected: asyncio.Future[None] = self._loop.create_future()

    # ------------------------------------------------------------------ picows callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport

    def take_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Take one frame (picows calls it for each, or the compiled listener for all but whole text frames)."""
        kind = frame.msg_type  # read once: picows builds the enum member on every read
        if kind is _TEXT and frame.fin and not self._fragments:  # the hot path: one whole text frame
            try:
                self.frames.append(frame.get_payload_as_utf8_text())  # self.text() inlined: once per frame
            except UnicodeDecodeError:
                self._fail(WSCloseCode.INVALID_TEXT)
                return
        elif kind is _CLOSE:
            self._closing(transport)
        elif kind is _TEXT or kind is _BINARY or kind is _CONTINUATION:
            text = None if kind is _CONTINUATION else kind is _TEXT
            if (code := self.fragment(text, frame.get_payload_as_bytes(), bool(frame.fin))) is not None:
                self._fail(WSCloseCode(code))
                return
        elif kind is _PING:  # answered here, not by picows: every frame reaches this listener (see chunk_end)
            transport.send_pong(frame.get_payload_as_bytes())
        # PONG carries nothing the client needs
        if frame.last_in_buffer:
            self.chunk_end()

    if not COMPILED_LISTENER:
        on_ws_frame = take_frame

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.end()
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(TransportClosed())
            self._writable.exception()  # retrieved here: nobody may be waiting for it
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # ------------------------------------------------------------------ the Socket members

    @property
    def close_code(self) -> int | None:
        transport = self._transport
        if transport is None or not transport.is_disconnected:
            return None
        handshake = transport.close_handshake
        received = None if handshake is None else handshake.recv
        return _ABNORMAL if received is None else received.code.value

    @property
    def local_address(self) -> Any:
        return None if self._transport is None else self._transport.underlying_transport.get_extra_info("sockname")

    async def send(self, message: str) -> None:
        transport = self._transport
        if transport is None or transport.is_disconnected or transport.is_close_frame_sent:
            raise TransportClosed()
        transport.send(_TEXT, message)
        if self._writable is not None:  # the peer stopped taking data: wait until it does (or the socket dies)
            await asyncio.shield(self._writable)

    async def close(self) -> None:
        transport = self._transport
        if transport is None or transport.is_disconnected:
            return
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)
        try:  # the server answers with its close frame, then the connection ends
            await asyncio.wait_for(asyncio.shield(self.disconnected), self._close_timeout)
        except asyncio.TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.disconnect(graceful=False)  # a no-op once closed

    # ------------------------------------------------------------------ the rest

    def _closing(self, transport: WSTransport) -> None:
        # The server's close frame: nothing follows it; answer it and drop the connection
        self.end()
        if not transport.is_close_frame_sent:
            handshake = transport.close_handshake
            code = handshake.recv.code if handshake is not None and handshake.recv is not None else WSCloseCode.OK
            transport.send_close(code)
        transport.disconnect()

    def _fail(self, code: WSCloseCode) -> None:
        # A frame websockets would refuse too: close with its code (the connection ends at once)
        self.end()
        transport = self._transport
        if transport is not None:
            transport.send_close(code)
            transport.disconnect()


async def open_socket(
    url: str,
    *,
    ssl: SSLContext | None,
    proxy: str | Literal[True] | None,
    max_frame_bytes: int,
    open_timeout: float,
    close_timeout: float,
) -> PicowsSocket:
    """Connect to ``url`` with picows; raises ``OSError`` or ``asyncio.TimeoutError`` when the attempt fails."""
    if proxy is True:
        proxy = _environment_proxy(url)
    try:
        async with asyncio.timeout(open_timeout):  # TCP, TLS and the upgrade together, as websockets counts it
            transport, listener = await ws_connect(
                lambda: PicowsSocket(max_frame_bytes, close_timeout),
                url,
                ssl_context=ssl,
                proxy=proxy,
                websocket_handshake_timeout=None,  # the timeout above covers it
                max_frame_size=max_frame_bytes,
                enable_auto_ping=False,  # the server wants text PING; the shard's writer sends them
                # PING answered by the listener: picows would answer it unseen, and a chunk ending in a
                # PING would not tell the listener that the frames before it are all there
                enable_auto_pong=False,
                max_redirects=0,
                use_aiofastnet=False,  # asyncio's transports: aiofastnet measured a higher p50 latency here
            )
    except WSError as exc:  # a refused upgrade, a bad URL: a failed attempt like any other
        raise ConnectionError(f"websocket handshake failed: {exc}") from exc
    socket = listener
    assert isinstance(socket, PicowsSocket)
    if transport.is_disconnected:  # lost during the handshake: picows returns it anyway
        raise ConnectionError("connection lost during the websocket handshake")
    return socket


def _environment_proxy(url: str) -> str | None:
    # proxy=True: the proxy the environment (HTTPS_PROXY, HTTP_PROXY) names for this URL, unless NO_PROXY exempts it
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get("https" if parts.scheme == "wss" else "http")
