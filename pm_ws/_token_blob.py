"""One held token's whole state as bytes: ``BookStore.export_token`` and ``restore_token`` of both cores.

Both cores encode and decode through this module, so a blob from either restores in the other and
both refuse exactly the same blobs. Layout (version 1, all integers little-endian)::

    offset  size            field
    0       4               magic  b"PMTK"
    4       1               version (1)
    5       1               flags: 1 = books name the tick (books_name_tick), 2 = the tick awaits a book
                            naming it since mark_stale (tick_unconfirmed); other bits 0
    6       1               resolution: 0 not resolved, 1 resolved (winner unknown), 2 lost, 3 won
    7       1               row fields (N_FIELDS, 24)
    8       4   i32         owner (0 .. OWNER_MAX)
    12      4   u32         bid levels (nb)
    16      4   u32         ask levels (na)
    20      8 * 24  i64     the row, every field (SEQ even, TOKEN_TAG the token's)
    212     10 * nb         bids, worst to best (ascending price): price u16, size i64
    ...     10 * na         asks, worst to best (descending price): price u16, size i64

A blob is refused (ValueError) unless it is whole and its row agrees with its levels as the core
keeps them: the level counts, the best prices and sizes (0 / PRICE_SCALE and size 0 for an empty
side), prices 0 .. PRICE_SCALE strictly ordered, sizes above 0, a held state, spare fields 0.
The resync queue is not part of a token's state (it is the client's work list) and is not carried.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .row import (
    ASK_LEVELS,
    ASK_PX,
    ASK_SZ,
    BID_LEVELS,
    BID_PX,
    BID_SZ,
    EPOCH,
    FIRST_SPARE,
    LAST_SIDE,
    N_FIELDS,
    OWNER_MAX,
    PRICE_SCALE,
    SEQ,
    SEQ_STEP,
    SIDE_SELL,
    STATE,
    TICK,
    TOKEN_TAG,
    State,
)

__all__ = ["BLOB_VERSION", "TokenState", "decode_token", "encode_token", "restored_counters"]

BLOB_MAGIC = b"PMTK"
BLOB_VERSION = 1
FLAG_BOOKS_NAME_TICK = 1
FLAG_TICK_UNCONFIRMED = 2
_HEADER = struct.Struct("<4sBBBBiII")  # magic, version, flags, resolution, row fields, owner, bid and ask levels
_ROW = struct.Struct(f"<{N_FIELDS}q")
_LEVEL = struct.Struct("<Hq")  # price units fit 16 bits: PRICE_SCALE is 10**4
_RESOLUTION = {None: 1, False: 2, True: 3}  # resolve(won) -> byte; 0: not resolved
_WON = {byte: won for won, byte in _RESOLUTION.items()}
_HELD_STATES = range(State.SUBSCRIBING, max(State) + 1)

Level = tuple[int, int]


class TokenState(NamedTuple):
    """What a blob carries: a token's row, levels (worst to best), hidden flags, owner and resolution."""

    row: list[int]
    bids: list[Level]
    asks: list[Level]
    books_name_tick: bool
    tick_unconfirmed: bool
    owner: int
    resolved: bool
    won: bool | None  # resolve()'s argument; None when not resolved or the winner is unknown


def encode_token(state: TokenState) -> bytes:
    """The blob of one token (``BookStore.export_token``)."""
    flags = FLAG_BOOKS_NAME_TICK * state.books_name_tick | FLAG_TICK_UNCONFIRMED * state.tick_unconfirmed
    resolution = _RESOLUTION[state.won] if state.resolved else 0
    header = _HEADER.pack(
        BLOB_MAGIC, BLOB_VERSION, flags, resolution, N_FIELDS, state.owner, len(state.bids), len(state.asks)
    )
    pack = _LEVEL.pack
    return b"".join([header, _ROW.pack(*state.row), *[pack(*level) for level in state.bids + state.asks]])


