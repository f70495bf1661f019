"""The client's connections: which one carries which token, retiring the empty ones, closing them all.

Tokens fill the shards in subscription order; a shard left without tokens retires (its socket closes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ._core import BookStore
from ._shard import Shard, ShardState


class ShardPool:
    """The client's shards, the shard of each token, and the tasks of shards closing for lack of tokens."""

    def __init__(self, max_tokens_per_shard: int, new_shard: Callable[[int], Shard]) -> None:
        self.shards: list[Shard] = []
        self.owner: dict[str, Shard] = {}  # token -> the shard that carries it
        self.retiring: set[asyncio.Task[None]] = set()  # tasks of shards closing for lack of tokens
        self._max_tokens = max_tokens_per_shard
        self._new_shard = new_shard  # new_shard(ident)
        self._next_id = 0

    def place(self, token: str) -> Shard:
        """Put ``token`` on the first shard with room (a new one if none has), to be sent on its next flush."""
        shard = self._shard_with_room()
        shard.tokens[token] = None
        self.owner[token] = shard
        if token in shard.server_tokens:  # unsubscribed and back before the flush: the server
            shard.redrive[token] = None  # still has it and would send no book without a re-drive
        shard.dirty = True
        return shard

    def take(self, token: str) -> Shard | None:
        """Take ``token`` off its shard (None: not placed); a shard left without tokens must be retired."""
        shard = self.owner.pop(token, None)
        if shard is not None:
            shard.forget(token)
        return shard

    def retire(self, shard: Shard) -> None:
        """Drop a shard left without tokens; its writer closes the socket."""
        self.shards.remove(shard)
        if shard.task is None:
            return
        self.retiring.add(shard.task)  # shutdown still waits for it
        shard.task.add_done_callback(self.retiring.discard)
        if shard.socket is None:
            shard.task.cancel()  # connecting or in backoff: nothing to close cleanly

    async def tick(self, store: BookStore, seconds: float) -> None:
        """Forever, every ``seconds``: ``store``'s heartbeat and the watchdogs of every open shard."""
        # The heartbeat tells readers of a shared table this process is alive, sockets up or not (rows say
        # STALE then). One task for all shards: a task per shard would wake the loop once per shard and
        # tick (2,000 times a second for 100 shards)
        while True:
            store.beat()
            now = time.monotonic_ns()
            for shard in tuple(self.shards):  # a check's events may subscribe, adding a shard
                if shard.state is ShardState.OPEN:
                    shard.watch(now)
            await asyncio.sleep(seconds)

    async def close(self) -> None:
        """Close every socket, then end every shard's task (retiring ones too)."""
        closing = [shard.socket.close() for shard in self.shards if shard.socket is not None]
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
        tasks = [shard.task for shard in self.shards if shard.task is not None] + list(self.retiring)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for shard in self.shards:
            shard.task = None
            shard.state = ShardState.CLOSED

    def _shard_with_room(self) -> Shard:
        for shard in self.shards:
            if len(shard.tokens) < self._max_tokens:
                return shard
        shard = self._new_shard(self._next_id)
        self._next_id += 1
        self.shards.append(shard)
        return shard
