"""The shared table's costs in one process: the writer's feed, ``TopReader.top`` and ``snapshot``.

- ``shared_feed``: ``Dispatcher.feed`` on the mixed corpus (1000 frames per call) into a private store
  and into a shared one; target: shared <= 1.05 x private (the compiled core).
- ``shared_top``: ``TopReader.top(token)`` with the writer idle; target <= 0.3 µs (compiled reader).
- ``shared_snapshot``: ``TopReader.snapshot(out)`` of a 4,096-row table; target <= 50 µs (compiled reader).

Reads with a writer process updating the row, and the cross-process latency, need a second
process: ``python -m benchmarks.shared_table``.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.feeders import BAD_STATS, CORE_MODULES, compiled_core_missing
from benchmarks.frames import Corpus
from benchmarks.shared_table import TOKEN, book

TABLE_ROWS = 4096


@pytest.fixture(params=[pytest.param("c", marks=pytest.mark.c_extension), "py"], ids=["c", "py"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The core module (its BookStore writes the table): compiled, then the pure twin."""
    if request.param == "c" and (reason := compiled_core_missing()):
        pytest.skip(f"compiled core not benchmarked: {reason}")
    return importlib.import_module(CORE_MODULES[request.param])


@pytest.fixture
def table_name() -> str:
    return f"pmws-bench-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def full_table(core: ModuleType, table_name: str) -> Iterator[Any]:
    """A shared table of 4,096 rows, the first one with a book; the reader of the same implementation."""
    store = core.BookStore(TABLE_ROWS, shared=table_name)
    for i in range(TABLE_ROWS):
        store.add(str(int(TOKEN) + i))
    core.Dispatcher(store).feed(book(1), 1)
    reader_module = importlib.import_module(core.__name__.replace("_core_", "_shared_"))
    with reader_module.TopReader(table_name) as reader:
        yield reader
    store.close_shared()


@pytest.mark.benchmark(group="shared_top")
def test_shared_top_writer_idle(benchmark: BenchmarkFixture, full_table: Any) -> None:
    """``TopReader.top(token)``, the writer idle; target c <= 0.3 µs per call."""
    top = benchmark(full_table.top, TOKEN)
    assert top.seq > 0 and top.bid_levels == 1


@pytest.mark.benchmark(group="shared_snapshot")
def test_shared_snapshot_of_4096_rows(benchmark: BenchmarkFixture, full_table: Any) -> None:
    """``TopReader.snapshot(out)`` of 4,096 rows into a reused buffer; target c <= 50 µs."""
    out = full_table.snapshot()
    benchmark(full_table.snapshot, out)
    assert len(memoryview(out)) == TABLE_ROWS


@pytest.mark.benchmark(group="shared_feed")
@pytest.mark.parametrize("table", ["private", "shared"])
def test_shared_feed_mixed_stream(
    benchmark: BenchmarkFixture, core: ModuleType, table: str, table_name: str, workloads: dict[str, Corpus]
) -> None:
    """The mixed stream, 1000 frames per call, into a private or a shared store; target shared <= 1.05 x private."""
    corpus = workloads["mixed"]
    store = core.BookStore(len(corpus.token_ids), shared=table_name if table == "shared" else None)
    try:
        for token in corpus.token_ids:
            store.add(token)
        dispatcher = core.Dispatcher(store)

        def feed_all(frames: tuple[str, ...] = corpus.frames, feed: Callable[[str], object] = dispatcher.feed) -> None:
            for frame in frames:
                feed(frame)

        def prime() -> None:  # every round from the same books
            dispatcher.feed(corpus.snapshot)

        benchmark.extra_info["frames_per_call"] = len(corpus.frames)
        benchmark.pedantic(feed_all, setup=prime, rounds=30, warmup_rounds=2)
        stats = dispatcher.stats()
        assert {key: stats[key] for key in BAD_STATS if stats[key]} == {}
    finally:
        store.close_shared()
