"""End to end through the real gateway (in-process): the seed's scenarios hold against this client.

``gateway_address`` (tests/conftest.py) is "127.0.0.1:PORT" of a gateway on its built-in mock provider,
which answers "What is 25 + 75?" with "100". ``gateway_factory`` starts gateways with other
configurations: the mock's failure injection, and the provider emulators behind the real SDKs.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator_client import (
    GatewayClient,
    GatewayError,
    GatewayReasoner,
    GatewaySettings,
    GatewayUnavailableError,
    InvalidRequestError,
    MessageTooLargeError,
    RateLimitedError,
    cli,
)
from tests.emulators import AnthropicEmulator, BedrockEmulator, Fault

from .conftest import ClientFactory, FakeTime

ANTHROPIC_KEY = "sk-ant-client-e2e"
AWS_KEY_ID = "AKIDCLIENTE2E"
CLAUDE = "claude-sonnet-5-5"
BEDROCK_CLAUDE = "global.anthropic.claude-sonnet-5-5"


def mock_gateway(**mock: Any) -> dict[str, Any]:
    return {
        "default_provider": "mock",
        "providers": {"mock": {"type": "mock", "max_retries": 0, **mock}},
        "fallback": {"enabled": False},
        "health_check": {"interval": 3600},
    }


# ---------------------------------------------------------------------- on the mock provider


async def test_reasoner_answers_100_end_to_end(gateway_address: str) -> None:
    async with GatewayReasoner(GatewaySettings(url=gateway_address)) as reasoner:
        assert await reasoner.reason("What is 25 + 75?") == "100"
        result = await reasoner.reason_with_result("What is 25 + 75?")
    assert result.content.strip() == "100" and result.provider == "mock"
    assert result.attempts == 1 and result.finish_reason == "end_turn"
    assert len(result.request_id) == 32


async def test_reasoner_from_the_seed_shaped_config(gateway_address: str, tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.gateway.yaml"
    path.write_text(
        "orchestrator:\n  name: main-orchestrator\n  ai_provider: gateway\n  gateway:\n"
        f"    url: http://{gateway_address}\n    provider: null\n    model: null\n    api_key: null\n"
        "    max_retries: 3\n    timeout: 60\n    retry_delay: 1.0\n",
        encoding="utf-8",
    )
    reasoner = GatewayReasoner.from_config(path)
    try:
        assert await reasoner.reason("What is 25 + 75?") == "100"
    finally:
        await reasoner.close()


async def test_three_calls_statistics_read_3_0_100(gateway_address: str) -> None:
    """The seed's TEST 5: "Total Requests: 3, Total Failures: 0, Success Rate: 100.0%"."""
    async with GatewayReasoner(GatewaySettings(url=gateway_address)) as reasoner:
        for _ in range(3):
            assert await reasoner.reason("What is 25 + 75?") == "100"
        assert reasoner.total_requests == 3
        assert reasoner.total_failures == 0
        assert reasoner.consecutive_failures == 0
        rate = (reasoner.total_requests - reasoner.total_failures) / reasoner.total_requests * 100
        assert f"Success Rate: {rate:.1f}%" == "Success Rate: 100.0%"
        assert reasoner.total_retries == 0


async def test_request_id_is_the_clients(gateway_address: str, make_client: ClientFactory) -> None:
    client = make_client(gateway_address)
    result = await client.generate("What is 25 + 75?", request_id="orchestrator-req-1")
    assert result.request_id == "orchestrator-req-1"


async def test_health_providers_status_typed(gateway_address: str, make_client: ClientFactory) -> None:
    client = make_client(gateway_address)
    report = await client.health()
    assert report.status in ("healthy", "degraded", "unhealthy")
    assert "mock" in [p.name for p in report.providers]
    listing = await client.list_providers()
    assert listing.default_provider == "mock" and "mock" in listing.names
    status = await client.status()
    assert status.service == "Model Gateway" and status.status == "running"
    assert "mock" in status.providers and status.default_provider == "mock"


async def test_invalid_request_is_not_retried(gateway_address: str, make_client: ClientFactory,
                                              fake_time: FakeTime) -> None:
    client = make_client(gateway_address, sleep=fake_time.sleep)
    with pytest.raises(InvalidRequestError) as caught:
        await client.generate("")
    err = caught.value
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT and not err.retryable and err.attempts == 1
    assert err.domain == "modelgateway" and err.reason
    assert fake_time.sleeps == []


async def test_unknown_provider_is_not_retried(gateway_address: str, make_client: ClientFactory,
                                               fake_time: FakeTime) -> None:
    client = make_client(gateway_address, sleep=fake_time.sleep)
    with pytest.raises(GatewayError) as caught:
        await client.generate("What is 25 + 75?", provider="no-such-provider")
    assert not caught.value.retryable and caught.value.attempts == 1
    assert caught.value.reason and fake_time.sleeps == []


