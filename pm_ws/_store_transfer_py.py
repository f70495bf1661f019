"""State that enters or leaves a pure-Python ``BookStore`` slot other than through frames.

A book loaded from a REST snapshot, a market's resolution, and a token's whole state exported to
(and restored from) a blob in ``pm_ws._token_blob``'s format. ``BookStore``'s methods check the
token and call these; the compiled core's counterparts are in ``pm_ws/_hot/store_transfer.pxi``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._rest_levels import wire_levels
from ._token_blob import TokenState, decode_token, encode_token, restored_counters
from .row import EPOCH, SEQ, STATE, TICK, TOKEN_TAG, State

if TYPE_CHECKING:
    from ._core_py import BookStore


def load_slot_book(
    store: BookStore,
    slot: int,
    bids: Iterable[tuple[int, int]],
    asks: Iterable[tuple[int, int]],
    tick: int,
    exch_ts_ms: int,
    recv_ts_ns: int,
) -> bool:
    """``BookStore.load_book`` for a held slot: False (nothing changed) when the row is LIVE or RESOLVED."""
    from ._core_py import _touch  # the row stamp frames use; here, not at the top: _core_py imports this module

    row = store._read_row(slot)
    tick = operator.index(tick) or row[TICK]
    bid_levels, ask_levels = wire_levels(bids, asks, tick)
    if row[STATE] in (State.LIVE, State.RESOLVED):
        return False
    book = store._books[slot]
    assert book is not None
    book.bids, book.asks = bid_levels, ask_levels
    book.books_name_tick = True
    book.tick_unconfirmed = False
    row[TICK] = tick
    row[STATE] = State.UNCONFIRMED
    row[EPOCH] += 1
    _touch(row, book, operator.index(exch_ts_ms), operator.index(recv_ts_ns))
    store._write_row(slot, row)
    return True


def resolve_slot(store: BookStore, slot: int, won: bool | None) -> None:
    """``BookStore.resolve`` for a held slot: remember the outcome, the row turns RESOLVED once."""
    row = store._read_row(slot)
    store._resolved[str(store._ids[slot])] = None if won is None else bool(won)
    if row[STATE] != State.RESOLVED:
        row[STATE] = State.RESOLVED
        row[EPOCH] += 1
        store._write_row(slot, row)


def export_slot(store: BookStore, slot: int) -> bytes:
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


def restore_slot(store: BookStore, slot: int, blob: bytes | bytearray | memoryview) -> None:
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
