"""Benchmark fixtures: the ``impl`` under test (c, py, seed) and the generated corpora."""

from __future__ import annotations

import pytest

from benchmarks.feeders import IMPLS, compiled_core_missing
from benchmarks.frames import Corpus, corpora


@pytest.fixture(
    scope="session",
    params=[pytest.param(tag, marks=pytest.mark.c_extension) if tag == "c" else tag for tag in IMPLS],
    ids=list(IMPLS),
)
def impl(request: pytest.FixtureRequest) -> str:
    """The implementation tag: compiled core, pure twin, then the seed-style baseline."""
    if request.param == "c" and (reason := compiled_core_missing()):
        pytest.skip(f"compiled core not benchmarked: {reason}")
    return request.param


@pytest.fixture(scope="session")
def workloads() -> dict[str, Corpus]:
    """The generated corpora: "mixed" and one per hot event type, 1000 frames each."""
    return corpora()