async def test_provider_unavailable_is_retried_with_the_seed_backoff(
    gateway_factory: Any, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    app = await gateway_factory(mock_gateway(fail_with="unavailable", fail_times=2))
    client = make_client(f"127.0.0.1:{app.port}", sleep=fake_time.sleep)
    result = await client.generate("What is 25 + 75?")
    assert result.content.strip() == "100" and result.attempts == 3
    assert fake_time.sleeps == [1.0, 2.0]


async def test_rate_limit_pushback_from_the_gateway_is_honoured(
    gateway_factory: Any, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    app = await gateway_factory(mock_gateway(fail_with="rate_limited", fail_times=1, retry_after=3.5))
    client = make_client(f"127.0.0.1:{app.port}", sleep=fake_time.sleep)
    result = await client.generate("What is 25 + 75?")
    assert result.attempts == 2
    # the gateway's pushback of 3.5 s replaces the client's doubled backoff (2 s)
    assert fake_time.sleeps == [pytest.approx(3.5)]


async def test_rate_limit_error_details_from_the_gateway(
    gateway_factory: Any, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    app = await gateway_factory(mock_gateway(fail_with="rate_limited", retry_after=0.5))
    client = make_client(f"127.0.0.1:{app.port}", sleep=fake_time.sleep, max_retries=2)
    with pytest.raises(RateLimitedError) as caught:
        await client.generate("What is 25 + 75?")
    err = caught.value
    assert err.attempts == 2 and err.retryable
    assert err.domain == "modelgateway" and err.reason
    assert err.retry_after == pytest.approx(0.5)
    assert fake_time.sleeps == [pytest.approx(0.5)]  # the gateway's pushback, not the client's 2 s


async def test_a_request_over_the_gateways_size_limit_is_sent_once(
    gateway_factory: Any, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    """The gateway's transport refuses a request over twice ``server.max_request_bytes`` with a bare
    RESOURCE_EXHAUSTED ("Received message larger than max"): no rate limit, never re-uploaded."""
    app = await gateway_factory({**mock_gateway(), "server": {"max_request_bytes": 1024}})
    client = make_client(f"127.0.0.1:{app.port}", sleep=fake_time.sleep)
    with pytest.raises(MessageTooLargeError) as caught:
        await client.generate("x" * 4096)
    err = caught.value
    assert err.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in err.message
    assert err.attempts == 1 and not err.retryable and fake_time.sleeps == []
    with pytest.raises(MessageTooLargeError):
        async for _ in client.stream("x" * 4096):
            pass
    assert fake_time.sleeps == [] and app.providers["mock"].calls == 0
    assert (await client.generate("What is 25 + 75?")).content.strip() == "100"


async def test_gateway_timeout_fails_within_the_budget(
    gateway_factory: Any, make_client: ClientFactory
) -> None:
    """The seed's "gateway timeout" scenario: a slow provider, the call fails within its budget."""
    app = await gateway_factory(mock_gateway(latency_ms=5000))
    client = make_client(f"127.0.0.1:{app.port}", timeout=0.7)
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await client.generate("What is 25 + 75?")
    elapsed = time.monotonic() - started
    assert elapsed <= 0.7 + 1.0  # slack for a loaded machine; the provider takes 5 s
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_gateway_stopped_gives_up_after_max_retries(
    gateway_factory: Any, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    app = await gateway_factory(mock_gateway())
    client = make_client(f"127.0.0.1:{app.port}", sleep=fake_time.sleep)
    assert (await client.generate("What is 25 + 75?")).content.strip() == "100"
    await app.stop(grace=0)
    with pytest.raises(GatewayUnavailableError) as caught:
        await client.generate("What is 25 + 75?")
    assert caught.value.attempts == 3 and fake_time.sleeps == [1.0, 2.0]
    assert client.stats.consecutive_failures == 1


async def test_concurrent_calls_statistics(gateway_address: str) -> None:
    async with GatewayClient(gateway_address) as client:
        results = await asyncio.gather(*(client.generate("What is 25 + 75?") for _ in range(50)))
        assert {r.content.strip() for r in results} == {"100"}
        assert (client.stats.total_requests, client.stats.total_failures) == (50, 0)


async def test_round_robin_over_two_real_gateways(gateway_factory: Any) -> None:
    first = await gateway_factory(mock_gateway())
    second = await gateway_factory(mock_gateway())
    async with GatewayClient(f"ipv4:127.0.0.1:{first.port},127.0.0.1:{second.port}") as client:
        await client.wait_ready(5)
        for _ in range(20):
            await client.generate("What is 25 + 75?")
        # both replicas took traffic (pick_first would send all 20 calls to one of them)
        served = (first.providers["mock"].calls, second.providers["mock"].calls)
        assert sum(served) == 20 and min(served) >= 1, served
        # stopping either leaves the client working on the other
        await first.stop(grace=0)
        results = [await client.generate("What is 25 + 75?", timeout=10) for _ in range(4)]
    assert all(r.content.strip() == "100" for r in results)
    assert second.providers["mock"].calls == served[1] + 4


# ---------------------------------------------------------------------- the command line


async def test_cli_against_the_gateway(gateway_address: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, ["--target", gateway_address, "generate", "What is 25 + 75?"],
                                   stdout=out, stderr=err)
    assert code == 0 and out.getvalue().strip() == "100", err.getvalue()
    for command in ("health", "providers", "status"):
        out = io.StringIO()
        code = await asyncio.to_thread(cli.main, ["--target", gateway_address, "--json", command], stdout=out)
        assert code == 0
        json.loads(out.getvalue())


async def test_gatewayctl_process_against_the_gateway(gateway_address: str) -> None:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("gatewayctl")), "--target", gateway_address, "--json", "generate",
        "What is 25 + 75?", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert json.loads(out)["content"].strip() == "100"


# ---------------------------------------------------------------------- behind the provider emulators


@pytest.fixture
def anthropic_emu() -> Iterator[AnthropicEmulator]:
    with AnthropicEmulator(api_key=ANTHROPIC_KEY) as emu:
        yield emu


@pytest.fixture
def bedrock_emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[BedrockEmulator]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-client-e2e")
    with BedrockEmulator(access_key_id=AWS_KEY_ID) as emu:
        yield emu


def emulated_gateway(anthropic_emu: AnthropicEmulator, bedrock_emu: BedrockEmulator, *,
                     fallback: bool = False) -> dict[str, Any]:
    return {
        "default_provider": "anthropic",
        "providers": {
            "anthropic": {"type": "anthropic", "base_url": anthropic_emu.base_url, "api_key": ANTHROPIC_KEY,
                          "default_model": CLAUDE, "timeout": 5, "max_retries": 0},
            "bedrock": {"type": "bedrock", "endpoint_url": bedrock_emu.endpoint_url, "region": "us-east-1",
                        "model_id": BEDROCK_CLAUDE, "timeout": 5, "max_retries": 0},
        },
        "fallback": {"enabled": fallback, "fallback_order": ["anthropic", "bedrock"]},
        "health_check": {"interval": 3600},
        "server": {"retry_backoff": 0.01},
    }


async def test_reasoner_through_the_anthropic_and_bedrock_emulators(
    gateway_factory: Any, anthropic_emu: AnthropicEmulator, bedrock_emu: BedrockEmulator
) -> None:
    app = await gateway_factory(emulated_gateway(anthropic_emu, bedrock_emu))
    settings = GatewaySettings(url=f"127.0.0.1:{app.port}")
    async with GatewayReasoner(settings) as reasoner:
        result = await reasoner.reason_with_result("What is 25 + 75?")
        assert result.content == "100" and (result.provider, result.model) == ("anthropic", CLAUDE)
    async with GatewayReasoner(settings.model_copy(update={"provider": "bedrock"})) as reasoner:
        result = await reasoner.reason_with_result("What is 25 + 75?")
        assert result.content == "100" and result.provider == "bedrock"


async def test_provider_overload_is_retried_by_the_client(
    gateway_factory: Any, anthropic_emu: AnthropicEmulator, bedrock_emu: BedrockEmulator,
    make_client: ClientFactory, fake_time: FakeTime,
) -> None:
    app = await gateway_factory(emulated_gateway(anthropic_emu, bedrock_emu))
    anthropic_emu.inject(Fault.status(529), times=1)
    client = make_client(f"127.0.0.1:{app.port}", sleep=fake_time.sleep)
    result = await client.generate("What is 25 + 75?")
    assert result.content == "100" and result.attempts == 2 and fake_time.sleeps == [1.0]


async def test_fallback_hides_the_failure_from_the_client(
    gateway_factory: Any, anthropic_emu: AnthropicEmulator, bedrock_emu: BedrockEmulator,
    make_client: ClientFactory, fake_time: FakeTime,
) -> None:
    app = await gateway_factory(emulated_gateway(anthropic_emu, bedrock_emu, fallback=True))
    anthropic_emu.inject(Fault.status(529), times=None)
    client = make_client(f"127.0.0.1:{app.port}", sleep=fake_time.sleep)
    result = await client.generate("What is 25 + 75?")
    assert result.content == "100" and result.provider == "bedrock" and result.attempts == 1
    assert [(a.provider, a.outcome) for a in result.provider_attempts] == [("anthropic", "error"),
                                                                            ("bedrock", "ok")]
