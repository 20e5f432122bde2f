"""OpenTelemetry traces: off unless the standard OTEL_* variables configure an OTLP exporter.

On: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, and neither
``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none``. The SDK reads the rest itself:
``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (default service name "model-gateway"),
``OTEL_TRACES_SAMPLER`` / ``_ARG`` (default parentbased_always_on), ``OTEL_EXPORTER_OTLP_*``
(headers, timeout, certificates; the OTLP/gRPC exporter).

Each model call is one SERVER span continuing the caller's W3C ``traceparent`` (gRPC metadata),
with one CLIENT child span per provider attempt. The spans are recorded when the call ends, from
what the router returns (the attempts and their latencies), with explicit start and end times: the
router is not instrumented, and nothing is attached to the event loop's context.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from gateway_server.metrics import GENAI_PROVIDER
from modelgateway.v1 import model_gateway_pb2 as pb

log = logging.getLogger("gateway_server.tracing")

__all__ = ["GatewayTracer", "SpanData", "tracer_provider_from_env", "tracing_configured"]

DEFAULT_SERVICE_NAME = "model-gateway"
_OUTCOME = {pb.ATTEMPT_OUTCOME_OK: "ok", pb.ATTEMPT_OUTCOME_ERROR: "error", pb.ATTEMPT_OUTCOME_SKIPPED: "skipped"}


def tracing_configured(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def tracer_provider_from_env(environ: Mapping[str, str] = os.environ) -> Any | None:
    """An SDK TracerProvider exporting over OTLP/gRPC in batches, or None when tracing is not configured."""
    if not tracing_configured(environ):
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol != "grpc":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: only grpc is supported; exporting over OTLP/gRPC", protocol)
    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class SpanData:
    """What one finished model call contributes to its spans (filled by the servicer's observer)."""

    __slots__ = ("attributes", "error_code", "error_message", "input_messages", "output_text")

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}
        self.error_code = ""
        self.error_message = ""
        self.input_messages: list[dict[str, str]] | None = None
        self.output_text: str | None = None


class GatewayTracer:
    """Makes the spans of a model call. ``provider_types``: configured name -> provider type."""

    def __init__(self, tracer_provider: Any, provider_types: Mapping[str, str], *, record_content: bool = False
                 ) -> None:
        self._provider = tracer_provider
        self._tracer: Tracer = tracer_provider.get_tracer("gateway_server")
        self._genai_provider = {name: GENAI_PROVIDER.get(t, t) for name, t in provider_types.items()}
        self.record_content = record_content

    def shutdown(self, flush_timeout_ms: int = 2000) -> None:
        """Export what is queued (bounded: an unreachable collector must not hold the exit), then stop."""
        flush = getattr(self._provider, "force_flush", None)
        if flush is not None:
            flush(flush_timeout_ms)
        shutdown = getattr(self._provider, "shutdown", None)
        if shutdown is not None:
            shutdown()

    @staticmethod
    def extract(traceparent: str, tracestate: str) -> Context | None:
        """The caller's context from its W3C headers (the configured propagators), None without any."""
        if not traceparent:
            return None
        carrier = {"traceparent": traceparent}
        if tracestate:
            carrier["tracestate"] = tracestate
        return propagate.extract(carrier)

    def record(self, *, method: str, parent: Context | None, start_ns: int, routing_ns: int, end_ns: int,
               attempts: Sequence[pb.Attempt], operation: str, request_model: str, data: SpanData) -> Span:
        """The server span of one call and a child span per provider attempt; returns the (ended) server span."""
        service, _, rpc_method = method.rpartition("/")
        attributes: dict[str, Any] = {
            "rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc_method,
            "gen_ai.operation.name": operation,
        }
        if request_model:
            attributes["gen_ai.request.model"] = request_model
        attributes.update(data.attributes)
        if self.record_content:
            if data.input_messages is not None:
                attributes["gen_ai.input.messages"] = json.dumps(data.input_messages, ensure_ascii=False)
            if data.output_text is not None:
                attributes["gen_ai.output.messages"] = json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": data.output_text}]}],
                    ensure_ascii=False)
        server = self._tracer.start_span(method, context=parent, kind=SpanKind.SERVER, start_time=start_ns,
                                         attributes=attributes)
        if data.error_code:
            server.set_status(Status(StatusCode.ERROR, data.error_code))
            server.set_attribute("error.type", data.error_code)
        if attempts and server.is_recording():
            self._attempt_spans(server, attempts, routing_ns, end_ns, operation, data)
        server.end(end_time=end_ns)
        return server

    def _attempt_spans(self, server: Span, attempts: Sequence[pb.Attempt], routing_ns: int, end_ns: int,
                       operation: str, data: SpanData) -> None:
        parent = trace.set_span_in_context(server)
        at = routing_ns
        fallback_reason = ""
        last = len(attempts) - 1
        for i, a in enumerate(attempts):
            duration = int(a.latency_ms * 1e6)
            start, stop = at, min(at + duration, end_ns)
            at = stop
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": self._genai_provider.get(a.provider, a.provider),
                "gateway.provider": a.provider,
                "gateway.attempt.index": i,
                "gateway.attempt.outcome": _OUTCOME.get(a.outcome, "unspecified"),
                "gateway.attempt.retries": a.retries,
            }
            if a.model:
                attributes["gen_ai.request.model"] = a.model
            if fallback_reason:
                attributes["gateway.fallback.reason"] = fallback_reason
            if a.outcome == pb.ATTEMPT_OUTCOME_OK and i == last:
                for key in ("gen_ai.response.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
                            "gen_ai.response.finish_reasons"):
                    if key in data.attributes:
                        attributes[key] = data.attributes[key]
            elif a.outcome == pb.ATTEMPT_OUTCOME_ERROR:
                attributes["error.type"] = a.reason or a.code
            elif a.outcome == pb.ATTEMPT_OUTCOME_SKIPPED:
                attributes["gateway.skip.reason"] = a.reason
            span = self._tracer.start_span(f"{operation} {a.model}".rstrip(), context=parent, kind=SpanKind.CLIENT,
                                           start_time=start, attributes=attributes)
            if a.outcome == pb.ATTEMPT_OUTCOME_ERROR:
                span.set_status(Status(StatusCode.ERROR, a.code))
                fallback_reason = a.reason or a.code
            span.end(end_time=stop)


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def traceparent_ids(traceparent: str) -> tuple[str, str]:
    """(trace id, parent span id) of a well-formed W3C traceparent, else ("", ""): a caller's bytes
    reach the logs only as 32 + 16 lower-case hex digits."""
    match = _TRACEPARENT.match(traceparent)
    if match is None or match.group(1) == "0" * 32:
        return "", ""
    return match.group(1), match.group(2)
