"""One client connection of the fake market server: its ordered writer and the market protocol of its frames.

The protocol, as the real CLOB market channel speaks it: the first frame must be a subscription
(``{"assets_ids": [...], "type": "market"}``, optionally ``custom_feature_enabled`` and
``initial_dump``); afterwards ``PING`` gets ``PONG`` (``ping`` gets ``pong``), ``operation`` frames
subscribe or unsubscribe on the same socket, and anything else gets ``INVALID OPERATION``. The books
a subscription asks for are the server's to send.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

__all__ = ["FakeConnection", "keep_newest"]

NOT_READING_RCVBUF = 4096  # receive buffer of a connection that stopped reading: its client blocks soon


def keep_newest(log: list[Any], item: Any, newest: int) -> None:
    """Append, dropping the oldest half once the log holds twice ``newest``: amortised O(1) per frame."""
    log.append(item)
    if len(log) >= 2 * newest:
        del log[:-newest]


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _is_id_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class FakeConnection:
    """One client connection as the server saw it.

    Attributes
    ----------
    id : int
        Sequence number of the connection on this server, from 1.
    subscribed : set[str]
        Asset ids the client is subscribed to (unknown ids included, as the real server accepts them).
    received : list[str]
        The frames the client sent, in order (binary frames decoded as UTF-8 with replacement): the
        last ``keep_received`` of the server at least (older ones are dropped in batches).
    closed : bool
        Whether the connection has ended.
    sent_frames : int
        Frames the server has written to this connection.
    custom_features : bool
        Whether the client asked for ``custom_feature_enabled``.
    frozen : bool
        Whether the connection is half-open (see :meth:`FakeMarketServer.set_unresponsive`).
    websocket : websockets.asyncio.server.ServerConnection
        The underlying connection.
    """

    def __init__(self, conn_id: int, websocket: ServerConnection) -> None:
        self.id = conn_id
        self.subscribed: set[str] = set()
        self.received: list[str] = []
        self.closed = False
        self.sent_frames = 0
        self.custom_features = False
        self.websocket = websocket
        self.frozen = False  # half-open: nothing read, nothing written
        self._subscription_seen = False
        self._outbox: deque[str | bytes] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("frozen" if self.frozen else "open")
        return f"<FakeConnection {self.id} {state} subscribed={len(self.subscribed)} sent={self.sent_frames}>"

    # ------------------------------------------------------------------ protocol

    def _subscribe_first(self, text: str) -> list[str] | None:
        # the first frame: the assets whose books are due ([] without initial dump); None: not a subscription
        request = _json_object(text)
        if request is None or not _is_id_list(request.get("assets_ids")):
            return None
        channel = request.get("type")
        if not isinstance(channel, str) or channel.lower() != "market":
            return None
        self._subscription_seen = True
        self.custom_features = request.get("custom_feature_enabled") is True
        assets: list[str] = request["assets_ids"]
        self.subscribed.update(assets)
        return assets if request.get("initial_dump", True) is not False else []

    def _answer(self, text: str) -> list[str]:
        # a later frame: answer PING and bad frames here; return the assets whose books are due
        word = text.strip()
        if word.upper() == "PING":
            self._enqueue("pong" if word.islower() else "PONG")
            return []
        request = _json_object(text) or {}
        operation = request.get("operation")
        if operation not in ("subscribe", "unsubscribe") or not _is_id_list(request.get("assets_ids")):
            self._enqueue("INVALID OPERATION")  # also the reply to a second `type` frame
            return []
        if "custom_feature_enabled" in request:
            self.custom_features = request["custom_feature_enabled"] is True
        assets: list[str] = request["assets_ids"]
        if operation == "unsubscribe":
            self.subscribed.difference_update(assets)
            return []
        self.subscribed.update(assets)
        return assets

    # ------------------------------------------------------------------ writing and the socket switches

    def _enqueue(self, frame: str | bytes) -> None:
        # one writer task per connection keeps frames in the order the books changed
        if self.closed or self.frozen:
            return
        self._outbox.append(frame)
        self._idle.clear()
        self._wake.set()

    def _read(self, on: bool) -> None:
        transport = self.websocket.transport
        if on:
            transport.resume_reading()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:  # the kernel buffers a few KiB more, then the client's sends block
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NOT_READING_RCVBUF)
        transport.pause_reading()

    def _freeze(self, on: bool) -> None:
        self.frozen = on
        transport = self.websocket.transport
        if on:
            transport.pause_reading()
            self._outbox.clear()
            self._idle.set()
        else:
            transport.resume_reading()

    async def _wait_idle(self) -> None:
        await self._idle.wait()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox and not self.frozen:
                    await self.websocket.send(self._outbox.popleft())
                    self.sent_frames += 1
                self._idle.set()
        except ConnectionClosed:
            pass
        finally:
            self._outbox.clear()
            self._idle.set()
