"""Where the dispatcher's time goes: the same corpora, varied one property at a time.

Run from the repo root: ``python -m benchmarks.variants [--impl c|py|seed]``. Prints µs per
frame (min of N passes over 1000 frames) for each variant; the difference to the baseline row
is the cost of the property varied (call floor, str vs bytes, key order / fast path, entries,
checksum fields, levels, sorting, unsubscribed tokens). For profiling, never a gate.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

import orjson

from benchmarks.feeders import make_feeder
from benchmarks.frames import N_FRAMES, N_MARKETS, SEED, Corpus, corpora, make_corpus
from benchmarks.timing import loop_overhead_ns, time_pass

REPEATS = 25


def _rewrite(corpus: Corpus, name: str, change: Callable[[dict], dict], *, option: int = 0) -> Corpus:
    frames = tuple(orjson.dumps(change(orjson.loads(frame)), option=option).decode() for frame in corpus.frames)
    return replace(corpus, name=name, frames=frames)


def _entries_of(tokens: set[str]) -> Callable[[dict], dict]:
    def keep(event: dict) -> dict:
        event["price_changes"] = [entry for entry in event["price_changes"] if entry["asset_id"] in tokens]
        return event

    return keep


def _without_checksum(event: dict) -> dict:
    for entry in event["price_changes"]:
        del entry["best_bid"], entry["best_ask"]
    return event


def _levels_reversed(event: dict) -> dict:
    event["bids"].reverse()
    event["asks"].reverse()
    return event


def fake_server_stream(n: int = N_FRAMES) -> Corpus:
    """The mixed stream as pm_ws.testing.FakeMarketServer renders it: an independent generator."""
    from pm_ws.testing import FakeMarketServer

    server = FakeMarketServer(markets=N_MARKETS, seed=SEED, rate_hz=0)
    snapshot = server.initial_dump()
    frames = tuple(server.frames(n, trades=True)[:n])
    kinds = tuple(orjson.loads(frame)["event_type"] for frame in frames)
    return Corpus("mixed (FakeMarketServer.frames)", tuple(server.token_ids), snapshot, frames, kinds)


def variants() -> list[tuple[Corpus, bool]]:
    """Return (corpus, subscribed) pairs; unsubscribed ones subscribe no token at all."""
    base = corpora()
    price_change, book = base["price_change"], base["book"]
    yes_tokens = set(price_change.token_ids[0::2])  # YES, NO, YES, NO, ...
    return [
        (replace(price_change, name="floor: feed('PONG')", frames=("PONG",) * len(price_change.frames)), True),
        (base["mixed"], True),
        (fake_server_stream(), True),
        (base["mixed_deep"], True),
        (base["mixed_deep50"], True),
        (price_change, True),
        (replace(price_change, name="price_change as bytes", frames=tuple(f.encode() for f in price_change.frames)), True),  # type: ignore[misc]
        (_rewrite(price_change, "price_change keys sorted", lambda e: e, option=orjson.OPT_SORT_KEYS), True),
        (_rewrite(price_change, "price_change 1 entry (YES)", _entries_of(yes_tokens)), True),
        (_rewrite(price_change, "price_change no best_bid/ask", _without_checksum), True),
        (replace(price_change, name="price_change unsubscribed"), False),
        (base["last_trade_price"], True),
        (base["best_bid_ask"], True),
        (book, True),
        (base["book_50"], True),
        (base["book_100"], True),
        (_rewrite(book, "book best-first (sort path)", _levels_reversed), True),
        (replace(book, name="book unsubscribed"), False),
        (make_corpus("book 10+10", ["book"] * len(book.frames), levels=10), True),
        (make_corpus("book 1+1", ["book"] * len(book.frames), levels=1), True),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default="c", choices=("c", "py", "seed"))
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args(argv)

    print(f"{args.impl}: µs per frame, min of {args.repeats} passes of 1000 frames")
    gc.disable()
    for corpus, subscribed in variants():
        feeder = make_feeder(args.impl, corpus if subscribed else replace(corpus, token_ids=()))
        size = sum(map(len, corpus.frames)) / len(corpus.frames)
        passes = []
        try:
            for _ in range(args.repeats):
                feeder.prime()
                passes.append(time_pass(feeder.feed, corpus.frames))
        except ValueError as exc:  # the seed handler raises on control words
            print(f"{corpus.name:<32}{size:>6.0f} B  raises {type(exc).__name__}")
            continue
        print(f"{corpus.name:<32}{size:>6.0f} B{min(passes) / len(corpus.frames) / 1000:>9.3f}")
    print(f"{'timing loop alone':<32}{'':>8}{loop_overhead_ns(corpus.frames, args.repeats) / 1000:>9.3f}")
    gc.enable()
    return 0


if __name__ == "__main__":
    sys.exit(main())
