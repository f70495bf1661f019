"""How a client hands out its cold events: to ``on_event`` and to every open ``events()`` stream."""

from __future__ import annotations

import logging
from typing import Any

from ._taps import PROCESS_EXIT
from .client_events import ClientEvent, EventCallback, EventStream

logger = logging.getLogger("pm_ws")


class EventFanout:
    """Give each cold event to ``on_event`` and to every open ``events()`` stream; count failing callbacks."""

    def __init__(self, on_event: EventCallback | None) -> None:
        self.on_event = on_event
        self.streams: list[EventStream] = []
        self.ended = False  # a run() returned and no other started: a new stream would wait for nothing
        self.dropped_before = 0  # events dropped by streams no longer open, so stats() never goes back
        self.callback_errors = 0

    def open_stream(self, maxsize: int) -> EventStream:
        stream = EventStream(maxsize, self._forget_stream)
        if self.ended:
            stream.end()
        else:
            self.streams.append(stream)
        return stream

    def end_streams(self) -> None:
        self.ended = True
        for stream in self.streams:
            stream.end()
            self.dropped_before += stream.dropped
        self.streams.clear()  # ended streams take no more events

    def dropped(self) -> int:
        return self.dropped_before + sum(stream.dropped for stream in self.streams)

    def core_event(self, event_type: str, payload: dict[str, Any]) -> None:
        # Called by the dispatcher inside feed(): trades and the custom-feature market events
        if self.on_event is None and not self.streams:
            return
        if event_type == "last_trade_price":
            self.emit("trade", payload.get("asset_id"), payload)
        else:
            self.emit(event_type, None, payload)

    def emit(self, kind: str, token_id: str | None, data: dict[str, Any]) -> None:
        if self.on_event is None and not self.streams:
            return
        event = ClientEvent(kind, token_id, data)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except PROCESS_EXIT:
                raise
            except BaseException:  # a CancelledError raised BY the callback must not end the connection task
                self.callback_failed("on_event")
        for stream in self.streams:
            stream.put(event)

    def callback_failed(self, name: str) -> None:
        self.callback_errors += 1
        if self.callback_errors == 1:
            logger.exception("%s callback failed (logged once; see stats()['callback_errors'])", name)

    def _forget_stream(self, stream: EventStream) -> None:
        if stream in self.streams:
            self.streams.remove(stream)
            self.dropped_before += stream.dropped
