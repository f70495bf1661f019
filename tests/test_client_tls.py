"""wss:// with certificate verification on, over both transports.

A certificate authority and a server certificate for 127.0.0.1 are made per test run with the
``openssl`` command; a TLS front on loopback (:func:`tls_front`) terminates TLS with them and passes the
bytes on to a plain :class:`~pm_ws.testing.FakeMarketServer`. The client trusts the authority through
``ssl=`` (a context of its own) or through ``SSL_CERT_FILE``, which the default TLS context of both
transports reads; a server certificate from an authority the client does not trust fails the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from client_helpers import FAST, all_in, books_match, serving, wait_until
from pm_ws.client import MarketClient
from pm_ws.row import State
from pm_ws.testing import FakeMarketServer

pytestmark = [
    pytest.mark.usefixtures("transport"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


def make_authority(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA certificate and a server key + certificate it signed for IP 127.0.0.1: (ca, key, cert)."""
    ca_key, ca, key, request, cert = (folder / f"{name}{suffix}" for suffix in ("-ca.key", "-ca.pem", ".key", ".csr", ".pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    commands = [
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", f"/CN=pm_ws test CA {name}",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-keyout", key, "-out", request, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
         "-extfile", extensions],
    ]
    for command in commands:
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, key, cert


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, Path]]:
    """Two unrelated authorities: "trusted" (the client's) and "stranger"."""
    folder = tmp_path_factory.mktemp("tls")
    return {name: make_authority(folder, name) for name in ("trusted", "stranger")}


def port_of(server: FakeMarketServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def tls_front(backend_port: int, key: Path, cert: Path) -> AsyncIterator[str]:
    """A TLS server on loopback piping each connection to ``backend_port``; yields its wss:// URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", backend_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, backend_writer), pipe(backend_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


@pytest.mark.parametrize("trust", ["ssl_context", "default_context"])
async def test_client_wss_verifies_the_server_and_streams(
    authorities: dict[str, tuple[Path, Path, Path]], monkeypatch: pytest.MonkeyPatch, trust: str
) -> None:
    ca, key, cert = authorities["trusted"]
    if trust == "ssl_context":  # ssl=: a context of the caller's that trusts this CA only
        options: dict[str, Any] = {"ssl": ssl.create_default_context(cafile=ca)}
    else:  # no ssl=: the default context (verification on) trusts this CA only
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        options = {}
    async with serving(markets=2, rate_hz=0) as server, tls_front(port_of(server), key, cert) as url:
        client = MarketClient(url, **options, **FAST)
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(all_in(client, server.token_ids, State.LIVE), what="books over TLS")
            await server.step(50)
            await wait_until(lambda: books_match(client, server, server.token_ids), what="the stream over TLS")


async def test_client_wss_refuses_a_server_its_authorities_did_not_sign(
    authorities: dict[str, tuple[Path, Path, Path]], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(authorities["trusted"][0]))
    _, key, cert = authorities["stranger"]
    async with serving(markets=1, rate_hz=0) as server, tls_front(port_of(server), key, cert) as url:
        client = MarketClient(url, **FAST)
        await client.subscribe(server.token_ids)
        async with client:
            await wait_until(lambda: client.stats()["connections"][0]["reconnects"] >= 2, what="retries")
            assert all_in(client, server.token_ids, State.SUBSCRIBING)()
    assert server.connections == []  # nothing reached the market server
    assert "SSLCertVerificationError" in caplog.text  # a verification failure, not some other error
