"""Graceful shutdown of the real process, and the caller's deadline as law."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from tests.conftest import mock_config
from tests.helpers import ask, error_details, gateway_process


async def test_sigterm_drains_in_flight_calls_then_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "host: 127.0.0.1\nport: 0\nlog_level: DEBUG\ndefault_provider: slow\n"
        "providers:\n  slow:\n    type: mock\n    latency_ms: 1500\n"
        "health_check:\n  interval: 3600\nserver:\n  grace_period: 20\n")
    async with gateway_process(config, env={"GATEWAY_LOG_LEVEL": "DEBUG"}) as gateway:
        proc = gateway.proc
        assert proc.stderr is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.ModelGatewayStub(channel)
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            in_flight = asyncio.ensure_future(stub.Generate(ask(), timeout=30))
            await gateway.read_until(r"received call 1")
            proc.send_signal(signal.SIGTERM)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            await gateway.read_until(r"Shutting down")
            response = await in_flight
            assert response.content == "100"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Generate(ask(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        async with asyncio.timeout(30):
            rest = await proc.stderr.read()
            assert await proc.wait() == 0
        assert "Gateway stopped" in rest.decode()
        assert "Traceback" not in "".join(gateway.lines) + rest.decode()


async def test_deadline_shorter_than_a_slow_provider_ends_at_the_deadline(gateway_factory, stub_for) -> None:
    app = await gateway_factory(mock_config(providers={"mock": {"type": "mock", "latency_ms": 5000}}))
    stub = await stub_for(app)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=0.5)
    elapsed = time.monotonic() - started
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 2.5  # the provider takes 5 s: slack for a loaded machine


async def test_no_attempt_starts_when_too_little_time_is_left(gateway_factory, stub_for) -> None:
    app = await gateway_factory(mock_config(server={"min_attempt_ms": 500}))
    stub = await stub_for(app)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=0.3)
    details = error_details(info.value)
    assert details.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert details.reason == "DEADLINE_EXCEEDED"
    assert app.providers["mock"].calls == 0
    ok = await stub.Generate(ask(), timeout=5)
    assert ok.content == "100"


async def test_sigterm_with_a_hung_bedrock_call_exits_within_the_grace_period(tmp_path: Path, monkeypatch) -> None:
    from tests.emulators import BedrockEmulator, Fault

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSHUTDOWN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with BedrockEmulator(access_key_id="AKIDSHUTDOWN") as emu:
        emu.inject(Fault.hang(), times=None)
        config = tmp_path / "gateway.yaml"
        config.write_text(
            "host: 127.0.0.1\nport: 0\ndefault_provider: bedrock\n"
            f"providers:\n  bedrock:\n    type: bedrock\n    endpoint_url: {emu.endpoint_url}\n"
            "    region: us-east-1\n    model_id: anthropic.test\n    timeout: 60\n"
            "health_check:\n  enabled: false\nserver:\n  grace_period: 0.5\n")
        async with gateway_process(config) as gateway:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                stub = pb_grpc.ModelGatewayStub(channel)
                in_flight = asyncio.ensure_future(stub.Generate(ask(), timeout=60))
                assert await emu.await_requests(1)
                started = time.monotonic()
                gateway.proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(30):
                    assert await gateway.proc.wait() == 0
                elapsed = time.monotonic() - started
                with pytest.raises(grpc.aio.AioRpcError):
                    await in_flight
            assert elapsed < 3.0, f"exit took {elapsed:.1f}s after SIGTERM with a 0.5 s grace period"
