"""Dispatcher cost per frame: compiled core [c], pure twin [py], seed-style baseline [seed], orjson.loads [loads].

Every call feeds a whole 1000-frame corpus (str frames, as ``websockets`` delivers them), so
the per-frame cost is the reported time / 1000: 1 ms per call = 1 µs per frame. Each round
starts from the corpus snapshot (re-applied, untimed), so books never drift between rounds,
and after the run the dispatcher must have applied every event: no rejects, skips or
checksum mismatches, or the corpus is not measuring real work (``extra_info["problems"]``
records what went wrong, for ``benchmarks.gate`` reading the JSON).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.feeders import make_feeder
from benchmarks.frames import Corpus

SECONDS_PER_BENCHMARK = 1.0  # rounds are sized to about this much timed work
MIN_ROUNDS = 5
MAX_ROUNDS = 1000


def bench_corpus(benchmark: BenchmarkFixture, impl: str, corpus: Corpus) -> None:
    """Time whole passes of ``impl`` over ``corpus``, each from the snapshot; check nothing was skipped."""
    feeder = make_feeder(impl, corpus)

    # defaults make the frames and the bound method true locals of the timed loop
    def feed_all(frames: tuple[str, ...] = corpus.frames, feed: Callable[[str], object] = feeder.feed) -> None:
        for frame in frames:
            feed(frame)

    rounds = MIN_ROUNDS
    if not benchmark.disabled:  # size the rounds from one untimed pass
        started = time.perf_counter()
        feed_all()
        rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(SECONDS_PER_BENCHMARK / (time.perf_counter() - started))))
    benchmark.extra_info["frames_per_call"] = len(corpus.frames)
    benchmark.extra_info["mean_frame_bytes"] = round(corpus.mean_bytes)
    benchmark.extra_info["mean_book_levels"] = corpus.mean_book_levels  # ns per level = ns per book / this
    benchmark.pedantic(feed_all, setup=feeder.prime, rounds=rounds, warmup_rounds=1)
    benchmark.extra_info["problems"] = feeder.problems()
    assert benchmark.extra_info["problems"] == {}


@pytest.mark.benchmark(group="mixed")
def test_dispatch_mixed_stream(benchmark: BenchmarkFixture, impl: str, workloads: dict[str, Corpus]) -> None:
    """Mixed stream (85% price_change, 10% book 10+10, 4% trade, 1% bba), 1000 frames/call; target c <= 0.20 µs/frame."""
    bench_corpus(benchmark, impl, workloads["mixed"])


@pytest.mark.benchmark(group="mixed_deep")
def test_dispatch_mixed_stream_deep_books(benchmark: BenchmarkFixture, impl: str, workloads: dict[str, Corpus]) -> None:
    """The mixed stream with 40+40-level books, 1000 frames/call (information; no target)."""
    bench_corpus(benchmark, impl, workloads["mixed_deep"])


@pytest.mark.benchmark(group="mixed_deep50")
def test_dispatch_mixed_stream_deep50_books(
    benchmark: BenchmarkFixture, impl: str, workloads: dict[str, Corpus]
) -> None:
    """The mixed stream with 50+50-level books (0.001 grid), 1000 frames/call; target c >= 15x seed."""
    bench_corpus(benchmark, impl, workloads["mixed_deep50"])


@pytest.mark.benchmark(group="price_change")
def test_dispatch_price_change(benchmark: BenchmarkFixture, impl: str, workloads: dict[str, Corpus]) -> None:
    """price_change, 2 mirrored entries, ~600 B, 1000 frames/call; target c <= 0.15 µs/frame."""
    bench_corpus(benchmark, impl, workloads["price_change"])


@pytest.mark.benchmark(group="book")
def test_dispatch_book(benchmark: BenchmarkFixture, impl: str, workloads: dict[str, Corpus]) -> None:
    """book, 40+40 levels, ~2.9 KB, 1000 frames/call; target c <= 2.0 µs/frame."""
    bench_corpus(benchmark, impl, workloads["book"])


@pytest.mark.benchmark(group="book_50")
def test_dispatch_book_50(benchmark: BenchmarkFixture, impl: str, workloads: dict[str, Corpus]) -> None:
    """book, 50+50 levels, ~3.6 KB, 1000 frames/call; target c <= 8 ns per level."""
    bench_corpus(benchmark, impl, workloads["book_50"])


@pytest.mark.benchmark(group="book_100")
def test_dispatch_book_100(benchmark: BenchmarkFixture, impl: str, workloads: dict[str, Corpus]) -> None:
    """book, 100+100 levels, ~6.9 KB, 1000 frames/call; target c <= 8 ns per level."""
    bench_corpus(benchmark, impl, workloads["book_100"])


@pytest.mark.benchmark(group="last_trade_price")
def test_dispatch_last_trade_price(benchmark: BenchmarkFixture, impl: str, workloads: dict[str, Corpus]) -> None:
    """last_trade_price, ~380 B, 1000 frames/call (per-frame = time / 1000)."""
    bench_corpus(benchmark, impl, workloads["last_trade_price"])


@pytest.mark.benchmark(group="best_bid_ask")
def test_dispatch_best_bid_ask(benchmark: BenchmarkFixture, impl: str, workloads: dict[str, Corpus]) -> None:
    """best_bid_ask, ~280 B, 1000 frames/call (per-frame = time / 1000)."""
    bench_corpus(benchmark, impl, workloads["best_bid_ask"])
