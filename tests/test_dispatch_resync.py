"""Dispatcher resync queue: tokens whose book needs a fresh snapshot, each once."""

from __future__ import annotations

from builders import NO, YES, book_event, frame, tick_size_change_event


def test_resync_queue_deduplicated_and_counted_once(live):
    for _ in range(3):
        live.feed(frame(book_event(bids=[("0.6", "1")], asks=[("0.5", "1")])))
    assert live.stats()["crossed_book"] == 3
    assert live.stats()["resync_queued"] == 1
    assert live.pending_resync() == [YES]


def test_resync_queue_first_queued_order_requeue_after_drain(live):
    live.feed(frame(book_event(token_id=NO, bids=[("0.6", "1")], asks=[("0.5", "1")])))
    live.feed(frame(tick_size_change_event(token_id=YES)))
    assert live.pending_resync() == [NO, YES]
    live.feed(frame(book_event(token_id=NO, bids=[("0.6", "1")], asks=[("0.5", "1")])))
    assert live.pending_resync() == [NO]
    assert live.stats()["resync_queued"] == 3


def test_resync_queue_removed_token_dropped(live):
    live.feed(frame(book_event(bids=[("0.6", "1")], asks=[("0.5", "1")])))
    live.store.remove(YES)
    assert live.pending_resync() == []


def test_resync_queue_removed_and_re_added_token_not_pending(live):
    live.feed(frame(book_event(bids=[("0.6", "1")], asks=[("0.5", "1")])))
    live.store.remove(YES)
    live.store.add(YES)
    assert live.pending_resync() == []
