"""``python -m bench.serving``: production-serving numbers (issue 14), apart from the main bench.

1. **Scaling**: calls/s of the gateway (mock provider, log level WARNING) with ``--workers 1`` and
   ``--workers 2``, driven by h2load (nghttp2's HTTP/2 load generator, C: it costs the 2 cores far
   less per call than a Python client would, so the gateway is what saturates). Rounds alternate
   1, 2, 1, 2, ... and the medians are compared (goal: 2 workers >= 1.7x one).
2. **Load shedding**: one worker with ``max_concurrent_calls`` C and a mock latency; Python callers
   (grpc.aio, in this process) that honour the pushback of a shed call. Phases:
   C/4 callers (unloaded: light load), C callers (at capacity), 4C callers with shedding, 4C callers
   without it (cap off).
   Reported: p50/p99 of the admitted calls, the share shed, other errors, the gateway's RSS.

h2load (Debian package nghttp2-client) is installed by ``scripts/bench_deps.sh`` (``make bench``);
without it the scaling part is skipped with a message. Results: a Markdown table on stdout and
``bench/results-serving.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results-serving.json"
METHOD = "/modelgateway.v1.ModelGateway/Generate"


def request() -> pb.GenerateRequest:
    return pb.GenerateRequest(messages=[pb.Message(role=pb.ROLE_USER, content="What is 25 + 75?")])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "ANTHROPIC_", "AWS_", "PROMETHEUS_"))}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               PYTHONPATH=str(REPO))
    return env


class Gateway:
    """``python -m gateway_server`` with a generated config, on a free port; stopped with SIGTERM."""

    def __init__(self, tmp: Path, name: str, *, workers: int, latency_ms: float = 0.0,
                 max_concurrent_calls: int = 0) -> None:
        self.port = free_port()
        config = {
            "host": "127.0.0.1", "port": self.port, "log_level": "WARNING", "workers": workers, "metrics_port": 0,
            "default_provider": "mock", "providers": {"mock": {"type": "mock", "latency_ms": latency_ms}},
            "fallback": {"enabled": False}, "health_check": {"interval": 3600},
            "server": {"max_concurrent_calls": max_concurrent_calls, "shed_retry_after": 0.25, "grace_period": 2},
        }
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = tmp / f"{name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway_server", "--config", str(path)],
                                         cwd=tmp, env=child_env(), stdout=log, stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()[-2000:]}")
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as ch:
                    r = await pb_grpc.ModelGatewayStub(ch).Generate(request(), timeout=5)
                    if r.content == "100":
                        return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)

    def pids(self) -> list[int]:
        """The gateway process and its workers (the supervisor's children)."""
        pids = [self.proc.pid]
        with contextlib.suppress(OSError):
            pids += [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        return pids

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the gateway process and its workers."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{pid}/stat").read_bytes()
                fields = stat[stat.rindex(b")") + 2:].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def rss_kb(self) -> int:
        """Resident memory of the gateway and its workers (kB)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
                total += int(m.group(1)) if m else 0
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------ scaling (h2load)


def h2load(port: int, body: Path, calls: int, connections: int, streams: int) -> dict[str, Any]:
    out = subprocess.run(
        ["h2load", "-n", str(calls), "-c", str(connections), "-m", str(streams), "-t", "1", "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers", f"http://127.0.0.1:{port}{METHOD}"],
        capture_output=True, text=True, timeout=300, check=False).stdout
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    ok = re.search(r"status codes: (\d+) 2xx", out)
    return {"calls_per_s": float(rate.group(1)) if rate else 0.0, "http_2xx": int(ok.group(1)) if ok else 0}


async def scaling(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("h2load") is None:
        return {"skipped": "h2load not found (Debian package nghttp2-client; make bench installs it as root)"}
    body = tmp / "generate.bin"
    payload = request().SerializeToString()
    body.write_bytes(b"\x00" + struct.pack(">I", len(payload)) + payload)
    gateways = {w: Gateway(tmp, f"workers-{w}", workers=w) for w in (1, 2)}
    try:
        await asyncio.gather(*(g.ready() for g in gateways.values()))
        for g in gateways.values():  # warm-up: every worker's first calls
            h2load(g.port, body, max(1000, args.calls // 10), args.connections, args.streams)
        rounds: dict[int, list[float]] = {1: [], 2: []}
        cores: dict[int, list[float]] = {1: [], 2: []}
        load_before = os.getloadavg()
        for _ in range(args.rounds):
            for w, g in gateways.items():
                cpu, started = g.cpu_seconds(), time.monotonic()
                result = h2load(g.port, body, args.calls, args.connections, args.streams)
                cores[w].append((g.cpu_seconds() - cpu) / (time.monotonic() - started))
                if result["http_2xx"] != args.calls:
                    raise RuntimeError(f"{w} worker(s): {result['http_2xx']} of {args.calls} calls answered")
                rounds[w].append(result["calls_per_s"])
    finally:
        for g in gateways.values():
            g.stop()
    one, two = statistics.median(rounds[1]), statistics.median(rounds[2])
    return {"rounds": rounds, "calls_per_s_1_worker": one, "calls_per_s_2_workers": two,
            "ratio": two / one if one else 0.0, "cores_used": {w: statistics.median(c) for w, c in cores.items()},
            "calls": args.calls, "connections": args.connections, "streams_per_connection": args.streams,
            "load_before": load_before, "load_after": os.getloadavg()}


# ------------------------------------------------------------------ shedding (Python callers)


def _pushback(err: grpc.aio.AioRpcError) -> float:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-retry-pushback-ms":
            return int(value) / 1000
    return 0.25


async def phase(port: int, callers: int, seconds: float) -> dict[str, Any]:
    admitted: list[float] = []
    shed = 0
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + seconds
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(min(callers, 8))]
    stubs = [pb_grpc.ModelGatewayStub(ch) for ch in channels]
    req = request()

    async def caller(i: int) -> None:
        nonlocal shed
        stub = stubs[i % len(stubs)]
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                await stub.Generate(req, timeout=10)
                admitted.append((time.perf_counter() - started) * 1000)
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    shed += 1
                    await asyncio.sleep(_pushback(err))  # as GatewayClient does
                else:
                    errors[err.code().name] = errors.get(err.code().name, 0) + 1

    try:
        await asyncio.gather(*(caller(i) for i in range(callers)))
    finally:
        for ch in channels:
            await ch.close()
    admitted.sort()

    def pct(q: float) -> float | None:
        return admitted[min(len(admitted) - 1, int(q * len(admitted)))] if admitted else None

    total = len(admitted) + shed
    return {"callers": callers, "admitted": len(admitted), "shed": shed, "shed_share": shed / total if total else 0,
            "errors": errors, "admitted_per_s": len(admitted) / seconds, "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


async def shedding(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    cap = args.capacity
    capped = Gateway(tmp, "shed-on", workers=1, latency_ms=args.latency_ms, max_concurrent_calls=cap)
    uncapped = Gateway(tmp, "shed-off", workers=1, latency_ms=args.latency_ms, max_concurrent_calls=0)
    out: dict[str, Any] = {"capacity": cap, "mock_latency_ms": args.latency_ms}
    try:
        await asyncio.gather(capped.ready(), uncapped.ready())
        await phase(capped.port, cap, 1.0)  # warm-up
        rss_start = capped.rss_kb()
        out["unloaded"] = await phase(capped.port, max(1, cap // 4), args.seconds)  # light load: C/4 callers
        out["at_capacity"] = await phase(capped.port, cap, args.seconds)
        out["4x_with_shedding"] = await phase(capped.port, 4 * cap, args.seconds)
        out["rss_kb_before_after"] = [rss_start, capped.rss_kb()]
        await phase(uncapped.port, cap, 1.0)
        out["4x_without_shedding"] = await phase(uncapped.port, 4 * cap, args.seconds)
        out["crashed"] = capped.proc.poll() is not None
    finally:
        capped.stop()
        uncapped.stop()
    return out


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def report(results: dict[str, Any]) -> str:
    lines = ["## Serving: workers and load shedding", ""]
    s = results["scaling"]
    if "skipped" in s:
        lines.append(f"Scaling: skipped: {s['skipped']}")
    else:
        lines += ["| workers | calls/s (median of rounds) | rounds | CPU cores the gateway got | calls per core-s |",
                  "| --- | --- | --- | --- | --- |"]
        for w, key in ((1, "calls_per_s_1_worker"), (2, "calls_per_s_2_workers")):
            cores = s["cores_used"][w]
            lines.append(f"| {w} | {s[key]:.0f} | {', '.join(f'{v:.0f}' for v in s['rounds'][w])} "
                         f"| {cores:.2f} | {s[key] / cores if cores else 0:.0f} |")
        best = max(s["rounds"][2]) / max(s["rounds"][1])
        lines.append(f"\nBest round against best round: {best:.2f}x. On a busy machine 2 workers get fewer than 2 "
                     "cores; calls per core-second shows whether the work itself scales.")
        lines += ["", f"2 workers / 1 worker: **{s['ratio']:.2f}x** (goal >= 1.7x; h2load, {s['connections']} "
                  f"connections x {s['streams_per_connection']} streams, mock provider, log level WARNING; "
                  f"load average before/after {s['load_before'][0]:.1f}/{s['load_after'][0]:.1f} on "
                  f"{os.cpu_count()} CPUs)"]
    sh = results["shedding"]
    lines += ["", f"Load shedding: max_concurrent_calls {sh['capacity']}, mock latency {sh['mock_latency_ms']:g} ms, "
              "callers honour the pushback", "",
              "| phase | callers | admitted/s | p50 ms | p99 ms | shed | other errors |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for key in ("unloaded", "at_capacity", "4x_with_shedding", "4x_without_shedding"):
        p = sh.get(key)
        if p:
            lines.append(f"| {key} | {p['callers']} | {p['admitted_per_s']:.0f} | {_f(p['p50_ms'])} "
                         f"| {_f(p['p99_ms'])} | {p['shed_share']:.0%} | {sum(p['errors'].values())} |")
    if "rss_kb_before_after" in sh:
        before, after = sh["rss_kb_before_after"]
        lines.append(f"\nGateway RSS before/after the loaded phases: {before / 1024:.0f} / {after / 1024:.0f} MiB; "
                     f"crashed: {'yes' if sh.get('crashed') else 'no'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small counts (a smoke test)")
    p.add_argument("--calls", type=int, default=30000, help="h2load calls per round and gateway")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--streams", type=int, default=8, help="concurrent streams per connection")
    p.add_argument("--capacity", type=int, default=16, help="max_concurrent_calls of the shedding gateway")
    p.add_argument("--latency-ms", type=float, default=20.0, help="mock provider latency in the shedding part")
    p.add_argument("--seconds", type=float, default=6.0, help="length of each shedding phase")
    p.add_argument("--only", choices=["scaling", "shedding"], default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.calls, args.rounds, args.seconds = 3000, 1, 2.0
    return args


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as d:
        tmp = Path(d)
        results: dict[str, Any] = {"scaling": {"skipped": "--only shedding"}, "shedding": {}}
        if args.only != "shedding":
            results["scaling"] = await scaling(tmp, args)
        if args.only != "scaling":
            results["shedding"] = await shedding(tmp, args)
        return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(_main(args))
    results["cpus"] = os.cpu_count()
    print(report(results) if results["shedding"] else json.dumps(results["scaling"]))
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
