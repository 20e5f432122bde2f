"""Shared fixtures: in-process gateways on random loopback ports, and their stubs."""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import botocore.session
import grpc
import httpcore2
import pytest

from gateway_server.app import GatewayApp
from gateway_server.settings import settings_from_mapping
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc

# Never let boto3's credential chain reach for an instance-metadata endpoint: loopback only here.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
             "GATEWAY_ANTHROPIC_API_KEY", "GATEWAY_AWS_REGION", "GATEWAY_CONFIG", "ANTHROPIC_API_KEY"):
    os.environ.pop(_var, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
# No test gateway serves /metrics on the fixed default port (parallel runs would collide); the
# metrics tests pick a free port themselves. No test exports traces unless it sets OTEL_* itself.
os.environ["GATEWAY_METRICS_PORT"] = "0"
for _var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "PROMETHEUS_MULTIPROC_DIR"):
    os.environ.pop(_var, None)

# CPU, not behaviour: every test gateway builds its own Bedrock client and Anthropic SDK client, and
# each of those would parse botocore's service models (~0.1 s) and load the system CA bundle into a
# fresh SSL context (~0.05 s) again. In tests they share one loader (read-only data, cached per
# loader anyway) and one default SSL context (verify on, no client certificate; the emulators are
# plain HTTP). About 0.15 s of CPU per test gateway: a third of the suite's CPU time before.
botocore.session.create_loader = functools.cache(botocore.session.create_loader)
_default_ssl_context = httpcore2.default_ssl_context


@functools.cache
def _shared_ssl_context(trust_env: bool, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return _default_ssl_context(_trust_env=trust_env)


def _cached_default_ssl_context(*, _trust_env: bool = True) -> ssl.SSLContext:
    return _shared_ssl_context(_trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


httpcore2.default_ssl_context = _cached_default_ssl_context


def mock_config(**overrides: Any) -> dict[str, Any]:
    """A gateway on the built-in mock provider only."""
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "default_provider": "mock",
        "providers": {"mock": {"type": "mock"}},
        "fallback": {"enabled": False},
        "health_check": {"interval": 3600},
    }
    config.update(overrides)
    return config


GatewayFactory = Callable[[dict[str, Any]], Awaitable[GatewayApp]]


@pytest.fixture
async def gateway_factory() -> AsyncIterator[GatewayFactory]:
    """``app = await gateway_factory(config_dict)``: a started gateway, stopped after the test."""
    apps: list[GatewayApp] = []

    async def make(config: dict[str, Any]) -> GatewayApp:
        settings = settings_from_mapping({"host": "127.0.0.1", "port": 0, **config}, env_file=None)
        app = await GatewayApp(settings).start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.stop(grace=0)


@pytest.fixture
async def gateway_address(gateway_factory: GatewayFactory) -> str:
    """"127.0.0.1:PORT" of a running gateway on its mock provider (answers "What is 25 + 75?" with "100")."""
    app = await gateway_factory(mock_config())
    return f"127.0.0.1:{app.port}"


async def open_stub(app: GatewayApp) -> tuple[grpc.aio.Channel, pb_grpc.ModelGatewayStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    return channel, pb_grpc.ModelGatewayStub(channel)


@pytest.fixture
async def stub_for() -> AsyncIterator[Callable[[GatewayApp], Awaitable[pb_grpc.ModelGatewayStub]]]:
    """``stub = await stub_for(app)``: a stub on a channel closed after the test."""
    channels: list[grpc.aio.Channel] = []

    async def make(app: GatewayApp) -> pb_grpc.ModelGatewayStub:
        channel, stub = await open_stub(app)
        channels.append(channel)
        # Connected before the test starts any clock: timing bounds measure calls, not connects.
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        return stub

    yield make
    for channel in channels:
        await channel.close()


# Under `make test` (pytest-xdist, --dist loadgroup) the tests that load both cores themselves — real
# gateway processes under load, with timing or throughput bounds — run one after another on one
# worker, never two of them at once.
_LOAD_TESTS = (
    "tests/test_soak.py::",
    "tests/test_workers.py::",
    "tests/test_load_shedding.py::test_past_the_cap",
    "tests/limits/test_redis_shared.py::test_two_gateway_processes",
    "tests/test_streaming.py::test_a_long_stream_keeps_gateway_memory_flat",
    "tests/test_bedrock_transport.py::test_through_the_gateway_64_streams",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(_LOAD_TESTS):
            item.add_marker(pytest.mark.xdist_group("load"))
