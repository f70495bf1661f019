"""Proof of the shared table across processes: no torn row through TopReader, STALE after kill -9.

The torn-read stress runs ``PM_WS_STRESS_SECONDS`` (default 10) seconds: one writer process feeds
books as fast as it can, every field of a row derived from one counter; three reader processes read
through ``top()`` and ``snapshot()`` and must find 0 torn rows, while a fourth reads the raw rows
without the sequence check and must find torn ones (else the test could not fail). Longer:
``PM_WS_STRESS_SECONDS=60 python -m pytest -q -p no:cacheprovider tests/test_shared_stress.py``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
import uuid
from multiprocessing.synchronize import Event
from typing import Any

import numpy
import pytest

from pm_ws import shared
from pm_ws.row import ASK_SZ, BID_SZ, EXCH_TS_MS, N_FIELDS, RECV_TS_NS, SEQ, STATE, SIZE_SCALE, State, Top

from builders import NO, YES, book_event, frame

SECONDS = float(os.environ.get("PM_WS_STRESS_SECONDS", "10"))
TOKENS = (YES, NO)
ROUNDS = 4096  # distinct frames per token, fed round and round
CONTEXT = multiprocessing.get_context("fork")


def counter_frame(token: str, k: int) -> str:
    # Book k: one bid and one ask of size k, timestamp k; fed with recv_ts_ns k
    return frame(book_event(token, [("0.4", str(k))], [("0.6", str(k))], timestamp=str(k)))


def torn(row: Any) -> bool:
    """Fields that do not all come from one counter (a row never fed yet is whole)."""
    k = row[EXCH_TS_MS]
    if row[STATE] != State.LIVE:
        return False
    return not (row[BID_SZ] == row[ASK_SZ] == k * SIZE_SCALE and row[RECV_TS_NS] == k)


def write(name: str, ready: Event, stop: Event) -> None:
    from pm_ws import BookStore, Dispatcher

    store = BookStore(len(TOKENS), shared=name)
    for token in TOKENS:
        store.add(token)
    feed = Dispatcher(store).feed
    frames = [(counter_frame(token, k), k) for k in range(1, ROUNDS) for token in TOKENS]
    ready.set()
    while not stop.is_set():
        store.beat()
        for text, k in frames:
            feed(text, k)
    store.close_shared()


def read(name: str, mode: str, seconds: float, results: Any) -> None:
    from pm_ws import TopReader

    reads = bad = 0
    with TopReader(name) as reader:
        out = numpy.zeros((reader.capacity, N_FIELDS), dtype=numpy.int64)
        raw = numpy.frombuffer(shared.open_segment(name), dtype=numpy.int64, offset=shared.rows_offset(2),
                               count=2 * N_FIELDS).reshape(2, N_FIELDS)  # fmt: skip
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(200):
                if mode == "top":
                    rows: Any = [reader.top(token) for token in TOKENS]
                elif mode == "snapshot":
                    rows = reader.snapshot(out)
                elif mode == "both":
                    rows = [reader.top(TOKENS[reads % 2]), *reader.snapshot(out)]
                else:  # the raw rows, no sequence check: may be torn
                    rows = [raw[slot].copy() for slot in range(2)]
                reads += len(rows)
                bad += sum(1 for row in rows if torn(row))
                if mode != "raw":
                    bad += sum(1 for row in rows if row[SEQ] % 2)  # never an odd SEQ through the reader
    results.put((mode, reads, bad))


@pytest.mark.slow
@pytest.mark.c_extension
def test_no_torn_row_through_the_reader_many_through_raw_reads() -> None:
    name = f"pmws-stress-{uuid.uuid4().hex[:10]}"
    ready, stop, results = CONTEXT.Event(), CONTEXT.Event(), CONTEXT.Queue()
    writer = CONTEXT.Process(target=write, args=(name, ready, stop))
    writer.start()
    try:
        assert ready.wait(30)
        readers = [CONTEXT.Process(target=read, args=(name, mode, SECONDS, results))
                   for mode in ("top", "snapshot", "both", "raw")]  # fmt: skip
        for reader in readers:
            reader.start()
        found = {mode: (reads, bad) for mode, reads, bad in (results.get(timeout=SECONDS + 60) for _ in readers)}
        for reader in readers:
            reader.join(10)
    finally:
        stop.set()
        writer.join(30)
    print(f"\nreads, torn over {SECONDS:g} s: {found}")
    for mode in ("top", "snapshot", "both"):
        assert found[mode][0] > 1000 and found[mode][1] == 0, (mode, found[mode])
    assert found["raw"][1] > 0, f"raw reads found no torn row: the test could not fail ({found['raw']})"


def beat_forever(name: str, ready: Event) -> None:
    from pm_ws import BookStore, Dispatcher

    store = BookStore(4, shared=name)
    store.add(YES)
    Dispatcher(store).feed(frame(book_event()))
    ready.set()
    while True:
        store.beat()
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.c_extension
def test_kill_9_writer_rows_stale_within_the_deadline_new_writer_replaces(caplog: pytest.LogCaptureFixture) -> None:
    from pm_ws import BookStore, TopReader

    name = f"pmws-kill-{uuid.uuid4().hex[:10]}"
    ready = CONTEXT.Event()
    writer = CONTEXT.Process(target=beat_forever, args=(name, ready))
    writer.start()
    assert ready.wait(30)
    reader = TopReader(name)
    assert reader.top(YES).state is State.LIVE and reader.writer_pid == writer.pid
    os.kill(writer.pid, signal.SIGKILL)
    killed = time.monotonic()
    writer.join(10)
    state: State | None = None
    while time.monotonic() - killed < 5:
        top: Top = reader.top(YES)
        state = top.state
        if state is State.STALE:
            break
        time.sleep(0.005)
    seen = time.monotonic() - killed
    assert state is State.STALE and seen <= shared.DEFAULT_DEADLINE_NS / 1e9 + 0.1, seen
    with caplog.at_level(logging.WARNING, logger="pm_ws.shared"):
        store = BookStore(4, shared=name)
    assert f"writer pid {writer.pid} is gone" in caplog.text
    store.add(NO)
    store.beat()
    assert reader.top(NO).state is State.SUBSCRIBING and reader.reattaches == 1 and reader.writer_alive()
    with pytest.raises(KeyError):
        reader.top(YES)
    reader.close()
    store.close_shared()
