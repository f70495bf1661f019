"""The parts of ``MarketClient.stats()``: one entry per connection and one per token."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ._core import BookStore
from ._shard import Shard
from .row import EPOCH, RECV_TS_NS, STATE, State

_STATES = tuple(State)  # State by value (the values are 0, 1, 2 ...): cheaper than State(value) per row


def connection_stats(shard: Shard, now: int) -> dict[str, Any]:
    """``shard``'s entry of ``stats()['connections']``; ``now`` is monotonic ns."""
    return {
        "id": shard.id,
        "state": shard.state.value,
        "tokens": len(shard.tokens),
        "frames": shard.frames,
        "bytes": shard.bytes,
        "reconnects": shard.reconnects,
        "redrives": shard.redrives,
        "probes": shard.probes,
        "aborts": shard.aborts,
        "pings": shard.pings,
        "silences": shard.silences,  # market data paused longer than confirm_interval (REST books dropped)
        "awaiting_snapshot": len(shard.awaiting),
        "last_frame_age": (now - shard.last_frame_ns) / 1e9 if shard.last_frame_ns else None,
    }


def token_stats(store: BookStore, owner: Mapping[str, Shard]) -> dict[str, dict[str, Any]]:
    """``stats()['tokens']``: the row of each token in ``owner`` and the connection that carries it."""
    now = time.time_ns()  # the rows' RECV_TS_NS clock
    view = store.view
    slot_of = store.slot
    tokens: dict[str, dict[str, Any]] = {}
    for token, shard in owner.items():
        slot = slot_of(token)
        recv_ns = view[slot, RECV_TS_NS]
        tokens[token] = {
            "state": _STATES[view[slot, STATE]],
            "epoch": view[slot, EPOCH],
            "age": (now - recv_ns) / 1e9 if recv_ns else None,
            "connection": shard.id,
        }
    return tokens
