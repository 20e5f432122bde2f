"""Redis as the fleet's limiter: two gateway processes hold one key's limit together; Redis killed and
restarted mid-run, failing open and failing closed."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from tests.helpers import ask, error_details, gateway_process

from .conftest import RedisServer, bearer, keyed_config


async def test_two_gateway_processes_share_one_limit(redis_server: RedisServer, tmp_path: Path) -> None:
    limit = 120  # requests per minute: 2 per second come back
    config = keyed_config([{"name": "alpha", "limits": {"requests_per_minute": limit}}],
                          {"backend": "redis", "redis": {"url": redis_server.url, "timeout_ms": 2000,
                                                         "key_prefix": f"t{uuid.uuid4().hex[:12]}"}})
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    async with gateway_process(path) as one, gateway_process(path) as two:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{g.port}") for g in (one, two)]
        # Their request logs must not fill the pipes (a full pipe would stall the processes).
        drains = [asyncio.create_task(_drain_stderr(g.proc)) for g in (one, two)]
        try:
            for channel in channels:
                await asyncio.wait_for(channel.channel_ready(), 10)
            stubs = [pb_grpc.ModelGatewayStub(c) for c in channels]
            admitted = refused = 0
            stop = asyncio.Event()

            async def worker(stub: pb_grpc.ModelGatewayStub) -> None:
                nonlocal admitted, refused
                while not stop.is_set():
                    try:
                        await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)
                        admitted += 1
                    except grpc.aio.AioRpcError as err:
                        assert error_details(err).reason == "KEY_RATE_LIMITED", err
                        refused += 1

            started = time.monotonic()
            workers = [asyncio.create_task(worker(stubs[i % 2])) for i in range(12)]
            await asyncio.sleep(3)
            stop.set()
            await asyncio.gather(*workers)
            elapsed = time.monotonic() - started
        finally:
            for channel in channels:
                await channel.close()
            for drain in drains:
                drain.cancel()
    # The bucket's minute plus what refilled while the run lasted; each process alone would admit that
    # much again.
    expected = limit + limit / 60 * elapsed
    print(f"two processes, one Redis: admitted {admitted} of {admitted + refused} calls in {elapsed:.2f}s; "
          f"the limit allows {expected:.1f}")
    assert refused > 0
    assert abs(admitted - expected) <= 0.05 * expected, (admitted, expected, elapsed)


async def _drain_stderr(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    while await proc.stderr.readline():
        pass


def _outage_config(server: RedisServer, on_failure: str) -> dict[str, Any]:
    return keyed_config([{"name": "alpha", "limits": {"requests_per_minute": 2}}],
                        {"backend": "redis", "on_failure": on_failure,
                         "redis": {"url": server.url, "timeout_ms": 200, "retry_interval": 0.1,
                                   "key_prefix": "outage"}})


async def _until(predicate: Any, timeout: float = 20) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            result = await predicate()
            if result is not None:
                return result
            await asyncio.sleep(0.05)


async def _reason(stub: pb_grpc.ModelGatewayStub) -> str:
    try:
        await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)
        return "OK"
    except grpc.aio.AioRpcError as err:
        return error_details(err).reason


@pytest.mark.parametrize("on_failure", ["fail_open", "fail_closed"])
async def test_redis_killed_and_restarted(gateway_factory, stub_for, own_redis: RedisServer, on_failure: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    app = await gateway_factory(_outage_config(own_redis, on_failure))
    stub = await stub_for(app)
    assert [await _reason(stub) for _ in range(3)] == ["OK", "OK", "KEY_RATE_LIMITED"]
    caplog.set_level(logging.WARNING, logger="gateway_server.limits")
    own_redis.kill()
    outage = "OK" if on_failure == "fail_open" else "RATE_LIMITER_UNAVAILABLE"
    during = [await _reason(stub) for _ in range(5)]
    assert during == [outage] * 5
    assert app.limiter.backend_errors >= 1
    own_redis.start()  # the same port, empty: the limits start over

    async def limited_again() -> str | None:
        reason = await _reason(stub)
        return None if reason == outage and on_failure == "fail_closed" else reason

    # Recovers by itself: fail_closed admits again, fail_open counts again (2 per minute, then refused).
    assert await _until(limited_again) == "OK"
    assert await _until(lambda: _none_unless(_reason(stub), "KEY_RATE_LIMITED")) == "KEY_RATE_LIMITED"
    errors = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR  # once per outage
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def _none_unless(result: Any, wanted: str) -> str | None:
    value = await result
    return value if value == wanted else None


class ClusterRedis(RedisServer):
    """A one-node Redis Cluster holding every slot."""

    def start(self) -> ClusterRedis:
        import subprocess

        from .conftest import REDIS_SERVER, free_port

        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--cluster-enabled", "yes", "--cluster-config-file",
             str(self.workdir / "nodes.conf"),
             # The bus port too (by default port + 10000: past 65535 for a high random port).
             "--cluster-port", str(free_port())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if b"cluster_state:ok" in self._command(b"CLUSTER INFO"):
                    return self
                self._command(b"CLUSTER ADDSLOTSRANGE 0 16383")
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the one-node Redis Cluster did not become ready")
            time.sleep(0.1)

    def _command(self, line: bytes) -> bytes:
        import socket

        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(line + b"\r\n")
            return sock.recv(65536)


async def test_a_redis_cluster(gateway_factory, stub_for, tmp_path: Path) -> None:
    from gateway_server.limits.backends import RedisBackend
    from tests.limits.conftest import _require_redis

    _require_redis()
    server = ClusterRedis(tmp_path).start()
    try:
        app = await gateway_factory(keyed_config(
            [{"name": "alpha", "limits": {"requests_per_minute": 2, "tokens_per_minute": 10_000,
                                          "max_concurrent": 5}, "budget": {"daily_usd": 5}},
             {"name": "root", "admin": True}],
            {"backend": "redis", "redis": {"url": server.url, "cluster": True, "timeout_ms": 2000},
             "providers": {"mock": {"requests_per_minute": 100}}}))
        assert isinstance(app.limiter.backend, RedisBackend)
        stub = await stub_for(app)
        assert [await _reason(stub) for _ in range(3)] == ["OK", "OK", "KEY_RATE_LIMITED"]
        from modelgateway.v1 import model_gateway_pb2 as pb

        usage = await stub.GetUsage(pb.GetUsageRequest(key="alpha"), metadata=bearer("root"), timeout=10)
        assert usage.backend_available and usage.keys[0].day.requests == 2
        assert app.limiter.backend_errors == 0
    finally:
        server.kill()
