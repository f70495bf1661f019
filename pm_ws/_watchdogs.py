"""The shard's watchdogs: small checks ``check(shard, now)`` that act when a deadline passed.

Each one re-drives tokens (unsubscribe + subscribe on the same socket) or aborts the socket itself;
``now`` is ``time.monotonic_ns()``. A shard runs :data:`WATCHDOGS` in order on every tick of its
watchdog task, and :data:`HOUSEKEEPING` every ``HOUSEKEEPING_NS`` from the reader while frames flow
(and on every tick, through :func:`housekeeping`); it stops at the check that lost the socket.

Adding a watchdog: write its check here, list it below with the name of its deadline, and give
``MarketClient`` that parameter (seconds). The client validates every deadline listed here and makes
the tick fine enough for the shortest one.
"""

from __future__ import annotations

from ._shard import Shard, Watchdog
from .client_events import CAUSE_CORE
from .row import EPOCH, STATE, State

_LIVE = int(State.LIVE)
_INVALID = int(State.INVALID)


def no_inbound_frame(shard: Shard, now: int) -> None:
    """No inbound frame (PONG included) for ``inbound_timeout``: abort the socket (the shard reconnects)."""
    timeout = shard.owner.inbound_timeout
    if now - shard.last_frame_ns > int(timeout * 1e9):
        shard.abort(shard.socket, f"no inbound frame for {timeout:g}s")


def no_data(shard: Shard, now: int) -> None:
    """No data (PONG does not count) for ``silence_timeout``: every token STALE and re-driven."""
    timeout = shard.owner.silence_timeout
    if shard.tokens and now - shard.last_data_ns > int(timeout * 1e9):
        shard.last_data_ns = now  # one re-drive per silence period
        tokens = list(shard.tokens)
        shard.owner._mark_stale(tokens, "silence")
        shard.redrive_tokens(tokens, f"no data for {timeout:g}s")


def housekeeping(shard: Shard, now: int) -> None:
    """Run :data:`HOUSEKEEPING`, also when no frame comes to run it."""
    shard.housekeep(now)


def queued_resyncs(shard: Shard, now: int) -> None:
    """Hand the dispatcher's resync queue (shared by every shard) to the shards of its tokens."""
    resync = shard.owner.dispatcher.pending_resync()
    if resync:
        shard.owner._route_resyncs(resync, now)


def deferred_resyncs(shard: Shard, now: int) -> None:
    """Re-drive the resyncs the minimum gap held back, once due (unless a book came meanwhile)."""
    if not shard.deferred:
        return
    due = [token for token, at in shard.deferred.items() if at <= now]
    for token in due:
        del shard.deferred[token]
    due = [token for token in due if shard.owner._row(token, STATE) != _LIVE]
    if due:
        shard.redrive_tokens(due, "resync")


def missing_books(shard: Shard, now: int) -> None:
    """Report the books that arrived; re-drive a token whose book is ``snapshot_timeout`` late.

    A token still without a book after its re-drive costs a rebuild (once per token), or the socket
    looks dead as a whole; after that it is only re-driven, so it cannot keep disturbing its neighbours.
    """
    if not shard.awaiting:
        return
    owner = shard.owner
    view = owner.store.view
    slot_of = owner.store.slot
    arrived = []
    late = []
    for token, (deadline, epoch) in shard.awaiting.items():
        slot = slot_of(token)
        state = view[slot, STATE]
        if state == _LIVE or (state == _INVALID and view[slot, EPOCH] != epoch):
            arrived.append(token)
        elif now >= deadline:
            late.append(token)
    for token in arrived:
        del shard.awaiting[token]
        shard.redriven.discard(token)
        shard.rebuilt_for.discard(token)
        state = State(owner._row(token, STATE))
        owner._emit("state", token, {"state": state, "reason": "snapshot", "cause": CAUSE_CORE})
    if arrived and not shard.healthy:
        shard.healthy = True
        shard.backoff.reset()  # only a socket that delivered a snapshot proves the server healthy
    if not late:
        return
    for token in late:
        del shard.awaiting[token]
    first = [token for token in late if token not in shard.redriven]
    again = [token for token in late if token in shard.redriven]
    if first:
        shard.redrive_tokens(first, f"no book after {owner.snapshot_timeout:g}s")
    if not again:
        return
    culprits = [token for token in again if token not in shard.rebuilt_for]
    if culprits or not any(owner._row(token, STATE) == _LIVE for token in shard.tokens):
        shard.rebuilt_for.update(culprits)
        shard.abort(shard.socket, f"{len(again)} tokens got no book even after a re-drive")
    else:
        shard.redrive_tokens(again, "no book after a rebuild either")


# Every HOUSEKEEPING_NS while frames flow, and on every tick
HOUSEKEEPING = (
    Watchdog(queued_resyncs, None),
    Watchdog(deferred_resyncs, None),
    Watchdog(missing_books, "snapshot_timeout"),
)

# On every tick of a shard's watchdog task, in this order
WATCHDOGS = (
    Watchdog(no_inbound_frame, "inbound_timeout"),
    Watchdog(housekeeping, None),
    Watchdog(no_data, "silence_timeout"),
)

# The MarketClient parameters the checks above need, in the order a tick runs them
DEADLINES = tuple(
    watchdog.deadline
    for listed in WATCHDOGS
    for watchdog in (HOUSEKEEPING if listed.check is housekeeping else (listed,))
    if watchdog.deadline is not None
)
