"""Structured logs: JSON lines (python-json-logger) with the access log's fields and the trace id,
written by a listener thread so the event loop never waits for stderr."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway_server.app import GatewayApp
from gateway_server.logging_setup import configure_logging, stop_logging
from gateway_server.settings import settings_from_mapping
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from tests.conftest import mock_config
from tests.helpers import ask, gateway_process

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
PRICED = {"mock-1": {"input": 2.0, "output": 10.0}}


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    stop_logging()
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_json_access_log_carries_trace_and_cost(root_logging) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    settings = settings_from_mapping(mock_config(pricing=PRICED, named_api_keys={"team-b": "key-b-0123456789"}),
                                     env_file=None)
    app = await GatewayApp(settings).start(tracer_provider=tracer_provider)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            response = await pb_grpc.ModelGatewayStub(channel).Generate(
                ask(), timeout=10, metadata=(("traceparent", TRACEPARENT), ("authorization", "Bearer key-b-0123456789"),
                                             ("x-request-id", "req-json-1")))
    finally:
        await app.stop(grace=0)
        stop_logging()
    lines = json_lines(out.getvalue())
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    (access,) = [line for line in lines if line.get("request_id") == "req-json-1"]
    (server,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert access["trace_id"] == TRACE_ID == format(server.context.trace_id, "032x")
    assert access["span_id"] == format(server.context.span_id, "016x")
    assert access["logger"] == "gateway_server.requests" and access["level"] == "INFO"
    assert (access["caller"], access["provider"], access["model"]) == ("team-b", "mock", "mock-1")
    assert (access["input_tokens"], access["output_tokens"]) == (response.usage.input_tokens,
                                                                 response.usage.output_tokens)
    assert access["cost_usd"] == pytest.approx(response.usage.cost_usd) and response.usage.cost_usd > 0
    assert access["latency_ms"] > 0 and access["attempts"] == "mock:ok"
    assert "key-b-0123456789" not in out.getvalue()


async def test_json_failure_line_and_text_access_line(root_logging) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    config = mock_config(providers={"mock": {"type": "mock", "fail_with": "overloaded", "max_retries": 0}},
                         health_check={"enabled": False})
    app = await GatewayApp(settings_from_mapping(config, env_file=None)).start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.ModelGatewayStub(channel).Generate(
                    ask(), timeout=10, metadata=(("traceparent", TRACEPARENT), ("x-request-id", "req-fail-1")))
    finally:
        await app.stop(grace=0)
        stop_logging()
    (failed,) = [line for line in json_lines(out.getvalue()) if line.get("request_id") == "req-fail-1"]
    # tracing off: the caller's trace id still links the line to the caller's trace
    assert failed["trace_id"] == TRACE_ID and failed["span_id"] == ""
    assert (failed["code"], failed["reason"], failed["attempts"]) == ("UNAVAILABLE", "PROVIDER_OVERLOADED",
                                                                      "mock:error:PROVIDER_OVERLOADED")
    assert failed["level"] == "WARNING" and failed["caller"] == "anonymous"


async def test_json_logs_of_a_real_process(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps(mock_config(pricing=PRICED)))
    async with gateway_process(config, env={"GATEWAY_LOG_FORMAT": "json"}) as gateway:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            response = await pb_grpc.ModelGatewayStub(channel).Generate(
                ask(), timeout=10, metadata=(("traceparent", TRACEPARENT),))
        line = json.loads((await gateway.read_until(r'"Generated response')).string)
    assert line["trace_id"] == TRACE_ID and line["request_id"] == response.request_id
    assert line["cost_usd"] == pytest.approx(response.usage.cost_usd) and response.usage.cost_usd > 0
    assert all(json.loads(raw) for raw in gateway.lines if raw.strip())  # every line is JSON


def test_a_slow_stderr_never_blocks_the_caller(root_logging) -> None:
    """The record goes through a queue; a writer stuck on the stream holds only the listener thread."""
    release = threading.Event()
    written: list[str] = []

    class StuckStream(io.StringIO):
        def write(self, text: str) -> int:
            release.wait(timeout=30)
            written.append(text)
            return len(text)

    configure_logging("INFO", "text", stream=StuckStream())
    log = logging.getLogger("gateway_server.requests")
    started = time.perf_counter()
    for i in range(100):
        log.info("line %d", i)
    elapsed = time.perf_counter() - started
    assert written == []  # the listener is stuck in write...
    assert elapsed < 5  # ...and the callers were not
    release.set()
    stop_logging()
    assert sum("line " in w for w in written) == 100


def test_exceptions_keep_their_traceback_in_json(root_logging) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("gateway_server").exception("failed: %s", "here")
    stop_logging()
    (line,) = json_lines(out.getvalue())
    assert line["message"].startswith("failed: here") and "ValueError: boom" in json.dumps(line)


def test_only_a_well_formed_traceparent_reaches_the_logs() -> None:
    from gateway_server.tracing import traceparent_ids

    assert traceparent_ids(TRACEPARENT) == (TRACE_ID, "b7ad6b7169203331")
    forged = "00-" + "a" * 15 + "\n" + "b" * 16 + "-b7ad6b7169203331-01"
    assert len(forged.split("-")[1]) == 32
    for bad in (forged, "00-" + "0" * 32 + "-b7ad6b7169203331-01", "garbage", "", TRACEPARENT.upper()):
        assert traceparent_ids(bad) == ("", "")
