"""Prometheus metrics: GenAI semantic conventions and gRFC A66 names, Prometheus style.

``GatewayMetrics`` owns the instruments (in its own registry); ``GrpcMetricsInterceptor`` counts
every gRPC call (A66: ``grpc_server_call_started_total``, ``grpc_server_call_duration_seconds``)
and the calls in flight; the servicer records the GenAI and gateway metrics of each model call
through ``GatewayMetrics.record_call`` (see observe.py). ``start_metrics_server`` serves /metrics
on its own port.

Cardinality is bounded: every label value comes from configuration (provider names and types,
configured model ids and aliases, priced models, named API keys) or from the code (status codes,
error reasons, outcomes); a model id that is not configured is recorded as ``other``.

Several worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` is set (by the supervisor, before it
starts the workers), every worker writes its values to files there and does not serve /metrics
itself; the supervisor calls ``start_metrics_server(port, multiprocess_dir=dir)``, whose one
scrape adds up every worker's counts (prometheus-client's multiprocess mode). The supervisor
should call ``prometheus_client.multiprocess.mark_process_dead(pid)`` when a worker exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from modelgateway.v1 import model_gateway_pb2 as pb

__all__ = [
    "MULTIPROC_ENV",
    "OTHER",
    "GatewayMetrics",
    "GrpcMetricsInterceptor",
    "LabelSet",
    "MetricsServer",
    "ProviderStateCollector",
    "multiprocess_dir",
    "start_metrics_server",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"

# GenAI semconv advisory bucket boundaries.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
# gRFC A66 latency buckets (seconds).
GRPC_BUCKETS = (0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006,
                0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25,
                0.3, 0.4, 0.5, 0.65, 0.8, 1, 2, 5, 10, 20, 50, 100)
# Gateway overhead: sub-millisecond to a few.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# gen_ai.provider.name for each provider type (semconv well-known values where one exists).
GENAI_PROVIDER = {"anthropic": "anthropic", "bedrock": "aws.bedrock", "mock": "mock"}

_OUTCOME = {pb.ATTEMPT_OUTCOME_OK: "ok", pb.ATTEMPT_OUTCOME_ERROR: "error", pb.ATTEMPT_OUTCOME_SKIPPED: "skipped"}


def multiprocess_dir() -> str | None:
    """The multiprocess directory of this process (``PROMETHEUS_MULTIPROC_DIR``), if any."""
    return os.environ.get(MULTIPROC_ENV) or None


class LabelSet:
    """A closed set of label values: anything else becomes ``other`` ("" stays "": not given)."""

    __slots__ = ("_known",)

    def __init__(self, known: Iterable[str]) -> None:
        self._known = frozenset(known)

    def __call__(self, value: str) -> str:
        if not value or value in self._known:
            return value
        return OTHER

    def __contains__(self, value: object) -> bool:
        return value in self._known


class ProviderStateCollector(Collector):
    """``gateway_provider_state{provider, state}``: 1 for each provider's current state, read at scrape time.

    ``provider_states`` returns {provider name: state}, e.g. {"anthropic": "healthy", "bedrock": "ejected"};
    ``states`` are every state that can occur, so each provider has one series per state (0 or 1).
    """

    def __init__(self, provider_states: Callable[[], Mapping[str, str]], states: Collection[str]) -> None:
        self._provider_states = provider_states
        self._states = tuple(states)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("gateway_provider_state",
                                   "1 for the state each provider is in (healthy, unhealthy, ejected, ...)",
                                   labels=["provider", "state"])
        current = self._provider_states()
        for name, state in current.items():
            for candidate in (*self._states, *(() if state in self._states else (state,))):
                family.add_metric([name, candidate], 1.0 if candidate == state else 0.0)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class GatewayMetrics:
    """The gateway's instruments, in ``self.registry``."""

    def __init__(self, *, models: Iterable[str], callers: Iterable[str], providers: Iterable[str],
                 registry: CollectorRegistry | None = None) -> None:
        if multiprocess_dir() is not None and values.ValueClass is values.MutexValue:
            # prometheus-client picks its value class at import: a process that imported it before the
            # supervisor set PROMETHEUS_MULTIPROC_DIR still writes to the shared files.
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.model = LabelSet(models)
        self.caller = LabelSet(callers)
        providers = tuple(providers)
        self.provider = LabelSet(providers)
        r = self.registry
        self.request_duration = Histogram(
            "gen_ai_server_request_duration_seconds", "GenAI server request duration (the whole model call)",
            ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model",
             "error_type"], buckets=DURATION_BUCKETS, registry=r)
        self.token_usage = Histogram(
            "gen_ai_client_token_usage", "Tokens used per call, by token type (input, output)",
            ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_response_model", "gen_ai_token_type",
             "caller"], buckets=TOKEN_BUCKETS, registry=r)
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds", "Time to the first content event of a stream",
            ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model"],
            buckets=TTFT_BUCKETS, registry=r)
        self.grpc_started = Counter(
            "grpc_server_call_started", "gRPC calls started (gRFC A66)", ["grpc_method"], registry=r)
        self.grpc_duration = Histogram(
            "grpc_server_call_duration_seconds", "gRPC call duration, start to status (gRFC A66)",
            ["grpc_method", "grpc_status"], buckets=GRPC_BUCKETS, registry=r)
        self.in_flight = Gauge(
            "gateway_server_calls_in_flight", "gRPC calls being served now", ["grpc_method"],
            multiprocess_mode="livesum", registry=r)
        self.attempts = Counter(
            "gateway_provider_attempts", "Provider attempts by outcome (ok, error, skipped) and reason",
            ["provider", "outcome", "reason"], registry=r)
        self.fallbacks = Counter(
            "gateway_fallbacks", "Fallbacks from one provider to the next, by the reason the first failed",
            ["from_provider", "to_provider", "reason"], registry=r)
        self.retries = Counter(
            "gateway_provider_retries", "Same-provider retries", ["provider"], registry=r)
        for name in providers:  # a series per provider from the start: rate() sees the first retry
            self.retries.labels(name)
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Gateway time per call outside the provider calls (for streams: up to the first event)",
            ["gen_ai_operation_name"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.cost = Counter(
            "gateway_cost_usd", "List-price cost of the calls in US dollars (config: pricing)",
            ["caller", "provider", "gen_ai_response_model"], registry=r)
        self.priced = Counter(
            "gateway_priced_calls", "Answered calls by whether the model had a price (priced=false: cost 0)",
            ["provider", "gen_ai_response_model", "priced"], registry=r)
        # Multiprocess mode: the per-worker fallback for the scrape-time collector (see watch_provider_states).
        self._state_gauge: Gauge | None = None
        # Each labelled child once: .labels() costs a few microseconds per call (validation, a lock); the
        # label values are bounded (LabelSet), so is this cache.
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached."""
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def watch_provider_states(self, provider_states: Callable[[], Mapping[str, str]], states: Collection[str]) -> None:
        """Expose ``gateway_provider_state``. One process: read at scrape time. Several: see refresh_provider_states."""
        if multiprocess_dir() is None:
            self.registry.register(ProviderStateCollector(provider_states, states))
            return
        self._state_gauge = Gauge("gateway_provider_state", "1 for the state each provider is in",
                                  ["provider", "state"], multiprocess_mode="mostrecent", registry=self.registry)
        self._state_source = (provider_states, tuple(states))
        self.refresh_provider_states()

    def refresh_provider_states(self) -> None:
        """Multiprocess mode: write the current states to the shared files (called on a timer and after calls)."""
        if self._state_gauge is None:
            return
        provider_states, states = self._state_source
        for name, state in provider_states().items():
            for candidate in (*states, *(() if state in states else (state,))):
                self._state_gauge.labels(name, candidate).set(1.0 if candidate == state else 0.0)

    def record_attempts(self, attempts: Iterable[pb.Attempt]) -> None:
        previous: pb.Attempt | None = None
        provider, child = self.provider, self.child
        for a in attempts:
            name = provider(a.provider)
            child(self.attempts, name, _OUTCOME.get(a.outcome, "unspecified"), a.reason).inc()
            if a.retries:
                child(self.retries, name).inc(a.retries)
            if a.outcome == pb.ATTEMPT_OUTCOME_SKIPPED:
                continue
            if previous is not None and previous.outcome == pb.ATTEMPT_OUTCOME_ERROR:
                child(self.fallbacks, provider(previous.provider), name, previous.reason).inc()
            previous = a


class MetricsServer:
    """The /metrics HTTP server (a daemon thread); ``close()`` stops it."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.port: int = httpd.server_port

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(port: int, *, multiprocess_dir: str | None = None, host: str = "0.0.0.0",
                         registry: CollectorRegistry | None = None) -> MetricsServer:
    """Serve /metrics on ``host:port`` (0: any free port, see ``.port``) in a daemon thread.

    ``multiprocess_dir``: serve the sum of every process writing there (prometheus-client's
    multiprocess mode; for the supervisor of several workers), else ``registry``.
    Raises OSError when the port cannot be bound.
    """
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    elif registry is None:
        raise ValueError("start_metrics_server: a registry or a multiprocess_dir is needed")
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port} ({exc.strerror or exc})") from None
    return MetricsServer(httpd, thread)


