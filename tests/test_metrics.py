"""Prometheus metrics through a real HTTP scrape of /metrics, parsed with prometheus_client.parser.

Traffic goes through the real SDKs against the emulators (fallbacks, errors, streams); the values
scraped are checked against what the calls returned.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import string
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway_server.metrics import OTHER, start_metrics_server
from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from tests.conftest import mock_config
from tests.emulators import AnthropicEmulator, BedrockEmulator, Fault
from tests.helpers import ask, gateway_process

REPO = Path(__file__).resolve().parent.parent
ANTHROPIC_KEY = "sk-ant-test-metrics-1a2b3c"
AWS_KEY_ID = "AKIDTESTMETRICS"
CLAUDE = "claude-sonnet-5-5"
BEDROCK_CLAUDE = "global.anthropic.claude-sonnet-5-5"
TEAM_KEY = "team-a-key-0123456789"
PRICES = {CLAUDE: {"input": 3.0, "output": 15.0}, BEDROCK_CLAUDE: {"input": 4.0, "output": 20.0}}
GENERATE = "modelgateway.v1.ModelGateway/Generate"
STREAM = "modelgateway.v1.ModelGateway/GenerateStream"
AUTH = (("authorization", f"Bearer {TEAM_KEY}"),)

Samples = list[tuple[str, dict[str, str], float]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape(port: int) -> Samples:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    return [(s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


async def scrape_after_calls(port: int, calls: int) -> Samples:
    """A scrape once the server has recorded the end of ``calls`` calls: it records a call's duration
    after sending its status, so a caller can see the status first (seen on a loaded machine)."""
    async with asyncio.timeout(10):
        while True:
            s = await scrape(port)
            if value(s, "grpc_server_call_duration_seconds_count") >= calls:
                return s
            await asyncio.sleep(0.02)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(v for n, lbl, v in samples if n == name and all(lbl.get(k) == x for k, x in labels.items()))


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-metrics")


@pytest.fixture
def emulators(aws_credentials: None) -> Iterator[tuple[AnthropicEmulator, BedrockEmulator]]:
    with AnthropicEmulator(api_key=ANTHROPIC_KEY) as a, BedrockEmulator(access_key_id=AWS_KEY_ID) as b:
        yield a, b


@pytest.fixture
def metrics_port(monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv("GATEWAY_METRICS_PORT", str(port))
    return port


def two_providers(a: AnthropicEmulator, b: BedrockEmulator) -> dict[str, Any]:
    return {
        "default_provider": "anthropic",
        "providers": {
            "anthropic": {"type": "anthropic", "base_url": a.base_url, "api_key": ANTHROPIC_KEY,
                          "default_model": CLAUDE, "timeout": 5, "max_retries": 0},
            "bedrock": {"type": "bedrock", "endpoint_url": b.endpoint_url, "region": "us-east-1",
                        "model_id": BEDROCK_CLAUDE, "timeout": 5, "max_retries": 0},
        },
        "fallback": {"enabled": True, "fallback_order": ["anthropic", "bedrock"], "max_fallback_attempts": 2},
        "health_check": {"enabled": False},
        "named_api_keys": {"team-a": TEAM_KEY},
        "pricing": PRICES,
    }


async def traffic(stub: pb_grpc.ModelGatewayStub, a: AnthropicEmulator, b: BedrockEmulator) -> dict[str, Any]:
    """A fallback, a plain answer, a stream and a failure of both providers; what they returned."""
    a.inject(Fault.status(503))
    fallback = await stub.Generate(ask(), metadata=AUTH, timeout=10)
    plain = await stub.Generate(ask(), metadata=AUTH, timeout=10)
    events = [e async for e in stub.GenerateStream(ask(), metadata=AUTH, timeout=10)]
    a.inject(Fault.status(503))
    b.inject(Fault.status(503))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.Generate(ask(), metadata=AUTH, timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [x.provider for x in fallback.attempts] == ["anthropic", "bedrock"]
    return {"fallback": fallback, "plain": plain, "end": events[-1].end}


async def test_scrape_after_fallbacks_errors_and_streams(gateway_factory, stub_for, emulators, metrics_port) -> None:
    a, b = emulators
    app = await gateway_factory(two_providers(a, b))
    assert app.metrics_server is not None and app.metrics_server.port == metrics_port
    got = await traffic(await stub_for(app), a, b)
    fallback, plain, end = got["fallback"], got["plain"], got["end"]
    s = await scrape_after_calls(metrics_port, 4)  # 3 Generate, 1 GenerateStream

    # gRFC A66
    assert value(s, "grpc_server_call_started_total", grpc_method=GENERATE) == 3
    assert value(s, "grpc_server_call_started_total", grpc_method=STREAM) == 1
    assert value(s, "grpc_server_call_duration_seconds_count", grpc_method=GENERATE, grpc_status="OK") == 2
    assert value(s, "grpc_server_call_duration_seconds_count", grpc_method=GENERATE, grpc_status="UNAVAILABLE") == 1
    assert value(s, "grpc_server_call_duration_seconds_count", grpc_method=STREAM, grpc_status="OK") == 1
    assert value(s, "gateway_server_calls_in_flight") == 0
    # GenAI: who answered, and the failure
    duration = "gen_ai_server_request_duration_seconds_count"
    assert value(s, duration, gen_ai_provider_name="aws.bedrock", gen_ai_response_model=BEDROCK_CLAUDE,
                 error_type="") == 1
    assert value(s, duration, gen_ai_provider_name="anthropic", gen_ai_response_model=CLAUDE, error_type="") == 2
    assert value(s, duration, gen_ai_operation_name="chat", error_type="UNAVAILABLE") == 1
    assert value(s, "gen_ai_server_time_to_first_token_seconds_count", gen_ai_provider_name="anthropic") == 1
    outputs = fallback.usage.output_tokens + plain.usage.output_tokens + end.usage.output_tokens
    inputs = fallback.usage.input_tokens + plain.usage.input_tokens + end.usage.input_tokens
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", caller="team-a") == outputs
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", caller="team-a") == inputs
    assert value(s, "gen_ai_client_token_usage_count", gen_ai_token_type="input") == 3
    # attempts, fallbacks
    attempts = "gateway_provider_attempts_total"
    assert value(s, attempts, provider="anthropic", outcome="error", reason="PROVIDER_OVERLOADED") == 2
    assert value(s, attempts, provider="anthropic", outcome="ok") == 2
    assert value(s, attempts, provider="bedrock", outcome="ok") == 1
    assert value(s, attempts, provider="bedrock", outcome="error", reason="PROVIDER_OVERLOADED") == 1
    assert value(s, "gateway_fallbacks_total", from_provider="anthropic", to_provider="bedrock",
                 reason="PROVIDER_OVERLOADED") == 2
    assert value(s, "gateway_overhead_seconds_count", gen_ai_operation_name="chat") == 4
    # cost: the responses carry it, the counter adds it up by caller
    costs = [fallback.usage.cost_usd, plain.usage.cost_usd, end.usage.cost_usd]
    assert fallback.usage.cost_usd == pytest.approx(
        (fallback.usage.input_tokens * 4.0 + fallback.usage.output_tokens * 20.0) / 1e6)
    assert plain.usage.cost_usd == pytest.approx((plain.usage.input_tokens * 3.0 + plain.usage.output_tokens * 15.0)
                                                 / 1e6)
    assert all(c > 0 for c in costs)
    assert value(s, "gateway_cost_usd_total", caller="team-a") == pytest.approx(sum(costs))
    assert value(s, "gateway_cost_usd_total", caller="team-a", provider="bedrock") == pytest.approx(costs[0])
    assert value(s, "gateway_priced_calls_total", priced="true") == 3
    assert value(s, "gateway_priced_calls_total", priced="false") == 0
    # provider state, read at scrape time: both failed last
    assert value(s, "gateway_provider_state", provider="anthropic", state="unhealthy") == 1
    assert value(s, "gateway_provider_state", provider="anthropic", state="healthy") == 0
    assert value(s, "gateway_provider_state", provider="bedrock") == 1


async def test_unpriced_model_costs_zero_and_is_counted(gateway_factory, stub_for, metrics_port) -> None:
    app = await gateway_factory(mock_config(pricing={"priced-model": {"input": 1, "output": 1}}))
    stub = await stub_for(app)
    response = await stub.Generate(ask(), timeout=10)
    assert response.usage.cost_usd == 0.0 and response.usage.output_tokens > 0
    s = await scrape(metrics_port)
    assert value(s, "gateway_priced_calls_total", provider="mock", gen_ai_response_model="mock-1",
                 priced="false") == 1
    assert value(s, "gateway_cost_usd_total") == 0


async def test_label_cardinality_stays_bounded(gateway_factory, stub_for, metrics_port) -> None:
    """1,000 random model names (the mock takes any): every one is recorded as "other"."""
    app = await gateway_factory(mock_config())
    stub = await stub_for(app)
    rng = random.Random(12)
    names = ["".join(rng.choices(string.ascii_lowercase + string.digits + "-.", k=24)) for _ in range(1000)]
    for chunk in range(0, len(names), 50):
        answers = await asyncio.gather(*(stub.Generate(ask(model=n), timeout=30) for n in names[chunk:chunk + 50]))
        assert {r.model for r in answers} == set(names[chunk:chunk + 50])  # the mock echoes the model asked
    s = await scrape(metrics_port)
    models = {lbl[k] for _, lbl, _ in s for k in ("gen_ai_request_model", "gen_ai_response_model") if k in lbl}
    assert models == {OTHER}
    assert value(s, "gen_ai_server_request_duration_seconds_count", gen_ai_request_model=OTHER) == 1000
    assert len(s) < 400, f"{len(s)} samples after 1,000 model names"
    assert not any(n in lbl.values() for n in names[:50] for _, lbl, _ in s)


async def test_port_zero_disables_metrics(gateway_factory, stub_for, monkeypatch) -> None:
    monkeypatch.setenv("GATEWAY_METRICS_PORT", "0")
    app = await gateway_factory(mock_config())
    assert app.metrics is None and app.metrics_server is None
    assert (await (await stub_for(app)).Generate(ask(), timeout=10)).content == "100"


def dashboard_metric_names() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "deploy" / "grafana").glob("*.json"):
        panels = json.loads(path.read_text())["panels"]
        for panel in panels:
            for target in panel.get("targets", []):
                # Drop grouping clauses and label matchers: what is left names metrics only.
                expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", target["expr"])
                expr = re.sub(r"\{[^}]*\}", "", expr)
                names.update(re.findall(r"\b((?:gen_ai|grpc_server|gateway)_[a-z_]+)\b", expr))
    return names


async def test_every_dashboard_metric_is_in_a_real_scrape(gateway_factory, stub_for, emulators,
                                                          metrics_port) -> None:
    a, b = emulators
    app = await gateway_factory(two_providers(a, b))
    await traffic(await stub_for(app), a, b)
    scraped = {name for name, _, _ in await scrape(metrics_port)}
    queried = dashboard_metric_names()
    assert len(queried) >= 12, queried
    assert queried <= scraped, f"not in the scrape: {sorted(queried - scraped)}"


async def test_several_processes_one_scrape(tmp_path: Path) -> None:
    """Two real gateway processes write to one PROMETHEUS_MULTIPROC_DIR; one scrape adds them up."""
    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps(mock_config(health_check={"enabled": False})))
    env = {"PROMETHEUS_MULTIPROC_DIR": str(mp_dir), "GATEWAY_METRICS_PORT": "0"}
    async with gateway_process(config, env=env) as first, gateway_process(config, env=env) as second:
        for gateway, calls in ((first, 2), (second, 3)):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                stub = pb_grpc.ModelGatewayStub(channel)
                for _ in range(calls):
                    assert (await stub.Generate(ask(), timeout=10)).content == "100"
        server = start_metrics_server(0, multiprocess_dir=str(mp_dir), host="127.0.0.1")
        try:
            s = await scrape(server.port)
        finally:
            server.close()
    assert value(s, "grpc_server_call_started_total", grpc_method=GENERATE) == 5
    assert value(s, "gen_ai_server_request_duration_seconds_count", gen_ai_provider_name="mock") == 5
    assert value(s, "gateway_provider_attempts_total", provider="mock", outcome="ok") == 5
    assert value(s, "gateway_provider_state", provider="mock") >= 1


def test_metrics_server_refuses_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="cannot serve metrics"):
            start_metrics_server(taken.getsockname()[1], host="127.0.0.1",
                                 registry=__import__("prometheus_client").CollectorRegistry())


def test_unknown_attempt_reason_is_counted_not_dropped() -> None:
    from prometheus_client import CollectorRegistry

    from gateway_server.metrics import GatewayMetrics

    m = GatewayMetrics(models=["m"], callers=["anonymous"], providers=["p", "q"], registry=CollectorRegistry())
    m.record_attempts([
        pb.Attempt(provider="p", outcome=pb.ATTEMPT_OUTCOME_ERROR, reason="PROVIDER_TIMEOUT", retries=2),
        pb.Attempt(provider="x", outcome=pb.ATTEMPT_OUTCOME_SKIPPED, reason="PROVIDER_DISABLED"),
        pb.Attempt(provider="q", outcome=pb.ATTEMPT_OUTCOME_OK),
    ])
    reg = m.registry
    assert reg.get_sample_value("gateway_provider_retries_total", {"provider": "p"}) == 2
    assert reg.get_sample_value("gateway_fallbacks_total", {"from_provider": "p", "to_provider": "q",
                                                            "reason": "PROVIDER_TIMEOUT"}) == 1
    assert reg.get_sample_value("gateway_provider_attempts_total", {"provider": OTHER, "outcome": "skipped",
                                                                    "reason": "PROVIDER_DISABLED"}) == 1


async def test_health_watch_and_unary_health_through_the_interceptor(gateway_factory, metrics_port) -> None:
    """A server-streaming handler written as a coroutine with context.write() (grpc.health.v1 Watch)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    app = await gateway_factory(mock_config())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status == \
            health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
    s = await scrape(metrics_port)
    assert value(s, "grpc_server_call_started_total", grpc_method="grpc.health.v1.Health/Watch") == 1
    assert value(s, "grpc_server_call_duration_seconds_count", grpc_method="grpc.health.v1.Health/Check",
                 grpc_status="OK") == 1
    for _ in range(100):  # the server sees the cancel a moment later
        s = await scrape(metrics_port)
        if value(s, "gateway_server_calls_in_flight", grpc_method="grpc.health.v1.Health/Watch") == 0:
            break
        await asyncio.sleep(0.05)
    assert value(s, "grpc_server_call_duration_seconds_count", grpc_method="grpc.health.v1.Health/Watch",
                 grpc_status="CANCELLED") == 1


