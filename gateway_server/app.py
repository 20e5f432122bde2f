"""Wiring: providers, router, health monitor, the grpc.aio server with grpc.health.v1 and reflection."""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway_server.auth import AuthInterceptor, KeyRing, Scope
from gateway_server.health import HealthMonitor
from gateway_server.limits import Limiter
from gateway_server.providers import build_providers
from gateway_server.router import Router
from gateway_server.servicer import ModelGatewayServicer
from gateway_server.settings import GatewaySettings
from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc

log = logging.getLogger("gateway_server")

SERVICE_FULL_NAME = pb.DESCRIPTOR.services_by_name["ModelGateway"].full_name


class GatewayApp:
    """One running gateway. ``await GatewayApp(settings).start()``; ``await app.stop()``."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.providers = build_providers(settings)
        self.health: HealthMonitor | None = None
        self.router: Router | None = None
        self.servicer: ModelGatewayServicer | None = None
        self.limiter: Limiter | None = None
        self.grpc_health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> GatewayApp:
        s = self.settings
        await asyncio.gather(*(p.start() for p in self.providers.values()))
        # Credentials are known only after the providers' start().
        self.health = HealthMonitor(self.providers, interval=s.health_check.interval,
                                    timeout=s.health_check.timeout, enabled=s.health_check.enabled)
        self.router = Router(s, self.providers, self.health)
        # API keys, scopes and limits (auth.py, limits/): one interceptor checks every RPC.
        keys = KeyRing.from_settings(s)
        scope = Scope(self.router.default_provider, {n: p.default_model for n, p in self.providers.items()})
        self.limiter = Limiter.from_settings(s, keys, scope)
        self.servicer = ModelGatewayServicer(s, self.providers, self.router, self.health, self.limiter)
        # Requests up to twice the limit reach validation (INVALID_ARGUMENT naming the size); larger
        # ones are refused by the transport itself (RESOURCE_EXHAUSTED).
        max_receive = s.server.max_request_bytes * 2
        server = grpc.aio.server(interceptors=[AuthInterceptor(keys, scope)], options=[
            ("grpc.max_receive_message_length", max_receive),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ])
        pb_grpc.add_ModelGatewayServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.grpc_health, server)
        reflection.enable_server_reflection(
            (SERVICE_FULL_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        try:
            self.port = server.add_insecure_port(f"{s.host}:{s.port}")
        except RuntimeError:
            await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)
            raise OSError(f"cannot listen on {s.host}:{s.port} (address in use or not available)") from None
        await server.start()
        self.server = server
        for name in ("", SERVICE_FULL_NAME):
            await self.grpc_health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.health.start()
        usable = [n for n, p in self.providers.items() if p.usable]
        log.info("Gateway started with %d provider(s) on %s:%d: usable=%s default=%s fallback=%s",
                 len(self.providers), s.host, self.port, ",".join(usable) or "none",
                 self.router.default_provider, ">".join(self.router.fallback_order) or "off")
        return self

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace`` seconds."""
        if grace is None:
            grace = self.settings.server.grace_period
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
        log.info("Gateway stopped")

    async def wait_for_termination(self) -> None:
        if self.server is not None:
            await self.server.wait_for_termination()
