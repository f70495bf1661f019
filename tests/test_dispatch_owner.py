"""Ownership: with feed(owner=n), a frame changes only the rows of tokens owned by n (others: skip_foreign)."""

from __future__ import annotations

import pytest

from pm_ws.row import OWNER_MAX, STATE, State

from builders import (
    NO,
    YES,
    best_bid_ask_event,
    book_event,
    change,
    counters,
    frame,
    last_trade_price_event,
    price_change_event,
    row,
    tick_size_change_event,
)

A, B = 1, 2  # two connections


@pytest.fixture
def owned(impl):
    """A dispatcher over a store where connection A owns YES and connection B owns NO."""
    store = impl.BookStore(4)
    store.add(YES, A)
    store.add(NO, owner=B)
    return impl.Dispatcher(store)


def test_owner_kept_by_store(owned):
    store = owned.store
    assert (store.owner(YES), store.owner(NO)) == (A, B)
    store.add(YES, B)  # already held: keeps its owner
    assert store.owner(YES) == A
    store.set_owner(YES, B)
    assert store.owner(YES) == B


def test_owner_cleared_by_remove(owned):
    owned.store.remove(YES)
    owned.store.add(YES)
    assert owned.store.owner(YES) == 0


def test_owner_unknown_token_key_error(owned):
    with pytest.raises(KeyError):
        owned.store.owner("nope")
    with pytest.raises(KeyError):
        owned.store.set_owner("nope", A)


@pytest.mark.parametrize("owner", [-1, OWNER_MAX + 1])
def test_owner_out_of_range_value_error(owned, owner):
    with pytest.raises(ValueError):
        owned.store.add("x", owner)
    with pytest.raises(ValueError):
        owned.store.set_owner(YES, owner)
    with pytest.raises(ValueError):
        owned.feed(frame(book_event(YES)), 0, owner)
    assert "x" not in owned.store


def test_owner_not_int_type_error(owned):
    with pytest.raises(TypeError):
        owned.store.add("x", 1.0)
    with pytest.raises(TypeError):
        owned.feed(frame(book_event(YES)), 0, "1")


def test_foreign_book_changes_nothing(owned):
    # The case of the issue: B's socket is down (NO STALE), a book for NO arrives on A's socket
    before = row(owned, NO)
    assert owned.feed(frame(book_event(NO)), 5, A) == 0
    assert row(owned, NO) == before and before[STATE] == State.SUBSCRIBING
    assert counters(owned) == {"frames": 1, "bytes": len(frame(book_event(NO))), "skip_foreign": 1}


def test_own_book_applies(owned):
    assert owned.feed(frame(book_event(NO)), 5, B) == 1
    assert row(owned, NO)[STATE] == State.LIVE


def test_owner_0_applies_to_every_token(owned):
    assert owned.feed(frame(book_event(YES), book_event(NO)), 5) == 2
    assert owned.stats()["skip_foreign"] == 0


@pytest.mark.parametrize(
    "event", [last_trade_price_event(NO), tick_size_change_event(NO), best_bid_ask_event(NO, "0.5", "0.52")]
)
def test_foreign_single_token_events_change_nothing(owned, event):
    owned.feed(frame(book_event(YES), book_event(NO)), 1)
    before = bytes(owned.store.view)
    assert owned.feed(frame(event), 5, A) == 0
    assert bytes(owned.store.view) == before
    assert owned.stats()["skip_foreign"] == 1


def test_price_change_applies_own_entries_only(owned):
    # Both sockets of a split pair deliver the market's price_change: each applies its own token
    owned.feed(frame(book_event(YES), book_event(NO)), 1)
    no_before = row(owned, NO)
    event = price_change_event(change(YES, "0.51", "5", "BUY", "0.51", "0.52"),
                               change(NO, "0.49", "7", "SELL", "0.5", "0.49"))  # fmt: skip
    assert owned.feed(frame(event), 9, A) == 1
    assert row(owned, YES)[STATE] == State.LIVE and owned.store.book(YES)[0][0] == (5100, 5_000_000)
    assert row(owned, NO) == no_before
    assert owned.stats()["skip_foreign"] == 1
    assert owned.stats()["checksum_mismatch"] == 0