def _method_name(full: str) -> str:
    return full[1:] if full.startswith("/") else full


class GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """gRFC A66 server metrics for every registered method, and the calls in flight.

    ``grpc_status`` is the status the call ended with: the code an abort set, OK after a normal
    return, CANCELLED when the caller went away, UNKNOWN for an escaped exception.
    """

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # method -> (the handler, its wrapper)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(_method_name(method), handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler.unary_unary is None and handler.unary_stream is None:
            return handler  # client-streaming methods (reflection's): not measured
        m = self._metrics
        started_child = m.grpc_started.labels(method)
        in_flight = m.in_flight.labels(method)
        duration = m.grpc_duration
        ok_child = duration.labels(method, "OK")

        def finish(status: str, start: float) -> None:
            elapsed = time.perf_counter() - start
            in_flight.dec()
            if status == "OK":
                ok_child.observe(elapsed)
            else:
                duration.labels(method, status).observe(elapsed)

        def status_of(context: Any) -> str:
            code = context.code()
            if code is None:
                return "OK"
            return code.name if isinstance(code, grpc.StatusCode) else str(code)

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                start = time.perf_counter()
                started_child.inc()
                in_flight.inc()
                status = "UNKNOWN"
                try:
                    response = await inner_uu(request, context)
                    status = status_of(context)
                    return response
                except grpc.aio.AbortError:
                    status = status_of(context)
                    raise
                except BaseException as exc:
                    status = "CANCELLED" if _is_cancel(exc) else "UNKNOWN"
                    raise
                finally:
                    finish(status, start)

            new = grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer,
                                                      handler.response_serializer)
        elif handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> Any:
                start = time.perf_counter()
                started_child.inc()
                in_flight.inc()
                status = "UNKNOWN"
                try:
                    stream = inner_us(request, context)
                    if inspect.isasyncgen(stream):
                        # aclosing: a caller that goes away closes the servicer's stream here, at once.
                        async with contextlib.aclosing(stream) as items:
                            async for item in items:
                                yield item
                    else:  # a coroutine writing with context.write() (grpc.health.v1's Watch)
                        await stream
                    status = status_of(context)
                except grpc.aio.AbortError:
                    status = status_of(context)
                    raise
                except BaseException as exc:
                    status = "CANCELLED" if _is_cancel(exc) else "UNKNOWN"
                    raise
                finally:
                    finish(status, start)

            new = grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer,
                                                       handler.response_serializer)
        else:  # client-streaming methods (reflection's): not measured
            return handler
        return new


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError | GeneratorExit)
