"""``pm-ws watch --all``, ``record --all`` and ``demo --all`` against the fake exchange (WebSocket + Gamma + CLOB)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pm_ws import _demo, _live, _record
from pm_ws._exit import ExitCode
from pm_ws.cli import build_parser, main
from pm_ws.recording import KIND_META, RecordingReader
from pm_ws.testing import FakeMarketServer, FakeRestServer


def order_book_tokens(ws: FakeMarketServer) -> list[str]:
    return [token for index, market in enumerate(ws.markets) if (index + 1) % 3 for token in market[1:]]


async def test_watch_all_shows_every_order_book_market_live(capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeMarketServer(markets=6, seed=3, rate_hz=20) as ws, FakeRestServer(ws) as rest:
        args = build_parser().parse_args(
            ["watch", "--all", "--url", ws.url, "--gamma-url", rest.url, "--clob-url", rest.url,
             "--duration", "1.5", "--plain", "--refresh", "1.4"]
        )  # fmt: skip
        assert await _live.watch(args) == ExitCode.OK
    out = capsys.readouterr().out
    assert "8 LIVE" in out and "Yes Market 1?" in out and "Market 3?" not in out  # market 3 has no order book


async def test_watch_all_filters_by_tag_and_minimum_volume(capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeMarketServer(markets=12, seed=3, rate_hz=20) as ws, FakeRestServer(ws) as rest:
        args = build_parser().parse_args(
            ["watch", "--all", "--tag", "2", "--min-volume", "2000", "--url", ws.url, "--gamma-url", rest.url,
             "--duration", "1.2", "--plain", "--refresh", "1.1"]
        )  # fmt: skip
        assert await _live.watch(args) == ExitCode.OK
    out = capsys.readouterr().out
    # tag 2: ids 1, 4, 7, 10; volume >= 2000: not 1 (1000) nor 10 (0)
    assert "Market 4?" in out and "Market 7?" in out and "Market 1?" not in out and "Market 10?" not in out


async def test_record_all_writes_the_followed_tokens_as_subscribe_records(tmp_path: Path) -> None:
    out = tmp_path / "all.pmws"
    async with FakeMarketServer(markets=4, seed=3, rate_hz=20) as ws, FakeRestServer(ws) as rest:
        args = build_parser().parse_args(
            ["record", str(out), "--all", "--url", ws.url, "--gamma-url", rest.url, "--duration", "1.0"]
        )
        assert await _record.record(args) == ExitCode.OK
        wanted = order_book_tokens(ws)
    with RecordingReader(out) as reader:
        metas = [orjson.loads(r.payload) for r in reader if r.kind == KIND_META]
    subscribed = [token for meta in metas if meta["type"] == "subscribe" for token in meta["tokens"]]
    assert metas[0]["type"] == "start" and sorted(subscribed) == sorted(wanted)


async def test_demo_all_opens_and_resolves_markets(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["demo", "--all", "--markets", "2", "--seed", "1", "--fault-every", "0.4", "--duration", "2.5", "--plain",
         "--refresh", "2.4"]
    )  # fmt: skip
    assert await _demo.demo(args) == ExitCode.OK
    out = capsys.readouterr().out
    assert "server: new_market" in out and "server: market_resolved" in out and "RESOLVED" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["watch", "--all", "123"], "no TOKEN_ID, --market or --slug with it"),
        (["watch", "--tag", "2", "123"], "--tag only filter --all"),
        (["record", "x.pmws", "--min-volume", "5", "--min-liquidity", "1", "1"], "--min-volume, --min-liquidity"),
    ],
)
def test_filters_need_all_and_all_takes_no_ids(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == ExitCode.USAGE
    assert message in capsys.readouterr().err

