"""GatewayReasoner: the orchestrator-facing adapter, built from config, with the seed's statistics."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from orchestrator_client import GatewayClient, GatewayReasoner, GatewaySettings, GatewayUnavailableError

from .conftest import FakeTime
from .fault_server import FaultServer, FaultServicer


def config_file(tmp_path: Path, url: str, **gateway: object) -> Path:
    extra = "".join(f"    {key}: {json.dumps(value)}\n" for key, value in gateway.items())
    path = tmp_path / "orchestrator.yaml"
    path.write_text(
        "orchestrator:\n"
        "  name: test-orchestrator\n"
        "  ai_provider: gateway\n"
        "  gateway:\n"
        f"    url: {json.dumps(url)}\n"
        "    provider: null\n"
        "    max_retries: 3\n"
        "    timeout: 60\n"
        "    retry_delay: 1.0\n" + extra,
        encoding="utf-8",
    )
    return path


async def test_reason_answers_and_counts(
    fault: FaultServicer, fault_server: FaultServer, tmp_path: Path
) -> None:
    async with GatewayReasoner.from_config(config_file(tmp_path, fault_server.address)) as reasoner:
        for _ in range(3):
            assert await reasoner.reason("What is 25 + 75?") == "100"
        assert (reasoner.total_requests, reasoner.total_failures, reasoner.consecutive_failures) == (3, 0, 0)
        rate = (reasoner.total_requests - reasoner.total_failures) / reasoner.total_requests * 100
        assert f"{rate:.1f}%" == f"{reasoner.success_rate:.1f}%" == "100.0%"
    request = fault.calls[0].request
    assert [m.content for m in request.messages] == ["What is 25 + 75?"] and request.system == ""


async def test_context_goes_into_the_system_prompt(
    fault: FaultServicer, fault_server: FaultServer
) -> None:
    settings = GatewaySettings(url=fault_server.address)
    async with GatewayReasoner(settings, system_prompt="You are a calculator.") as reasoner:
        await reasoner.reason("Calculate 45 + 55", {"operation": "add", "numbers": [45, 55]})
        await reasoner.reason("plain", "free-form context")
    first, second = (c.request for c in fault.calls)
    assert first.messages[0].content == "Calculate 45 + 55"
    assert first.system.startswith("You are a calculator.\n\nContext:\n")
    assert json.loads(first.system.split("Context:\n", 1)[1]) == {"numbers": [45, 55], "operation": "add"}
    assert second.system.endswith("Context:\nfree-form context")


async def test_reason_with_result_exposes_retries(
    fault: FaultServicer, fault_server: FaultServer, fake_time: FakeTime
) -> None:
    fault.fail(1, grpc.StatusCode.UNAVAILABLE)
    reasoner = GatewayReasoner(GatewaySettings(url=fault_server.address), sleep=fake_time.sleep)
    try:
        result = await reasoner.reason_with_result("What is 25 + 75?")
        assert result.content == "100" and result.attempts == 2
        assert reasoner.total_retries == 1 and reasoner.statistics().total_attempts == 2
    finally:
        await reasoner.close()


async def test_failures_are_counted_and_raised(refused_address: str, fake_time: FakeTime) -> None:
    client = GatewayClient(refused_address, sleep=fake_time.sleep)
    reasoner = GatewayReasoner(client=client)
    try:
        for _ in range(2):
            with pytest.raises(GatewayUnavailableError) as caught:
                await reasoner.reason("What is 25 + 75?")
            assert caught.value.attempts == 3
        assert (reasoner.total_requests, reasoner.total_failures, reasoner.consecutive_failures) == (2, 2, 2)
        assert reasoner.success_rate == 0.0
        assert reasoner.stats is client.stats
    finally:
        await reasoner.close()


async def test_environment_overrides_the_config_file(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_URL", fault_server.address)
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_MAX_RETRIES", "7")
    reasoner = GatewayReasoner.from_config(config_file(tmp_path, "localhost:1"))
    try:
        assert reasoner.client.target == fault_server.address and reasoner.client.max_retries == 7
        assert await reasoner.reason("What is 25 + 75?") == "100"
    finally:
        await reasoner.close()
