"""The shared table's numbers: writer cost, reader cost, cross-process latency (``python -m benchmarks.shared_table``).

- feed: ``Dispatcher.feed`` on the mixed stream into a shared store vs a private one (min of rounds, one run)
- top: ``TopReader.top(token)`` with the writer idle, and with a writer process updating that row ~100,000 times a second
- snapshot: ``TopReader.snapshot(out)`` of 4,096 rows
- latency: ``feed()`` returning in a writer process -> a polling reader process sees the new SEQ, p50/p99
"""

from __future__ import annotations

import multiprocessing
import time
import timeit
import uuid
from typing import Any

from benchmarks.frames import corpora
from pm_ws import SEQ, BookStore, Dispatcher, TopReader

CONTEXT = multiprocessing.get_context("fork")
TOKEN = "1001"
UPDATES = 100_000


def book(k: int, token: str = TOKEN) -> str:
    return ('{"event_type":"book","asset_id":"%s","timestamp":"%d","bids":[{"price":"0.4","size":"%d"}],'
            '"asks":[{"price":"0.6","size":"%d"}]}' % (token, k, k, k))  # fmt: skip


def best_of(fn: Any, number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def feed_cost() -> tuple[float, float]:
    corpus = corpora()["mixed"]
    frames = corpus.frames
    results = []
    for shared in (None, f"pmws-bench-{uuid.uuid4().hex[:8]}"):
        store = BookStore(len(corpus.token_ids), shared=shared)
        for token in corpus.token_ids:
            store.add(token)
        feed = Dispatcher(store).feed
        feed(corpus.snapshot, 1)

        def run() -> None:
            for text in frames:
                feed(text, 1)

        results.append(best_of(run, 20, 15) / len(frames))
        store.close_shared()
    return results[0], results[1]


def hammer(name: str, ready: Any, stop: Any, rate: int) -> None:
    store = BookStore(4096, shared=name)
    for i in range(4096):
        store.add(str(1001 + i))
    feed = Dispatcher(store).feed
    frames = [book(k) for k in range(1, 1001)]
    ready.set()
    period = 1000 / rate if rate else 0
    while not stop.is_set():
        store.beat()
        start = time.perf_counter()
        if rate:
            for text in frames:
                feed(text, 1)
            time.sleep(max(0.0, period - (time.perf_counter() - start)))
        else:
            time.sleep(0.01)
    store.close_shared()


def reader_cost(rate: int) -> tuple[float, float, float]:
    name = f"pmws-bench-{uuid.uuid4().hex[:8]}"
    ready, stop = CONTEXT.Event(), CONTEXT.Event()
    writer = CONTEXT.Process(target=hammer, args=(name, ready, stop, rate))
    writer.start()
    ready.wait(30)
    try:
        with TopReader(name) as reader:
            top = reader.top
            per_call = best_of(lambda: top(TOKEN), 100_000)
            before = top(TOKEN).seq
            time.sleep(0.5)
            seen_rate = (top(TOKEN).seq - before) / 2 / 0.5
            snap = reader.snapshot()
            snapshot = best_of(lambda: reader.snapshot(snap), 200)
    finally:
        stop.set()
        writer.join(30)
    return per_call, snapshot, seen_rate


def ping(name: str, ready: Any, go: Any, stamps: Any) -> None:
    # The writer: feed, take the time feed() returned, wait until the reader saw it, next
    store = BookStore(4, shared=name)
    store.add(TOKEN)
    feed = Dispatcher(store).feed
    seen = stamps  # shared array: [0] = SEQ the reader saw
    ready.set()
    go.wait()
    out = []
    for k in range(1, UPDATES + 1):
        feed(book(k), k)
        out.append(time.perf_counter_ns())
        target = store.view[0, SEQ]
        while seen[0] < target:
            pass
        if k % 1000 == 0:
            store.beat()
    store.close_shared()
    for i, stamp in enumerate(out):
        stamps[1 + i] = stamp


def latency() -> tuple[float, float]:
    name = f"pmws-bench-{uuid.uuid4().hex[:8]}"
    ready, go = CONTEXT.Event(), CONTEXT.Event()
    stamps = CONTEXT.Array("q", UPDATES + 1, lock=False)
    writer = CONTEXT.Process(target=ping, args=(name, ready, go, stamps))
    writer.start()
    ready.wait(30)
    seen_at = []
    with TopReader(name) as reader:
        top = reader.top
        last = top(TOKEN).seq
        go.set()
        for _ in range(UPDATES):
            while True:
                seq = top(TOKEN).seq
                if seq != last:
                    break
            seen_at.append(time.perf_counter_ns())
            last = seq
            stamps[0] = seq
    writer.join(60)
    gaps = sorted(seen - stamps[1 + i] for i, seen in enumerate(seen_at))
    return gaps[len(gaps) // 2] / 1000, gaps[len(gaps) * 99 // 100] / 1000


def main() -> None:
    private, shared = feed_cost()
    print(f"feed, mixed stream: private {private * 1e6:.3f} µs/frame, shared {shared * 1e6:.3f} µs/frame, "
          f"shared/private {shared / private:.3f}")
    for rate in (0, 100_000):
        per_call, snapshot, seen = reader_cost(rate)
        print(f"writer at {rate:>7,}/s (seen {seen:,.0f}/s): top {per_call * 1e6:.3f} µs/call, "
              f"snapshot(4096 rows) {snapshot * 1e6:.1f} µs")
    p50, p99 = latency()
    print(f"cross-process feed() return -> reader sees SEQ, {UPDATES:,} updates: p50 {p50:.2f} µs, p99 {p99:.2f} µs")


if __name__ == "__main__":
    main()
