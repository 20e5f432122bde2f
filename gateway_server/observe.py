"""One model call seen whole: the servicer fills a ``CallRecord`` and hands it to ``CallObserver.finish``,
which records the metrics, the trace spans and the cost; ``log_fields`` gives the access log's fields.

Everything is derived from what the router returns (``RouteResult.attempts``, ``GatewayError.attempts``,
``StreamStarted.first_token_ms``): the router itself is not instrumented.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from gateway_server.metrics import GENAI_PROVIDER, GatewayMetrics
from gateway_server.pricing import PriceTable, TokenUsage
from gateway_server.tracing import GatewayTracer, SpanData, traceparent_ids
from modelgateway.v1 import model_gateway_pb2 as pb

__all__ = ["ANONYMOUS", "OP_CHAT", "CallObserver", "CallRecord", "attempts_summary"]

ANONYMOUS = "anonymous"
OP_CHAT = "chat"  # gen_ai.operation.name of Generate and GenerateStream
_OUTCOME = {pb.ATTEMPT_OUTCOME_OK: "ok", pb.ATTEMPT_OUTCOME_ERROR: "error", pb.ATTEMPT_OUTCOME_SKIPPED: "skipped"}
_FINISH = {v.number: v.name.removeprefix("FINISH_REASON_").lower() for v in pb.FinishReason.DESCRIPTOR.values}


class CallRecord:
    """What the servicer learns about one model call, filled as it goes."""

    __slots__ = (
        "attempts",
        "caller",
        "cost_usd",
        "error_code",
        "finish_reason",
        "finished",
        "first_token_s",
        "head_s",
        "input_messages",
        "input_tokens",
        "method",
        "output_text",
        "output_tokens",
        "priced",
        "provider",
        "request_id",
        "request_model",
        "response_model",
        "routing_ns",
        "span_id",
        "start_ns",
        "start_perf",
        "trace_id",
        "traceparent",
        "tracestate",
    )

    def __init__(self, method: str, request_id: str, request_model: str, traceparent: str, tracestate: str) -> None:
        self.method = method
        self.request_id = request_id
        self.request_model = request_model
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.start_perf = time.perf_counter()
        self.start_ns = time.time_ns()
        self.routing_ns = self.start_ns
        self.caller = ANONYMOUS
        self.provider = ""
        self.response_model = ""
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.priced = False
        self.finish_reason = 0
        self.attempts: Sequence[pb.Attempt] = ()
        self.first_token_s: float | None = None
        self.head_s: float | None = None  # streams: when the start event was ready (gateway overhead)
        self.error_code = ""
        self.input_messages: list[dict[str, str]] | None = None
        self.output_text: str | None = None
        self.trace_id = ""
        self.span_id = ""
        self.finished = False

    def routing(self) -> None:
        """The router is called now (the attempts' spans start here)."""
        self.routing_ns = time.time_ns()

    def failed(self, code: str, attempts: Sequence[pb.Attempt]) -> None:
        self.error_code = code
        self.attempts = attempts
        for a in reversed(attempts):
            if a.outcome != pb.ATTEMPT_OUTCOME_SKIPPED:
                self.provider = a.provider
                break


def attempts_summary(attempts: Sequence[pb.Attempt]) -> str:
    """"anthropic:error:PROVIDER_OVERLOADED>bedrock:ok" (retries as "+2")."""
    parts = []
    for a in attempts:
        text = f"{a.provider}:{_OUTCOME.get(a.outcome, '?')}"
        if a.reason:
            text += f":{a.reason}"
        if a.retries:
            text += f"+{a.retries}"
        parts.append(text)
    return ">".join(parts)


class CallObserver:
    """Metrics (optional), traces (optional) and prices for model calls."""

    def __init__(self, *, provider_types: Mapping[str, str], prices: PriceTable, metrics: GatewayMetrics | None,
                 tracer: GatewayTracer | None) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self.prices = prices
        self._genai_provider = {name: GENAI_PROVIDER.get(t, t) for name, t in provider_types.items()}
        self.record_content = tracer is not None and tracer.record_content

    def start(self, method: str, request_id: str, request_model: str, traceparent: str = "",
              tracestate: str = "") -> CallRecord:
        return CallRecord(method, request_id, request_model, traceparent, tracestate)

    def price(self, record: CallRecord, model: str, input_tokens: int, output_tokens: int, *,
              cache_read: int = 0, cache_write: int = 0) -> float:
        """Set the record's answer model, tokens and cost; returns the cost (0.0 when the model has no price).
        ``cache_read`` / ``cache_write``: prompt-cache tokens, priced at the table's cache prices."""
        record.response_model = model
        record.input_tokens = input_tokens
        record.output_tokens = output_tokens
        record.cost_usd, record.priced = self.prices.cost_usd(
            model, TokenUsage(input_tokens, output_tokens, cache_read, cache_write))
        return record.cost_usd

    def finish(self, record: CallRecord) -> float:
        """Record the ended call; returns its latency in seconds."""
        elapsed = time.perf_counter() - record.start_perf
        if record.finished:  # e.g. a stream cancelled after its end event: recorded once
            return elapsed
        record.finished = True
        if self.metrics is not None:
            self._metrics(self.metrics, record, elapsed)
        if self.tracer is not None:
            self._trace(self.tracer, record, record.start_ns + int(elapsed * 1e9))
        elif record.traceparent:
            record.trace_id = traceparent_ids(record.traceparent)[0]
        return elapsed

    def _metrics(self, m: GatewayMetrics, r: CallRecord, elapsed: float) -> None:
        child = m.child
        genai_provider = self._genai_provider.get(r.provider, "")
        request_model = m.model(r.request_model)
        response_model = m.model(r.response_model)
        child(m.request_duration, OP_CHAT, genai_provider, request_model, response_model,
              r.error_code).observe(elapsed)
        if r.attempts:
            m.record_attempts(r.attempts)
            in_providers = sum(a.latency_ms for a in r.attempts) / 1000
            upto = elapsed if r.head_s is None else r.head_s
            child(m.overhead, OP_CHAT).observe(max(upto - in_providers, 0.0))
        if r.error_code:
            return
        provider = m.provider(r.provider)
        caller = m.caller(r.caller)
        child(m.token_usage, OP_CHAT, genai_provider, response_model, "input", caller).observe(r.input_tokens)
        child(m.token_usage, OP_CHAT, genai_provider, response_model, "output", caller).observe(r.output_tokens)
        if r.first_token_s is not None:
            child(m.ttft, OP_CHAT, genai_provider, request_model, response_model).observe(r.first_token_s)
        if r.priced:
            child(m.cost, caller, provider, response_model).inc(r.cost_usd)
        child(m.priced, provider, response_model, "true" if r.priced else "false").inc()

    def _trace(self, tracer: GatewayTracer, r: CallRecord, end_ns: int) -> None:
        data = SpanData()
        attrs = data.attributes
        attrs["gateway.request_id"] = r.request_id
        attrs["gateway.caller"] = r.caller
        if r.provider:
            attrs["gen_ai.provider.name"] = self._genai_provider.get(r.provider, r.provider)
            attrs["gateway.provider"] = r.provider
        if r.attempts:
            attrs["gateway.attempts"] = len(r.attempts)
            failed = [a for a in r.attempts if a.outcome == pb.ATTEMPT_OUTCOME_ERROR]
            if failed and not r.error_code:
                attrs["gateway.fallback.reason"] = failed[-1].reason or failed[-1].code
        if not r.error_code:
            attrs["gen_ai.response.model"] = r.response_model
            attrs["gen_ai.usage.input_tokens"] = r.input_tokens
            attrs["gen_ai.usage.output_tokens"] = r.output_tokens
            attrs["gen_ai.response.finish_reasons"] = (_FINISH.get(r.finish_reason, "unspecified"),)
            attrs["gateway.cost_usd"] = r.cost_usd
            if r.first_token_s is not None:
                attrs["gateway.time_to_first_token_ms"] = r.first_token_s * 1000
        data.error_code = r.error_code
        data.input_messages = r.input_messages
        data.output_text = r.output_text
        parent = tracer.extract(r.traceparent, r.tracestate)
        span = tracer.record(method=r.method, parent=parent, start_ns=r.start_ns, routing_ns=r.routing_ns,
                             end_ns=end_ns, attempts=r.attempts, operation=OP_CHAT,
                             request_model=r.request_model, data=data)
        ctx = span.get_span_context()
        if ctx.is_valid:
            r.trace_id = format(ctx.trace_id, "032x")
            r.span_id = format(ctx.span_id, "016x")
        elif r.traceparent:
            r.trace_id = traceparent_ids(r.traceparent)[0]

    @staticmethod
    def log_fields(r: CallRecord, latency_ms: float) -> dict[str, Any]:
        """The access log's structured fields (JSON logs carry them; the text line has its own)."""
        return {"request_id": r.request_id, "trace_id": r.trace_id, "span_id": r.span_id, "caller": r.caller,
                "provider": r.provider, "model": r.response_model, "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens, "cost_usd": r.cost_usd, "latency_ms": round(latency_ms, 3),
                "attempts": attempts_summary(r.attempts)}
