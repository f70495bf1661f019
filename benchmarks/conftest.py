"""Benchmark fixtures: the ``impl`` under test (c, py, seed, and loads) and the generated corpora."""

from __future__ import annotations

import pytest

from benchmarks.feeders import IMPLS, compiled_core_missing
from benchmarks.frames import Corpus, corpora

TAGS = (*IMPLS, "loads")  # plus orjson.loads alone: a reference that does not depend on the seed


@pytest.fixture(
    scope="session",
    params=[pytest.param(tag, marks=pytest.mark.c_extension) if tag == "c" else tag for tag in TAGS],
    ids=list(TAGS),
)
def impl(request: pytest.FixtureRequest) -> str:
    """The implementation tag: compiled core, pure twin, the seed-style baseline, then ``orjson.loads``.

    ``loads`` (orjson.loads alone, applying nothing) is a floor for any handler that builds Python
    objects per frame: loads / c measures the compiled core against it, whatever the seed costs.
    """
    if request.param == "c" and (reason := compiled_core_missing()):
        pytest.skip(f"compiled core not benchmarked: {reason}")
    return request.param


@pytest.fixture(scope="session")
def workloads() -> dict[str, Corpus]:
    """The generated corpora: "mixed" and one per hot event type, 1000 frames each."""
    return corpora()
