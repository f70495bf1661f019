"""What a client's taps watch: the frames it feeds and the operations it makes on its store.

:meth:`MarketClient.add_tap <pm_ws.MarketClient.add_tap>` registers them here; the readers feed each
frame to :attr:`Taps.feed`, which is the dispatcher's own ``feed`` while there is no frame tap, so a
client without taps pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TapFrameCallback = Callable[[str | bytes, int, int], None]  # on_frame(frame, recv_ns, owner) of add_tap
StoreCallback = Callable[[str, list[str], dict[str, Any]], None]  # on_store(op, tokens, options) of add_tap
FeedFunction = Callable[[str | bytes, int, int], int]  # feed(frame, recv_ns, owner) -> events applied

# A synchronous callback cannot be cancelled from outside (cancellation lands on an await), so any
# CancelledError it raises is its own and is contained like any error; only these still stop the process
PROCESS_EXIT = (KeyboardInterrupt, SystemExit)


class Taps:
    """The frame and store taps of one client, and the feed that calls the frame taps."""

    def __init__(
        self,
        dispatcher_feed: FeedFunction,
        callback_failed: Callable[[str], None],
        feed_changed: Callable[[], None],
    ) -> None:
        self._dispatcher_feed = dispatcher_feed
        self._callback_failed = callback_failed  # counts and logs a failing callback by its name
        self._feed_changed = feed_changed  # tells the readers to take the new feed
        self._frames: list[TapFrameCallback] = []
        self._stores: list[StoreCallback] = []
        self.feed = dispatcher_feed  # what a reader feeds each frame to

    def add(self, on_frame: TapFrameCallback | None, on_store: StoreCallback | None) -> Callable[[], None]:
        """Register the given callbacks; return the function that removes them again."""
        if on_frame is not None:
            self._frames.append(on_frame)
        if on_store is not None:
            self._stores.append(on_store)
        self._compose()

        def remove() -> None:
            if on_frame in self._frames:
                self._frames.remove(on_frame)
            if on_store in self._stores:
                self._stores.remove(on_store)
            self._compose()

        return remove

    def stored(self, op: str, tokens: list[str], options: dict[str, Any]) -> None:
        """Tell the store taps about a change the client just made to its store."""
        for on_store in self._stores:
            try:
                on_store(op, tokens, options)
            except PROCESS_EXIT:
                raise
            except BaseException:  # as in on_event: contained and counted
                self._callback_failed("on_store")

    def _compose(self) -> None:
        # The dispatcher's feed followed by each frame tap (a failing one is counted, the frame stays applied)
        feed = self._dispatcher_feed
        if not self._frames:
            self.feed = feed
        else:
            self.feed = self._tapped(feed, tuple(self._frames))
        self._feed_changed()

    def _tapped(self, feed: FeedFunction, callbacks: tuple[TapFrameCallback, ...]) -> FeedFunction:
        callback_failed = self._callback_failed

        def tapped(frame: str | bytes, recv_ns: int, owner: int) -> int:
            applied = feed(frame, recv_ns, owner)
            for on_frame in callbacks:
                try:
                    on_frame(frame, recv_ns, owner)
                except PROCESS_EXIT:
                    raise
                except BaseException:  # as in on_event: contained, counted, the reader goes on
                    callback_failed("on_frame")
            return applied

        return tapped
