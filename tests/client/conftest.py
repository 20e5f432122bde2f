"""Fixtures of the client's tests: a fault-injecting server, a refused address, a fake clock."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from orchestrator_client import GatewayClient

from .fault_server import FaultServer, FaultServicer


@pytest.fixture(autouse=True)
def _no_orchestrator_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's tests never see the developer's ORCHESTRATOR_* variables."""
    for name in list(os.environ):
        if name.startswith("ORCHESTRATOR_"):
            monkeypatch.delenv(name)


class FakeTime:
    """An injected clock and sleep: ``sleep`` records the wait and advances the clock at once."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def fault_server() -> AsyncIterator[FaultServer]:
    server = await FaultServer().start()
    yield server
    await server.stop()


@pytest.fixture
def fault(fault_server: FaultServer) -> FaultServicer:
    """The servicer of ``fault_server``: script it, read its recorded calls."""
    return fault_server.servicer


@pytest.fixture
def refused_address() -> str:
    """A loopback address where nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


ClientFactory = Callable[..., GatewayClient]


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """``client = make_client(target, **options)``: a GatewayClient closed after the test."""
    clients: list[GatewayClient] = []

    def make(target: str, **options: Any) -> GatewayClient:
        client = GatewayClient(target, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def client_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog capturing the client's logger from INFO up."""
    with caplog.at_level(logging.INFO, logger="orchestrator_client"):
        yield caplog
