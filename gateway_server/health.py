"""Provider health that costs nothing: background probes on an interval (token-free calls),
cached, updated by real traffic outcomes; Health answers from this state without calling anyone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from gateway_server.errors import ProviderError
from gateway_server.providers import Provider
from modelgateway.v1 import model_gateway_pb2 as pb

log = logging.getLogger("gateway_server.health")


@dataclass(slots=True)
class ProviderHealthState:
    status: pb.ProviderStatus.ValueType
    latency_ms: float = 0.0
    last_error: str = ""
    checked_at: float = 0.0  # wall-clock seconds


class HealthMonitor:
    def __init__(self, providers: Mapping[str, Provider], *, interval: float, timeout: float,
                 enabled: bool = True) -> None:
        self._providers = providers
        self._interval = interval
        self._timeout = timeout
        self._enabled = enabled
        self._task: asyncio.Task[None] | None = None
        self.states: dict[str, ProviderHealthState] = {}
        for name, provider in providers.items():
            if not provider.enabled:
                status = pb.PROVIDER_STATUS_DISABLED
            elif not provider.configured:
                status = pb.PROVIDER_STATUS_UNCONFIGURED
            else:
                status = pb.PROVIDER_STATUS_UNKNOWN
            self.states[name] = ProviderHealthState(status=status, checked_at=time.time())

    def start(self) -> None:
        if self._enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="health-probes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self._interval)

    async def probe_all(self) -> None:
        usable = [p for p in self._providers.values() if p.usable]
        await asyncio.gather(*(self._probe(p) for p in usable))

    async def _probe(self, provider: Provider) -> None:
        started_at = time.time()
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                await provider.probe(self._timeout)
        except TimeoutError:
            error = f"timeout: no answer to the health probe within {self._timeout:g}s"
        except ProviderError as exc:
            error = str(exc)
        except Exception as exc:  # a probe must never kill the loop
            log.exception("Health probe of provider '%s' crashed", provider.name)
            error = f"probe failed ({type(exc).__name__})"
        else:
            error = ""
        # Real traffic that finished while the probe was out is newer news: keep it.
        if self.states[provider.name].checked_at > started_at:
            return
        latency_ms = (time.perf_counter() - start) * 1000
        if error:
            log.warning("Health probe of provider '%s' failed: %s", provider.name, error)
            self.record_failure(provider.name, error, latency_ms)
        else:
            self.record_success(provider.name, latency_ms)

    # Real traffic updates the same state (cheap: a few attribute writes).
    def record_success(self, name: str, latency_ms: float) -> None:
        state = self.states[name]
        state.status = pb.PROVIDER_STATUS_HEALTHY
        state.latency_ms = latency_ms
        state.last_error = ""
        state.checked_at = time.time()

    def record_failure(self, name: str, error: str, latency_ms: float | None) -> None:
        state = self.states[name]
        state.status = pb.PROVIDER_STATUS_UNHEALTHY
        if latency_ms is not None:
            state.latency_ms = latency_ms
        state.last_error = error
        state.checked_at = time.time()

    def overall(self) -> pb.HealthStatus.ValueType:
        live = [s.status for s in self.states.values()
                if s.status not in (pb.PROVIDER_STATUS_DISABLED, pb.PROVIDER_STATUS_UNCONFIGURED)]
        healthy = sum(1 for s in live if s == pb.PROVIDER_STATUS_HEALTHY)
        if live and healthy == len(live):
            return pb.HEALTH_STATUS_HEALTHY
        if healthy:
            return pb.HEALTH_STATUS_DEGRADED
        if any(s == pb.PROVIDER_STATUS_UNKNOWN for s in live) and not any(
            s == pb.PROVIDER_STATUS_UNHEALTHY for s in live
        ):
            return pb.HEALTH_STATUS_DEGRADED  # not probed yet
        return pb.HEALTH_STATUS_UNHEALTHY
