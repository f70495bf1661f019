"""The exchange soak (``python -m benchmarks.soak --exchange``) in a ~20 s run, and its checker's teeth.

ExchangeFollower on the fake exchange while markets open and resolve, snapshots are withheld (REST
bootstrap) and WebSocket and HTTP faults are injected: 0 wrong-LIVE reads, every opened market LIVE and
every resolved one RESOLVED and freed in bound. The longer run is
``python -m benchmarks.soak --exchange --seconds 90``.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import pytest
from test_soak import soak  # noqa: F401  (the fixture: benchmarks/soak.py imported by path)

pytest.importorskip("aiohttp")

# Short faults and listings, so a round of every fault kind takes a few seconds (the client's deadlines are
# the soak's: with snapshot_timeout 0.3 withheld tokens keep their connection rebuilding, see the README)
FAST: dict[str, Any] = {
    "backoff": (0.02, 0.2),
    "fault_gap": (0.05, 0.2),
    "fault_hold": 1.0,
    "relist_interval": 1.0,
    "resolve_grace": 0.5,
    "open_every": 0.4,
}


@pytest.fixture(autouse=True)
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pm_ws")  # the client warns on every fault it handles


@pytest.mark.slow
async def test_exchange_soak_markets_open_and_resolve_under_faults_no_wrong_live_read(soak: ModuleType) -> None:
    config = soak.ExchangeSoakConfig(duration=10.0, seed=3, markets=105, rate=300.0, withheld_share=0.05, **FAST)

    result = await soak.exchange_soak(config)

    report = soak.exchange_summary(result)
    assert result.violations == [], report
    assert result.wrong_live == 0, report
    assert set(result.injected) == set(config.kinds), report
    assert result.opened >= 5 and result.opened_live == result.opened, report
    assert result.resolved >= 5 and result.freed == result.resolved_final == result.resolved, report
    assert result.withheld > 0 and result.withheld_live > 0, report
    assert result.follower["bootstrap"]["books_loaded"] > 0, report
    assert result.live_rows_checked > 100_000 and result.resolved_reads > 0, report


@pytest.mark.slow
async def test_exchange_soak_reports_a_live_row_the_server_left(soak: ModuleType) -> None:
    # With trades on, a withheld token never hears of them (the fake server's trades reach a book through a
    # `book` refresh only, withheld too): its REST-built LIVE row keeps a size the server left. The checker
    # must count it as a wrong-LIVE read
    options = FAST | {"fault_gap": (5.0, 5.0)}  # nearly no faults: the rows stay LIVE long enough to diverge
    config = soak.ExchangeSoakConfig(
        duration=5.0, seed=4, markets=10, rate=400.0, withheld_share=0.5, trade_every=3, **options
    )

    result = await soak.exchange_soak(config)

    assert result.wrong_live > 0, soak.exchange_summary(result)
    assert any("not a server top" in text for text in result.violations), soak.exchange_summary(result)


# Silent streams (the server drops every delta on open sockets, PONGs still answered) right after reconnects with
# a slow REST side: REST books are asked, taken and merged across the silences, on sockets without a LIVE row
# or opened while the server was silent
SILENT: dict[str, Any] = FAST | {"kinds": ("silent_stream", "http_slow")}


@pytest.mark.slow
async def test_exchange_soak_silent_streams_leave_no_rest_book_live_without_its_deltas(soak: ModuleType) -> None:
    assert "silent_stream" in soak.ExchangeSoakConfig().kinds  # one of the product's faults: on by default
    config = soak.ExchangeSoakConfig(duration=10.0, seed=1, markets=105, rate=300.0, withheld_share=0.2, **SILENT)

    result = await soak.exchange_soak(config)

    report = soak.exchange_summary(result)
    assert result.violations == [], report
    assert result.wrong_live == 0, report
    assert result.injected["silent_stream"] >= 2, report
    assert result.withheld_live > 0 and result.follower["bootstrap"]["books_loaded"] > 0, report


@pytest.mark.slow
async def test_exchange_soak_reports_rest_books_confirmed_across_a_silence(
    soak: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checker's teeth for the run above: connections that never notice a silence let the REST books taken
    # across one be confirmed by a delta whose best prices match, below which deltas were lost
    from pm_ws._shard import Shard

    monkeypatch.setattr(Shard, "silence_ended", lambda shard: None)
    config = soak.ExchangeSoakConfig(duration=10.0, seed=1, markets=105, rate=300.0, withheld_share=0.2, **SILENT)

    result = await soak.exchange_soak(config)

    assert result.wrong_live > 0, soak.exchange_summary(result)
