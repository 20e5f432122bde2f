"""Fallback, retries, deadlines, aliases and health through the real SDKs against the emulators."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from tests.emulators import AnthropicEmulator, BedrockEmulator, Fault
from tests.helpers import ask, error_details

ANTHROPIC_KEY = "sk-ant-test-9f8e7d6c5b4a"
AWS_KEY_ID = "AKIDTESTGATEWAY"
AWS_SECRET = "aws-secret-0123456789"
AWS_SESSION_TOKEN = "aws-session-token-abcdef987654"
CLAUDE = "claude-sonnet-5-5"
BEDROCK_CLAUDE = "global.anthropic.claude-sonnet-5-5"


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_SESSION_TOKEN)  # sent on every call: must not leak


@pytest.fixture
def anthropic_emu() -> Iterator[AnthropicEmulator]:
    with AnthropicEmulator(api_key=ANTHROPIC_KEY) as emu:
        yield emu


@pytest.fixture
def bedrock_emu() -> Iterator[BedrockEmulator]:
    with BedrockEmulator(access_key_id=AWS_KEY_ID, secret_access_key=AWS_SECRET) as emu:
        yield emu


def config(anthropic_emu: AnthropicEmulator, bedrock_emu: BedrockEmulator, *, first: str = "anthropic",
           anthropic: dict[str, Any] | None = None, bedrock: dict[str, Any] | None = None,
           **overrides: Any) -> dict[str, Any]:
    order = ["anthropic", "bedrock"] if first == "anthropic" else ["bedrock", "anthropic"]
    cfg: dict[str, Any] = {
        "default_provider": first,
        "providers": {
            "anthropic": {"type": "anthropic", "base_url": anthropic_emu.base_url, "api_key": ANTHROPIC_KEY,
                          "default_model": CLAUDE, "timeout": 5, "max_retries": 0, **(anthropic or {})},
            "bedrock": {"type": "bedrock", "endpoint_url": bedrock_emu.endpoint_url, "region": "us-east-1",
                        "model_id": BEDROCK_CLAUDE, "timeout": 5, "max_retries": 0, **(bedrock or {})},
        },
        "model_aliases": {"sonnet": {"anthropic": CLAUDE, "bedrock": BEDROCK_CLAUDE}},
        "fallback": {"enabled": True, "fallback_order": order, "max_fallback_attempts": 2},
        # No background probes: they would race with the requests the tests inspect.
        "health_check": {"enabled": False},
        "server": {"retry_backoff": 0.01},
    }
    cfg.update(overrides)
    return cfg


def outcomes(response: pb.GenerateResponse) -> list[tuple[str, str]]:
    return [(a.provider, a.reason or pb.AttemptOutcome.Name(a.outcome)) for a in response.attempts]


pytestmark = pytest.mark.usefixtures("aws_credentials")


async def test_anthropic_answers_through_the_sdk(gateway_factory, stub_for, anthropic_emu, bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu)))
    response = await stub.Generate(ask(system="Be terse.", temperature=0.0, stop_sequences=["END"]), timeout=10)
    assert response.content == "100"
    assert (response.provider, response.model) == ("anthropic", CLAUDE)
    assert outcomes(response) == [("anthropic", "ATTEMPT_OUTCOME_OK")]
    assert response.finish_reason == pb.FINISH_REASON_END_TURN and response.stop_reason == "end_turn"
    assert response.usage.output_tokens == 1 and response.usage.input_tokens > 0
    sent = anthropic_emu.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.json["model"] == CLAUDE and sent.json["max_tokens"] == 4096
    assert sent.json["system"] == "Be terse." and sent.json["temperature"] == 0.0
    assert sent.json["stop_sequences"] == ["END"]
    assert sent.json["messages"] == [{"role": "user", "content": "What is 25 + 75?"}]
    assert bedrock_emu.model_calls == 0


async def test_bedrock_answers_through_boto3(gateway_factory, stub_for, anthropic_emu, bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu)))
    response = await stub.Generate(ask(provider="bedrock", max_tokens=64, top_p=0.5), timeout=10)
    assert (response.content, response.provider, response.model) == ("100", "bedrock", BEDROCK_CLAUDE)
    assert response.finish_reason == pb.FINISH_REASON_END_TURN
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    sent = bedrock_emu.requests[-1]
    assert sent.json["inferenceConfig"] == {"maxTokens": 64, "topP": 0.5}
    assert sent.json["messages"] == [{"role": "user", "content": [{"text": "What is 25 + 75?"}]}]
    assert anthropic_emu.model_calls == 0


async def warm_up(stub: pb_grpc.ModelGatewayStub) -> None:
    """One untimed call to each provider: no timing bound may depend on a cold process's first call
    (SDK imports, connection set-up, credential resolution)."""
    for provider in ("anthropic", "bedrock"):
        await stub.Generate(ask(provider=provider), timeout=30)


# fault on the first provider -> (ErrorInfo reason of its attempt)
FIRST_PROVIDER_FAULTS = [
    pytest.param(Fault.status(500), "PROVIDER_ERROR", id="500"),
    pytest.param(Fault.status(503), "PROVIDER_OVERLOADED", id="503"),
    pytest.param(Fault.status(429, retry_after=7), "PROVIDER_RATE_LIMITED", id="429"),
    pytest.param(Fault.status(401), "PROVIDER_CREDENTIALS_REJECTED", id="401"),
    pytest.param(Fault.status(403), "PROVIDER_CREDENTIALS_REJECTED", id="403"),
    pytest.param(Fault.slow(3), "PROVIDER_TIMEOUT", id="slow"),
    pytest.param(Fault.hang(), "PROVIDER_TIMEOUT", id="hang"),
    pytest.param(Fault.drop(), "PROVIDER_UNREACHABLE", id="drop"),
    pytest.param(Fault.truncate(), "TRUNCATED", id="truncate"),
    pytest.param(Fault.malformed(), "PROVIDER_BAD_RESPONSE", id="malformed"),
    pytest.param(Fault.missing_output(), "PROVIDER_BAD_RESPONSE", id="missing-output"),
]
# A truncated body surfaces as a dropped connection in one transport and as a short read in another.
TRUNCATED = {"PROVIDER_UNREACHABLE", "PROVIDER_BAD_RESPONSE"}


@pytest.mark.parametrize(("fault", "reason"), [*FIRST_PROVIDER_FAULTS,
                                                pytest.param(Fault.status(529), "PROVIDER_OVERLOADED", id="529")])
async def test_anthropic_faults_fall_back_to_bedrock(gateway_factory, stub_for, anthropic_emu, bedrock_emu,
                                                     fault: Fault, reason: str) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, anthropic={"timeout": 0.5})))
    await warm_up(stub)  # the 0.5 s bound is for the fault, not a cold first call
    anthropic_emu.inject(fault, times=None)
    response = await stub.Generate(ask(), timeout=10)
    assert (response.content, response.provider) == ("100", "bedrock")
    (first, second) = response.attempts
    assert first.provider == "anthropic" and first.outcome == pb.ATTEMPT_OUTCOME_ERROR
    assert first.reason in TRUNCATED if reason == "TRUNCATED" else first.reason == reason
    assert first.message and ANTHROPIC_KEY not in first.message
    assert (second.provider, second.outcome, second.model) == ("bedrock", pb.ATTEMPT_OUTCOME_OK, BEDROCK_CLAUDE)
    assert anthropic_emu.model_calls == 1 + 1  # the warm-up's and the faulted one


@pytest.mark.parametrize(("fault", "reason"), FIRST_PROVIDER_FAULTS)
async def test_bedrock_faults_fall_back_to_anthropic(gateway_factory, stub_for, anthropic_emu, bedrock_emu,
                                                     fault: Fault, reason: str) -> None:
    stub = await stub_for(await gateway_factory(
        config(anthropic_emu, bedrock_emu, first="bedrock", bedrock={"timeout": 0.5})))
    await warm_up(stub)
    bedrock_emu.inject(fault, times=None)
    response = await stub.Generate(ask(), timeout=10)
    assert (response.content, response.provider, response.model) == ("100", "anthropic", CLAUDE)
    first = response.attempts[0]
    assert first.provider == "bedrock"
    assert first.reason in TRUNCATED if reason == "TRUNCATED" else first.reason == reason
    assert bedrock_emu.model_calls == 1 + 1  # the warm-up's and the faulted one


async def test_the_issue_scenario_anthropic_500_answers_from_bedrock(gateway_factory, stub_for, anthropic_emu,
                                                                     bedrock_emu) -> None:
    # The shipped config's retry settings: anthropic re-tried 3 times on a 500, then bedrock.
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, anthropic={"max_retries": 3},
                                                       server={})))
    anthropic_emu.inject(Fault.status(500), times=None)
    response = await stub.Generate(ask(), timeout=10)
    assert (response.content, response.provider) == ("100", "bedrock")
    assert [(a.provider, a.outcome) for a in response.attempts] == [
        ("anthropic", pb.ATTEMPT_OUTCOME_ERROR), ("bedrock", pb.ATTEMPT_OUTCOME_OK)]
    assert response.attempts[0].retries == 3
    assert anthropic_emu.model_calls == 4


@pytest.mark.parametrize("first", ["anthropic", "bedrock"])
async def test_an_invalid_request_does_not_fall_back(gateway_factory, stub_for, anthropic_emu, bedrock_emu,
                                                     first: str) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, first=first)))
    emus = {"anthropic": anthropic_emu, "bedrock": bedrock_emu}
    emus[first].inject(Fault.status(400, message="prompt is too long: 300000 tokens > 200000 maximum"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=10)
    details = error_details(info.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "PROVIDER_REJECTED_REQUEST"
    assert "prompt is too long" in details.message
    assert details.metadata["provider"] == first
    other = bedrock_emu if first == "anthropic" else anthropic_emu
    assert other.model_calls == 0


async def test_invalid_request_falls_back_when_configured(gateway_factory, stub_for, anthropic_emu,
                                                          bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(
        anthropic_emu, bedrock_emu,
        fallback={"enabled": True, "fallback_order": ["anthropic", "bedrock"], "on_invalid_request": True})))
    anthropic_emu.inject(Fault.status(400))
    response = await stub.Generate(ask(), timeout=10)
    assert response.provider == "bedrock"


async def test_fallback_disabled_tries_only_the_first_provider(gateway_factory, stub_for, anthropic_emu,
                                                               bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, fallback={"enabled": False})))
    anthropic_emu.inject(Fault.status(500), times=None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=10)
    details = error_details(info.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_ERROR")
    assert details.metadata["provider"] == "anthropic"
    assert bedrock_emu.model_calls == 0


@pytest.mark.parametrize(("max_attempts", "answered_by"), [(2, None), (3, "mock")])
async def test_max_fallback_attempts_bounds_the_chain(gateway_factory, stub_for, anthropic_emu, bedrock_emu,
                                                      max_attempts: int, answered_by: str | None) -> None:
    cfg = config(anthropic_emu, bedrock_emu, fallback={
        "enabled": True, "fallback_order": ["anthropic", "bedrock", "mock"], "max_fallback_attempts": max_attempts})
    cfg["providers"]["mock"] = {"type": "mock"}
    app = await gateway_factory(cfg)
    stub = await stub_for(app)
    anthropic_emu.inject(Fault.status(529), times=None)
    bedrock_emu.inject(Fault.status(500), times=None)
    if answered_by is None:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Generate(ask(), timeout=10)
        details = error_details(info.value)
        assert details.code == grpc.StatusCode.UNAVAILABLE
        assert details.metadata["providers"] == "anthropic,bedrock"
        assert app.providers["mock"].calls == 0
    else:
        response = await stub.Generate(ask(), timeout=10)
        assert response.provider == answered_by
        assert [a.provider for a in response.attempts] == ["anthropic", "bedrock", "mock"]


async def test_transient_failures_retry_the_same_provider_first(gateway_factory, stub_for, anthropic_emu,
                                                                bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, anthropic={"max_retries": 3})))
    anthropic_emu.inject(Fault.status(500), times=1)
    anthropic_emu.inject(Fault.drop(), times=1)
    response = await stub.Generate(ask(), timeout=10)
    assert response.provider == "anthropic"
    assert response.attempts[0].retries == 2
    assert anthropic_emu.model_calls == 3 and bedrock_emu.model_calls == 0


async def test_rate_limits_and_timeouts_move_on_at_once(gateway_factory, stub_for, anthropic_emu,
                                                        bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, anthropic={"max_retries": 3})))
    anthropic_emu.inject(Fault.status(429), times=1)
    response = await stub.Generate(ask(), timeout=10)
    assert response.provider == "bedrock" and anthropic_emu.model_calls == 1


async def test_retry_after_is_honoured_between_same_provider_retries(gateway_factory, stub_for, anthropic_emu,
                                                                     bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, anthropic={"max_retries": 1})))
    anthropic_emu.inject(Fault.status(500, retry_after=0.4), times=1)
    response = await stub.Generate(ask(), timeout=10)
    assert response.provider == "anthropic"
    calls = [r for r in anthropic_emu.requests if r.path == "/v1/messages"]
    assert calls[1].time - calls[0].time >= 0.39


async def test_all_rate_limited_is_resource_exhausted_with_the_shortest_retry_hint(
        gateway_factory, stub_for, anthropic_emu, bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu)))
    anthropic_emu.inject(Fault.status(429, retry_after=7), times=None)
    bedrock_emu.inject(Fault.status(429, retry_after=3), times=None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=10)
    details = error_details(info.value)
    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "PROVIDER_RATE_LIMITED")
    assert details.retry_delay_ms == 3000 and details.pushback_ms == "3000"


async def test_all_credentials_rejected_is_failed_precondition_and_never_leaks_the_key(
        gateway_factory, stub_for, anthropic_emu, bedrock_emu, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = config(anthropic_emu, bedrock_emu, anthropic={"api_key": "sk-ant-WRONG-KEY-123"})
    stub = await stub_for(await gateway_factory(cfg))
    bedrock_emu.inject(Fault.status(403), times=None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=10)
    details = error_details(info.value)
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_CREDENTIALS_REJECTED")
    listed = await stub.ListProviders(pb.ListProvidersRequest(), timeout=5)
    health = await stub.Health(pb.HealthRequest(), timeout=5)
    assert bedrock_emu.requests[-1].headers["x-amz-security-token"] == AWS_SESSION_TOKEN  # it was sent
    # The gateway's own log lines (the SDKs' loggers are floored at WARNING by configure_logging, since
    # botocore's DEBUG lines print request headers).
    gateway_logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway_server"))
    assert "PROVIDER_CREDENTIALS_REJECTED" in gateway_logs
    for secret in ("sk-ant-WRONG-KEY-123", AWS_SECRET, AWS_SESSION_TOKEN):
        assert secret not in details.message
        assert secret not in str(details.metadata)
        assert secret not in str(listed) and secret not in str(health)
        assert secret not in gateway_logs


async def test_unconfigured_provider_is_skipped(gateway_factory, stub_for, anthropic_emu, bedrock_emu) -> None:
    cfg = config(anthropic_emu, bedrock_emu)
    del cfg["providers"]["anthropic"]["api_key"]
    stub = await stub_for(await gateway_factory(cfg))
    response = await stub.Generate(ask(), timeout=10)
    assert response.provider == "bedrock"
    assert [(a.provider, a.outcome, a.reason) for a in response.attempts] == [
        ("anthropic", pb.ATTEMPT_OUTCOME_SKIPPED, "PROVIDER_UNCONFIGURED"), ("bedrock", pb.ATTEMPT_OUTCOME_OK, "")]
    assert anthropic_emu.model_calls == 0


async def test_no_usable_provider_is_failed_precondition(gateway_factory, stub_for, anthropic_emu, bedrock_emu,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cfg = config(anthropic_emu, bedrock_emu, anthropic={"enabled": False})
    stub = await stub_for(await gateway_factory(cfg))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=10)
    details = error_details(info.value)
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_USABLE_PROVIDER")
    assert "anthropic: provider is disabled" in details.message
    assert "bedrock: provider is unconfigured" in details.message


@pytest.mark.parametrize("first", ["anthropic", "bedrock"])
async def test_a_deadline_shorter_than_a_hanging_provider(gateway_factory, stub_for, anthropic_emu, bedrock_emu,
                                                          first: str) -> None:
    stub = await stub_for(await gateway_factory(config(
        anthropic_emu, bedrock_emu, first=first, anthropic={"timeout": 60}, bedrock={"timeout": 60},
        fallback={"enabled": False})))
    emu = anthropic_emu if first == "anthropic" else bedrock_emu
    emu.inject(Fault.hang(), times=None)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=0.8)
    elapsed = time.monotonic() - started
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 0.8 + 1.0  # slack for a loaded machine; the provider hangs (timeout 60 s)
    other = bedrock_emu if first == "anthropic" else anthropic_emu
    assert other.model_calls == 0
    if first == "anthropic":  # the async SDK's connection is closed at once; boto3's thread gives up later
        assert await anthropic_emu.await_disconnect()


async def test_timeout_falls_back_within_the_deadline(gateway_factory, stub_for, anthropic_emu,
                                                      bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, anthropic={"timeout": 0.3})))
    anthropic_emu.inject(Fault.hang(), times=None)
    response = await stub.Generate(ask(), timeout=3)
    assert response.provider == "bedrock"
    assert response.attempts[0].reason == "PROVIDER_TIMEOUT"
    assert 250 < response.attempts[0].latency_ms < 1500


async def test_caller_cancel_closes_the_upstream_request(gateway_factory, stub_for, anthropic_emu,
                                                         bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, anthropic={"timeout": 30})))
    anthropic_emu.inject(Fault.hang(), times=None)
    call = stub.Generate(ask(), timeout=30)
    waiter = asyncio.ensure_future(call)
    assert await anthropic_emu.await_requests(1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await anthropic_emu.await_disconnect()
    assert bedrock_emu.model_calls == 0


async def test_model_alias_maps_to_each_providers_id(gateway_factory, stub_for, anthropic_emu, bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu)))
    anthropic_emu.inject(Fault.status(500), times=None)
    response = await stub.Generate(ask(model="sonnet"), timeout=10)
    assert response.provider == "bedrock"
    assert [a.model for a in response.attempts] == [CLAUDE, BEDROCK_CLAUDE]
    assert anthropic_emu.requests[-1].json["model"] == CLAUDE
    assert BEDROCK_CLAUDE.replace(":", "%3A") in bedrock_emu.requests[-1].path or \
        BEDROCK_CLAUDE in bedrock_emu.requests[-1].path


async def test_a_concrete_model_id_is_translated_for_the_fallback(gateway_factory, stub_for, anthropic_emu,
                                                                  bedrock_emu) -> None:
    cfg = config(anthropic_emu, bedrock_emu, bedrock={"model_id": "global.anthropic.claude-haiku-5-5"})
    stub = await stub_for(await gateway_factory(cfg))
    anthropic_emu.inject(Fault.status(500), times=None)
    response = await stub.Generate(ask(model=CLAUDE), timeout=10)
    assert [a.model for a in response.attempts] == [CLAUDE, BEDROCK_CLAUDE]  # via the alias, not the default
    # A concrete id with no alias for bedrock: bedrock is skipped, never silently answered by another model.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(model="claude-other"), timeout=10)
    assert error_details(info.value).reason == "PROVIDER_ERROR"
    assert bedrock_emu.model_calls == 1  # only the aliased call above


async def test_health_from_probes_and_real_traffic(gateway_factory, stub_for, anthropic_emu, bedrock_emu) -> None:
    app = await gateway_factory(config(anthropic_emu, bedrock_emu))  # it runs the probes itself
    stub = await stub_for(app)
    bedrock_emu.inject(Fault.status(500), times=1, on="probe")
    await app.health.probe_all()
    assert anthropic_emu.model_calls == 0 and bedrock_emu.model_calls == 0  # probes spend no tokens
    health = await stub.Health(pb.HealthRequest(), timeout=5)
    by_name = {p.name: p for p in health.providers}
    assert by_name["anthropic"].status == pb.PROVIDER_STATUS_HEALTHY and by_name["anthropic"].latency_ms > 0
    assert by_name["bedrock"].status == pb.PROVIDER_STATUS_UNHEALTHY
    assert "500" in by_name["bedrock"].last_error
    assert by_name["bedrock"].region == "us-east-1"
    assert health.status == pb.HEALTH_STATUS_DEGRADED
    # Real traffic updates the same state.
    anthropic_emu.inject(Fault.status(529))
    await stub.Generate(ask(), timeout=10)  # anthropic fails, bedrock answers
    health = await stub.Health(pb.HealthRequest(), timeout=5)
    by_name = {p.name: p for p in health.providers}
    assert by_name["anthropic"].status == pb.PROVIDER_STATUS_UNHEALTHY
    assert by_name["bedrock"].status == pb.PROVIDER_STATUS_HEALTHY
    await app.health.probe_all()
    health = await stub.Health(pb.HealthRequest(), timeout=5)
    assert health.status == pb.HEALTH_STATUS_HEALTHY


async def test_fallback_is_logged_as_the_seed_shows(gateway_factory, stub_for, anthropic_emu, bedrock_emu,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu)))
    anthropic_emu.inject(Fault.status(500), times=None)
    await stub.Generate(ask(), metadata=(("x-request-id", "trace-42"),), timeout=10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("Provider 'anthropic' failed (attempt 1/2):") and
               m.endswith("Trying fallback to 'bedrock'...") for m in warnings), warnings
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith("FALLBACK SUCCESS: Provider 'bedrock' succeeded after 'anthropic' failed. "
                            "Attempt 2/2, latency=") for m in infos), infos
    line = next(m for m in infos if m.startswith("Generated response:"))
    assert "request_id=trace-42" in line and "provider=bedrock" in line and "path=anthropic>bedrock" in line
    assert "tokens=" in line and "latency_ms=" in line


async def test_another_providers_model_id_is_translated_for_the_chosen_one(gateway_factory, stub_for,
                                                                         anthropic_emu, bedrock_emu) -> None:
    cfg = config(anthropic_emu, bedrock_emu, anthropic={"models": [CLAUDE]})
    stub = await stub_for(await gateway_factory(cfg))
    response = await stub.Generate(ask(model=BEDROCK_CLAUDE), timeout=10)
    assert (response.provider, response.model) == ("anthropic", CLAUDE)
    assert anthropic_emu.requests[-1].json["model"] == CLAUDE
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(model="claude-unknown"), timeout=10)
    assert error_details(info.value).reason == "UNKNOWN_MODEL"


async def test_retry_original_tries_the_first_provider_again_at_the_end(gateway_factory, stub_for, anthropic_emu,
                                                                        bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, fallback={
        "enabled": True, "fallback_order": ["anthropic", "bedrock"], "max_fallback_attempts": 2,
        "retry_original": True})))
    anthropic_emu.inject(Fault.status(429), times=1)  # rate limited once, fine on the second try
    bedrock_emu.inject(Fault.status(500), times=None)
    response = await stub.Generate(ask(), timeout=10)
    assert response.provider == "anthropic"
    assert [(a.provider, a.outcome) for a in response.attempts] == [
        ("anthropic", pb.ATTEMPT_OUTCOME_ERROR), ("bedrock", pb.ATTEMPT_OUTCOME_ERROR),
        ("anthropic", pb.ATTEMPT_OUTCOME_OK)]
    assert anthropic_emu.model_calls == 2


async def test_a_hung_bedrock_call_frees_its_thread_soon_after_the_deadline(gateway_factory, stub_for,
                                                                           anthropic_emu, bedrock_emu) -> None:
    # One worker thread: the second call can only run once the first call's thread is free again.
    stub = await stub_for(await gateway_factory(config(
        anthropic_emu, bedrock_emu, first="bedrock", fallback={"enabled": False},
        bedrock={"timeout": 60, "executor_workers": 1})))
    bedrock_emu.inject(Fault.hang(), times=1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=0.8)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    started = time.monotonic()
    response = await stub.Generate(ask(), timeout=10)  # waits for the thread: ~1 s read-timeout tier, not 60 s
    assert response.provider == "bedrock"
    assert time.monotonic() - started < 5
    assert await bedrock_emu.await_disconnect()
