"""pm_ws: exact, current Polymarket CLOB order books from the market WebSocket channel.

The per-frame work (dispatcher, exact price/size parsing, L2 books, top-of-book rows) is the
compiled ``pm_ws._core_c`` module; ``IMPLEMENTATION`` says which core is running.
"""

from __future__ import annotations

from ._core import IMPLEMENTATION, BookStore, Dispatcher, TopReader, parse_price, parse_size, price_to_cents
from .backoff import ExponentialBackoff
from .client import DEFAULT_URL, ClientEvent, EventStream, MarketClient, PolymarketMarketWsClient
from .errors import CapacityError, ParseError, PmWsError, ProtocolError
from .row import (
    ASK_LEVELS,
    ASK_PX,
    ASK_SZ,
    BID_LEVELS,
    BID_PX,
    BID_SZ,
    CONFIRM_TS_NS,
    EPOCH,
    EXCH_TS_MS,
    FIELD_NAMES,
    LAST_PX,
    LAST_SIDE,
    LAST_SZ,
    MISMATCHES,
    N_FIELDS,
    PRICE_SCALE,
    RECV_TS_NS,
    SEQ,
    SIDE_BUY,
    SIDE_SELL,
    SIZE_SCALE,
    STATE,
    TICK,
    TOKEN_TAG,
    State,
    Top,
    token_tag,
)

__version__ = "0.1.0"

__all__ = [
    "MarketClient", "PolymarketMarketWsClient", "ClientEvent", "EventStream", "DEFAULT_URL", "ExponentialBackoff",
    "IMPLEMENTATION", "BookStore", "Dispatcher", "TopReader", "parse_price", "parse_size", "price_to_cents",
    "PmWsError", "ProtocolError", "ParseError", "CapacityError",
    "PRICE_SCALE", "SIZE_SCALE", "N_FIELDS", "FIELD_NAMES", "State", "Top", "SIDE_BUY", "SIDE_SELL",
    "BID_PX", "BID_SZ", "ASK_PX", "ASK_SZ", "LAST_PX", "LAST_SZ", "LAST_SIDE", "EXCH_TS_MS",
    "RECV_TS_NS", "SEQ", "EPOCH", "STATE", "TICK", "BID_LEVELS", "ASK_LEVELS", "MISMATCHES",
    "TOKEN_TAG", "CONFIRM_TS_NS", "token_tag",
]  # fmt: skip
