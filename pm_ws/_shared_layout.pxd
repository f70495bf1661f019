# Layout of the shared top-of-book table for the compiled writer (_core_c) and reader (_shared_c):
# equal to pm_ws.shared (the layout table is in its docstring); tests/test_shared_table.py keeps them so.

cdef enum:  # header words
    H_MAGIC = 0
    H_CAPACITY = 2
    H_DIR_OFFSET = 5
    H_ROWS_OFFSET = 7
    H_WRITER_PID = 9
    H_HEARTBEAT_NS = 10
    H_DEADLINE_NS = 11
    H_GENERATION = 12
    H_STATUS = 13

cdef enum:  # H_STATUS values
    STATUS_OPEN = 1
    STATUS_CLOSED = 2
    STATUS_REPLACED = 3

cdef enum:  # a directory entry: E_* words, then the id bytes from byte E_ID
    DIR_ENTRY_BYTES = 128
    E_SEQ = 0
    E_TAG = 1
    E_LENGTH = 2
    E_ID = 24
