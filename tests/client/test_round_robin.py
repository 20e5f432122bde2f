"""One client spreads its calls round_robin over every address its target resolves to."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import grpc
import pytest

from .conftest import ClientFactory
from .fault_server import FaultServer


@pytest.fixture
async def two_gateways() -> AsyncIterator[tuple[FaultServer, FaultServer]]:
    first, second = await FaultServer("gw-a").start(), await FaultServer("gw-b").start()
    yield first, second
    await first.stop()
    await second.stop()


async def test_round_robin_over_two_gateways(
    two_gateways: tuple[FaultServer, FaultServer], make_client: ClientFactory
) -> None:
    a, b = two_gateways
    client = make_client(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}")
    await client.wait_ready(5)
    providers = [(await client.generate("What is 25 + 75?")).provider for _ in range(40)]
    # both replicas serve; once both subchannels are up, calls alternate
    assert a.servicer.count > 0 and b.servicer.count > 0
    assert a.servicer.count + b.servicer.count == 40
    tail = providers[-10:]
    assert all(x != y for x, y in itertools.pairwise(tail)), providers


async def test_a_retry_lands_on_the_other_replica(
    two_gateways: tuple[FaultServer, FaultServer], make_client: ClientFactory
) -> None:
    a, b = two_gateways
    client = make_client(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}", retry_delay=0.01)
    for _ in range(100):  # warm up until round_robin has both replicas READY
        await client.status()
        if a.servicer.count and b.servicer.count:
            break
    a.servicer.fail(1000, grpc.StatusCode.UNAVAILABLE)  # replica a is broken from now on
    results = [await client.generate("What is 25 + 75?") for _ in range(10)]
    assert all(r.content == "100" and r.provider == "gw-b" for r in results)
    assert max(r.attempts for r in results) == 2  # never twice in a row on the broken replica
    assert len(a.servicer.calls_to("Generate")) > 0


async def test_a_dns_target(fault_server: FaultServer, make_client: ClientFactory) -> None:
    client = make_client(f"dns:///localhost:{fault_server.port}")
    assert (await client.status()).status == "running"


async def test_pick_first_can_be_chosen(
    two_gateways: tuple[FaultServer, FaultServer], make_client: ClientFactory
) -> None:
    a, b = two_gateways
    client = make_client(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}", load_balancing="pick_first")
    for _ in range(10):
        await client.status()
    assert {a.servicer.count, b.servicer.count} == {0, 10}
