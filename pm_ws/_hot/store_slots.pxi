# A BookStore's slots: their memory, and giving a token a slot and taking it back (the slot, its
# fresh row, its book and the open-addressing table entry; BookStore.lookup, on the hot path, stays
# in the class). Cold code, run by BookStore's construction, add and remove only.

cdef int allocate_slots(BookStore store) except -1:
    # Books, ids, owners and the table (twice the capacity, a power of two) for store._capacity slots;
    # store._rows is already set (private or in the segment) and checked here too
    cdef Py_ssize_t capacity = store._capacity, size = 16
    store._books = <pm_book_t*>PyMem_Calloc(capacity, sizeof(pm_book_t))
    store._ids = <pm_token_t*>PyMem_Calloc(capacity, sizeof(pm_token_t))
    store._owners = <int32_t*>PyMem_Calloc(capacity, sizeof(int32_t))
    while size < 2 * capacity:
        size <<= 1
    store._table = <int32_t*>PyMem_Malloc(size * sizeof(int32_t))
    if not (store._rows and store._books and store._ids and store._owners and store._table):
        raise MemoryError()
    memset(store._table, 0xFF, size * sizeof(int32_t))  # every cell -1
    store._mask = size - 1
    return 0


cdef void free_slots(BookStore store) noexcept:
    # BookStore.__dealloc__: everything allocate_slots and the rows took, whatever got allocated
    cdef Py_ssize_t i
    if store._books != NULL:
        for i in range(store._capacity):
            PyMem_Free(store._books[i].bids.lv)
            PyMem_Free(store._books[i].asks.lv)
    PyMem_Free(store._books)
    # not ``_segment is None``: the GC may have cleared that attribute already (a store in a cycle)
    if store._header == NULL:
        PyMem_Free(store._rows)
    else:
        PyBuffer_Release(&store._shm)
    PyMem_Free(store._ids)
    PyMem_Free(store._owners)
    PyMem_Free(store._table)

cdef int32_t claim_slot(BookStore store, cptr p, Py_ssize_t n, uint64_t h, int32_t owner) except -1:
    # The lowest free slot for the id p[:n] (hash h, not held, a slot free): a fresh row, an empty book
    cdef int32_t slot = 0
    cdef Py_ssize_t i
    cdef int64_t* row
    cdef int64_t seq
    while store._ids[slot].n:
        slot += 1
    store._ids[slot].hash = h
    store._ids[slot].n = n
    memcpy(store._ids[slot].id, p, n)
    if store._dir != NULL:  # the directory first: a reader checks what it finds against the row
        dir_write(store._dir + slot * DIR_ENTRY_BYTES, p, n)
    row = store._rows + slot * PM_N_FIELDS
    seq = pm_row_open(&row[PM_SEQ])
    clear_row(row)
    if seq:  # a reused slot: a reader that cached it sees SEQ (always) and EPOCH move on
        row[PM_EPOCH] += 1
    row[PM_ASK_PX] = PM_PRICE_SCALE
    row[PM_STATE] = PM_SUBSCRIBING
    row[PM_TOKEN_TAG] = pm_token_tag(p, n)
    pm_row_close(&row[PM_SEQ], seq)
    store._owners[slot] = owner
    store._books[slot].bids.n = 0
    store._books[slot].asks.n = 0
    store._books[slot].books_name_tick = False
    store._books[slot].tick_unconfirmed = False
    i = <Py_ssize_t>(h & <uint64_t>store._mask)
    while store._table[i] >= 0:
        i = (i + 1) & store._mask
    store._table[i] = slot
    store._names[slot] = id_text(p, n)
    store._count += 1
    return slot


cdef void release_slot(BookStore store, int32_t slot) noexcept:
    # Remove slot from the table (backward-shift deletion keeps probe chains whole), free its book,
    # zero its row and its directory entry
    cdef Py_ssize_t i, j, home
    cdef Py_ssize_t mask = store._mask
    cdef int64_t* row = store._rows + slot * PM_N_FIELDS
    cdef int64_t seq
    i = <Py_ssize_t>(store._ids[slot].hash & <uint64_t>mask)
    while store._table[i] != slot:
        i = (i + 1) & mask
    j = i
    while True:
        store._table[i] = -1
        while True:
            j = (j + 1) & mask
            if store._table[j] < 0:
                break
            home = <Py_ssize_t>(store._ids[store._table[j]].hash & <uint64_t>mask)
            # the entry at j may fill the hole at i unless its home lies cyclically in (i, j]
            if (i <= j and (i < home <= j)) or (i > j and (home > i or home <= j)):
                continue
            store._table[i] = store._table[j]
            i = j
            break
        if store._table[j] < 0:
            break
    PyMem_Free(store._books[slot].bids.lv)
    PyMem_Free(store._books[slot].asks.lv)
    memset(&store._books[slot], 0, sizeof(pm_book_t))
    seq = pm_row_open(&row[PM_SEQ])
    clear_row(row)
    pm_row_close(&row[PM_SEQ], seq)
    if store._dir != NULL:
        dir_write(store._dir + slot * DIR_ENTRY_BYTES, <cptr>store._ids[slot].id, 0)
    store._owners[slot] = 0
    store._ids[slot].n = 0
    store._count -= 1


cdef inline str id_text(cptr p, Py_ssize_t n):
    # A token id's ASCII bytes as the plain str the store hands out
    return (<bytes>PyBytes_FromStringAndSize(<const char*>p, n)).decode("ascii")


cdef inline void clear_row(int64_t* row) noexcept:
    # Zero a row but SEQ and EPOCH (for a slot they never go back, across remove and add). SEQ is
    # never written here, not even with its own value: it is the lock readers are watching
    memset(row, 0, PM_SEQ * sizeof(int64_t))
    memset(row + PM_EPOCH + 1, 0, (PM_N_FIELDS - PM_EPOCH - 1) * sizeof(int64_t))
