# A BookStore whose rows live in a POSIX shared-memory segment (``BookStore(shared=name)``): mapping
# the segment and writing its token directory, which readers (pm_ws.TopReader) check rows against.
# The segment's layout is in pm_ws/_shared_layout.pxd and pm_ws.shared.

cdef int attach_segment(BookStore store, object shared) except -1:
    # Create the named segment for store's capacity and point the header, directory and rows into it
    from pm_ws.shared import Segment  # the segment machinery only when asked for
    cdef char* base
    segment = Segment(shared, store._capacity)
    PyObject_GetBuffer(segment.mmap, &store._shm, PyBUF_WRITABLE)
    store._segment = segment
    base = <char*>store._shm.buf
    store._header = <int64_t*>base
    store._dir = base + <Py_ssize_t>segment.dir_offset
    store._rows = <int64_t*>(base + <Py_ssize_t>segment.rows_offset)
    return 0


cdef inline void dir_write(char* entry, cptr p, Py_ssize_t n) noexcept:
    # A directory entry (n = 0: a free slot) under its own sequence lock, like a row
    cdef int64_t* words = <int64_t*>entry
    cdef int64_t seq = pm_row_open(&words[E_SEQ])
    words[E_TAG] = pm_token_tag(p, n) if n else 0
    words[E_LENGTH] = n
    memset(entry + E_ID, 0, DIR_ENTRY_BYTES - E_ID)
    memcpy(entry + E_ID, p, n)
    pm_row_close(&words[E_SEQ], seq)
