"""Row identity: TOKEN_TAG names the slot's token, and SEQ/EPOCH never go back for a slot across remove/add."""

from __future__ import annotations

import pytest

from pm_ws import token_tag
from pm_ws.row import EPOCH, SEQ, STATE, TOKEN_TAG, State

from builders import NO, YES, book_event, frame, price_change_event, change


def test_token_tag_fnv1a_63_bits():
    assert token_tag("") == 0xCBF29CE484222325 & (2**63 - 1)  # the FNV-1a 64 offset basis, masked
    assert token_tag("a") == 0xAF63DC4C8601EC8C & (2**63 - 1)  # FNV-1a 64 of b"a"
    assert 0 < token_tag(YES) < 2**63
    assert token_tag(YES) != token_tag(NO)


def test_token_tag_non_str_type_error():
    with pytest.raises(TypeError):
        token_tag(YES.encode())  # type: ignore[arg-type]


def test_add_row_carries_token_tag(impl):
    store = impl.BookStore(4)
    for token_id in (YES, NO, b"123"):
        slot = store.add(token_id)
        text = token_id.decode() if isinstance(token_id, bytes) else token_id
        assert store.view[slot, TOKEN_TAG] == token_tag(text)


def test_reused_slot_new_tag_seq_and_epoch_never_go_back(impl):
    # Arrange: a reader caches YES's slot, tag and (EPOCH, SEQ) after some deltas
    store = impl.BookStore(2)
    dispatcher = impl.Dispatcher(store)
    slot = store.add(YES)
    dispatcher.feed(frame(book_event(YES)), 1)
    dispatcher.feed(frame(price_change_event(change(YES, "0.47", "5", "BUY"))), 2)
    cached = (store.view[slot, EPOCH], store.view[slot, SEQ])
    tag = token_tag(YES)
    # Act: YES leaves, NO takes the slot and gets a book and a delta
    store.remove(YES)
    assert store.view[slot, TOKEN_TAG] == 0 and store.view[slot, STATE] == State.EMPTY
    assert store.add(NO) == slot
    dispatcher.feed(frame(book_event(NO)), 3)
    dispatcher.feed(frame(price_change_event(change(NO, "0.47", "5", "BUY"))), 4)
    # Assert: the row alone tells the reader the slot changed hands
    assert store.view[slot, TOKEN_TAG] == token_tag(NO) != tag
    now = (store.view[slot, EPOCH], store.view[slot, SEQ])
    assert now[0] > cached[0] and now[1] > cached[1]


def test_remove_add_pairs_seq_epoch_strictly_increase(impl):
    store = impl.BookStore(1)
    seen = []
    for token_id in (YES, NO, YES, NO):
        slot = store.add(token_id)
        seen.append((store.view[slot, EPOCH], store.view[slot, SEQ]))
        store.remove(token_id)
        assert store.view[slot, SEQ] > seen[-1][1]
    assert seen == sorted(set(seen))
