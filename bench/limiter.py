"""``python -m bench.limiter [--calls N]``: what the rate limiter costs per call (run by ``make bench``).

One call's limiter work, in this process, exactly as the servicer does it: ``admit`` (a key with
requests/tokens per minute, concurrency and a daily budget, plus the first provider's limits),
the router's provider hook, ``settle`` with the real usage. Measured for:

  memory  the default backend: CPU time per call (goal: under 0.1 ms)
  redis   a redis-server started here on a random loopback port: Redis round trips per call
          (scripts run, from Redis's own command counters), wall time and CPU time per call

Prints a Markdown table and writes bench/limiter-results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway_server.auth import Caller, KeyRing, Scope
from gateway_server.limits import Limiter, MemoryBackend, RedisBackend
from gateway_server.limits.backends import Backend
from gateway_server.providers import ChatMessage, ProviderRequest
from gateway_server.settings import BudgetSettings, LimitSettings, settings_from_mapping

BENCH_DIR = Path(__file__).resolve().parent
CALLER = Caller(name="bench", limits=LimitSettings(requests_per_minute=10**9, tokens_per_minute=10**12,
                                                   max_concurrent=10**6),
                budget=BudgetSettings(daily_usd=10**9))
REQUEST = ProviderRequest(messages=(ChatMessage("user", "What is 25 + 75?"),), system="", max_tokens=256,
                          temperature=None, top_p=None, stop_sequences=())


def _settings() -> Any:
    return settings_from_mapping({
        "default_provider": "mock", "providers": {"mock": {"type": "mock"}},
        "rate_limit": {"providers": {"mock": {"requests_per_minute": 10**9, "tokens_per_minute": 10**12}}},
        "pricing": {"mock-1": {"input": 3.0, "output": 15.0}},
    }, env_file=None)


async def _one(limiter: Limiter) -> None:
    quota = limiter.call(CALLER)
    await quota.admit(REQUEST, "", "")
    assert await quota.admit_provider("mock", "mock-1") is None
    await quota.settle("mock", "mock-1", 12, 30)


async def measure(backend: Backend, calls: int) -> dict[str, float]:
    limiter = Limiter(_settings(), backend, KeyRing(()), Scope("mock", {"mock": "mock-1"}))
    for _ in range(min(200, calls)):  # warm-up: imports, script load, connections
        await _one(limiter)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await _one(limiter)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if limiter.backend_errors:
        raise RuntimeError(f"{limiter.backend_errors} backend errors")
    return {"calls": calls, "wall_ms_per_call": wall / calls * 1000, "cpu_ms_per_call": cpu / calls * 1000}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_calls(port: int) -> int:
    """Scripts clients ran in Redis (INFO commandstats: calls of EVALSHA and EVAL), over a raw socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        header, _, body = data.partition(b"\r\n")
        size = int(header[1:])  # a RESP bulk string: $<size>\r\n<body>\r\n
        while len(body) < size:
            body += sock.recv(65536)
    total = 0
    for line in body.decode().splitlines():
        name, _, rest = line.partition(":")
        if name in ("cmdstat_evalsha", "cmdstat_eval"):
            total += int(rest.split(",")[0].split("=")[1])
    return total


@contextlib.contextmanager
def redis_server() -> Iterator[int | None]:
    """A redis-server on a random loopback port (its port), or None where it is not installed."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(server).exists():
        yield None
        return
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    _redis_calls(port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield port
        finally:
            proc.kill()
            proc.wait()


async def measure_redis(port: int, calls: int) -> dict[str, float]:
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0", timeout=1.0)
    try:
        before = _redis_calls(port)
        result = await measure(backend, calls)
        # measure() warms up (200 calls) before its timed calls: both are counted.
        result["redis_round_trips_per_call"] = (_redis_calls(port) - before) / (calls + min(200, calls))
        return result
    finally:
        await backend.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.limiter", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=5000, help="timed calls per backend (5000)")
    p.add_argument("--output", type=Path, default=BENCH_DIR / "limiter-results.json")
    args = p.parse_args(argv)
    memory = asyncio.run(measure(MemoryBackend(), args.calls))
    redis: dict[str, float] | str
    with redis_server() as port:
        if port is None:
            redis = "skipped: redis-server is not installed (scripts/test_deps.sh installs it)"
        else:
            redis = asyncio.run(measure_redis(port, min(args.calls, 2000)))
    print("| limiter backend | calls | CPU ms/call | wall ms/call | Redis round trips/call |")
    print("|---|---:|---:|---:|---:|")
    print(f"| memory | {memory['calls']:.0f} | {memory['cpu_ms_per_call']:.4f} | "
          f"{memory['wall_ms_per_call']:.4f} | - |")
    if isinstance(redis, str):
        print(f"| redis | {redis} | | | |")
    else:
        print(f"| redis | {redis['calls']:.0f} | {redis['cpu_ms_per_call']:.4f} | {redis['wall_ms_per_call']:.4f} | "
              f"{redis['redis_round_trips_per_call']:.2f} |")
    print("(one call = admit + the router's provider hook + settle; a Redis round trip is one limiter.lua "
          "call, counted by Redis)")
    args.output.write_text(json.dumps({"memory": memory, "redis": redis}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
