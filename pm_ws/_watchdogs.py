"""The shard's watchdogs: small checks ``check(shard, now)`` that act when a deadline passed.

Each one re-drives tokens (unsubscribe + subscribe on the same socket) or aborts the socket itself;
``now`` is ``time.monotonic_ns()``. Every open shard runs :data:`WATCHDOGS` in order on every tick of
the client (one task ticks for all shards), and :data:`HOUSEKEEPING` every ``HOUSEKEEPING_NS`` from the
reader while frames flow (and on every tick, through :func:`housekeeping`); it stops at the check that
lost the socket.

Adding a watchdog: write its check here, list it below with the name of its deadline, and give
``MarketClient`` that parameter (seconds). The client validates every deadline listed here and makes
the tick fine enough for the shortest one.
"""

from __future__ import annotations

import time

from ._shard import Shard, Watchdog
from .client_events import CAUSE_CORE
from .row import CONFIRM_TS_NS, EPOCH, STATE, State

_LIVE = int(State.LIVE)
_INVALID = int(State.INVALID)
# A book that came another way (REST bootstrap) or a market that resolved: nothing left for a re-drive to fetch
_SETTLED = (int(State.UNCONFIRMED), int(State.RESOLVED))

CONFIRM_MARGIN_TICKS = 2  # the confirmation rule acts this many watchdog ticks early: a late tick keeps the promise
PROBE_BATCH_SHARE = 0.125  # a probe batch also takes rows due within this share of confirm_interval


def no_inbound_frame(shard: Shard, now: int) -> None:
    """No inbound frame (PONG included) for ``inbound_timeout``: abort the socket (the shard reconnects)."""
    timeout = shard.owner.inbound_timeout
    if now - shard.last_frame_ns > int(timeout * 1e9):
        shard.abort(shard.socket, f"no inbound frame for {timeout:g}s")


def unconfirmed(shard: Shard, now: int) -> None:
    """Keep every LIVE row confirmed: probe the unconfirmed ones, STALE the ones a probe did not confirm.

    A row's ``CONFIRM_TS_NS`` is when the server last confirmed its top of book (a ``book``, or a
    ``price_change``/``best_bid_ask`` whose best prices matched). A LIVE row unconfirmed for
    ``confirm_interval`` is probed: re-driven on its own socket while it stays LIVE (the fresh ``book``
    confirms it). One still unconfirmed ``snapshot_timeout`` later turns STALE and is re-driven the usual
    way. Both act ``CONFIRM_MARGIN_TICKS`` ticks early, so a LIVE row is never older than
    ``confirm_interval + snapshot_timeout`` since its last confirmation even when a tick runs late.
    Rows are read only when the earliest of them falls due, not on every tick.
    """
    if now < shard.next_confirm_ns:
        return
    owner = shard.owner
    view = owner.store.view
    slot_of = owner.store.slot
    margin = CONFIRM_MARGIN_TICKS * int(owner._tick * 1e9)
    probe_age = int(owner.confirm_interval * 1e9) - margin
    stale_age = probe_age + int(owner.snapshot_timeout * 1e9)
    batch_age = probe_age - int(owner.confirm_interval * 1e9 * PROBE_BATCH_SHARE)
    wall = time.time_ns()  # the rows' CONFIRM_TS_NS clock
    probed = shard.probed
    next_due = wall + probe_age  # a row confirmed from now on falls due no earlier
    due: list[tuple[str, int]] = []
    soon: list[tuple[str, int]] = []  # due within PROBE_BATCH_SHARE: they join a batch, never start one
    stale = []
    for token in shard.tokens:
        slot = slot_of(token)
        if view[slot, STATE] != _LIVE:
            continue
        confirmed = view[slot, CONFIRM_TS_NS]
        age = wall - confirmed
        if probed.get(token) == confirmed:  # probed, no confirmation since
            if age >= stale_age:
                stale.append(token)
            else:
                next_due = min(next_due, confirmed + stale_age)
        elif age >= probe_age or age < 0:  # confirmed "in the future": the wall clock stepped back
            due.append((token, confirmed))
        else:
            if age >= batch_age:
                soon.append((token, confirmed))
            next_due = min(next_due, confirmed + probe_age)
    if due:
        batch = due + soon
        for token, confirmed in batch:
            probed[token] = confirmed
            next_due = min(next_due, confirmed + stale_age)
        shard.probe_tokens([token for token, _ in batch])
    shard.next_confirm_ns = now + next_due - wall
    if stale:
        for token in stale:
            del probed[token]
        owner._mark_stale(stale, "unconfirmed")
        shard.redrive_tokens(stale, f"probe unanswered for {owner.snapshot_timeout:g}s")


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
    A token whose book came from REST (UNCONFIRMED) or whose market resolved stops being awaited, without
    proving the socket healthy.
    """
    if not shard.awaiting:
        return
    owner = shard.owner
    view = owner.store.view
    slot_of = owner.store.slot
    arrived = []
    settled = []
    late = []
    for token, (deadline, epoch) in shard.awaiting.items():
        slot = slot_of(token)
        state = view[slot, STATE]
        if state == _LIVE or (state == _INVALID and view[slot, EPOCH] != epoch):
            arrived.append(token)
        elif state in _SETTLED:
            settled.append(token)
        elif now >= deadline:
            late.append(token)
    for token in settled:
        del shard.awaiting[token]
        shard.redriven.discard(token)
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
    Watchdog(unconfirmed, "confirm_interval"),
)

# The MarketClient parameters the checks above need, in the order a tick runs them
DEADLINES = tuple(
    watchdog.deadline
    for listed in WATCHDOGS
    for watchdog in (HOUSEKEEPING if listed.check is housekeeping else (listed,))
    if watchdog.deadline is not None
)
