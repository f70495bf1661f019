"""The shared top-of-book table: segment layout and lifecycle, TopReader's reads, both cores and both readers."""

from __future__ import annotations

import gc
import importlib
import logging
import mmap
import os
import re
import stat
import struct
import uuid
from pathlib import Path
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy
import pytest

import pm_ws
from pm_ws import shared
from pm_ws.row import N_FIELDS, SEQ, STATE, TOKEN_TAG, State, token_tag

from builders import NO, OTHER, YES, book_event, frame


@pytest.fixture(params=[pytest.param("c", marks=pytest.mark.c_extension), "py"], ids=["reader_c", "reader_py"])
def reader_cls(request: pytest.FixtureRequest) -> Any:
    """TopReader, compiled then pure."""
    return importlib.import_module(f"pm_ws._shared_{request.param}").TopReader


@pytest.fixture
def name() -> str:
    return f"pmws-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def table(impl: ModuleType, name: str) -> Any:
    """A shared store of 8 slots holding YES (LIVE) and NO (SUBSCRIBING); withdrawn afterwards."""
    store = impl.BookStore(8, shared=name)
    store.add(YES)
    store.add(NO)
    impl.Dispatcher(store).feed(frame(book_event()), 7)
    yield store
    store.close_shared()


def test_segment_is_private_to_the_user_and_described_by_its_header(table: Any, name: str) -> None:
    path = Path("/dev/shm") / name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    mapping = shared.open_segment(name)
    header = shared.read_header(mapping)
    assert header[shared.H_MAGIC] == shared.MAGIC and header[shared.H_LAYOUT] == shared.LAYOUT_VERSION
    assert (header[shared.H_CAPACITY], header[shared.H_N_FIELDS], header[shared.H_ROW_BYTES]) == (8, N_FIELDS, 192)
    assert header[shared.H_WRITER_PID] == os.getpid() and header[shared.H_STATUS] == shared.STATUS_OPEN
    assert header[shared.H_SEGMENT_BYTES] == path.stat().st_size == shared.segment_bytes(8)
    assert shared.read_directory(mapping, 8) == {YES: (0, token_tag(YES)), NO: (1, token_tag(NO))}
    mapping.close()


def test_compiled_layout_equals_python_layout() -> None:
    text = (Path(shared.__file__).parent / "_shared_layout.pxd").read_text()
    compiled = {key: int(value) for key, value in re.findall(r"^\s+(\w+) = (\d+)", text, re.M)}
    assert compiled and all(getattr(shared, key) == value for key, value in compiled.items())


def test_view_is_the_shared_rows(table: Any, reader_cls: Any, name: str) -> None:
    with reader_cls(name) as reader:
        assert numpy.asarray(reader.snapshot()).tolist() == numpy.asarray(table.view).tolist()


def test_top_equals_the_writers_top(table: Any, reader_cls: Any, name: str) -> None:
    with reader_cls(name) as reader:
        assert reader.top(YES) == table.top(YES) and reader.top(YES).state is State.LIVE
        assert reader.top(NO) == table.top(NO)
        assert (reader.slot(YES), reader.slot(NO), reader.tokens()) == (0, 1, [YES, NO])
        assert YES in reader and OTHER not in reader
        with pytest.raises(KeyError):
            reader.top(OTHER)
        assert reader.writer_alive() and reader.writer_pid == os.getpid() and reader.capacity == 8


def test_reader_follows_remove_and_reuse_of_a_slot(table: Any, reader_cls: Any, name: str) -> None:
    with reader_cls(name) as reader:
        assert reader.slot(YES) == 0
        table.remove(YES)
        with pytest.raises(KeyError):
            reader.top(YES)
        table.add(OTHER)  # takes slot 0
        assert reader.slot(OTHER) == 0 and reader.top(OTHER).token_tag == token_tag(OTHER)
        assert reader.tokens() == [OTHER, NO]


def test_snapshot_fills_a_given_buffer(table: Any, reader_cls: Any, name: str) -> None:
    with reader_cls(name) as reader:
        out = numpy.zeros((8, N_FIELDS), dtype=numpy.int64)
        assert reader.snapshot(out) is out
        assert out[0, TOKEN_TAG] == token_tag(YES) and out[0, SEQ] % 2 == 0
        with pytest.raises(ValueError, match="bytes"):
            reader.snapshot(numpy.zeros(3, dtype=numpy.int64))


