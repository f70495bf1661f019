"""The inbound half of a socket that both transports share: whole messages queued for the shard.

A transport parses frames in its protocol callback and hands each data frame here; once the frames of one
received chunk are queued it calls :meth:`FrameBuffer.chunk_end`, which hands them to the shard's
:attr:`~FrameBuffer.deliver` right there (no task switch between a frame's arrival and its book update),
or, before the shard set that, wakes the reader that drains :attr:`FrameBuffer.frames`.
A burst of frames costs one call and no coroutine per frame.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from websockets.frames import CloseCode


class FrameBuffer:
    """The inbound half both transports share: whole messages queued for the shard's reader.

    A transport calls :meth:`text` for a whole text frame (the hot path), :meth:`fragment` for any
    other data frame, :meth:`chunk_end` after the last frame of each chunk it received and :meth:`end`
    when the peer sends nothing more; it closes the socket with the code :meth:`fragment` returns. A
    message split over frames is joined here, within ``max_bytes``.
    """

    on_end: Callable[[], None] | None
    deliver: Callable[[], None] | None

    def _init_buffer(self, max_bytes: int) -> None:
        self.on_end = None
        self.deliver = None
        self.frames: deque[str | bytes] = deque()
        self._max_bytes = max_bytes
        self._reader: asyncio.Future[None] | None = None  # set while the reader waits for a message
        self._fragments: list[bytes] = []  # a message split over frames, until its last frame
        self._fragments_text = True
        self._ended = False

    async def readable(self) -> bool:
        while not self.frames:
            if self._ended:
                return False
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        return True

    def text(self, message: str) -> None:
        """Queue a whole text message."""
        self.frames.append(message)

    def chunk_end(self) -> None:
        """Every frame of one received chunk is queued: deliver them now, or wake the reader."""
        if not self.frames:  # control frames only: nothing for the shard (nor for its inbound watchdog)
            return
        if self.deliver is not None:
            self.deliver()
        elif self._reader is not None:
            self._wake_reader()

    def fragment(self, text: bool | None, payload: bytes, fin: bool) -> int | None:
        """Take a data frame other than a whole text one (``text`` None: a continuation); return the close
        code the socket must fail with, if the frame breaks the protocol (None: it does not)."""
        if self._ended:
            return None
        if text is False and fin and not self._fragments:
            self.frames.append(payload)
            return None
        if (text is None) != bool(self._fragments):
            return CloseCode.PROTOCOL_ERROR  # a continuation without a start, or a start inside one
        if text is not None:
            self._fragments_text = text
        self._fragments.append(payload)
        if self._max_bytes and sum(map(len, self._fragments)) > self._max_bytes:
            return CloseCode.MESSAGE_TOO_BIG
        if not fin:
            return None
        message = b"".join(self._fragments)
        self._fragments.clear()
        if self._fragments_text:
            try:
                self.text(message.decode())
            except UnicodeDecodeError:
                return CloseCode.INVALID_DATA
        else:
            self.frames.append(message)
        return None

    def end(self) -> None:
        """The peer sends nothing more: tell the shard now, inside this callback, then let the reader finish."""
        if self._ended:
            return
        self._ended = True
        self._wake_reader()
        if self.on_end is not None:
            self.on_end()

    def stop(self) -> None:
        """The shard stops reading this socket (it gave up on it): no more deliveries, :meth:`readable` ends."""
        self._ended = True
        self.deliver = None
        self._wake_reader()

    def _wake_reader(self) -> None:
        # Once per batch: the frames that follow before the reader runs find no reader to wake
        reader = self._reader
        self._reader = None
        if reader is not None and not reader.done():
            reader.set_result(None)
