"""Layout of the top-of-book row: units, field indices, token states, and the limits both cores share.

One row of ``N_FIELDS`` int64 values per token slot, exported by ``BookStore.view``.
The compiled module declares the same indices in ``_core_c.pxd``; a test keeps them equal.
"""

from __future__ import annotations

import operator
import re
from enum import IntEnum
from typing import NamedTuple

from ._events import STAT_KEYS as STAT_KEYS  # the counters are derived from the event vocabulary; kept importable here

PRICE_SCALE = 10_000  # price units per 1.0: every Polymarket tick (0.1 ... 0.0001) is whole
SIZE_SCALE = 1_000_000  # size units per share (trades carry 6 decimals)
PRICE_DECIMALS = 4  # fractional digits of a price: PRICE_SCALE == 10**PRICE_DECIMALS
SIZE_DECIMALS = 6  # fractional digits of a size: SIZE_SCALE == 10**SIZE_DECIMALS

BID_PX = 0  # best bid price, 0 when the bid side is empty
BID_SZ = 1  # size at the best bid
ASK_PX = 2  # best ask price, PRICE_SCALE when the ask side is empty
ASK_SZ = 3  # size at the best ask
LAST_PX = 4  # last trade price
LAST_SZ = 5  # last trade size
LAST_SIDE = 6  # SIDE_BUY, SIDE_SELL or 0 when unknown
EXCH_TS_MS = 7  # exchange timestamp of the last event applied, ms
RECV_TS_NS = 8  # receive time of the frame that last changed the row, ns (time.time_ns clock)
SEQ = 9  # the row's sequence lock: odd while the writer is inside the row, +2 per change; never goes back
SEQ_STEP = 2  # SEQ grows by this on every change of a row (odd in between), even across remove/add
EPOCH = 10  # bumped on every snapshot, reconnect (mark_stale), tick-size change and add; never goes back
STATE = 11  # a State value
TICK = 12  # tick size in price units, 0 until known
BID_LEVELS = 13  # number of bid levels in the book
ASK_LEVELS = 14  # number of ask levels in the book
MISMATCHES = 15  # times this token's book was found untrustworthy (made INVALID)
TOKEN_TAG = 16  # token_tag() of the token in this slot, 0 when the slot is empty
CONFIRM_TS_NS = 17  # receive time at which the server last confirmed the top of book, ns; 0 until then
OUTCOME = 18  # a RESOLVED token's outcome: OUTCOME_WON, OUTCOME_LOST, or OUTCOME_UNKNOWN (also while not resolved)
FIRST_SPARE = 19  # fields FIRST_SPARE .. N_FIELDS - 1 are spare, always 0: room for new fields at fixed indices
N_FIELDS = 24  # 24 x int64 = 192 bytes, three cache lines per row (a row stays a multiple of 64 bytes)

SIDE_BUY = 1
SIDE_SELL = 2

OUTCOME_UNKNOWN = 0  # not resolved, or resolved without a known winner
OUTCOME_WON = 1  # the market resolved and this token is the winning outcome
OUTCOME_LOST = 2  # the market resolved and another token won

# The token id grammar BookStore.add accepts (the compiled core checks the same bytes in C)
TOKEN_ID_MAX = 100  # characters; real CLOB token ids are ~77 digits
TOKEN_ID = re.compile(r"[0-9A-Za-z_.:-]{1,%d}" % TOKEN_ID_MAX)
TOKEN_ID_EXPECTED = f"expected 1-{TOKEN_ID_MAX} characters of [0-9A-Za-z_.:-]"

FIELD_NAMES = (
    "bid_px", "bid_sz", "ask_px", "ask_sz", "last_px", "last_sz", "last_side",
    "exch_ts_ms", "recv_ts_ns", "seq", "epoch", "state", "tick",
    "bid_levels", "ask_levels", "mismatches", "token_tag", "confirm_ts_ns", "outcome",
) + tuple(f"spare_{index}" for index in range(FIRST_SPARE, N_FIELDS))  # fmt: skip

