# cython: language_level=3
"""Compiled reader of a shared top-of-book table: the hot reads of ``pm_ws.TopReader``.

A module of its own, apart from ``_core_c``: a strategy process that only reads needs no
dispatcher, and the reader's code changes for other reasons than the parser's. Rows are read under
their sequence lock with the orderings ``_hot/pm_seqlock.h`` explains; the cold work (mapping the
segment, checking its header, reading the directory, reattaching) is ``pm_ws.shared``'s.
The pure twin is ``pm_ws._shared_py``; both keep the contract of its docstring.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.long cimport PyLong_FromLongLong
from cpython.object cimport PyTypeObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM
from libc.stdint cimport int64_t

from pm_ws._shared_layout cimport (H_CAPACITY, H_DEADLINE_NS, H_GENERATION, H_HEARTBEAT_NS, H_ROWS_OFFSET, H_STATUS,
                                   H_WRITER_PID, STATUS_OPEN, STATUS_REPLACED)

from pm_ws.row import FIRST_SPARE, N_FIELDS, SEQ, STATE, State, Top, token_tag
from pm_ws.shared import open_segment, read_directory

__all__ = ["TopReader"]

cdef extern from "pm_seqlock.h":
    int64_t pm_row_read(const int64_t* row, int64_t* out, int n, int seq_index, long max_tries) noexcept nogil
    int64_t pm_load_acquire(const int64_t* word) noexcept nogil
    int64_t pm_monotonic_ns() noexcept nogil

cdef extern from "Python.h":
    object PyType_GenericAlloc(PyTypeObject* t, Py_ssize_t n)  # a Top with its items NULL, GC-tracked

cdef enum:
    N_TOP = 19  # fields of a Top: the row without its spares (FIRST_SPARE, checked at import)
    ROW_WORDS = 24  # N_FIELDS
    F_SEQ = 9
    F_STATE = 11
    F_EMPTY = 0
    F_STALE = 3
    TRIES = 4096  # row reads between two looks at the writer's liveness
    REATTACH_EVERY_NS = 100_000_000  # a reader of a dead table looks for a new writer at most this often

cdef tuple STATES = tuple(State)  # State members by value: no IntEnum call per read
cdef object TOP = Top

if (FIRST_SPARE, N_FIELDS, SEQ, STATE) != (N_TOP, ROW_WORDS, F_SEQ, F_STATE) or [int(s) for s in STATES] != list(range(len(STATES))):
    raise ImportError("pm_ws._shared_c no longer matches pm_ws.row")


@cython.final
@cython.auto_pickle(False)
cdef class TopReader:
    """Read a shared top-of-book table from any process: ``TopReader(name)``.

    The contract is in the ``pm_ws.shared`` docstring ("The reader").
    """

    cdef readonly str name
    cdef object _mapping  # the mmap of the segment (read-only)
    cdef Py_buffer _buf
    cdef bint _held
    cdef const int64_t* _header
    cdef const int64_t* _rows
    cdef readonly Py_ssize_t capacity
    cdef readonly int64_t generation
    cdef readonly int reattaches  # times a new writer's table was picked up
    cdef int64_t _next_reattach_ns
    cdef dict _slots  # token id -> (slot, tag), from the directory, checked against each row read
    cdef int64_t _out[ROW_WORDS]

    def __cinit__(self, name):
        self.name = name
        self._slots = {}
        self._map(open_segment(name))

    def __dealloc__(self):
        if self._held:
            PyBuffer_Release(&self._buf)

    cdef int _map(self, mapping) except -1:
        # Switch to a freshly opened (and checked) segment
        self._unmap()
        PyObject_GetBuffer(mapping, &self._buf, PyBUF_SIMPLE)
        self._held = True
        self._mapping = mapping
        self._header = <const int64_t*>self._buf.buf
        self.capacity = self._header[H_CAPACITY]
        self._rows = <const int64_t*>(<const char*>self._buf.buf + self._header[H_ROWS_OFFSET])
        self.generation = self._header[H_GENERATION]
        self._slots = {}
        return 0

    cdef void _unmap(self) noexcept:
        if self._held:
            PyBuffer_Release(&self._buf)
            self._held = False
            self._header = NULL
            self._rows = NULL

    cdef int _check_open(self) except -1:
        if self._header == NULL:
            raise ValueError(f"TopReader {self.name!r} is closed")
        return 0

    cdef bint _alive(self) noexcept:
        # The writer is there and beat within its deadline
        cdef int64_t beat = pm_load_acquire(&self._header[H_HEARTBEAT_NS])
        return (pm_load_acquire(&self._header[H_STATUS]) == STATUS_OPEN
                and pm_monotonic_ns() - beat <= self._header[H_DEADLINE_NS])

    cdef bint _dead_writer(self) except -1:
        # Not alive: look for a new writer's table (at once when one took the name over, else at most
        # every REATTACH_EVERY_NS), True if still dead
        cdef int64_t now
        if self._alive():
            return False
        now = pm_monotonic_ns()
        if now >= self._next_reattach_ns or pm_load_acquire(&self._header[H_STATUS]) == STATUS_REPLACED:
            self._next_reattach_ns = now + REATTACH_EVERY_NS
            self.reattach()
        return not self._alive()

    cdef int64_t _read(self, Py_ssize_t slot) except -2:
        # The slot's row into _out, consistent (a writer that died inside the row: as found, STALE)
        cdef const int64_t* row = self._rows + slot * ROW_WORDS
        cdef int64_t seq
        while True:
            seq = pm_row_read(row, self._out, ROW_WORDS, F_SEQ, TRIES)
            if seq >= 0:
                break
            if self._dead_writer():
                self._out[F_STATE] = F_STALE
                return self._out[F_SEQ]
            row = self._rows + slot * ROW_WORDS  # reattach may have moved the table
        if self._out[F_STATE] != F_EMPTY and not self._alive() and self._dead_writer():
            self._out[F_STATE] = F_STALE  # a dead writer's rows are STALE, whatever they say
        return seq

    cdef Py_ssize_t _find(self, token_id) except -2:
        # The slot of token_id whose row names it in _out, or -1 when the table does not hold it
        cdef Py_ssize_t slot
        cdef int64_t tag
        cdef int attempt
        cdef int64_t generation
        self._check_open()
        for attempt in range(3):
            found = self._slots.get(token_id)
            if found is None:
                self._slots = read_directory(self._mapping, self.capacity)
                found = self._slots.get(token_id)
            if found is None:
                generation = self.generation
                self._dead_writer()  # a new writer's table may hold it
                if self.generation == generation:
                    return -1
                continue
            slot, tag = found
            self._read(slot)
            if self._out[F_SEQ + 7] == tag:  # TOKEN_TAG (16), read under the row's lock
                return slot
            self._slots = {}  # the slot was reused: read the directory again
        return -1

    def top(self, token_id):
        """Return the token's row as a consistent :class:`pm_ws.Top` (STALE when the writer is gone).

        Raises
        ------
        KeyError
            The table does not hold the token.
        """
        cdef Py_ssize_t i
        if self._find(token_id) < 0:
            raise KeyError(token_id)
        result = PyType_GenericAlloc(<PyTypeObject*>TOP, N_TOP)  # what tuple.__new__(Top, ...) does, minus a copy
        for i in range(N_TOP):
            if i == F_STATE:
                item = STATES[self._out[i]] if 0 <= self._out[i] < len(STATES) else PyLong_FromLongLong(self._out[i])
            else:
                item = PyLong_FromLongLong(self._out[i])
            Py_INCREF(item)  # PyTuple_SET_ITEM steals it
            PyTuple_SET_ITEM(result, i, item)
        return result

    def slot(self, token_id):
        """Return the token's slot (its row in ``snapshot()``); KeyError if the table does not hold it."""
        cdef Py_ssize_t slot = self._find(token_id)
        if slot < 0:
            raise KeyError(token_id)
        return slot

    def __contains__(self, token_id):
        return self._find(token_id) >= 0

    def tokens(self):
        """Return the ids of the tokens the table holds, in slot order."""
        self._check_open()
        self._slots = read_directory(self._mapping, self.capacity)
        return sorted(self._slots, key=lambda token: self._slots[token][0])

    def snapshot(self, out=None):
        """Return every row, each consistent, as an int64 buffer of shape ``(capacity, N_FIELDS)``.

        ``numpy.asarray(reader.snapshot())`` wraps it without a copy. Pass ``out`` (a writable
        buffer of ``capacity * N_FIELDS * 8`` bytes, e.g. a previous snapshot's array) to fill it
        instead of allocating. Rows that changed during the copy are read again; when the writer is
        gone every held row says STALE.
        """
        cdef Py_buffer dst
        cdef int64_t* rows
        cdef Py_ssize_t slot, i, n
        cdef bint dead
        self._check_open()
        dead = self._dead_writer()
        n = self.capacity * ROW_WORDS * 8
        if out is None:
            out = memoryview(bytearray(n)).cast("q", (self.capacity, ROW_WORDS))
        PyObject_GetBuffer(out, &dst, PyBUF_WRITABLE)
        try:
            if dst.len != n:
                raise ValueError(f"out must have {n} bytes, had {dst.len}")
            rows = <int64_t*>dst.buf
            for slot in range(self.capacity):  # straight into out; the slow path only for a row kept odd
                if pm_row_read(self._rows + slot * ROW_WORDS, rows + slot * ROW_WORDS, ROW_WORDS, F_SEQ, TRIES) < 0:
                    self._read(slot)  # waits for the writer, or finds it dead
                    for i in range(ROW_WORDS):
                        rows[slot * ROW_WORDS + i] = self._out[i]
            if dead or not self._alive():
                for slot in range(self.capacity):
                    if rows[slot * ROW_WORDS + F_STATE] != F_EMPTY:
                        rows[slot * ROW_WORDS + F_STATE] = F_STALE
        finally:
            PyBuffer_Release(&dst)
        return out

    def writer_alive(self):
        """True while the writer's table is open and its heartbeat within the deadline."""
        self._check_open()
        return self._alive()

    def heartbeat_age_ns(self):
        """Nanoseconds since the writer's last beat."""
        self._check_open()
        return pm_monotonic_ns() - pm_load_acquire(&self._header[H_HEARTBEAT_NS])

    @property
    def writer_pid(self):
        self._check_open()
        return self._header[H_WRITER_PID]

    @property
    def deadline_ns(self):
        """How old the writer's heartbeat may be before every row reads STALE."""
        self._check_open()
        return self._header[H_DEADLINE_NS]

    def reattach(self):
        """Pick up a new writer's table of the same name, if there is one; True when it switched."""
        self._check_open()
        try:
            mapping = open_segment(self.name)
        except FileNotFoundError:
            return False
        if mapping[H_GENERATION * 8:H_GENERATION * 8 + 8] == self._mapping[H_GENERATION * 8:H_GENERATION * 8 + 8]:
            mapping.close()
            return False
        old = self._mapping
        self._map(mapping)
        old.close()
        self.reattaches += 1
        return True

    def close(self):
        """Unmap the table; the reader can no longer be used."""
        mapping = self._mapping
        self._unmap()
        self._mapping = None
        if mapping is not None:
            mapping.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
