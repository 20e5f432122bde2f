"""``--workers 2``: two server processes on one port under the supervisor (gateway_server.workers).

Both answer over separate connections (GetStatus says which worker and pid), a killed worker is
replaced in its slot, SIGTERM drains both with calls in flight, and workers that keep dying make the
supervisor give up with exit status 1."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections import deque
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from gateway_server import workers as workers_mod
from gateway_server.cli import main as gateway_main
from gateway_server.workers import crash_looping, restart_delay, worker_cpu
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from orchestrator_client import GatewayClient

from .conftest import mock_config
from .helpers import GatewayProcess, ask, gateway_process

WORKERS_ENV = {"GATEWAY_WORKERS": "2"}


def write_config(tmp_path: Path, **overrides: Any) -> Path:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(mock_config(**overrides)))
    return config


async def started_workers(gw: GatewayProcess, count: int = 2) -> dict[int, int]:
    """Read the log until ``count`` workers said "Gateway started": {worker id: pid}."""
    seen: dict[int, int] = {}
    for line in gw.lines:
        if m := re.search(r"Gateway started .* worker=(\d+) pid=(\d+)", line):
            seen[int(m.group(1))] = int(m.group(2))
    while len(seen) < count:
        m = await gw.read_until(r"Gateway started .* worker=(\d+) pid=(\d+)")
        seen[int(m.group(1))] = int(m.group(2))
    return seen


async def connect_to(port: int, want: dict[int, int], *, attempts: int = 60) -> dict[int, GatewayClient]:
    """One client (its own connection) per wanted (worker id, pid), opened until each has answered.

    The kernel spreads new connections over the SO_REUSEPORT sockets by a hash of the addresses:
    60 connections all reaching one of two workers would be a 2**-59 event."""
    found: dict[int, GatewayClient] = {}
    try:
        for _ in range(attempts):
            c = GatewayClient(f"127.0.0.1:{port}", max_retries=1, timeout=30)
            status = await c.status(timeout=10)
            if want.get(status.worker_id) == status.worker_pid and status.worker_id not in found:
                found[status.worker_id] = c
                if len(found) == len(want):
                    return found
            else:
                await c.close()
    except BaseException:
        for c in found.values():
            await c.close()
        raise
    for c in found.values():
        await c.close()
    raise AssertionError(f"after {attempts} connections only workers {sorted(found)} answered, wanted {want}")


async def wait_exit(gw: GatewayProcess, timeout: float = 60) -> int:
    """Read the rest of the log (so nothing blocks on a full pipe) and return the exit status."""
    assert gw.proc.stderr is not None
    async with asyncio.timeout(timeout):
        async for raw in gw.proc.stderr:
            gw.lines.append(raw.decode())
        return await gw.proc.wait()


def test_workers_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    for bad in ("0", "many", "257"):
        monkeypatch.setenv("GATEWAY_WORKERS", bad)
        assert gateway_main(["--config", str(config), "--check-config"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "workers: must be 'auto' or a number of processes from 1 to 256" in err[0], err
    monkeypatch.setenv("GATEWAY_WORKERS", "auto")
    from gateway_server.settings import load_settings, usable_cpus

    assert load_settings(config).worker_count == usable_cpus() <= len(os.sched_getaffinity(0))
    monkeypatch.delenv("GATEWAY_WORKERS")
    assert load_settings(config).worker_count == 1
    assert load_settings(config, workers="3").worker_count == 3


def test_auto_workers_follow_the_container_cpu_limit() -> None:
    from gateway_server.settings import cgroup_cpu_limit

    assert cgroup_cpu_limit("200000 100000\n") == 2
    assert cgroup_cpu_limit("150000 100000") == 2  # 1.5 CPUs: 2 workers share them
    assert cgroup_cpu_limit("50000 100000") == 1
    assert cgroup_cpu_limit("max 100000") is None
    assert cgroup_cpu_limit("") is None and cgroup_cpu_limit("x y") is None


def test_restart_policy() -> None:
    assert [restart_delay(n) for n in (1, 2, 3, 6, 10)] == [0.5, 1.0, 2.0, 10.0, 10.0]
    deaths: deque[float] = deque([0.0, 50.0, 100.0, 101.0])
    assert not crash_looping(deaths, 101.0, limit=3, window=60.0)
    assert list(deaths) == [50.0, 100.0, 101.0]  # 0.0 left the window
    deaths.append(102.0)
    assert crash_looping(deaths, 102.0, limit=3, window=60.0)


def test_pinned_workers_take_the_allowed_cpus_in_turn() -> None:
    assert [worker_cpu(slot, {5, 2}) for slot in range(3)] == [2, 5, 2]
    assert worker_cpu(1, {0, 1, 2, 3}) == 1
    assert worker_cpu(0, set()) is None


def test_the_supervisor_preloads_the_provider_modules_and_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from gateway_server.settings import settings_from_mapping

    providers = {"mock": {"type": "mock"}, "b": {"type": "bedrock", "model_id": "m"}}
    settings = settings_from_mapping(mock_config(providers=providers), env_file=None)
    # Threads this test's thread starts (a count of live threads would also see an earlier test's
    # log listener ending): imports only, so the fork copies no thread state.
    me, started, start = threading.current_thread(), [], threading.Thread.start

    def recording_start(thread: threading.Thread) -> None:
        if threading.current_thread() is me:
            started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recording_start)
    assert workers_mod.preload(settings) == ["gateway_server.app", "gateway_server.providers.bedrock",
                                             "gateway_server.providers.mock"]
    assert started == []


def test_limits_the_memory_backend_would_count_per_worker() -> None:
    from gateway_server.settings import settings_from_mapping

    limited = [{"name": "team-a", "sha256": "a" * 64, "limits": {"requests_per_minute": 5}},
               {"name": "team-b", "sha256": "b" * 64, "budget": {"daily_usd": 1.0}},
               {"name": "open", "sha256": "c" * 64}]
    settings = settings_from_mapping(mock_config(keys=limited), env_file=None)
    assert workers_mod.unshared_limits(settings) == ["keys[team-a].limits", "keys[team-b].budget"]
    shared = settings_from_mapping(mock_config(keys=limited, rate_limit={"backend": "redis"}), env_file=None)
    assert workers_mod.unshared_limits(shared) == []
    assert workers_mod.unshared_limits(settings_from_mapping(mock_config(), env_file=None)) == []


def test_the_supervisor_shares_metrics_only_when_they_are_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """With metrics off the workers get no PROMETHEUS_MULTIPROC_DIR: it would turn their metrics on
    (every call written to the shared files) with nobody to scrape them."""
    from gateway_server.settings import settings_from_mapping

    seen: list[str | None] = []
    served: list[tuple[int, str]] = []
    monkeypatch.setattr(workers_mod.Supervisor, "run",
                        lambda self: seen.append(os.environ.get(workers_mod.METRICS_DIR_ENV)) or 0)
    monkeypatch.setattr(workers_mod, "_start_metrics", lambda port, directory: served.append((port, directory)))
    monkeypatch.delenv(workers_mod.METRICS_DIR_ENV, raising=False)
    for metrics_port in (0, 9999):
        monkeypatch.setenv("GATEWAY_METRICS_PORT", str(metrics_port))
        settings = settings_from_mapping(mock_config(workers=2), env_file=None)
        assert workers_mod.supervise(settings) == 0
    assert seen[0] is None
    assert seen[1] is not None and served == [(9999, seen[1])]
    assert not Path(seen[1]).exists()  # removed after the run
    assert workers_mod.METRICS_DIR_ENV not in os.environ


async def test_two_workers_answer_and_a_dead_worker_is_replaced(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    async with gateway_process(write_config(tmp_path, server={"pin_workers": True}), env=WORKERS_ENV) as gw:
        workers = await started_workers(gw)
        assert sorted(workers) == [0, 1] and len(set(workers.values())) == 2
        assert os.getpid() not in workers.values()
        # server.pin_workers: each worker (every thread) on the CPU of its slot.
        for wid, pid in workers.items():
            assert any(f"Worker {wid} pinned to CPU {cpus[wid % len(cpus)]}" in line for line in gw.lines), gw.lines
            for tid in os.listdir(f"/proc/{pid}/task"):  # every thread
                assert os.sched_getaffinity(int(tid)) == {cpus[wid % len(cpus)]}
        clients = await connect_to(gw.port, workers)
        for c in clients.values():
            assert (await c.generate("What is 25 + 75?", timeout=10)).content == "100"
            await c.close()

        os.kill(workers[0], signal.SIGKILL)
        await gw.read_until(rf"Worker 0 \(pid {workers[0]}\) died \(killed by SIGKILL\): restarting it")
        m = await gw.read_until(r"Gateway started .* worker=0 pid=(\d+)")
        replacement = int(m.group(1))
        assert replacement not in workers.values()
        clients = await connect_to(gw.port, {0: replacement, 1: workers[1]})
        for c in clients.values():
            assert (await c.status(timeout=10)).status == "running"
            await c.close()

        # SIGHUP (TLS reload) reaches every worker and ends none.
        gw.proc.send_signal(signal.SIGHUP)
        # In any order: a worker may log before the supervisor says it forwarded the signal.
        seen = len(gw.lines)
        while not (sum("SIGHUP: no TLS configured" in line for line in gw.lines[seen:]) == 2
                   and any("SIGHUP: forwarding to the workers" in line for line in gw.lines[seen:])):
            await gw.read_until(r"SIGHUP: ")
        gw.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(gw) == 0


async def test_sigterm_drains_every_worker_with_calls_in_flight(tmp_path: Path) -> None:
    """A stream in flight on each worker (its first words already received), then SIGTERM to the
    supervisor: both streams run to their end, both workers exit 0, then the supervisor."""
    config = write_config(tmp_path, providers={"mock": {"type": "mock", "stream_chunk_delay_ms": 400}},
                          server={"grace_period": 20})
    async with gateway_process(config, env=WORKERS_ENV) as gw:
        workers = await started_workers(gw)
        clients = await connect_to(gw.port, workers)
        try:
            streams = []
            for c in clients.values():  # each client's open connection reaches its own worker
                assert c.channel is not None
                stub = pb_grpc.ModelGatewayStub(c.channel)
                streams.append(stub.GenerateStream(ask("Tell me about gateways"), timeout=30))
            firsts = [await s.read() for s in streams]  # the start event: the call is being served
            assert all(f.WhichOneof("event") == "start" for f in firsts), firsts
            gw.proc.send_signal(signal.SIGTERM)
            await gw.read_until(r"SIGTERM received: draining 2 worker")
            for stream in streams:
                events = []
                while (event := await stream.read()) is not grpc.aio.EOF:
                    events.append(event)
                text = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
                assert text == "Mock response to: Tell me about gateways"
                assert events[-1].WhichOneof("event") == "end"
        finally:
            for c in clients.values():
                await c.close()
        assert await wait_exit(gw) == 0
        log = "".join(gw.lines)
        for wid, pid in workers.items():
            assert f"Worker {wid} (pid {pid}) exited (exit status 0)" in log, log
        assert "Supervisor: all workers stopped" in log


async def test_the_supervisor_gives_up_when_workers_keep_dying(tmp_path: Path) -> None:
    """A worker's replacement cannot start (its TLS key is gone): past worker_restart_limit deaths the
    supervisor stops the other worker and exits 1."""
    from .tls_ca import CertAuthority

    cert, key = CertAuthority().issue("localhost", server=True).write(tmp_path, "server")
    config = write_config(tmp_path, server={"tls": {"cert_file": str(cert), "key_file": str(key)},
                                            "worker_restart_limit": 1, "grace_period": 5})
    async with gateway_process(config, env=WORKERS_ENV) as gw:
        workers = await started_workers(gw)
        key.unlink()
        os.kill(workers[1], signal.SIGKILL)
        assert await wait_exit(gw) == 1
        log = "".join(gw.lines)
        assert "Worker 1 crashed" in log, log
        assert "more than 1 worker deaths in 60s, giving up" in log, log
        assert f"Worker 0 (pid {workers[0]}) exited (exit status 0)" in log, log


async def test_one_scrape_counts_every_workers_calls(tmp_path: Path) -> None:
    from tests.test_metrics import free_port, scrape, value

    metrics_port = free_port()
    env = {**WORKERS_ENV, "GATEWAY_METRICS_PORT": str(metrics_port)}
    async with gateway_process(write_config(tmp_path), env=env) as gw:
        workers = await started_workers(gw)
        # The supervisor serves /metrics for all (it logs so before the workers start).
        assert any(f"Serving /metrics for all workers on port {metrics_port}" in line for line in gw.lines)
        clients = await connect_to(gw.port, workers)
        try:
            for calls, c in enumerate(clients.values(), start=1):  # worker 0 answers once, worker 1 twice
                for _ in range(calls):
                    assert (await c.generate("What is 25 + 75?", timeout=10)).content == "100"
        finally:
            for c in clients.values():
                await c.close()
        samples = await scrape(metrics_port)
        generate = "modelgateway.v1.ModelGateway/Generate"
        assert value(samples, "grpc_server_call_started_total", grpc_method=generate) == 3
        assert value(samples, "gen_ai_server_request_duration_seconds_count", gen_ai_response_model="mock-1") == 3
