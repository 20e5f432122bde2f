"""Outage-grade fallback (issue 8) through the real SDKs against the emulators: the time law, outlier
ejection (on a controllable clock, no sleeps), the retry budget and pushback, model identity in
fallback, redacted provider errors, and grpc.health.v1's view of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway_server import policy
from gateway_server.app import SERVICE_FULL_NAME, GatewayApp
from gateway_server.settings import settings_from_mapping
from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from orchestrator_client import GatewayClient
from orchestrator_client.errors import GatewayUnavailableError
from tests.emulators import AnthropicEmulator, BedrockEmulator, Fault
from tests.helpers import ask, error_details
from tests.test_fallback import ANTHROPIC_KEY, AWS_KEY_ID, AWS_SECRET, BEDROCK_CLAUDE, CLAUDE, config
from tests.test_outlier import FakeClock

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)


@pytest.fixture(name="anthropic_emu")
def _anthropic_emu() -> Iterator[AnthropicEmulator]:
    with AnthropicEmulator(api_key=ANTHROPIC_KEY) as emu:
        yield emu


@pytest.fixture(name="bedrock_emu")
def _bedrock_emu() -> Iterator[BedrockEmulator]:
    with BedrockEmulator(access_key_id=AWS_KEY_ID, secret_access_key=AWS_SECRET) as emu:
        yield emu

ClockedFactory = Callable[..., Awaitable[tuple[GatewayApp, pb_grpc.ModelGatewayStub, FakeClock]]]


@pytest.fixture
async def clocked() -> AsyncIterator[ClockedFactory]:
    """``app, stub, clock = await clocked(config)``: a gateway whose outlier ejection runs on ``clock``."""
    apps: list[GatewayApp] = []
    channels: list[grpc.aio.Channel] = []

    async def make(cfg: dict[str, Any]) -> tuple[GatewayApp, pb_grpc.ModelGatewayStub, FakeClock]:
        clock = FakeClock()
        settings = settings_from_mapping({"host": "127.0.0.1", "port": 0, **cfg}, env_file=None)
        app = await GatewayApp(settings, clock=clock).start()
        apps.append(app)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        channels.append(channel)
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        return app, pb_grpc.ModelGatewayStub(channel), clock

    yield make
    for channel in channels:
        await channel.close()
    for app in apps:
        await app.stop(grace=0)


def outcomes(response: pb.GenerateResponse) -> list[tuple[str, str]]:
    return [(a.provider, a.reason or pb.AttemptOutcome.Name(a.outcome)) for a in response.attempts]


def ejecting(anthropic_emu: AnthropicEmulator, bedrock_emu: BedrockEmulator, *,
             anthropic: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Ejection after 2 failures in a row, for 30 s x the number of ejections."""
    return config(anthropic_emu, bedrock_emu, anthropic={"timeout": 0.5, **(anthropic or {})}, outlier_detection={
        "consecutive_5xx": 2, "base_ejection_time": 30, "max_ejection_time": 300}, **overrides)


async def service_status(app: GatewayApp, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                timeout=5)
        return reply.status


