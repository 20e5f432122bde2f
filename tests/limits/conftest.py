"""Fixtures of the keys/limits tests: a real redis-server on a random loopback port, keys, a clock."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import mock_config

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
SECRETS = {"alpha": "sk-alpha-secret", "beta": "sk-beta-secret", "root": "sk-root-secret"}


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {SECRETS[name]}"),)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server child process on 127.0.0.1, no persistence; ``kill()`` and ``start()`` again
    (same port) to simulate an outage."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 20s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def _require_redis() -> None:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed (make test installs it: scripts/test_deps.sh)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart by a key prefix of their own."""
    _require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test only (to kill and restart)."""
    _require_redis()
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The rate_limit settings of each backend (redis: the session's server, a fresh key prefix)."""
    if request.param == "memory":
        return {"backend": "memory"}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"backend": "redis", "redis": {"url": server.url, "key_prefix": f"t{uuid.uuid4().hex[:12]}",
                                          "timeout_ms": 2000}}


class FakeClock:
    """The limiter's clock, moved by the test (epoch seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def keyed_config(keys: list[dict[str, Any]], rate_limit: dict[str, Any] | None = None, **overrides: Any
                 ) -> dict[str, Any]:
    """A mock-provider gateway with these keys (each: name from SECRETS plus settings)."""
    entries = [{"sha256": sha(SECRETS[k["name"]]), **k} for k in keys]
    return mock_config(keys=entries, rate_limit=rate_limit or {}, **overrides)
