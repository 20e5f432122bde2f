"""OpenTelemetry for the client: trace context to the gateway, and the call statistics as metrics.

* ``trace_metadata()``: the W3C ``traceparent`` (and ``tracestate``, baggage) of the current
  context, sent with every call, so an orchestrator's trace continues through the gateway. Empty
  when there is no current span (nothing is sent).
* ``new_trace()``: a fresh trace context for one command (``gatewayctl -v`` prints its id).
* ``instrument_stats(stats, meter_provider=None)``: the client's counters (:class:`ClientStats`)
  as OpenTelemetry observable instruments, read when the meter collects (nothing on the call path).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from orchestrator_client.stats import ClientStats

__all__ = ["instrument_stats", "new_trace", "trace_metadata"]


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying the current trace context (the configured propagators; default W3C)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())


def instrument_stats(stats: ClientStats, meter_provider: Any | None = None, *, name: str = "gateway") -> None:
    """Observable OpenTelemetry instruments reading ``stats`` at collection time:

    ``orchestrator_client.requests``, ``.failures``, ``.retries``, ``.attempts``, ``.cancelled``
    (counters) and ``.consecutive_failures`` (a gauge), each with attribute ``client.name``.
    """
    meter = (meter_provider or metrics.get_meter_provider()).get_meter("orchestrator_client")
    attributes = {"client.name": name}

    def reader(field: str) -> Any:
        def callback(options: CallbackOptions) -> list[Observation]:
            return [Observation(getattr(stats.snapshot(), field), attributes)]
        return callback

    for field, description in (("total_requests", "model calls completed"),
                               ("total_failures", "model calls that failed after their retries"),
                               ("total_retries", "retries (attempts after the first)"),
                               ("total_attempts", "attempts in all"),
                               ("total_cancelled", "calls the caller cancelled")):
        meter.create_observable_counter(f"orchestrator_client.{field.removeprefix('total_')}",
                                        callbacks=[reader(field)], unit="{call}", description=description)
    meter.create_observable_gauge("orchestrator_client.consecutive_failures",
                                  callbacks=[reader("consecutive_failures")], unit="{call}",
                                  description="failures in a row since the last success")


@contextlib.contextmanager
def new_trace() -> Iterator[str]:
    """Make a fresh, sampled trace context current (when no span is); yields its trace id (32 hex digits).

    With an OpenTelemetry SDK set up by the application the current span is used as it is. Otherwise
    the context is a non-recording span with random ids: nothing is exported from here, but the
    gateway continues the trace, so its spans can be found by the id printed.
    """
    current = trace.get_current_span().get_span_context()
    if current.is_valid:
        yield format(current.trace_id, "032x")
        return
    ids = SpanContext(trace_id=secrets.randbits(128) or 1, span_id=secrets.randbits(64) or 1, is_remote=False,
                      trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with trace.use_span(NonRecordingSpan(ids)):
        yield format(ids.trace_id, "032x")
