"""End to end over loopback: bare websockets loop, loop + core, loop + seed, MarketClient, and with picows
installed the bare picows listener and MarketClient(transport="picows").

Each round receives one pre-rendered stream of 50,000 frames from a FakeMarketServer in another
process, on a fresh connection (connection setup included, a few ms of a ~250 ms round). The
timer is the CPU time of this process (``time.process_time``), the fair measure on a shared
machine where other load steals wall time at random, so the stats are CPU seconds per stream:
min / ``extra_info["frames_per_call"]`` is the CPU per frame, and bare.min / client.min the share of
the bare loop's speed that ``MarketClient`` keeps (gated by ``benchmarks.gate``). The garbage
collector stays on, as in a real client. ``extra_info`` also holds the best wall-clock
frames/s and CPU µs per frame measured between the stream's first and last frame
(``benchmarks.e2e`` prints those for interleaved rounds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.e2e import MODES, N_FRAMES, ServerProcess, Throughput, receive

SMOKE_FRAMES = 2_000  # with --benchmark-disable: just prove the path works
ROUNDS = 10  # streams per receiver after one warm-up stream; the gate takes the min


@pytest.fixture(scope="module")
def stream_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[str], int]]:
    """A FakeMarketServer process streaming to every subscriber: (url, token ids, frames per stream)."""
    n_frames = SMOKE_FRAMES if request.config.getoption("benchmark_disable") else N_FRAMES
    with ServerProcess(n_frames) as server:
        yield server


@pytest.mark.benchmark(group="e2e", timer=time.process_time, disable_gc=False)
@pytest.mark.parametrize("mode", MODES)
def test_e2e_loopback_stream(benchmark: BenchmarkFixture, mode: str, stream_server: tuple[str, list[str], int]) -> None:
    """One 50,000-frame stream (~600 B frames) per round; CPU µs/frame = 1e6 * min / frames_per_call."""
    url, token_ids, total = stream_server
    rates: list[Throughput] = []
    problems: dict[str, int] = {}

    def one_stream() -> None:
        rate, found = asyncio.run(receive(mode, url, token_ids, total))
        rates.append(rate)
        problems.update(found)

    benchmark.pedantic(one_stream, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["frames_per_call"] = total
    benchmark.extra_info["frames_per_s"] = round(max(rate.frames_per_s for rate in rates))
    benchmark.extra_info["cpu_us_per_frame"] = round(min(rate.cpu_us_per_frame for rate in rates), 3)
    benchmark.extra_info["problems"] = problems
    assert problems == {}
    assert all(rate.frames_per_s > 0 for rate in rates)
