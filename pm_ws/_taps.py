"""What a client's taps watch: the frames it feeds and the operations it makes on its store.

:meth:`MarketClient.add_tap <pm_ws.MarketClient.add_tap>` registers them here; the readers feed each
frame to :attr:`Taps.feed`, which is the dispatcher's own ``feed`` while there is no frame tap, so a
client without taps pays nothing for them. The client, and the exchange follower that drives it
(resolutions, REST books and the deltas replayed on them), change the store only through :class:`Taps`,
so the store taps hear of every change right after it is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._core import BookStore

TapFrameCallback = Callable[[str | bytes, int, int], None]  # on_frame(frame, recv_ns, owner) of add_tap
StoreCallback = Callable[[str, list[str], dict[str, Any]], None]  # on_store(op, tokens, options) of add_tap
FeedFunction = Callable[[str | bytes, int, int], int]  # feed(frame, recv_ns, owner) -> events applied

# A synchronous callback cannot be cancelled from outside (cancellation lands on an await), so any
# CancelledError it raises is its own and is contained like any error; only these still stop the process
PROCESS_EXIT = (KeyboardInterrupt, SystemExit)


class Taps:
    """The frame and store taps of one client, the feed that calls the frame taps, the store operations."""

    def __init__(
        self,
        store: BookStore,
        dispatcher_feed: FeedFunction,
        callback_failed: Callable[[str], None],
        feed_changed: Callable[[], None],
    ) -> None:
        self._store = store
        self._dispatcher_feed = dispatcher_feed
        self._callback_failed = callback_failed  # counts and logs a failing callback by its name
        self._feed_changed = feed_changed  # tells the readers to take the new feed
        self._frames: list[TapFrameCallback] = []
        self._stores: list[StoreCallback] = []
        self.feed = dispatcher_feed  # what a reader feeds each frame to

    @property
    def store(self) -> BookStore:
        return self._store

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

    def add_rows(self, tokens: list[str]) -> None:
        """Add a row for each of ``tokens`` the store lacks (it may be shared with the caller): all or none."""
        store = self._store
        created: list[str] = []
        try:
            for token in tokens:
                if token not in store:
                    store.add(token)  # validates the id
                    created.append(token)
                    self._stored("add", [token], {})
        except Exception:
            for token in created:
                store.remove(token)
                self._stored("remove", [token], {})
            raise

    def remove_row(self, token: str) -> None:
        self._store.remove(token)
        self._stored("remove", [token], {})

    def set_owner(self, token: str, owner: int) -> None:
        self._store.set_owner(token, owner)
        self._stored("set_owner", [token], {"owner": owner})

    def mark_stale(self, tokens: list[str]) -> None:
        self._store.mark_stale(tokens)
        self._stored("mark_stale", tokens, {})

    def resolve(self, token: str, won: bool | None) -> None:
        self._store.resolve(token, won)
        self._stored("resolve", [token], {"won": won})

    def load_book(
        self, token: str, bids: list[tuple[int, int]], asks: list[tuple[int, int]], tick: int, exch_ts_ms: int,
        recv_ts_ns: int,
    ) -> bool:
        """``BookStore.load_book``; the store taps hear of a book it took (not of one it refused)."""
        loaded = self._store.load_book(token, bids, asks, tick, exch_ts_ms, recv_ts_ns)
        if loaded:
            options = {"bids": bids, "asks": asks, "tick": tick, "exch_ts_ms": exch_ts_ms, "recv_ts_ns": recv_ts_ns}
            self._stored("load_book", [token], options)
        return loaded

    def replay(self, token: str, feed: FeedFunction, frame: str, recv_ns: int) -> int:
        """Feed ``token``'s ``frame`` through another dispatcher of this store (one that replays buffered
        deltas, so this client's counters stay the frames it read); a store operation for the taps."""
        applied = feed(frame, recv_ns, 0)
        self._stored("replay", [token], {"frame": frame, "recv_ts_ns": recv_ns})
        return applied

    def _stored(self, op: str, tokens: list[str], options: dict[str, Any]) -> None:
        # Tell the store taps about a change just made to the store
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
