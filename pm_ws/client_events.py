"""The client's cold events: :class:`ClientEvent`, the :class:`EventStream` iterator, the ``cause`` values.

Book updates are not events (the rows show them); everything else the client has to say about tokens,
trades and connections is a :class:`ClientEvent`, given to ``on_event`` and to every ``events()`` stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["CAUSE_CORE", "CAUSE_MARKED", "CAUSE_STOPPED", "ClientEvent", "EventCallback", "EventStream"]

# ClientEvent "state" data["cause"]: who changed the row
CAUSE_MARKED = "marked"  # the client called store.mark_stale (subscribe of a LIVE row, disconnect, unconfirmed)
CAUSE_STOPPED = "stopped"  # the client marked it STALE because it is stopping
CAUSE_CORE = "core"  # the dispatcher set it from a frame; the client only reports it

EventCallback = Callable[["ClientEvent"], None]


class ClientEvent(NamedTuple):
    """A cold event: anything but a book update, delivered by ``on_event`` and ``events()``.

    ``kind`` and ``data`` per kind (``token_id`` is None for connection and market events):

    - ``"state"``: a token's row changed state as seen by the client;
      ``{"state": State, "reason": str, "cause": str}``. ``cause`` says who changed the row:
      :data:`CAUSE_MARKED` (the client called ``store.mark_stale``: ``reason`` is ``"subscribed"``
      for a LIVE row of a shared store, ``"unconfirmed"``, ``"silence"`` for a REST-built row of the
      whole-exchange mode when its connection's market data resumes after a silence, or the
      disconnect's reason),
      :data:`CAUSE_STOPPED` (the client marked it STALE because it is stopping; ``reason``
      ``"client stopped"``) or :data:`CAUSE_CORE` (the dispatcher set it from a frame and the client
      reports it: ``reason`` ``"snapshot"`` for a book that arrived, LIVE or INVALID if crossed,
      ``"resync"`` for INVALID, or STALE after a tick change, with a re-drive queued).
      ``reason`` is for people; test ``cause`` in code (e.g. to replay the client's own marks)
    - ``"trade"``: a ``last_trade_price``; ``{"asset_id", "price", "size", "side", "timestamp"}`` as ints
      in pm_ws units (the row already holds it; this is for consumers that want every trade)
    - ``"new_market"``, ``"market_resolved"``: the server's event object, decoded with orjson
    - ``"connected"``: ``{"connection": int, "tokens": int}`` once the subscription was sent
    - ``"disconnected"``: ``{"connection": int, "reason": str}``; its tokens are already STALE
    - ``"resync"``: ``{"connection": int, "reason": str}``; the token is being re-driven
    """

    kind: str
    token_id: str | None
    data: dict[str, Any]


class EventStream:
    """Async iterator over :class:`ClientEvent`; never blocks the reader.

    The queue is bounded: when the consumer lags, the OLDEST event is dropped and ``dropped``
    counts it. Iteration ends once the client's ``run()`` returned and the queue is drained,
    or after :meth:`close`.
    """

    def __init__(self, maxsize: int, on_close: Callable[[EventStream], None]) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, was {maxsize!r}")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[ClientEvent] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._ended = False
        self._on_close = on_close

    def put(self, event: ClientEvent) -> None:
        """Queue ``event`` (drop the oldest one if full); called by the client, never blocks."""
        if self._ended:
            return
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(event)
        self._wake()

    def end(self) -> None:
        """Let iteration stop once the queued events were consumed."""
        self._ended = True
        self._wake()

    def close(self) -> None:
        """Stop receiving events now and end the iteration."""
        self._on_close(self)
        self._items.clear()
        self.end()

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ClientEvent:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        return self._items.popleft()
