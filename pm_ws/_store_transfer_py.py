"""State that enters or leaves a pure-Python ``BookStore`` slot other than through frames.

A market's resolution, and a token's whole state exported to (and restored from) a blob in
``pm_ws._token_blob``'s format. ``BookStore``'s methods check the token and call these; the
compiled core's counterparts are in ``pm_ws/_hot/store_transfer.pxi``. The store is seen through
``SlotStore`` (what these read and write of it), so this module does not import ``_core_py``.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._token_blob import TokenState, decode_token, encode_token, restored_counters
from .row import EPOCH, OUTCOME, OUTCOME_LOST, OUTCOME_UNKNOWN, OUTCOME_WON, SEQ, STATE, TOKEN_TAG, State


class SlotStore(Protocol):
    """The parts of ``pm_ws._core_py.BookStore`` the functions below use."""

    _ids: list[str | None]
    _books: list[Any]  # _core_py._Book, None for a free slot
    _owners: list[int]
    _resolved: dict[str, bool | None]

    def _read_row(self, slot: int) -> list[int]: ...

    def _write_row(self, slot: int, row: list[int], step: int = ...) -> None: ...


def resolve_slot(store: SlotStore, slot: int, won: bool | None) -> None:
    """``BookStore.resolve`` for a held slot: remember the outcome (dict and OUTCOME); the row turns RESOLVED once."""
    row = store._read_row(slot)
    store._resolved[str(store._ids[slot])] = None if won is None else bool(won)
    outcome = OUTCOME_UNKNOWN if won is None else (OUTCOME_WON if won else OUTCOME_LOST)
    if row[STATE] != State.RESOLVED or row[OUTCOME] != outcome:
        if row[STATE] != State.RESOLVED:
            row[STATE] = State.RESOLVED
            row[EPOCH] += 1
        row[OUTCOME] = outcome
        store._write_row(slot, row)


def export_slot(store: SlotStore, slot: int) -> bytes:
    """``BookStore.export_token`` for a held slot."""
    book = store._books[slot]
    assert book is not None
    key = str(store._ids[slot])
    return encode_token(
        TokenState(
            store._read_row(slot), book.bids, book.asks, book.books_name_tick, book.tick_unconfirmed,
            store._owners[slot], key in store._resolved, store._resolved.get(key),
        )
    )  # fmt: skip


def restore_slot(store: SlotStore, slot: int, blob: bytes | bytearray | memoryview) -> None:
    """``BookStore.restore_token`` for a held slot: nothing changes unless the blob decodes."""
    now = store._read_row(slot)
    state = decode_token(blob, now[TOKEN_TAG])
    row = list(state.row)
    seq, row[EPOCH] = restored_counters(now[SEQ], now[EPOCH], row)
    book = store._books[slot]
    assert book is not None
    book.bids, book.asks = state.bids, state.asks
    book.books_name_tick, book.tick_unconfirmed = state.books_name_tick, state.tick_unconfirmed
    store._owners[slot] = state.owner
    key = str(store._ids[slot])
    if state.resolved:
        store._resolved[key] = state.won
    else:
        store._resolved.pop(key, None)
    store._write_row(slot, row, seq - now[SEQ])
