"""The top-of-book table in a named POSIX shared-memory segment: its layout, the writer's side, readers.

``BookStore(capacity, shared=NAME)`` creates the segment ``/NAME`` (mode 0600: the same user only)
and keeps its rows there; ``TopReader(NAME)`` in any process of that user reads them without a lock
and without asking the writer. Every word is a native int64.

Layout, version 1 (offsets in bytes):

=========  ==============================================================================
offset     content
=========  ==============================================================================
0          header, ``HEADER_BYTES`` (one page); word ``H_*`` at byte 8 * H_*
4096       token directory: ``capacity`` entries of ``DIR_ENTRY_BYTES``, one per slot
rows       ``capacity`` rows of ``N_FIELDS`` int64 (``ROW_BYTES``), the ``BookStore.view`` layout
=========  ==============================================================================

A directory entry is ``[seq, tag, length, id bytes ...]``: ``seq`` is the entry's own sequence lock
(as a row's SEQ: odd while written), ``tag`` the ``token_tag`` of the id, ``length`` 0 for a free
slot. The row's ``TOKEN_TAG``, read under the row's lock, is the authority: a reader that finds a
token in the directory checks it against the row it reads.

The writer publishes ``H_MAGIC`` last, beats ``H_HEARTBEAT_NS`` (``time.monotonic_ns`` clock, one
clock for the whole machine) and sets ``H_STATUS`` to CLOSED when it exits cleanly (then unlinks
the name) or REPLACED when a new writer takes the name over from a dead one. A reader treats every
row as STALE once the status is not OPEN or the heartbeat is older than ``H_DEADLINE_NS``.

The reader, ``TopReader(name)``: ``top(token)`` returns a consistent :class:`pm_ws.Top` (never a
row half-written: reads retry on the row's sequence lock, the writer never waits), ``slot(token)``,
``tokens()``, ``snapshot()`` a consistent copy of every row (``numpy.asarray`` wraps it),
``writer_alive()`` and ``heartbeat_age_ns()``. Once the writer's heartbeat is older than its
deadline (``deadline_ns``, ``DEFAULT_DEADLINE_NS`` = 1 s) or it closed the table, every held row
reads STALE whatever it says, and the reader looks (at most every 100 ms) for a new writer's table
under the same name, then reads that one (``generation`` changes, ``reattaches`` counts). A row
the writer died inside is returned as found, STALE. Use it as a context manager, or ``close()``
it. It raises SharedTableNotFoundError when no writer has published the table.
"""

from __future__ import annotations

import atexit
import logging
import mmap
import os
import re
import struct
import time

import _posixshmem  # type: ignore[import-not-found]  # the POSIX shm_open/shm_unlink multiprocessing uses

from .errors import PmWsError
from .row import N_FIELDS, TOKEN_ID_MAX, token_tag

logger = logging.getLogger("pm_ws.shared")

MAGIC = int.from_bytes(b"PMWSTOP\x00", "little")  # H_MAGIC: a pm_ws top-of-book table
LAYOUT_VERSION = 1  # H_LAYOUT: bumped on any change of the layout above
HEADER_BYTES = 4096
DIR_ENTRY_BYTES = 128  # 3 words + up to 104 id bytes (TOKEN_ID_MAX = 100)
ROW_BYTES = N_FIELDS * 8
DEFAULT_DEADLINE_NS = 1_000_000_000  # rows read STALE once the writer's heartbeat is older than this

# Header words (index * 8 = byte offset)
H_MAGIC = 0
H_LAYOUT = 1
H_CAPACITY = 2
H_N_FIELDS = 3
H_ROW_BYTES = 4
H_DIR_OFFSET = 5  # byte offset of the directory
H_DIR_ENTRY_BYTES = 6
H_ROWS_OFFSET = 7  # byte offset of row 0
H_SEGMENT_BYTES = 8  # size of the whole segment
H_WRITER_PID = 9
H_HEARTBEAT_NS = 10  # the writer's last beat, time.monotonic_ns()
H_DEADLINE_NS = 11  # the writer's promise: a beat at least this often
H_GENERATION = 12  # time.time_ns() at creation: a new writer, a new generation
H_STATUS = 13  # STATUS_OPEN, STATUS_CLOSED, STATUS_REPLACED
H_WORDS = 14

STATUS_OPEN = 1
STATUS_CLOSED = 2  # the writer exited cleanly and unlinked the name
STATUS_REPLACED = 3  # a new writer took the name over from this dead one

# Directory entry words; the id bytes follow from byte E_ID
E_SEQ = 0
E_TAG = 1
E_LENGTH = 2
E_ID = 24

NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_WORD = struct.Struct("@q")
_HEADER = struct.Struct(f"@{H_WORDS}q")
_ENTRY_TRIES = 100_000  # reads of one directory entry before it counts as abandoned mid-write

assert ROW_BYTES % 64 == 0 and E_ID + TOKEN_ID_MAX <= DIR_ENTRY_BYTES


class SharedTableError(PmWsError, OSError):
    """A shared table cannot be created or attached (see the message)."""


class SharedTableNotFoundError(SharedTableError, FileNotFoundError):
    """No writer has published a table under that name (yet)."""


def check_name(name: str) -> str:
    """``name`` if it is a valid table name (1-200 of ``[A-Za-z0-9_.-]``), else ValueError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"invalid shared table name {name!r:.60}: expected 1-200 characters of [A-Za-z0-9_.-]")
    return name


def segment_bytes(capacity: int) -> int:
    """Size of the segment of a ``capacity``-slot table."""
    return HEADER_BYTES + capacity * (DIR_ENTRY_BYTES + ROW_BYTES)


def rows_offset(capacity: int) -> int:
    return HEADER_BYTES + capacity * DIR_ENTRY_BYTES


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return pid > 0


def read_header(buffer: mmap.mmap) -> tuple[int, ...]:
    """The header words of a mapped segment (plain loads: call it on the cold path only)."""
    return _HEADER.unpack_from(buffer, 0)


def header_problem(header: tuple[int, ...], size: int) -> str | None:
    """Why a segment of ``size`` bytes with this header cannot be read by this pm_ws, or None."""
    if header[H_MAGIC] != MAGIC:
        return "not a pm_ws table (or still being created)"
    if header[H_LAYOUT] != LAYOUT_VERSION:
        return f"layout version {header[H_LAYOUT]}, this pm_ws reads version {LAYOUT_VERSION}"
    capacity = header[H_CAPACITY]
    expected = (N_FIELDS, ROW_BYTES, HEADER_BYTES, DIR_ENTRY_BYTES, rows_offset(capacity), segment_bytes(capacity))
    found = tuple(header[i] for i in (H_N_FIELDS, H_ROW_BYTES, H_DIR_OFFSET, H_DIR_ENTRY_BYTES, H_ROWS_OFFSET,
                                      H_SEGMENT_BYTES))  # fmt: skip
    if found != expected or size < segment_bytes(capacity):
        return f"unexpected layout {found} in {size} bytes, expected {expected}"
    return None


def open_segment(name: str) -> mmap.mmap:
    """Map an existing table read-only; SharedTableNotFoundError or SharedTableError says why not."""
    path = "/" + check_name(name)
    try:
        fd = _posixshmem.shm_open(path, os.O_RDONLY, 0)
    except FileNotFoundError:
        raise SharedTableNotFoundError(
            f"no pm_ws shared table named {name!r}: start its writer first (pm-ws watch ... --share {name})"
        ) from None
    try:
        size = os.fstat(fd).st_size
        if size < HEADER_BYTES:
            raise SharedTableNotFoundError(f"pm_ws shared table {name!r} is still being created: try again")
        buffer = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    problem = header_problem(read_header(buffer), size)
    if problem is not None:
        buffer.close()
        raise SharedTableError(f"shared table {name!r}: {problem}")
    return buffer


class Segment:
    """The writer's side of a shared table: creates ``/NAME``, owns its header, unlinks it at exit.

    A segment of that name left by a writer that is gone (its pid is dead, or it closed) is replaced,
    with a warning in the log; one whose writer is alive is not (SharedTableError).
    """

    def __init__(self, name: str, capacity: int, deadline_ns: int = DEFAULT_DEADLINE_NS) -> None:
        self.name = check_name(name)
        self.capacity = capacity
        self.path = "/" + name
        size = segment_bytes(capacity)
        fd = self._create()
        try:
            os.ftruncate(fd, size)  # zero-filled: every row and directory entry empty
            self._inode = os.fstat(fd).st_ino
            self.mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.generation = time.time_ns()
        self.closed = False
        self.dir_offset = HEADER_BYTES
        self.rows_offset = rows_offset(capacity)
        words = [0] * H_WORDS
        words[H_LAYOUT], words[H_CAPACITY], words[H_N_FIELDS], words[H_ROW_BYTES] = (
            LAYOUT_VERSION, capacity, N_FIELDS, ROW_BYTES)  # fmt: skip
        words[H_DIR_OFFSET], words[H_DIR_ENTRY_BYTES] = HEADER_BYTES, DIR_ENTRY_BYTES
        words[H_ROWS_OFFSET], words[H_SEGMENT_BYTES] = rows_offset(capacity), size
        words[H_WRITER_PID], words[H_HEARTBEAT_NS], words[H_DEADLINE_NS] = os.getpid(), time.monotonic_ns(), deadline_ns
        words[H_GENERATION], words[H_STATUS] = self.generation, STATUS_OPEN
        _HEADER.pack_into(self.mmap, 0, *words)
        self._put(H_MAGIC, MAGIC)  # last: a reader that sees the magic sees the whole header
        atexit.register(self.close)

    def _create(self) -> int:
        flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
        try:
            return int(_posixshmem.shm_open(self.path, flags, 0o600))
        except FileExistsError:
            pass
        reason = self._leftover_reason()
        logger.warning("pm_ws: replacing the shared table %r left behind (%s)", self.name, reason)
        _posixshmem.shm_unlink(self.path)
        return int(_posixshmem.shm_open(self.path, flags, 0o600))

    def _leftover_reason(self) -> str:
        # Why the existing segment may be replaced; SharedTableError when it may not. Marks it REPLACED
        # so that readers still mapping it look for the new one
        try:
            fd = _posixshmem.shm_open(self.path, os.O_RDWR, 0)
        except FileNotFoundError:
            return "gone meanwhile"
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_BYTES:
                return f"an unfinished segment of {size} bytes"
            old = mmap.mmap(fd, HEADER_BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        try:
            header = read_header(old)
            if header[H_MAGIC] != MAGIC:
                raise SharedTableError(f"/dev/shm{self.path} exists and is not a pm_ws table: choose another name")
            pid, status = header[H_WRITER_PID], header[H_STATUS]
            if status == STATUS_OPEN and pid_alive(pid):
                age = (time.monotonic_ns() - header[H_HEARTBEAT_NS]) / 1e9
                raise SharedTableError(
                    f"shared table {self.name!r} is in use by writer pid {pid} (heartbeat {age:.1f} s ago)")
            _WORD.pack_into(old, H_STATUS * 8, STATUS_REPLACED)
            return f"writer pid {pid} is gone" if status == STATUS_OPEN else f"status {status}, writer pid {pid}"
        finally:
            old.close()

    def _put(self, word: int, value: int) -> None:
        _WORD.pack_into(self.mmap, word * 8, value)

    def beat(self) -> None:
        """Tell readers the writer is alive (the compiled store beats with a release store instead)."""
        self._put(H_HEARTBEAT_NS, time.monotonic_ns())

    def write_entry(self, slot: int, token_id: str | None) -> None:
        """Record which token ``slot`` holds (None: free) under the entry's sequence lock."""
        offset = HEADER_BYTES + slot * DIR_ENTRY_BYTES
        seq = _WORD.unpack_from(self.mmap, offset)[0]
        _WORD.pack_into(self.mmap, offset, seq + 1)
        data, tag = (b"", 0) if token_id is None else (token_id.encode("ascii"), token_tag(token_id))
        struct.pack_into(f"@qq{TOKEN_ID_MAX}s", self.mmap, offset + E_TAG * 8, tag, len(data), data)
        _WORD.pack_into(self.mmap, offset, seq + 2)

    def close(self) -> None:
        """Withdraw the table: status CLOSED (readers see every row STALE), the name unlinked if still ours.

        The mapping stays valid for this process; called at interpreter exit.
        """
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        self._put(H_STATUS, STATUS_CLOSED)
        try:
            fd = _posixshmem.shm_open(self.path, os.O_RDONLY, 0)
        except FileNotFoundError:
            return
        try:
            ours = os.fstat(fd).st_ino == self._inode
        finally:
            os.close(fd)
        if ours:  # a writer that replaced us owns the name now
            _posixshmem.shm_unlink(self.path)


def read_directory(buffer: mmap.mmap | memoryview, capacity: int) -> dict[str, tuple[int, int]]:
    """``{token id: (slot, tag)}`` of every slot the directory names, each entry read under its lock."""
    found: dict[str, tuple[int, int]] = {}
    entry = struct.Struct(f"@qqq{TOKEN_ID_MAX}s")
    for slot in range(capacity):
        offset = HEADER_BYTES + slot * DIR_ENTRY_BYTES
        for _ in range(_ENTRY_TRIES):
            seq, tag, length, data = entry.unpack_from(buffer, offset)
            if not seq & 1 and _WORD.unpack_from(buffer, offset)[0] == seq:
                break
        else:
            continue  # a writer that died inside this entry: the slot's row reads STALE anyway
        if length:
            found[data[:length].decode("ascii")] = (slot, tag)
    return found

