"""Wiring: providers, router, health monitor, the grpc.aio server with grpc.health.v1 and reflection."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway_server import metrics as metrics_mod
from gateway_server.auth import AuthInterceptor, KeyRing, Scope
from gateway_server.health import HealthMonitor
from gateway_server.limits import Limiter
from gateway_server.metrics import GatewayMetrics, GrpcMetricsInterceptor, MetricsServer, start_metrics_server
from gateway_server.observe import ANONYMOUS, CallObserver
from gateway_server.outlier import Clock
from gateway_server.pricing import PriceTable
from gateway_server.providers import build_providers
from gateway_server.router import Router
from gateway_server.servicer import ModelGatewayServicer
from gateway_server.settings import GatewaySettings
from gateway_server.shedding import LoadShedder
from gateway_server.tls import ServerTls
from gateway_server.tracing import GatewayTracer, tracer_provider_from_env
from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc

log = logging.getLogger("gateway_server")

SERVICE_FULL_NAME = pb.DESCRIPTOR.services_by_name["ModelGateway"].full_name
# gateway_provider_state's states (the names of pb.ProviderStatus, lower case).
PROVIDER_STATES = tuple(v.name.removeprefix("PROVIDER_STATUS_").lower() for v in pb.ProviderStatus.DESCRIPTOR.values
                        if v.number != pb.PROVIDER_STATUS_UNSPECIFIED)
_STATE_REFRESH_S = 5.0  # multiprocess mode: how often a worker writes its provider states


def metric_label_values(settings: GatewaySettings) -> tuple[set[str], set[str]]:
    """(model ids, caller names) that may appear as label values: configured names only."""
    models = set(settings.model_aliases) | set(settings.pricing)
    for alias in settings.model_aliases.values():
        models.update(alias.values())
    for p in settings.providers.values():
        models.add(p.default_model)
        models.update(p.models)
    return models, {ANONYMOUS, *settings.named_api_keys, *(k.name for k in settings.keys)}


class GatewayApp:
    """One running gateway. ``await GatewayApp(settings).start()``; ``await app.stop()``."""

    def __init__(self, settings: GatewaySettings, *, clock: Clock = time.monotonic, reuse_port: bool = False,
                 worker_id: int = 0) -> None:
        """``clock``: outlier ejection's clock (tests pass a controllable one); ``reuse_port``: listen with
        SO_REUSEPORT (one of several worker processes on one port); ``worker_id``: this process's index
        under the supervisor (GetStatus, logs)."""
        self.settings = settings
        self.clock = clock
        self.reuse_port = reuse_port
        self.worker_id = worker_id
        # Read (and checked) before anything starts: a bad certificate is a start-up error.
        self.tls = ServerTls(settings.server.tls) if settings.server.tls is not None else None
        self.shedder = LoadShedder(settings.server.max_concurrent_calls, settings.server.shed_retry_after,
                                   identity=self.tls is not None and self.tls.mutual)
        self.providers = build_providers(settings)
        self.health: HealthMonitor | None = None
        self.router: Router | None = None
        self.servicer: ModelGatewayServicer | None = None
        self.limiter: Limiter | None = None
        self.grpc_health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._stopping = False
        self._serving: bool | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Observability: metrics when a port is set or a supervisor collects them (multiprocess mode);
        # traces when OTEL_* configures them, or a tracer is given (tests: an in-memory exporter).
        self.metrics: GatewayMetrics | None = None
        self.metrics_server: MetricsServer | None = None
        self.tracer: GatewayTracer | None = None
        self._state_task: asyncio.Task[None] | None = None

    def provider_states(self) -> dict[str, str]:
        """Each provider's state for gateway_provider_state ("healthy", "unhealthy", ...), read at scrape time."""
        if self.health is None:
            return {}
        health = self.health
        return {name: pb.ProviderStatus.Name(health.status(name)).removeprefix("PROVIDER_STATUS_").lower()
                for name in health.states}

    def _observability(self, tracer_provider: Any | None) -> CallObserver:
        s = self.settings
        if s.metrics_port or metrics_mod.multiprocess_dir() is not None:
            models, callers = metric_label_values(s)
            self.metrics = GatewayMetrics(models=models, callers=callers, providers=s.providers)
            self.metrics.watch_provider_states(self.provider_states, PROVIDER_STATES)
        if tracer_provider is None:
            tracer_provider = tracer_provider_from_env()
        if tracer_provider is not None:
            self.tracer = GatewayTracer(tracer_provider, {n: p.type for n, p in self.providers.items()},
                                        record_content=s.observability.trace_content)
        return CallObserver(provider_types={n: p.type for n, p in self.providers.items()},
                            prices=PriceTable(s.pricing), metrics=self.metrics, tracer=self.tracer)

    async def _refresh_states(self) -> None:
        while self.metrics is not None:
            self.metrics.refresh_provider_states()
            await asyncio.sleep(_STATE_REFRESH_S)

    async def start(self, *, tracer_provider: Any | None = None) -> GatewayApp:
        """``tracer_provider``: an OpenTelemetry TracerProvider to use instead of the OTEL_* one."""
        s = self.settings
        await asyncio.gather(*(p.start() for p in self.providers.values()))
        # Credentials are known only after the providers' start().
        self.health = HealthMonitor(self.providers, interval=s.health_check.interval,
                                    timeout=s.health_check.timeout, enabled=s.health_check.enabled,
                                    outlier=s.outlier_detection, clock=self.clock)
        self.router = Router(s, self.providers, self.health)
        observer = self._observability(tracer_provider)
        # API keys, scopes and limits (auth.py, limits/): one interceptor checks every RPC.
        keys = KeyRing.from_settings(s)
        scope = Scope(self.router.default_provider, {n: p.default_model for n, p in self.providers.items()})
        self.limiter = Limiter.from_settings(s, keys, scope)
        if self.metrics is not None:
            self.limiter.register_metrics(self.metrics.registry)
            self.shedder.register_metrics(self.metrics.registry)
        self.servicer = ModelGatewayServicer(s, self.providers, self.router, self.health, observer, self.limiter)
        # Requests up to twice the limit reach validation (INVALID_ARGUMENT naming the size); larger
        # ones are refused by the transport itself (RESOURCE_EXHAUSTED).
        max_receive = s.server.max_request_bytes * 2
        self.servicer.worker_id = self.worker_id
        # Order matters: metrics first (refused and shed calls are counted too), then authentication,
        # which decides per call, then load shedding, which caches its per-method wrappers (so it
        # must come after every interceptor that decides per call).
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if self.metrics is not None:
            interceptors.append(GrpcMetricsInterceptor(self.metrics))
        # An open gateway (no API keys) has nothing to check: no interceptor. With none at all, grpc
        # finds each call's handler without running an interceptor chain (a coroutine per interceptor).
        if keys.enabled:
            interceptors.append(AuthInterceptor(keys, scope))
        # No cap and no mTLS identity to record: no shedding interceptor, no per-call cost.
        if self.shedder.capacity or self.shedder.identity:
            interceptors.append(self.shedder)
        server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", max_receive),
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            *server_connection_options(s),
        ])
        pb_grpc.add_ModelGatewayServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.grpc_health, server)
        reflection.enable_server_reflection(
            (SERVICE_FULL_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        try:
            address = f"{s.host}:{s.port}"
            if self.tls is not None:
                self.port = server.add_secure_port(address, self.tls.credentials())
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError:
            await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)
            raise OSError(f"cannot listen on {s.host}:{s.port} (address in use or not available)") from None
        if self.metrics is not None and s.metrics_port and metrics_mod.multiprocess_dir() is None:
            try:
                self.metrics_server = start_metrics_server(s.metrics_port, host=s.metrics_host or s.host,
                                                           registry=self.metrics.registry)
            except OSError:
                await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)
                raise
        await server.start()
        self.server = server
        # Liveness ("") stays SERVING; the ModelGateway service is NOT_SERVING while no provider is usable.
        await self.grpc_health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._update_serving()
        self.health.on_change = self._serving_changed
        self.health.start()
        if self.metrics is not None and metrics_mod.multiprocess_dir() is not None:
            self._state_task = asyncio.get_running_loop().create_task(self._refresh_states(), name="provider-states")
        usable = [n for n, p in self.providers.items() if p.usable]
        log.info("Gateway started with %d provider(s) on %s:%d: usable=%s default=%s fallback=%s tls=%s "
                 "max_concurrent_calls=%s worker=%d pid=%d",
                 len(self.providers), s.host, self.port, ",".join(usable) or "none",
                 self.router.default_provider, ">".join(self.router.fallback_order) or "off",
                 "mtls" if self.tls is not None and self.tls.mutual else "on" if self.tls is not None else "off",
                 s.server.max_concurrent_calls or "unlimited", self.worker_id, os.getpid())
        if self.metrics_server is not None:
            log.info("Metrics on http://%s:%d/metrics", s.metrics_host or s.host, self.metrics_server.port)
        if self.tracer is not None:
            log.info("Tracing on: OTLP/gRPC export to %s", os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                     or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "the given tracer provider")
        return self

    def _serving_changed(self) -> None:
        if self.health is not None and not self._stopping:
            task = asyncio.get_running_loop().create_task(self._update_serving())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _update_serving(self) -> None:
        if self.health is None or self._stopping:
            return
        serving = self.health.any_usable()
        if serving != self._serving:
            self._serving = serving
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            if not serving:
                log.warning("No usable provider: %s is NOT_SERVING in grpc.health.v1", SERVICE_FULL_NAME)
            await self.grpc_health.set(SERVICE_FULL_NAME, status)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace`` seconds."""
        if grace is None:
            grace = self.settings.server.grace_period
        self._stopping = True
        if self.servicer is not None:
            self.servicer.draining = True
        await self.grpc_health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace)
        if self.health is not None:
            await self.health.stop()
        if self.limiter is not None:
            await self.limiter.close()
        await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)
        if self._state_task is not None:
            self._state_task.cancel()
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.close)
            self.metrics_server = None
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)  # flushes the spans still queued
        log.info("Gateway stopped")

    def reload_tls(self) -> bool:
        """SIGHUP: re-read the TLS files for the next handshakes (False: no TLS, or unusable files)."""
        if self.tls is None:
            log.info("SIGHUP: no TLS configured, nothing to reload")
            return False
        return self.tls.reload()

    async def wait_for_termination(self) -> None:
        if self.server is not None:
            await self.server.wait_for_termination()


def server_connection_options(s: GatewaySettings) -> list[tuple[str, Any]]:
    """Connection lifecycle (``server.*``): GOAWAY after max_connection_age so that clients reconnect
    and spread over new replicas, then max_connection_age_grace for calls in flight; server pings on
    idle connections (idle load balancers, dead peers)."""
    c = s.server
    return [
        ("grpc.max_connection_age_ms", int(c.max_connection_age * 1000)),
        ("grpc.max_connection_age_grace_ms", int(c.max_connection_age_grace * 1000)),
        ("grpc.keepalive_time_ms", int(c.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(c.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(c.keepalive_min_client_interval * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
    ]
