"""Pure-Python twin of ``pm_ws._shared_c``: the reader of a shared top-of-book table.

Same contract (see ``pm_ws.shared.TopReader``). The sequence-lock re-check is the same; the loads
are struct reads (opaque C calls in program order), which order as needed on x86 but carry no
acquire fence for a weakly ordered CPU: there, read with the compiled reader.
"""

from __future__ import annotations

import mmap
import struct
import time
from types import TracebackType
from typing import Any

from .row import N_FIELDS, SEQ, STATE, TOKEN_TAG, State, Top
from .shared import (
    H_CAPACITY,
    H_DEADLINE_NS,
    H_GENERATION,
    H_HEARTBEAT_NS,
    H_ROWS_OFFSET,
    H_STATUS,
    H_WRITER_PID,
    ROW_BYTES,
    STATUS_OPEN,
    STATUS_REPLACED,
    open_segment,
    read_directory,
)

_ROW = struct.Struct(f"@{N_FIELDS}q")
_WORD = struct.Struct("@q")
_TRIES = 4096  # row reads between two looks at the writer's liveness
_REATTACH_EVERY_NS = 100_000_000


class TopReader:
    """Read a shared top-of-book table from any process; the contract is in the ``pm_ws.shared`` docstring."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reattaches = 0
        self._next_reattach_ns = 0
        self._mapping: mmap.mmap | None = None
        self._map(open_segment(name))

    def _map(self, mapping: mmap.mmap) -> None:
        self._mapping = mapping
        self.capacity = self._word(H_CAPACITY)
        self.generation = self._word(H_GENERATION)
        self._rows_offset = self._word(H_ROWS_OFFSET)
        self._slots: dict[str, tuple[int, int]] = {}

    def _table(self) -> mmap.mmap:
        if self._mapping is None:
            raise ValueError(f"TopReader {self.name!r} is closed")
        return self._mapping

    def _word(self, index: int) -> int:
        return int(_WORD.unpack_from(self._table(), index * 8)[0])

    def _alive(self) -> bool:
        beat = self._word(H_HEARTBEAT_NS)
        return self._word(H_STATUS) == STATUS_OPEN and time.monotonic_ns() - beat <= self._word(H_DEADLINE_NS)

    def _dead_writer(self) -> bool:
        if self._alive():
            return False
        now = time.monotonic_ns()
        if now >= self._next_reattach_ns or self._word(H_STATUS) == STATUS_REPLACED:
            self._next_reattach_ns = now + _REATTACH_EVERY_NS
            self.reattach()
        return not self._alive()

    def _read(self, slot: int) -> list[int]:
        while True:
            table = self._table()
            offset = self._rows_offset + slot * ROW_BYTES
            for _ in range(_TRIES):
                seq = _WORD.unpack_from(table, offset + SEQ * 8)[0]
                if seq & 1:
                    continue
                row = list(_ROW.unpack_from(table, offset))
                if _WORD.unpack_from(table, offset + SEQ * 8)[0] == seq:
                    if row[STATE] != State.EMPTY and not self._alive() and self._dead_writer():
                        row[STATE] = State.STALE
                    return row
            if self._dead_writer():
                row = list(_ROW.unpack_from(self._table(), self._rows_offset + slot * ROW_BYTES))
                row[STATE] = State.STALE
                return row

    def _find(self, token_id: object) -> tuple[int, list[int]] | None:
        for _ in range(3):
            found = self._slots.get(token_id)  # type: ignore[call-overload]
            if found is None:
                self._slots = read_directory(self._table(), self.capacity)
                found = self._slots.get(token_id)  # type: ignore[call-overload]
            if found is None:
                generation = self.generation
                self._dead_writer()  # a new writer's table may hold it
                if self.generation == generation:
                    return None
                continue
            slot, tag = found
            row = self._read(slot)
            if row[TOKEN_TAG] == tag:
                return slot, row
            self._slots = {}
        return None

    def top(self, token_id: str) -> Top:
        """Return the token's row as a consistent :class:`pm_ws.Top`; KeyError if not held."""
        found = self._find(token_id)
        if found is None:
            raise KeyError(token_id)
        return Top.from_row(found[1])

    def slot(self, token_id: str) -> int:
        """Return the token's slot; KeyError if the table does not hold it."""
        found = self._find(token_id)
        if found is None:
            raise KeyError(token_id)
        return found[0]

    def __contains__(self, token_id: object) -> bool:
        return self._find(token_id) is not None

    def tokens(self) -> list[str]:
        """Return the ids of the tokens the table holds, in slot order."""
        self._slots = read_directory(self._table(), self.capacity)
        return sorted(self._slots, key=lambda token: self._slots[token][0])

    def snapshot(self, out: Any = None) -> Any:
        """Return every row, each consistent, as an int64 buffer of shape ``(capacity, N_FIELDS)``."""
        self._dead_writer()
        if out is None:
            out = memoryview(bytearray(self.capacity * ROW_BYTES)).cast("q", (self.capacity, N_FIELDS))
        target = memoryview(out).cast("B")
        if target.nbytes != self.capacity * ROW_BYTES:
            raise ValueError(f"out must have {self.capacity * ROW_BYTES} bytes, had {target.nbytes}")
        for slot in range(self.capacity):
            _ROW.pack_into(target, slot * ROW_BYTES, *self._read(slot))
        return out

    def writer_alive(self) -> bool:
        """True while the writer's table is open and its heartbeat within the deadline."""
        return self._alive()

    def heartbeat_age_ns(self) -> int:
        """Nanoseconds since the writer's last beat."""
        return time.monotonic_ns() - self._word(H_HEARTBEAT_NS)

    @property
    def writer_pid(self) -> int:
        return self._word(H_WRITER_PID)

    @property
    def deadline_ns(self) -> int:
        """How old the writer's heartbeat may be before every row reads STALE."""
        return self._word(H_DEADLINE_NS)

    def reattach(self) -> bool:
        """Pick up a new writer's table of the same name, if there is one; True when it switched."""
        old = self._table()
        try:
            mapping = open_segment(self.name)
        except FileNotFoundError:
            return False
        if _WORD.unpack_from(mapping, H_GENERATION * 8)[0] == self.generation:
            mapping.close()
            return False
        self._map(mapping)
        old.close()
        self.reattaches += 1
        return True

    def close(self) -> None:
        """Unmap the table; the reader can no longer be used."""
        if self._mapping is not None:
            self._mapping.close()
            self._mapping = None

    def __enter__(self) -> TopReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
