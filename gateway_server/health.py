"""Provider health that costs nothing: background probes on an interval (token-free calls),
cached, updated by real traffic outcomes; Health answers from this state without calling anyone.

Outlier ejection (outlier.py) lives beside it: the same outcomes feed it, the router asks it
before each attempt, a successful probe brings an ejected provider back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway_server import policy
from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.outlier import Admission, Clock, EjectionView, OutlierDetector
from gateway_server.providers import Provider
from gateway_server.settings import OutlierDetectionConfig
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
                 enabled: bool = True, outlier: OutlierDetectionConfig | None = None,
                 clock: Clock = time.monotonic) -> None:
        self._providers = providers
        self._interval = interval
        self._timeout = timeout
        self._enabled = enabled
        self._task: asyncio.Task[None] | None = None
        self.outlier = OutlierDetector(providers, outlier or OutlierDetectionConfig(), clock)
        # Called (no arguments) whenever a provider may have become usable or unusable.
        self.on_change: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
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
        self.on_change = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
        log_text = ""
        try:
            async with asyncio.timeout(self._timeout):
                await provider.probe(self._timeout)
        except TimeoutError:
            error = f"timeout: no answer to the health probe within {self._timeout:g}s"
        except ProviderError as exc:
            error = str(exc)
            log_text = exc.log_text()
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
            log.warning("Health probe of provider '%s' failed: %s", provider.name, log_text or error)
            self.record_failure(provider.name, error, latency_ms)
        else:
            self.record_success(provider.name, latency_ms, traffic=False)

    # Real traffic updates the same state (cheap: a few attribute writes).
    def record_success(self, name: str, latency_ms: float, *, traffic: bool = True) -> None:
        state = self.states[name]
        was_blocked = self.outlier.blocked_until(name) is not None
        if traffic:
            self.outlier.record_success(name)
        else:  # a token-free probe answered: brings an ejected provider back
            self.outlier.probe_succeeded(name)
        state.status = pb.PROVIDER_STATUS_HEALTHY
        state.latency_ms = latency_ms
        state.last_error = ""
        state.checked_at = time.time()
        if was_blocked:
            self._changed()

    def record_failure(self, name: str, error: str, latency_ms: float | None) -> None:
        state = self.states[name]
        state.status = pb.PROVIDER_STATUS_UNHEALTHY
        if latency_ms is not None:
            state.latency_ms = latency_ms
        state.last_error = error
        state.checked_at = time.time()

    def record_outcome(self, name: str, error: ProviderError | None, *, counts: bool = True) -> None:
        """Feed outlier ejection with a real call's outcome (after record_success/record_failure).

        ``counts``: False for an outcome that says nothing about the provider (a timeout the caller's
        deadline cut short, say): it only frees the half-open trial.
        """
        if error is None:
            return
        if error.kind is ErrorKind.RATE_LIMITED and error.retry_after:
            self.outlier.cool_down(name, error.retry_after)
            log.warning("Provider '%s' cools down for %.1fs (rate limited, retry-after)", name,
                        min(error.retry_after, self.outlier.cfg.max_ejection_time))
            self._changed()
        elif counts and policy.counts_for_ejection(error.kind):
            if self.outlier.record_failure(name):
                view = self.outlier.state(name)
                log.warning("Provider '%s' EJECTED for %.1fs (ejection %d) after: %s", name,
                            (view.until or 0.0) - self.outlier.clock(), view.ejections, error)
                self._changed()
        else:
            self.outlier.record_neutral(name)

    # ---- outlier ejection, as the router and Health see it ----

    def admit(self, name: str) -> Admission:
        return self.outlier.admit(name)

    def end_trial(self, name: str) -> None:
        self.outlier.end_trial(name)

    def blocked_until(self, name: str) -> float | None:
        return self.outlier.blocked_until(name)

    def state(self, name: str) -> EjectionView:
        """The provider's ejection state (``until`` on the outlier clock): for Health and metrics."""
        return self.outlier.state(name)

    def wall_time(self, monotonic: float) -> float:
        """A time on the outlier clock as wall-clock seconds (for Timestamps)."""
        return time.time() + (monotonic - self.outlier.clock())

    def status(self, name: str) -> pb.ProviderStatus.ValueType:
        """The status shown: EJECTED while ejected or cooling down, else the last check's."""
        if self.outlier.blocked_until(name) is not None and self._providers[name].usable:
            return pb.PROVIDER_STATUS_EJECTED
        return self.states[name].status

    def any_usable(self) -> bool:
        """Whether some provider can take traffic now (usable and not ejected): grpc.health SERVING."""
        return any(p.usable and self.outlier.blocked_until(n) is None for n, p in self._providers.items())

    def _changed(self) -> None:
        if self.on_change is None:
            return
        self.on_change()
        # Ejections end with time, not with an event: look again when the next one ends.
        now = self.outlier.clock()
        ends = [u for n in self._providers if (u := self.outlier.blocked_until(n)) is not None and u > now]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if ends:
            self._timer = loop.call_later(min(ends) - now + 0.01, self._changed)

    def overall(self) -> pb.HealthStatus.ValueType:
        live = [self.status(n) for n, s in self.states.items()
                if s.status not in (pb.PROVIDER_STATUS_DISABLED, pb.PROVIDER_STATUS_UNCONFIGURED)]
        healthy = sum(1 for s in live if s == pb.PROVIDER_STATUS_HEALTHY)
        if live and healthy == len(live):
            return pb.HEALTH_STATUS_HEALTHY
        if healthy:
            return pb.HEALTH_STATUS_DEGRADED
        if any(s == pb.PROVIDER_STATUS_UNKNOWN for s in live) and not any(
            s in (pb.PROVIDER_STATUS_UNHEALTHY, pb.PROVIDER_STATUS_EJECTED) for s in live
        ):
            return pb.HEALTH_STATUS_DEGRADED  # not probed yet
        return pb.HEALTH_STATUS_UNHEALTHY