async def eventually_status(app: GatewayApp, service: str, status: int) -> None:
    """The grpc.health.v1 status is set by a task the state change schedules: Watch until it is ``status``."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel, asyncio.timeout(5):
        async for reply in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service)):
            if reply.status == status:
                return


# ---- 1. the time law ----

@pytest.mark.parametrize("first", ["anthropic", "bedrock"])
@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_a_hung_first_provider_with_the_deadline_equal_to_its_timeout_answers_from_the_next(
        gateway_factory, stub_for, anthropic_emu, bedrock_emu, first: str, streaming: bool) -> None:
    timeouts = {"timeout": 4, "first_token_timeout": 4}
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, first=first,
                                                       anthropic=timeouts, bedrock=timeouts)))
    await stub.Generate(ask(provider="anthropic"), timeout=30)  # warm: no bound may depend on a cold first call
    await stub.Generate(ask(provider="bedrock"), timeout=30)
    hung, other = (anthropic_emu, "bedrock") if first == "anthropic" else (bedrock_emu, "anthropic")
    hung.inject(Fault.hang(), times=None)
    started = time.monotonic()
    if streaming:
        events = [e async for e in stub.GenerateStream(ask(), timeout=4)]
        attempts = events[-1].end.attempts
        assert events[0].start.provider == other
    else:
        response = await stub.Generate(ask(), timeout=4)
        attempts = response.attempts
        assert (response.provider, response.content) == (other, "100")
    assert time.monotonic() - started < 4
    assert attempts[0].provider == first and attempts[0].reason == "PROVIDER_TIMEOUT"
    assert 1500 < attempts[0].latency_ms < 2900  # about half of the time left (~2 s), the other half kept back


def test_the_shipped_defaults_leave_the_second_provider_its_whole_timeout() -> None:
    """config/gateway.yaml with the client's default budget: a hung first provider costs its own timeout
    (a full one, so it counts towards ejection) and the next provider still gets its whole timeout."""
    shipped = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
    settings = settings_from_mapping(shipped, env_file=None)
    budget = GatewayClient().timeout  # the client's default budget for one call
    first, second = (settings.providers[n] for n in settings.fallback.fallback_order[:2])
    margin = settings.server.deadline_margin_ms / 1000
    for timeout_of in (lambda p: p.timeout, lambda p: p.first_token_timeout or p.timeout):
        spent, limit = policy.attempt_limit(timeout_of(first), budget, margin=margin, more_providers=True,
                                            reserve_ratio=settings.fallback.reserve_ratio)
        assert limit is policy.AttemptLimit.PROVIDER
        left, second_limit = policy.attempt_limit(timeout_of(second), budget - spent, margin=margin)
        assert second_limit is policy.AttemptLimit.PROVIDER and left == timeout_of(second)


# ---- 2. outlier ejection ----

async def test_a_black_holed_provider_is_ejected_skipped_and_brought_back_by_a_half_open_trial(
        clocked, anthropic_emu, bedrock_emu, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    app, stub, clock = await clocked(ejecting(anthropic_emu, bedrock_emu, anthropic={"timeout": 1.2}))
    anthropic_emu.inject(Fault.hang(), times=None)
    for _ in range(2):
        response = await stub.Generate(ask(), timeout=10)
        assert outcomes(response) == [("anthropic", "PROVIDER_TIMEOUT"), ("bedrock", "ATTEMPT_OUTCOME_OK")]
    assert any("Provider 'anthropic' EJECTED for 30.0s" in r.getMessage() for r in caplog.records)
    # Ejected: skipped at no cost.
    started = time.monotonic()
    response = await stub.Generate(ask(), timeout=10)
    assert time.monotonic() - started < 1.1  # no 1.2 s provider timeout paid
    assert outcomes(response) == [("anthropic", "PROVIDER_EJECTED"), ("bedrock", "ATTEMPT_OUTCOME_OK")]
    assert response.attempts[0].outcome == pb.ATTEMPT_OUTCOME_SKIPPED
    assert "ejected for another 30.0s" in response.attempts[0].message
    assert anthropic_emu.model_calls == 2
    health = {p.name: p for p in (await stub.Health(pb.HealthRequest(), timeout=5)).providers}
    assert health["anthropic"].status == pb.PROVIDER_STATUS_EJECTED
    assert health["anthropic"].ejection_count == 1
    assert abs(health["anthropic"].ejected_until.ToSeconds() - (time.time() + 30)) < 5
    assert not health["bedrock"].HasField("ejected_until")
    listed = {p.name: p for p in (await stub.ListProviders(pb.ListProvidersRequest(), timeout=5)).providers}
    assert listed["anthropic"].ejected
    assert abs(listed["anthropic"].ejected_until.ToSeconds() - health["anthropic"].ejected_until.ToSeconds()) <= 1
    assert not listed["bedrock"].ejected
    assert await service_status(app, SERVICE_FULL_NAME) == health_pb2.HealthCheckResponse.SERVING  # bedrock is up
    # The ejection ends: half-open. The trial fails (still hung): ejected again, twice as long.
    clock.advance(30)
    response = await stub.Generate(ask(), timeout=10)
    assert outcomes(response) == [("anthropic", "PROVIDER_TIMEOUT"), ("bedrock", "ATTEMPT_OUTCOME_OK")]
    assert app.health is not None and app.health.blocked_until("anthropic") == clock.now + 60
    # Healed: after the next ejection time the trial succeeds and traffic returns.
    anthropic_emu.clear()
    clock.advance(60)
    response = await stub.Generate(ask(), timeout=10)
    assert outcomes(response) == [("anthropic", "ATTEMPT_OUTCOME_OK")]
    health = {p.name: p for p in (await stub.Health(pb.HealthRequest(), timeout=5)).providers}
    assert health["anthropic"].status == pb.PROVIDER_STATUS_HEALTHY
    assert not health["anthropic"].HasField("ejected_until")


async def test_a_successful_probe_brings_an_ejected_provider_back(clocked, anthropic_emu, bedrock_emu) -> None:
    app, stub, _clock = await clocked(ejecting(anthropic_emu, bedrock_emu))
    anthropic_emu.inject(Fault.status(500), times=2)
    for _ in range(2):
        await stub.Generate(ask(), timeout=10)
    assert app.health is not None and app.health.blocked_until("anthropic") is not None
    await app.health.probe_all()  # token-free: the model list answers
    assert app.health.blocked_until("anthropic") is None
    response = await stub.Generate(ask(), timeout=10)
    assert outcomes(response) == [("anthropic", "ATTEMPT_OUTCOME_OK")]


async def test_panic_mode_tries_every_provider_when_all_are_ejected(clocked, anthropic_emu, bedrock_emu,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    app, stub, _clock = await clocked(ejecting(anthropic_emu, bedrock_emu))
    anthropic_emu.inject(Fault.status(500), times=None)
    bedrock_emu.inject(Fault.status(500), times=None)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Generate(ask(), timeout=10)
    assert app.health is not None
    assert app.health.blocked_until("anthropic") and app.health.blocked_until("bedrock")
    # No provider usable: the service is NOT_SERVING in grpc.health.v1, liveness ("") stays SERVING.
    await eventually_status(app, SERVICE_FULL_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await service_status(app, "") == health_pb2.HealthCheckResponse.SERVING
    # Panic: both are tried anyway; bedrock has healed and answers.
    bedrock_emu.clear()
    caplog.set_level(logging.WARNING)
    response = await stub.Generate(ask(), timeout=10)
    assert outcomes(response) == [("anthropic", "PROVIDER_ERROR"), ("bedrock", "ATTEMPT_OUTCOME_OK")]
    assert any(r.getMessage().startswith("PANIC: every provider of the chain") for r in caplog.records)
    assert app.health.blocked_until("bedrock") is None  # its answer brought it back
    await eventually_status(app, SERVICE_FULL_NAME, health_pb2.HealthCheckResponse.SERVING)


async def test_a_429_with_retry_after_cools_the_provider_down_for_that_long(clocked, anthropic_emu,
                                                                            bedrock_emu) -> None:
    _app, stub, clock = await clocked(ejecting(anthropic_emu, bedrock_emu))
    anthropic_emu.inject(Fault.status(429, retry_after=5), times=1)
    response = await stub.Generate(ask(), timeout=10)
    assert outcomes(response) == [("anthropic", "PROVIDER_RATE_LIMITED"), ("bedrock", "ATTEMPT_OUTCOME_OK")]
    response = await stub.Generate(ask(), timeout=10)
    assert outcomes(response) == [("anthropic", "PROVIDER_EJECTED"), ("bedrock", "ATTEMPT_OUTCOME_OK")]
    assert "cooling down after a rate limit" in response.attempts[0].message
    assert anthropic_emu.model_calls == 1
    clock.advance(5)
    response = await stub.Generate(ask(), timeout=10)
    assert outcomes(response) == [("anthropic", "ATTEMPT_OUTCOME_OK")]


async def test_a_timeout_cut_short_by_the_callers_deadline_does_not_eject(clocked, anthropic_emu,
                                                                          bedrock_emu) -> None:
    cfg = ejecting(anthropic_emu, bedrock_emu, anthropic={"timeout": 30})
    cfg["providers"]["mock"] = {"type": "mock"}  # an in-process second provider: its share is plenty
    cfg["fallback"]["fallback_order"] = ["anthropic", "mock"]
    app, stub, _clock = await clocked(cfg)
    anthropic_emu.inject(Fault.hang(), times=None)
    for _ in range(3):  # each attempt gets half of a 2 s deadline, not anthropic's 30 s
        response = await stub.Generate(ask(), timeout=2)
        assert outcomes(response) == [("anthropic", "PROVIDER_TIMEOUT"), ("mock", "ATTEMPT_OUTCOME_OK")]
    assert app.health is not None and app.health.blocked_until("anthropic") is None


async def test_no_provider_usable_at_start_is_not_serving(gateway_factory, anthropic_emu, bedrock_emu,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cfg = config(anthropic_emu, bedrock_emu)
    del cfg["providers"]["anthropic"]["api_key"]
    app = await gateway_factory(cfg)
    assert await service_status(app, SERVICE_FULL_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await service_status(app, "") == health_pb2.HealthCheckResponse.SERVING


# ---- 3. the retry budget ----

def shipped_config(anthropic_emu: AnthropicEmulator, bedrock_emu: BedrockEmulator) -> dict[str, Any]:
    """config/gateway.yaml as shipped, pointed at the emulators."""
    cfg = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
    cfg["providers"]["anthropic"].update(base_url=anthropic_emu.base_url, api_key=ANTHROPIC_KEY)
    cfg["providers"]["bedrock"]["endpoint_url"] = bedrock_emu.endpoint_url
    cfg["health_check"] = {**cfg["health_check"], "enabled": False}
    return cfg


async def test_two_overloaded_providers_cost_at_most_six_upstream_requests(gateway_factory, anthropic_emu,
                                                                           bedrock_emu) -> None:
    app = await gateway_factory(shipped_config(anthropic_emu, bedrock_emu))
    anthropic_emu.inject(Fault.status(529), times=None)
    bedrock_emu.inject(Fault.status(503), times=None)  # ServiceUnavailableException
    # The client's defaults (3 attempts; waits of 10 ms instead of 1 s and 2 s), with the shipped config's
    # example admin key (no limits).
    async with GatewayClient(f"127.0.0.1:{app.port}", api_key="mgk_admin-local-only", retry_delay=0.01) as client:
        with pytest.raises(GatewayUnavailableError) as caught:
            await client.generate("What is 25 + 75?")
    assert caught.value.attempts == 3
    assert anthropic_emu.model_calls + bedrock_emu.model_calls <= 6
    assert (anthropic_emu.model_calls, bedrock_emu.model_calls) == (3, 3)


async def test_an_overloaded_provider_is_retried_only_when_it_is_the_only_one(gateway_factory, stub_for,
                                                                              anthropic_emu, bedrock_emu) -> None:
    cfg = config(anthropic_emu, bedrock_emu, anthropic={"max_retries": 3}, fallback={"enabled": False})
    stub = await stub_for(await gateway_factory(cfg))
    anthropic_emu.inject(Fault.status(529), times=2)
    response = await stub.Generate(ask(), timeout=10)
    assert response.provider == "anthropic" and response.attempts[0].retries == 2


async def test_an_exhausted_retry_budget_stops_same_provider_retries(gateway_factory, stub_for, anthropic_emu,
                                                                     bedrock_emu) -> None:
    cfg = config(anthropic_emu, bedrock_emu, anthropic={"max_retries": 3},
                 retry_budget={"budget_percent": 0, "min_retry_concurrency": 0})
    stub = await stub_for(await gateway_factory(cfg))
    anthropic_emu.inject(Fault.status(500), times=None)
    response = await stub.Generate(ask(), timeout=10)
    assert response.provider == "bedrock" and response.attempts[0].retries == 0
    assert anthropic_emu.model_calls == 1


async def test_when_every_provider_was_tried_the_gateway_sends_pushback(clocked, anthropic_emu,
                                                                        bedrock_emu) -> None:
    _app, stub, _clock = await clocked(ejecting(anthropic_emu, bedrock_emu))
    anthropic_emu.inject(Fault.status(500), times=None)
    bedrock_emu.inject(Fault.status(500), times=None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=10)
    details = error_details(info.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    # Neither said when, neither is ejected yet: no pushback, the caller's own schedule decides.
    assert details.retry_delay_ms is None and details.pushback_ms is None
    # Once both are ejected, a retry helps only when the first ejection ends.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=10)
    assert error_details(info.value).retry_delay_ms == 30_000


# ---- 5. model identity ----

OPUS_47 = "claude-opus-4-7"  # an Anthropic model id with no alias for Bedrock


async def test_a_concrete_model_without_an_alias_skips_the_next_provider(gateway_factory, stub_for, anthropic_emu,
                                                                         bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, anthropic={"models": [OPUS_47]})))
    anthropic_emu.inject(Fault.status(500), times=None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(model=OPUS_47), timeout=10)
    assert error_details(info.value).code == grpc.StatusCode.UNAVAILABLE
    assert bedrock_emu.model_calls == 0  # never answered by another model


async def test_the_skip_is_an_attempt_and_substitution_is_opt_in(gateway_factory, stub_for, anthropic_emu,
                                                                 bedrock_emu) -> None:
    cfg = config(anthropic_emu, bedrock_emu, first="bedrock", bedrock={"models": [BEDROCK_CLAUDE, "b-only"]})
    stub = await stub_for(await gateway_factory(cfg))
    bedrock_emu.inject(Fault.status(500), times=1)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Generate(ask(model="b-only"), timeout=10)
    cfg["fallback"]["substitute_default_model"] = True
    stub = await stub_for(await gateway_factory(cfg))
    bedrock_emu.inject(Fault.status(500), times=1)
    response = await stub.Generate(ask(model="b-only"), timeout=10)
    assert [(a.provider, a.model) for a in response.attempts] == [("bedrock", "b-only"), ("anthropic", CLAUDE)]


async def test_the_model_unavailable_skip_shows_in_the_attempts(gateway_factory, stub_for, anthropic_emu,
                                                                bedrock_emu) -> None:
    cfg = config(anthropic_emu, bedrock_emu, anthropic={"models": [OPUS_47]})
    cfg["providers"]["mock"] = {"type": "mock", "models": [OPUS_47]}
    cfg["fallback"] = {"enabled": True, "fallback_order": ["anthropic", "bedrock", "mock"],
                       "max_fallback_attempts": 3}
    stub = await stub_for(await gateway_factory(cfg))
    anthropic_emu.inject(Fault.status(500), times=None)
    response = await stub.Generate(ask(model=OPUS_47), timeout=10)
    assert outcomes(response) == [("anthropic", "PROVIDER_ERROR"), ("bedrock", "MODEL_UNAVAILABLE"),
                                  ("mock", "ATTEMPT_OUTCOME_OK")]
    assert response.model == OPUS_47


async def test_retry_original_uses_the_requested_model(gateway_factory, stub_for, anthropic_emu,
                                                       bedrock_emu) -> None:
    stub = await stub_for(await gateway_factory(config(
        anthropic_emu, bedrock_emu, anthropic={"models": [CLAUDE, "claude-opus-5-5"]},
        model_aliases={"opus": {"anthropic": "claude-opus-5-5", "bedrock": "global.anthropic.claude-opus-5-5"}},
        fallback={"enabled": True, "fallback_order": ["anthropic", "bedrock"], "retry_original": True})))
    anthropic_emu.inject(Fault.status(429), times=1)
    bedrock_emu.inject(Fault.status(500), times=None)
    response = await stub.Generate(ask(model="claude-opus-5-5"), timeout=10)
    assert [(a.provider, a.model) for a in response.attempts] == [
        ("anthropic", "claude-opus-5-5"), ("bedrock", "global.anthropic.claude-opus-5-5"),
        ("anthropic", "claude-opus-5-5")]
    assert anthropic_emu.requests[-1].json["model"] == "claude-opus-5-5"


# ---- 6. safe error text ----

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/GatewayRole/i-0abc123"
ACCESS_DENIED = (f"User: {ROLE_ARN} is not authorized to perform: bedrock:InvokeModel on resource: "
                 f"arn:aws:bedrock:us-east-1:{ACCOUNT}:inference-profile/{BEDROCK_CLAUDE} because no "
                 f"identity-based policy allows the bedrock:InvokeModel action")
KEY_FRAGMENT = "sk-ant-api03-Zx9Yw8"


async def test_provider_error_text_never_reaches_the_caller_but_reaches_the_log(
        gateway_factory, stub_for, anthropic_emu, bedrock_emu, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    stub = await stub_for(await gateway_factory(config(anthropic_emu, bedrock_emu, first="bedrock")))
    bedrock_emu.inject(Fault.status(403, message=ACCESS_DENIED), times=None)
    anthropic_emu.inject(Fault.status(403, message=f"Key {KEY_FRAGMENT}... of org {ACCOUNT} lacks permission"),
                         times=1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=10)
    details = error_details(info.value)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    response = await stub.Generate(ask(), timeout=10)  # anthropic answers now; bedrock's attempt is listed
    health = await stub.Health(pb.HealthRequest(), timeout=5)
    bedrock_health = next(p for p in health.providers if p.name == "bedrock")
    caller_sees = [details.message, str(details.metadata), *(a.message for a in response.attempts),
                   bedrock_health.last_error, str(health)]
    for text in caller_sees:
        for secret in (ACCOUNT, "arn:aws", "GatewayRole", KEY_FRAGMENT, "identity-based policy"):
            assert secret not in text, (secret, text)
    # The summary: the error class, the HTTP status and the provider's error type.
    assert response.attempts[0].message == ("the provider rejected the gateway's credentials "
                                            "(HTTP 403, AccessDeniedException)")
    assert "HTTP 403" in bedrock_health.last_error and "AccessDeniedException" in bedrock_health.last_error
    assert "permission_error" in details.message and "'anthropic'" in details.message
    # The full text is for the operator's log, key fragments excepted.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway_server"))
    assert ROLE_ARN in logged and "identity-based policy" in logged
    assert KEY_FRAGMENT not in logged


# ---- 7. GATEWAY_CONFIG=path make run ----

async def test_make_run_uses_the_gateway_config_environment_variable(tmp_path: Path) -> None:
    config_file = tmp_path / "mine.yaml"
    config_file.write_text(yaml.safe_dump({"host": "127.0.0.1", "port": 0, "default_provider": "from-env",
                                           "providers": {"from-env": {"type": "mock"}}}))
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = await asyncio.create_subprocess_exec(
        "make", "-s", "run", cwd=ROOT, env={**env, "GATEWAY_CONFIG": str(config_file)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(120):
            while not any("Gateway started" in line for line in lines):
                raw = await proc.stderr.readline()
                assert raw, "make run exited early:\n" + "".join(lines)
                lines.append(raw.decode())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    assert "usable=from-env default=from-env" in lines[-1], lines[-1]
