"""The picows transport takes every kind of frame as the websockets transport does, with either listener.

A websockets server sends whole and fragmented text and binary messages and frames that break the
protocol; each socket (websockets, picows with the compiled listener where it is built, picows with the
Python listener) must hand the shard the same messages and close with the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from websockets.asyncio.server import ServerConnection, serve

from pm_ws import _transport
from pm_ws._transport import open_socket

picows_transport = pytest.importorskip("pm_ws._transport_picows")

MAX_BYTES = 1000
TEXT_HEADER = b"\x81"  # FIN + text opcode
SOCKETS = ("websockets", "picows-compiled", "picows-python")

Scenario = Callable[[ServerConnection], Awaitable[None]]


class PythonListenerSocket(picows_transport.PicowsSocket):  # type: ignore[misc,name-defined]
    """The picows socket as it runs without the compiled listener: every frame through ``take_frame``."""

    on_ws_frame = picows_transport.PicowsSocket.take_frame


@pytest.fixture(params=SOCKETS)
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "picows-compiled" and not picows_transport.COMPILED_LISTENER:
        pytest.skip("no compiled listener in use: not built for this picows (python setup.py build_ext --inplace), "
                    "or PM_WS_NO_EXTENSIONS=1")
    if request.param == "picows-python":
        monkeypatch.setattr(picows_transport, "PicowsSocket", PythonListenerSocket)
    yield request.param


async def _whole_and_fragmented(ws: ServerConnection) -> None:
    await ws.send("a")
    await ws.send(b"\x01\x02")
    await ws.send(["he", "llo"])  # one text message in two frames
    await ws.send([b"x", b"y", b"z"])  # one binary message in three frames
    await ws.send("é")
    await ws.close()


async def _ping_then_text(ws: ServerConnection) -> None:
    await ws.send("before")
    await asyncio.wait_for(await ws.ping(b"hi"), 2)  # answered by the socket (picows's own answer is off)
    await ws.send("answered")
    await ws.close()


async def _raw(ws: ServerConnection, data: bytes) -> None:
    await ws.send("before")
    ws.transport.write(data)
    await ws.wait_closed()


SCENARIOS: dict[str, tuple[Scenario, list[str | bytes], int | None]] = {
    # name: (what the server does, the messages the shard must get, the close code the server must receive)
    "whole and fragmented": (_whole_and_fragmented, ["a", b"\x01\x02", "hello", b"xyz", "é"], 1000),
    "a PING answered": (_ping_then_text, ["before", "answered"], 1000),
    "text that is not UTF-8": (lambda ws: _raw(ws, TEXT_HEADER + b"\x02\xff\xfe"), ["before"], 1007),
    "fragmented text that is not UTF-8": (lambda ws: _raw(ws, b"\x01\x01\xff\x80\x01\xfe"), ["before"], 1007),
    "continuation without a start": (lambda ws: _raw(ws, b"\x80\x01a"), ["before"], 1002),
    "a start inside a message": (lambda ws: _raw(ws, b"\x01\x01a\x01\x01b"), ["before"], 1002),
    "fragments over the size limit": (
        lambda ws: _raw(ws, b"\x01\x7e" + (600).to_bytes(2, "big") + b"a" * 600 + b"\x80\x7e"
                       + (600).to_bytes(2, "big") + b"b" * 600),
        ["before"],
        1009,
    ),
}


@pytest.fixture
async def server_of() -> AsyncIterator[Callable[[Scenario], Awaitable[tuple[str, asyncio.Future[int | None]]]]]:
    servers = []

    async def start(scenario: Scenario) -> tuple[str, asyncio.Future[int | None]]:
        received: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

        async def handler(ws: ServerConnection) -> None:
            await ws.recv()  # the client is ready: the frames do not ride on the handshake
            await scenario(ws)
            await ws.wait_closed()
            received.set_result(ws.close_code)  # what the client's close frame said (None: none came)

        server = await serve(handler, "127.0.0.1", 0, max_size=None, compression=None)
        servers.append(server)
        port = next(iter(server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}", received

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("name", SCENARIOS)
async def test_socket_takes_each_kind_of_frame_as_websockets_does(
    kind: str, name: str, server_of: Callable[[Scenario], Awaitable[tuple[str, asyncio.Future[int | None]]]]
) -> None:
    scenario, expected, close_code = SCENARIOS[name]
    url, server_received = await server_of(scenario)
    async with asyncio.timeout(5):
        socket = await open_socket(url, transport=kind.split("-")[0], ssl=None, proxy=None, compression=False,
                                   max_frame_bytes=MAX_BYTES, open_timeout=2)
        if kind == "picows-python":
            assert type(socket) is PythonListenerSocket
        ended = []
        socket.on_end = lambda: ended.append(True)
        await socket.send("go")
        messages: list[str | bytes] = []
        while await socket.readable():
            while socket.frames:
                messages.append(socket.frames.popleft())
        assert messages == expected
        assert ended == [True]
        assert await server_received == close_code
        socket.abort()


def test_python_listener_socket_routes_every_frame_through_take_frame() -> None:
    # Without the compiled listener the socket's own on_ws_frame is take_frame: what the fallback test drives
    if not picows_transport.COMPILED_LISTENER:
        assert picows_transport.PicowsSocket.on_ws_frame is picows_transport.PicowsSocket.take_frame
    assert PythonListenerSocket.on_ws_frame is picows_transport.PicowsSocket.take_frame
    assert _transport.TRANSPORTS == ("websockets", "picows")