def decode_token(blob: bytes | bytearray | memoryview, tag: int) -> TokenState:
    """Check a blob whole and return what it carries; ``tag`` is the ``TOKEN_TAG`` of the token it must be of.

    Raises
    ------
    ValueError
        Not a version-1 token blob, cut short or padded, of another token, or a row that disagrees
        with its levels (see the module docstring).
    TypeError
        ``blob`` is not a bytes-like object.
    """
    data = memoryview(blob).cast("B")
    if len(data) < _HEADER.size + _ROW.size or data[:4] != BLOB_MAGIC:
        raise ValueError("not a pm_ws token blob")
    _, version, flags, resolution, fields, owner, n_bids, n_asks = _HEADER.unpack_from(data)
    if version != BLOB_VERSION or fields != N_FIELDS:
        raise ValueError(f"token blob version {version} with {fields} row fields: this core reads version "
                         f"{BLOB_VERSION} with {N_FIELDS}")  # fmt: skip
    if len(data) != _HEADER.size + _ROW.size + _LEVEL.size * (n_bids + n_asks):
        raise ValueError(f"token blob of {len(data)} bytes does not hold {n_bids} bid and {n_asks} ask levels")
    if flags & ~(FLAG_BOOKS_NAME_TICK | FLAG_TICK_UNCONFIRMED) or resolution > max(_WON) or not 0 <= owner <= OWNER_MAX:
        raise ValueError(f"token blob flags {flags}, resolution {resolution} or owner {owner} out of range")
    row = list(_ROW.unpack_from(data, _HEADER.size))
    levels = list(_LEVEL.iter_unpack(data[_HEADER.size + _ROW.size :]))
    bids, asks = levels[:n_bids], levels[n_bids:]
    _check_row(row, tag)
    _check_side("bids", bids, row[BID_LEVELS], (row[BID_PX], row[BID_SZ]), (0, 0), 1)
    _check_side("asks", asks, row[ASK_LEVELS], (row[ASK_PX], row[ASK_SZ]), (PRICE_SCALE, 0), -1)
    return TokenState(
        row, bids, asks, bool(flags & FLAG_BOOKS_NAME_TICK), bool(flags & FLAG_TICK_UNCONFIRMED), owner,
        resolution > 0, _WON.get(resolution),
    )  # fmt: skip


def restored_counters(seq: int, epoch: int, source_row: list[int]) -> tuple[int, int]:
    """SEQ and EPOCH a slot at ``seq``/``epoch`` takes when a token is restored into it.

    The source's own, so rows are byte-identical, unless that would not move the slot on: SEQ and
    EPOCH never go back for a slot, and a restore is a write (SEQ moves, by at least SEQ_STEP) that
    replaces the book (EPOCH moves, by at least 1). So ``max(source SEQ, seq + SEQ_STEP)`` and
    ``max(source EPOCH, epoch + 1)``.
    """
    return max(source_row[SEQ], seq + SEQ_STEP), max(source_row[EPOCH], epoch + 1)


def _check_row(row: list[int], tag: int) -> None:
    if row[TOKEN_TAG] != tag:
        raise ValueError("token blob of another token (TOKEN_TAG differs)")
    if row[SEQ] < 0 or row[SEQ] % SEQ_STEP or row[EPOCH] < 0:
        raise ValueError(f"token blob SEQ {row[SEQ]} (must be even, >= 0) or EPOCH {row[EPOCH]} (>= 0)")
    if row[STATE] not in _HELD_STATES or not 0 <= row[TICK] <= PRICE_SCALE or not 0 <= row[LAST_SIDE] <= SIDE_SELL:
        raise ValueError(f"token blob STATE {row[STATE]}, TICK {row[TICK]} or LAST_SIDE {row[LAST_SIDE]} out of range")
    if any(row[FIRST_SPARE:]):
        raise ValueError("token blob spare row fields are not 0")


def _check_side(name: str, levels: list[Level], count: int, top: Level, empty_top: Level, order: int) -> None:
    # Levels worst -> best: prices strictly rising (order 1, bids) or falling (-1, asks), as the cores keep them
    if count != len(levels) or top != (levels[-1] if levels else empty_top):
        raise ValueError(f"token blob row disagrees with its {name}: {count} levels, top {top}")
    previous = -1 if order > 0 else PRICE_SCALE + 1
    for price, size in levels:
        if not (0 <= price <= PRICE_SCALE and (price - previous) * order > 0 and size > 0):
            raise ValueError(f"token blob {name}: level ({price}, {size}) out of range or order")
        previous = price