_FNV_OFFSET = 0xCBF2_9CE4_8422_2325  # FNV-1a 64 offset basis and prime
_FNV_PRIME = 0x0000_0100_0000_01B3
_MASK64 = (1 << 64) - 1
_TAG_MASK = (1 << 63) - 1  # a tag is a positive int64


def token_tag(token_id: str) -> int:
    """The ``TOKEN_TAG`` a row carries for ``token_id``: FNV-1a 64 of its ASCII bytes, masked to 63 bits, never 0.

    A reader that cached a token's slot compares ``view[slot, TOKEN_TAG]`` with this value (and
    ``EPOCH`` with the one it saw) to tell that the slot still holds that token.
    """
    if not isinstance(token_id, str):
        raise TypeError(f"token_id must be str, was {type(token_id).__name__}")
    tag = _FNV_OFFSET
    for byte in token_id.encode("ascii"):
        tag = ((tag ^ byte) * _FNV_PRIME) & _MASK64
    return (tag & _TAG_MASK) or 1


class State(IntEnum):
    """Whether a token's row may be traded on: only ``LIVE`` may."""

    EMPTY = 0  # unused slot
    SUBSCRIBING = 1  # subscribed, no snapshot yet
    LIVE = 2  # built from a snapshot and every delta since
    STALE = 3  # connection lost, silent, or tick size changed; waiting for a snapshot
    INVALID = 4  # local book disagrees with the server; resync under way
    RESOLVED = 5  # the market resolved: final, never traded again (OUTCOME and BookStore.resolution name the winner)
    UNCONFIRMED = 6  # book loaded from REST (BookStore.load_book): LIVE once a WebSocket best bid/ask matches it


class Top(NamedTuple):
    """One token's top-of-book row as Python ints (see the field constants for units)."""

    bid_px: int
    bid_sz: int
    ask_px: int
    ask_sz: int
    last_px: int
    last_sz: int
    last_side: int
    exch_ts_ms: int
    recv_ts_ns: int
    seq: int
    epoch: int
    state: State
    tick: int
    bid_levels: int
    ask_levels: int
    mismatches: int
    token_tag: int
    confirm_ts_ns: int
    outcome: int  # OUTCOME_WON / OUTCOME_LOST once RESOLVED with a known winner, else OUTCOME_UNKNOWN

    @classmethod
    def from_row(cls, row: "list[int] | tuple[int, ...]") -> "Top":
        values = list(row)[:FIRST_SPARE]  # the spare fields are not part of a Top
        values[STATE] = State(values[STATE])
        return cls._make(values)


# A token's owner (BookStore.add/set_owner, Dispatcher.feed): 0 = no owner, else the number of the
# connection the token belongs to; with feed(owner=n) only tokens owned by n change
OWNER_MAX = 2**31 - 1


def check_owner(owner: int) -> int:
    """``owner`` as an int in ``0 .. OWNER_MAX``; TypeError for a non-integer, ValueError outside the range."""
    owner = operator.index(owner)
    if not 0 <= owner <= OWNER_MAX:
        raise ValueError(f"owner must be 0 .. {OWNER_MAX}, was {owner}")
    return owner


# new_market ids the Dispatcher remembers for its dedup (skip_duplicate): the newest SEEN_MARKETS_MAX
# ids of at most SEEN_MARKET_ID_MAX characters (a condition id has 66), so memory stays bounded
# whatever ids a server sends; a longer id is never remembered, so never deduplicated
SEEN_MARKETS_MAX = 65_536
SEEN_MARKET_ID_MAX = 128

MAX_JSON_DEPTH = 32  # deepest JSON nesting a frame may have; the top-level object or array is depth 1
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024  # Dispatcher(max_frame_bytes=...): larger frames are skipped unread

assert len(FIELD_NAMES) == N_FIELDS
assert 10**PRICE_DECIMALS == PRICE_SCALE and 10**SIZE_DECIMALS == SIZE_SCALE