def test_rows_read_stale_once_the_heartbeat_is_older_than_the_deadline(
        table: Any, reader_cls: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with reader_cls(name) as reader:
        assert reader.top(YES).state is State.LIVE
        set_header_word(name, shared.H_HEARTBEAT_NS, lambda beat: beat - 2 * shared.DEFAULT_DEADLINE_NS)
        assert not reader.writer_alive() and reader.heartbeat_age_ns() > shared.DEFAULT_DEADLINE_NS
        assert reader.top(YES).state is State.STALE and reader.top(NO).state is State.STALE
        assert numpy.asarray(reader.snapshot())[:2, STATE].tolist() == [State.STALE, State.STALE]
        assert table.top(YES).state is State.LIVE  # the writer's own row says LIVE
        table.beat()
        assert reader.writer_alive() and reader.top(YES).state is State.LIVE


def set_header_word(name: str, word: int, change: Callable[[int], int]) -> None:
    # Write one header word of a table as its writer would (the tests age the beat, fake a death)
    fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
    try:
        header = mmap.mmap(fd, shared.HEADER_BYTES)
    finally:
        os.close(fd)
    words = memoryview(header).cast("q")
    words[word] = change(words[word])
    words.release()
    header.close()


def test_clean_close_unlinks_and_readers_see_stale(impl: ModuleType, reader_cls: Any, name: str) -> None:
    store = impl.BookStore(2, shared=name)
    store.add(YES)
    impl.Dispatcher(store).feed(frame(book_event()))
    reader = reader_cls(name)
    store.close_shared()
    assert not (Path("/dev/shm") / name).exists()
    assert not reader.writer_alive() and reader.top(YES).state is State.STALE
    assert store.top(YES).state is State.LIVE  # the store itself goes on
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.top(YES)


def test_reader_before_the_writer_gets_a_clear_error(reader_cls: Any, name: str) -> None:
    with pytest.raises(shared.SharedTableNotFoundError, match=f"no pm_ws shared table named '{name}'"):
        reader_cls(name)


def test_a_live_writers_table_is_not_taken(table: Any, impl: ModuleType, name: str) -> None:
    with pytest.raises(shared.SharedTableError, match=f"in use by writer pid {os.getpid()}"):
        impl.BookStore(8, shared=name)


def test_invalid_names_refused(impl: ModuleType) -> None:
    for bad in ("", "a/b", "x" * 201, "sp ace"):
        with pytest.raises(ValueError, match="invalid shared table name"):
            impl.BookStore(2, shared=bad)


def test_closed_table_replaced_and_reader_reattaches(
        impl: ModuleType, reader_cls: Any, name: str, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    first = impl.BookStore(4, shared=name)
    first.add(YES)
    reader = reader_cls(name)
    generation = reader.generation
    set_header_word(name, shared.H_STATUS, lambda _: shared.STATUS_CLOSED)  # as if it had died: the name stays
    with caplog.at_level(logging.WARNING, logger="pm_ws.shared"):
        second = impl.BookStore(4, shared=name)
    assert "replacing the shared table" in caplog.text
    second.add(NO)
    assert reader.top(NO).state is State.SUBSCRIBING  # found after reattaching to the new table
    assert reader.generation != generation and reader.reattaches == 1
    with pytest.raises(KeyError):
        reader.top(YES)
    reader.close()
    second.close_shared()
    first.close_shared()  # the name is the second writer's now: left alone
    assert not (Path("/dev/shm") / name).exists()


def test_private_store_has_no_table(impl: ModuleType) -> None:
    store = impl.BookStore(2)
    assert store.shared is None
    store.beat()
    store.close_shared()


def test_public_reader_matches_the_core() -> None:
    assert pm_ws.TopReader.__module__ == ("pm_ws._shared_py" if pm_ws.IMPLEMENTATION == "python" else "pm_ws._shared_c")


def test_store_collected_in_a_cycle_releases_its_table(impl: ModuleType, name: str) -> None:
    # The collector may clear a store's attributes before freeing it (a MarketClient and its shards
    # form a cycle): freeing must still tell the shared rows from its own memory
    store = impl.BookStore(4, shared=name)
    store.close_shared()
    cycle: list[Any] = [store]
    cycle.append(cycle)
    del store, cycle
    gc.collect()


def test_view_obj_of_a_shared_store_not_writable(table: Any) -> None:
    # The view of a shared store exports no writable mapping of the segment either
    before = bytes(table.view)
    obj = table.view.obj
    with pytest.raises(TypeError):
        struct.pack_into("q", obj, STATE * 8, State.LIVE)
    assert memoryview(obj).readonly
    assert bytes(table.view) == before
