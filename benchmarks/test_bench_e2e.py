"""End to end over loopback: bare websockets loop, loop + core, loop + seed, MarketClient.

One round each (picows style): a call receives one pre-rendered stream of 50,000 frames from a
FakeMarketServer in another process, connection setup included; the frames/s between the first
and the last frame is in ``extra_info["frames_per_s"]``, the client's CPU time per frame in
``extra_info["cpu_us_per_frame"]``. ``python -m benchmarks.e2e`` runs
interleaved rounds and prints the ratios (target: MarketClient >= 80% of the bare loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.e2e import MODES, N_FRAMES, ServerProcess, receive

SMOKE_FRAMES = 2_000  # with --benchmark-disable: just prove the path works


@pytest.fixture(scope="module")
def stream_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[str], int]]:
    """A FakeMarketServer process streaming to every subscriber: (url, token ids, frames per stream)."""
    n_frames = SMOKE_FRAMES if request.config.getoption("benchmark_disable") else N_FRAMES
    with ServerProcess(n_frames) as server:
        yield server


@pytest.mark.benchmark(group="e2e")
@pytest.mark.parametrize("mode", MODES)
def test_e2e_loopback_stream(benchmark: BenchmarkFixture, mode: str, stream_server: tuple[str, list[str], int]) -> None:
    """One 50,000-frame stream (~600 B frames) per call; µs/frame = 1e6 / extra_info["frames_per_s"]."""
    url, token_ids, total = stream_server
    throughput, problems = benchmark.pedantic(
        lambda: asyncio.run(receive(mode, url, token_ids, total)), rounds=1, iterations=1
    )
    benchmark.extra_info["frames_per_s"] = round(throughput.frames_per_s)
    benchmark.extra_info["cpu_us_per_frame"] = round(throughput.cpu_us_per_frame, 3)
    benchmark.extra_info["frames"] = total
    assert problems == {}
    assert throughput.frames_per_s > 0
