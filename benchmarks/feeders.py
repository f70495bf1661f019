"""One frame sink per implementation under test: the compiled core, its pure twin, the seed.

Each feeder subscribes a corpus's tokens, exposes the bound ``feed`` method the timing loops
call, and ``prime()`` re-applies the corpus snapshot so every round starts from the same books.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

import orjson

from benchmarks.frames import Corpus
from benchmarks.seed_reference import SeedHandler

IMPLS = ("c", "py", "seed")  # compiled core, pure twin, seed-style baseline (benchmarked by pytest)
CORE_MODULES = {"c": "pm_ws._core_c", "py": "pm_ws._core_py"}

# Counters that must stay 0 on a consistent corpus: anything here means skipped or wrong work
BAD_STATS = (
    "rej_oversized", "rej_unknown_text", "rej_invalid_json", "rej_unknown_event", "rej_bad_event",
    "rej_bad_number", "skip_unsubscribed", "skip_duplicate", "skip_not_live", "checksum_mismatch",
    "crossed_book", "bba_mismatch", "resync_queued", "skip_foreign", "off_grid", "impossible_book",
)  # fmt: skip


def compiled_core_missing() -> str | None:
    """Return why the compiled core cannot be benchmarked, or None when it can."""
    try:
        from pm_ws._core import NO_EXTENSIONS

        if NO_EXTENSIONS:
            return "PM_WS_NO_EXTENSIONS is set"
        importlib.import_module(CORE_MODULES["c"])
    except ImportError as exc:
        return f"pm_ws._core_c does not import ({type(exc).__name__}); build it: python setup.py build_ext --inplace"
    return None


class CoreFeeder:
    """A ``BookStore`` holding the corpus's tokens and a ``Dispatcher`` over it."""

    def __init__(self, module: ModuleType, corpus: Corpus) -> None:
        self.store = module.BookStore(capacity=max(64, len(corpus.token_ids)))
        for token_id in corpus.token_ids:
            self.store.add(token_id)
        self.dispatcher = module.Dispatcher(self.store)
        self.feed: Callable[[str], object] = self.dispatcher.feed
        self._snapshot = corpus.snapshot

    def prime(self) -> None:
        """Replace every book with the corpus snapshot (state LIVE, books as at frame 0)."""
        self.feed(self._snapshot)

    def problems(self) -> dict[str, int]:
        """Return the non-zero counters that mean frames were rejected, skipped or mismatched."""
        stats = self.dispatcher.stats()
        return {key: stats[key] for key in BAD_STATS if stats[key]}


class SeedFeeder:
    """The seed-style handler over the corpus's tokens (it has no counters to check)."""

    def __init__(self, corpus: Corpus) -> None:
        self.handler = SeedHandler(corpus.token_ids)
        self.feed: Callable[[str], object] = self.handler.feed
        self._snapshot = corpus.snapshot

    def prime(self) -> None:
        """Apply the corpus snapshot, as the core feeders do, so both pay the same setup."""
        self.feed(self._snapshot)

    def problems(self) -> dict[str, int]:
        """Return tokens the snapshot should have cached but did not (always empty when healthy)."""
        missing = set(self.handler.tokens) - set(self.handler.cache)
        return {"tokens_without_cache_row": len(missing)} if missing else {}


class LoadsFeeder:
    """``orjson.loads`` alone: the floor of any handler that builds Python objects per frame."""

    def __init__(self) -> None:
        self.feed: Callable[[str], object] = orjson.loads

    def prime(self) -> None:
        """Nothing to reset: it keeps no state."""

    def problems(self) -> dict[str, int]:
        """Return nothing: it applies nothing."""
        return {}


Feeder = CoreFeeder | SeedFeeder | LoadsFeeder


def make_feeder(impl: str, corpus: Corpus) -> Feeder:
    """Return a primed feeder for ``impl`` ("c", "py", "seed" or "loads") over ``corpus``'s tokens."""
    feeder: Feeder
    if impl == "seed":
        feeder = SeedFeeder(corpus)
    elif impl == "loads":
        feeder = LoadsFeeder()
    else:
        feeder = CoreFeeder(importlib.import_module(CORE_MODULES[impl]), corpus)
    feeder.prime()
    return feeder
