"""The health monitor's state machine, directly: probes, real traffic, and which news is newer."""

from __future__ import annotations

import asyncio

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.health import HealthMonitor
from gateway_server.providers.mock import MockProvider
from gateway_server.settings import MockProviderConfig
from modelgateway.v1 import model_gateway_pb2 as pb


class GatedProvider(MockProvider):
    """A mock whose probe waits for the test's go-ahead, then passes or fails."""

    def __init__(self) -> None:
        super().__init__("gated", MockProviderConfig(type="mock"))
        self.probing = asyncio.Event()
        self.release = asyncio.Event()
        self.fail = False

    async def probe(self, timeout: float) -> None:
        self.probing.set()
        await self.release.wait()
        if self.fail:
            raise ProviderError(ErrorKind.SERVER, "probe says no", status=500)


async def test_a_probe_that_started_before_real_traffic_does_not_overwrite_it() -> None:
    provider = GatedProvider()
    monitor = HealthMonitor({"gated": provider}, interval=3600, timeout=5, enabled=False)
    probe = asyncio.ensure_future(monitor.probe_all())
    await provider.probing.wait()
    monitor.record_failure("gated", "server (HTTP 500): real traffic failed", 12.0)
    provider.release.set()  # the probe passes, but it started before the failure
    await probe
    state = monitor.states["gated"]
    assert state.status == pb.PROVIDER_STATUS_UNHEALTHY
    assert state.last_error == "server (HTTP 500): real traffic failed"
    assert state.latency_ms == 12.0


async def test_probe_results_and_traffic_update_the_state() -> None:
    provider = GatedProvider()
    monitor = HealthMonitor({"gated": provider}, interval=3600, timeout=5, enabled=False)
    assert monitor.states["gated"].status == pb.PROVIDER_STATUS_UNKNOWN
    provider.release.set()
    await monitor.probe_all()
    assert monitor.states["gated"].status == pb.PROVIDER_STATUS_HEALTHY
    assert monitor.overall() == pb.HEALTH_STATUS_HEALTHY
    provider.fail = True
    await monitor.probe_all()
    assert monitor.states["gated"].status == pb.PROVIDER_STATUS_UNHEALTHY
    assert "probe says no" in monitor.states["gated"].last_error
    assert monitor.overall() == pb.HEALTH_STATUS_UNHEALTHY
    monitor.record_failure("gated", "mid-stream failure", None)  # latency unknown: the last one stays
    assert monitor.states["gated"].latency_ms > 0
    monitor.record_success("gated", 3.0)
    assert monitor.states["gated"].status == pb.PROVIDER_STATUS_HEALTHY and monitor.states["gated"].last_error == ""


async def test_a_hung_probe_times_out() -> None:
    provider = GatedProvider()  # never released
    monitor = HealthMonitor({"gated": provider}, interval=3600, timeout=0.2, enabled=False)
    await asyncio.wait_for(monitor.probe_all(), timeout=5)
    assert monitor.states["gated"].status == pb.PROVIDER_STATUS_UNHEALTHY
    assert "timeout" in monitor.states["gated"].last_error
