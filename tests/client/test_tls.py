"""TLS and the API key: https:// / grpcs:// targets, a private CA, the key as bearer metadata.

certs/server.pem and certs/server.key are a self-signed, test-only certificate for localhost and
127.0.0.1 (valid until 2126), made with::

    openssl req -x509 -newkey rsa:2048 -nodes -keyout server.key -out server.pem -days 36500 \\
      -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \\
      -addext "basicConstraints=critical,CA:TRUE"
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from orchestrator_client import GatewayClient, GatewayReasoner, GatewayUnavailableError
from orchestrator_client.settings import load_gateway_settings

from .conftest import ClientFactory, FakeTime
from .fault_server import FaultServer

CERTS = Path(__file__).with_name("certs")
CA = (CERTS / "server.pem").read_bytes()


@pytest.fixture
async def tls_server() -> AsyncIterator[FaultServer]:
    credentials = grpc.ssl_server_credentials([((CERTS / "server.key").read_bytes(), CA)])
    server = await FaultServer("tls").start(credentials=credentials)
    yield server
    await server.stop()


async def test_https_target_with_a_private_ca_and_api_key(
    tls_server: FaultServer, make_client: ClientFactory
) -> None:
    client = make_client(f"https://localhost:{tls_server.port}", root_certificates=CA, api_key="sk-tls")
    assert client.tls and client.target == f"localhost:{tls_server.port}"
    assert (await client.generate("What is 25 + 75?")).content == "100"
    assert tls_server.servicer.calls[0].metadata["authorization"] == "Bearer sk-tls"


async def test_tls_from_settings_with_a_server_name_override(tls_server: FaultServer) -> None:
    settings = load_gateway_settings({
        "url": f"127.0.0.1:{tls_server.port}", "tls": True, "root_certificates": str(CERTS / "server.pem"),
        "tls_server_name": "localhost", "api_key": "sk-settings",
    })
    async with GatewayReasoner(settings) as reasoner:
        assert await reasoner.reason("What is 25 + 75?") == "100"
    assert tls_server.servicer.calls[0].metadata["authorization"] == "Bearer sk-settings"


async def test_plaintext_client_cannot_talk_to_a_tls_gateway(
    tls_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    client = make_client(tls_server.address, sleep=fake_time.sleep, max_retries=2)
    with pytest.raises(GatewayUnavailableError):
        await client.status(timeout=5)
    assert tls_server.servicer.count == 0


async def test_an_untrusted_certificate_is_refused(tls_server: FaultServer, fake_time: FakeTime) -> None:
    client = GatewayClient(f"grpcs://localhost:{tls_server.port}", sleep=fake_time.sleep, max_retries=1)
    try:
        with pytest.raises(GatewayUnavailableError):
            await client.status(timeout=5)
    finally:
        await client.close()
    assert tls_server.servicer.count == 0
