"""The serving lifecycle the fake servers share: a loopback address, start/stop, ``async with`` and the URL.

:class:`~pm_ws.testing.FakeMarketServer` (WebSocket) and :class:`~pm_ws.testing.FakeRestServer` (HTTP)
differ only in what they listen with; each implements :meth:`LoopbackServer._listen` and
:meth:`LoopbackServer._close`.
"""

from __future__ import annotations

from typing import ClassVar, Self

__all__ = ["LOOPBACK_HOSTS", "LoopbackServer"]

LOOPBACK_HOSTS = ("127.0.0.1", "::1")  # not "localhost": it may bind two sockets on two ports


class LoopbackServer:
    """A test server that only ever listens on a loopback address.

    Parameters
    ----------
    host : str
        ``"127.0.0.1"`` or ``"::1"``.
    port : int
        TCP port; 0 picks a free one (read it back from :attr:`url`).

    Raises
    ------
    ValueError
        On a non-loopback host.
    """

    SCHEME: ClassVar[str]  # of the URL: "ws", "http"

    def __init__(self, host: str, port: int) -> None:
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"{type(self).__name__} listens on loopback only, host was {host!r}")
        self._host = host
        self._port = port
        self._running = False

    async def _listen(self) -> int:
        """Start serving on ``self._host``/``self._port``; return the bound port."""
        raise NotImplementedError

    async def _close(self) -> None:
        """Stop serving and close what is still open; also after a failed or no :meth:`_listen`."""
        raise NotImplementedError

    async def start(self) -> None:
        """Start listening."""
        self._port = await self._listen()
        self._running = True

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        self._running = False
        await self._close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """``<scheme>://<host>:<port>`` of the running server."""
        if not self._running:
            raise RuntimeError(f"{type(self).__name__} is not running; use `async with` or await start()")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{self.SCHEME}://{host}:{self._port}"
