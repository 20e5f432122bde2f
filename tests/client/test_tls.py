"""TLS and the API key: https:// / grpcs:// targets, a private CA, the key as bearer metadata.

certs/server.pem and certs/server.key are a self-signed, test-only certificate for localhost and
127.0.0.1 (valid until 2126), made with::

    openssl req -x509 -newkey rsa:2048 -nodes -keyout server.key -out server.pem -days 36500 \\
      -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \\
      -addext "basicConstraints=critical,CA:TRUE"
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from orchestrator_client import GatewayClient, GatewayReasoner, GatewayUnavailableError, cli
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


# ---------------------------------------------------------------------- the target's scheme decides


async def _cli(*argv: str) -> tuple[int, str, str]:
    """gatewayctl in a worker thread (it runs its own event loop) while this loop serves the server."""
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_gatewayctl_https_target_uses_tls(tls_server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_ROOT_CERTIFICATES", str(CERTS / "server.pem"))
    for scheme in ("https", "grpcs"):
        code, out, err = await _cli("--target", f"{scheme}://127.0.0.1:{tls_server.port}", "--api-key", "sk-cli",
                                    "--max-retries", "1", "status")
        assert code == 0, err
        assert out.startswith("Model Gateway 0.1.0-fault: running")
    assert [c.metadata["authorization"] for c in tls_server.servicer.calls] == ["Bearer sk-cli"] * 2


async def test_gatewayctl_https_target_never_falls_back_to_plaintext(
    fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plaintext server behind an https:// target: a TLS handshake error, the key never sent."""
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_ROOT_CERTIFICATES", str(CERTS / "server.pem"))
    code, out, err = await _cli("--target", f"https://127.0.0.1:{fault_server.port}", "--api-key", "sk-secret",
                                "--max-retries", "1", "--timeout", "5", "status")
    assert code == 5 and out == ""
    assert "gatewayctl: error: UNAVAILABLE" in err and "handshake" in err.lower(), err
    assert fault_server.servicer.count == 0


async def test_from_settings_a_target_override_brings_its_own_scheme(tls_server: FaultServer) -> None:
    settings = load_gateway_settings({"url": "localhost:50051", "root_certificates": str(CERTS / "server.pem")})
    client = GatewayClient.from_settings(settings, target=f"https://localhost:{tls_server.port}")
    try:
        assert client.tls and client.target == f"localhost:{tls_server.port}"
        assert (await client.status(timeout=5)).status == "running"
    finally:
        await client.close()
    async with GatewayReasoner(settings, target=f"grpcs://localhost:{tls_server.port}") as reasoner:
        assert reasoner.client.tls
        assert await reasoner.reason("What is 25 + 75?") == "100"


async def test_from_settings_an_https_url_uses_tls_and_a_plain_override_does_not(
    tls_server: FaultServer, fault_server: FaultServer
) -> None:
    settings = load_gateway_settings({
        "url": f"https://localhost:{tls_server.port}", "root_certificates": str(CERTS / "server.pem"),
    })
    async with GatewayReasoner(settings) as reasoner:
        assert reasoner.client.tls and reasoner.client.target == f"localhost:{tls_server.port}"
        assert await reasoner.reason("What is 25 + 75?") == "100"
    async with GatewayReasoner(settings, target=fault_server.address) as reasoner:
        assert not reasoner.client.tls
        assert await reasoner.reason("What is 25 + 75?") == "100"
    # an explicit tls setting still wins over the scheme
    explicit = load_gateway_settings({"url": fault_server.address, "tls": False})
    client = GatewayClient.from_settings(explicit, target=f"https://127.0.0.1:{fault_server.port}")
    try:
        assert not client.tls and (await client.status(timeout=5)).status == "running"
    finally:
        await client.close()