async def test_an_ejected_provider_shows_as_ejected(gateway_factory, stub_for, emulators, metrics_port) -> None:
    a, b = emulators
    cfg = two_providers(a, b)
    cfg["outlier_detection"] = {"consecutive_5xx": 1, "base_ejection_time": 300}
    app = await gateway_factory(cfg)
    a.inject(Fault.status(503), times=None)
    stub = await stub_for(app)
    response = await stub.Generate(ask(), metadata=AUTH, timeout=10)
    assert response.provider == "bedrock"  # anthropic failed once: ejected (consecutive_5xx 1)
    s = await scrape(metrics_port)
    assert value(s, "gateway_provider_state", provider="anthropic", state="ejected") == 1
    assert value(s, "gateway_provider_state", provider="anthropic", state="unhealthy") == 0
    assert value(s, "gateway_provider_state", provider="bedrock", state="healthy") == 1


async def test_count_tokens_is_not_a_model_call(gateway_factory, stub_for, metrics_port) -> None:
    """CountTokens, answered or refused, is counted by the gRPC metrics only, never as a GenAI chat call."""
    app = await gateway_factory(mock_config())
    stub = await stub_for(app)
    counted = await stub.CountTokens(pb.CountTokensRequest(messages=ask().messages), timeout=10)
    assert counted.input_tokens > 0
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CountTokens(pb.CountTokensRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    s = await scrape_after_calls(metrics_port, 2)
    count = "modelgateway.v1.ModelGateway/CountTokens"
    assert value(s, "grpc_server_call_duration_seconds_count", grpc_method=count) == 2
    assert value(s, "gen_ai_server_request_duration_seconds_count") == 0
