"""OpenTelemetry traces: the SDK's in-memory exporter for the spans' content, a real OTLP/gRPC
receiver on loopback (opentelemetry-proto's TraceService) for the exporter path of a real gateway
process, and the client's traceparent injection."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway_server.app import GatewayApp
from gateway_server.settings import settings_from_mapping
from gateway_server.tracing import tracing_configured
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from orchestrator_client import GatewayClient, InvalidRequestError, cli
from tests.conftest import mock_config
from tests.emulators import AnthropicEmulator, BedrockEmulator, Fault
from tests.helpers import ask, gateway_process

ANTHROPIC_KEY = "sk-ant-test-tracing-4d5e6f"
AWS_KEY_ID = "AKIDTESTTRACING"
CLAUDE = "claude-sonnet-5-5"
BEDROCK_CLAUDE = "global.anthropic.claude-sonnet-5-5"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
SECRET_PROMPT = "What is 25 + 75? (a prompt the spans must not carry)"


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def emulators(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AnthropicEmulator, BedrockEmulator]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-tracing")
    with AnthropicEmulator(api_key=ANTHROPIC_KEY) as a, BedrockEmulator(access_key_id=AWS_KEY_ID) as b:
        yield a, b


def two_providers(a: AnthropicEmulator, b: BedrockEmulator, **overrides: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1", "port": 0, "default_provider": "anthropic",
        "providers": {
            "anthropic": {"type": "anthropic", "base_url": a.base_url, "api_key": ANTHROPIC_KEY,
                          "default_model": CLAUDE, "timeout": 5, "max_retries": 0},
            "bedrock": {"type": "bedrock", "endpoint_url": b.endpoint_url, "region": "us-east-1",
                        "model_id": BEDROCK_CLAUDE, "timeout": 5, "max_retries": 0},
        },
        "fallback": {"enabled": True, "fallback_order": ["anthropic", "bedrock"], "max_fallback_attempts": 2},
        "health_check": {"enabled": False},
        "pricing": {BEDROCK_CLAUDE: {"input": 3, "output": 15}},
        **overrides,
    }


async def start(config: dict[str, Any], provider: TracerProvider) -> tuple[GatewayApp, Any, pb_grpc.ModelGatewayStub]:
    app = await GatewayApp(settings_from_mapping(config, env_file=None)).start(tracer_provider=provider)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    return app, channel, pb_grpc.ModelGatewayStub(channel)


async def test_fallback_call_continues_the_callers_trace(spans, emulators) -> None:
    provider, exporter = spans
    a, b = emulators
    app, channel, stub = await start(two_providers(a, b), provider)
    try:
        a.inject(Fault.status(503))
        response = await stub.Generate(ask(SECRET_PROMPT), metadata=(("traceparent", TRACEPARENT),), timeout=10)
    finally:
        await channel.close()
        await app.stop(grace=0)
    assert response.provider == "bedrock"
    finished = exporter.get_finished_spans()
    (server,) = [s for s in finished if s.kind == SpanKind.SERVER]
    children = sorted((s for s in finished if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert len(finished) == 3
    # the caller's trace, the caller's span as parent
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_SPAN
    assert server.name == "modelgateway.v1.ModelGateway/Generate"
    attrs = server.attributes or {}
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "aws.bedrock"
    assert attrs["gen_ai.response.model"] == BEDROCK_CLAUDE
    assert attrs["gen_ai.usage.input_tokens"] == response.usage.input_tokens
    assert attrs["gen_ai.usage.output_tokens"] == response.usage.output_tokens
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gateway.fallback.reason"] == "PROVIDER_OVERLOADED"
    assert attrs["gateway.cost_usd"] == pytest.approx(response.usage.cost_usd) and response.usage.cost_usd > 0
    # one child span per provider attempt, in order, inside the server span
    first, second = children
    assert all(c.parent is not None and c.parent.span_id == server.context.span_id for c in children)
    assert all(c.context.trace_id == server.context.trace_id for c in children)
    assert (first.attributes or {})["gen_ai.provider.name"] == "anthropic"
    assert (first.attributes or {})["error.type"] == "PROVIDER_OVERLOADED"
    assert first.status.status_code == StatusCode.ERROR
    second_attrs = second.attributes or {}
    assert second_attrs["gen_ai.provider.name"] == "aws.bedrock"
    assert second_attrs["gen_ai.request.model"] == BEDROCK_CLAUDE
    assert second_attrs["gateway.fallback.reason"] == "PROVIDER_OVERLOADED"
    assert second_attrs["gen_ai.usage.output_tokens"] == response.usage.output_tokens
    assert server.start_time <= first.start_time <= first.end_time <= second.start_time  # type: ignore[operator]
    assert second.end_time <= server.end_time  # type: ignore[operator]
    # no prompt or completion text anywhere
    texts = [str(v) for s in finished for k, v in (s.attributes or {}).items()
             if not isinstance(v, int | float) and k != "gateway.request_id"]  # a random id may hold "100"
    assert not any("25 + 75" in t or "100" in t for t in texts), texts
    assert not any(k.endswith("messages") for s in finished for k in (s.attributes or {}))


async def test_failed_stream_and_content_option(spans) -> None:
    provider, exporter = spans
    config = {**mock_config(), "observability": {"trace_content": True}, "health_check": {"enabled": False},
              "providers": {"mock": {"type": "mock", "fail_with": "overloaded", "fail_times": 1, "max_retries": 0}}}
    app, channel, stub = await start(config, provider)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Generate(ask(), timeout=10)
        events = [e async for e in stub.GenerateStream(ask(SECRET_PROMPT), timeout=10)]
    finally:
        await channel.close()
        await app.stop(grace=0)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    servers = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    error, stream = servers
    assert error.parent is None  # no traceparent: a new trace
    assert error.status.status_code == StatusCode.ERROR and (error.attributes or {})["error.type"] == "UNAVAILABLE"
    attrs = stream.attributes or {}
    assert stream.name == "modelgateway.v1.ModelGateway/GenerateStream"
    assert attrs["gateway.time_to_first_token_ms"] >= 0
    # trace_content: true records the text
    assert SECRET_PROMPT in attrs["gen_ai.input.messages"]
    text = "".join(e.delta.text for e in events if e.HasField("delta"))
    assert json.loads(attrs["gen_ai.output.messages"])[0]["parts"][0]["content"] == text


async def test_client_injects_the_current_trace(spans) -> None:
    provider, exporter = spans
    app, channel, _ = await start(mock_config(), provider)
    orchestrator = TracerProvider()  # the orchestrator's own tracing (not exported here)
    try:
        async with GatewayClient(f"127.0.0.1:{app.port}") as client:
            with orchestrator.get_tracer("orchestrator").start_as_current_span("plan") as plan:
                result = await client.generate("What is 25 + 75?")
            outside = await client.generate("What is 25 + 75?")
    finally:
        await channel.close()
        await app.stop(grace=0)
    assert result.content == outside.content == "100"
    first, second = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert first.context.trace_id == plan.get_span_context().trace_id
    assert first.parent is not None and first.parent.span_id == plan.get_span_context().span_id
    assert second.parent is None and second.context.trace_id != plan.get_span_context().trace_id


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A collector stand-in: keeps what it receives and signals each export."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.received = asyncio.Event()

    async def Export(self, request: trace_service_pb2.ExportTraceServiceRequest,
                     context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        out = []
        for request in self.requests:
            for rs in request.resource_spans:
                resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out


async def test_real_otlp_receiver_gets_the_continued_trace(tmp_path: Path) -> None:
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    otlp_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps(mock_config(
        providers={"mock": {"type": "mock", "fail_with": "overloaded", "fail_times": 1, "max_retries": 0},
                   "backup": {"type": "mock"}},
        fallback={"enabled": True, "fallback_order": ["mock", "backup"]},
        health_check={"enabled": False})))
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}", "OTEL_SERVICE_NAME": "gateway-under-test",
           "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
    try:
        async with gateway_process(config, env=env) as gateway:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                response = await pb_grpc.ModelGatewayStub(channel).Generate(
                    ask(), metadata=(("traceparent", TRACEPARENT),), timeout=10)
            assert response.provider == "backup"
            async with asyncio.timeout(30):
                while len(collector.spans()) < 3:
                    collector.received.clear()
                    await collector.received.wait()
    finally:
        await server.stop(0)
    got = collector.spans()
    assert {resource["service.name"] for resource, _ in got} == {"gateway-under-test"}
    assert {span.trace_id.hex() for _, span in got} == {TRACE_ID}
    (root,) = [span for _, span in got if span.parent_span_id.hex() == PARENT_SPAN]
    assert root.kind == root.SPAN_KIND_SERVER
    attempts = [span for _, span in got if span.parent_span_id == root.span_id]
    assert len(attempts) == 2
    by_provider = {next(kv.value.string_value for kv in s.attributes if kv.key == "gateway.provider"): s
                   for s in attempts}
    assert set(by_provider) == {"mock", "backup"}
    fallback = {kv.key: kv.value.string_value for kv in by_provider["backup"].attributes}
    assert fallback["gateway.fallback.reason"] == "PROVIDER_OVERLOADED"


def test_tracing_is_off_unless_configured() -> None:
    assert not tracing_configured({})
    assert not tracing_configured({"OTEL_SERVICE_NAME": "x"})
    assert tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert tracing_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"})
    assert not tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_SDK_DISABLED": "true"})
    assert not tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_TRACES_EXPORTER": "none"})


async def test_no_tracer_without_otel_variables(gateway_factory) -> None:
    app = await gateway_factory(mock_config())
    assert app.tracer is None


async def test_gatewayctl_verbose_prints_the_trace_id(spans) -> None:
    provider, exporter = spans
    app, channel, _ = await start(mock_config(), provider)
    out, err = io.StringIO(), io.StringIO()
    try:
        code = await asyncio.to_thread(cli.main, ["-v", "--target", f"127.0.0.1:{app.port}", "generate", "hi"],
                                       stdout=out, stderr=err)
    finally:
        await channel.close()
        await app.stop(grace=0)
    assert code == 0
    match = re.search(r"-- trace_id=([0-9a-f]{32})", err.getvalue())
    assert match, err.getvalue()
    (server,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert format(server.context.trace_id, "032x") == match.group(1)


async def test_client_stats_as_opentelemetry_metrics(gateway_factory) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from orchestrator_client.telemetry import instrument_stats

    app = await gateway_factory(mock_config(providers={"mock": {"type": "mock", "fail_with": "invalid_request"}}))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    async with GatewayClient(f"127.0.0.1:{app.port}") as client:
        instrument_stats(client.stats, meters, name="reasoner")
        for _ in range(2):
            with pytest.raises(InvalidRequestError):
                await client.generate("What is 25 + 75?")
    data = reader.get_metrics_data()
    assert data is not None
    points = {m.name: (m.data.data_points[0].value, dict(m.data.data_points[0].attributes or {}))
              for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert points["orchestrator_client.requests"] == (2, {"client.name": "reasoner"})
    assert points["orchestrator_client.failures"][0] == 2
    assert points["orchestrator_client.consecutive_failures"][0] == 2
    assert points["orchestrator_client.requests"][0] == client.stats.snapshot().total_requests
    meters.shutdown()
