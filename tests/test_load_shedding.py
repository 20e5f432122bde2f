"""Load shedding (server.max_concurrent_calls): past the cap a call ends at once with
RESOURCE_EXHAUSTED, RetryInfo and a pushback hint; health checks are never shed; under a burst of
several times the capacity every call either succeeds or is shed, and the cap holds."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway_server.app import GatewayApp
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from orchestrator_client import GatewayClient, RateLimitedError

from .conftest import GatewayFactory, mock_config
from .helpers import ask, error_details


async def until(condition: object, timeout: float = 10.0) -> None:
    """Wait for ``condition()`` on the server's counters to hold (they have no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def slow_gateway(gateway_factory: GatewayFactory, capacity: int, latency_ms: float) -> GatewayApp:
    return await gateway_factory(mock_config(
        providers={"mock": {"type": "mock", "latency_ms": latency_ms, "stream_chunk_delay_ms": latency_ms / 4}},
        server={"max_concurrent_calls": capacity, "shed_retry_after": 0.25}))


async def test_past_the_cap_calls_are_shed_at_once_with_pushback(gateway_factory: GatewayFactory) -> None:
    app = await slow_gateway(gateway_factory, capacity=3, latency_ms=3000)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ModelGatewayStub(channel)
        await channel.channel_ready()
        # Two unary calls and a stream fill the cap (streams count too).
        held = [stub.Generate(ask(), timeout=30), stub.Generate(ask(), timeout=30),
                stub.GenerateStream(ask(), timeout=30)]
        await until(lambda: app.shedder.in_flight == 3)

        started = time.perf_counter()
        for call in (stub.Generate(ask(), timeout=30), stub.GenerateStream(ask(), timeout=30)):
            try:
                if isinstance(call, grpc.aio.UnaryStreamCall):
                    async for _ in call:
                        pass
                else:
                    await call
            except grpc.aio.AioRpcError as err:
                details = error_details(err)
            else:
                raise AssertionError("a call past the cap was admitted")
            assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details.reason == "GATEWAY_OVERLOADED"
            assert details.pushback_ms == "250" and details.retry_delay_ms == 250
            assert details.metadata["max_concurrent_calls"] == "3"
        assert time.perf_counter() - started < 2.0  # refused at once, not after the 3 s the held calls take
        assert app.shedder.shed_total == 2

        # Probes are never shed: an overloaded process is alive and ready.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        # The held calls finish normally; then there is room again.
        assert [(await held[0]).content, (await held[1]).content] == ["100", "100"]
        assert [m async for m in held[2]]
        assert app.shedder.in_flight == 0
        assert (await stub.Generate(ask(), timeout=30)).content == "100"
        assert app.shedder.peak_in_flight == 3


async def test_the_cap_and_the_shed_calls_are_metrics(gateway_factory: GatewayFactory,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from .test_metrics import free_port, scrape, value

    port = free_port()
    monkeypatch.setenv("GATEWAY_METRICS_PORT", str(port))
    app = await slow_gateway(gateway_factory, capacity=1, latency_ms=3000)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ModelGatewayStub(channel)
        held = stub.Generate(ask(), timeout=30)
        await until(lambda: app.shedder.in_flight == 1)
        for _ in range(2):
            try:
                await stub.Generate(ask(), timeout=30)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        samples = await scrape(port)
        assert value(samples, "gateway_max_concurrent_calls") == 1
        assert value(samples, "gateway_calls_shed_total") == 2 == app.shedder.shed_total
        held.cancel()


async def test_the_client_retries_a_shed_call_after_the_pushback(gateway_factory: GatewayFactory) -> None:
    app = await slow_gateway(gateway_factory, capacity=1, latency_ms=400)
    async with GatewayClient(f"127.0.0.1:{app.port}", max_retries=1, timeout=30) as first, \
            GatewayClient(f"127.0.0.1:{app.port}", max_retries=5, timeout=30) as patient, \
            GatewayClient(f"127.0.0.1:{app.port}", max_retries=1, timeout=30) as impatient:
        held = asyncio.ensure_future(first.generate("What is 25 + 75?"))
        await until(lambda: app.shedder.in_flight == 1)
        try:
            await impatient.generate("What is 25 + 75?")
        except RateLimitedError as err:
            assert err.retry_after == 0.25
        else:
            raise AssertionError("not shed")
        # Retried after 0.25 s pushbacks until the held call has finished.
        assert (await patient.generate("What is 25 + 75?")).content == "100"
        assert (await held).content == "100"
    assert app.shedder.shed_total >= 2


async def test_a_burst_of_four_times_the_capacity(gateway_factory: GatewayFactory) -> None:
    capacity, callers, per_caller = 8, 32, 6
    app = await slow_gateway(gateway_factory, capacity=capacity, latency_ms=50)
    codes: dict[str, int] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ModelGatewayStub(channel)
        await channel.channel_ready()

        async def caller() -> None:
            for _ in range(per_caller):
                try:
                    response = await stub.Generate(ask(), timeout=30)
                    assert response.content == "100"
                    name = "OK"
                except grpc.aio.AioRpcError as err:
                    name = err.code().name
                codes[name] = codes.get(name, 0) + 1

        await asyncio.gather(*(caller() for _ in range(callers)))
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert sum(codes.values()) == callers * per_caller
    assert codes.get("RESOURCE_EXHAUSTED", 0) == app.shedder.shed_total > 0
    assert codes.get("OK", 0) >= capacity
    assert app.shedder.peak_in_flight == capacity  # reached, never exceeded
    assert app.shedder.in_flight == 0
