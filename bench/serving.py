"""``python -m bench.serving``: production-serving numbers (issue 14), apart from the main bench.

1. **Scaling**: calls/s of the gateway (mock provider, log level WARNING, metrics off) with
   ``--workers 1``, ``--workers 1`` pinned to CPU 0 (``taskset``, every thread), ``--workers 2`` and
   ``--workers 2`` with ``server.pin_workers`` (a CPU each),
   driven by h2load (nghttp2's HTTP/2 load generator, C: about a tenth of the gateway's CPU per
   call) for a fixed time (``-D``), 64 connections so that the kernel's SO_REUSEPORT hash spreads
   them evenly enough. Rounds run the four in turn and medians are compared (goal: 2 workers >=
   1.7x one). Per run: the gateway's cores (all its processes and threads), its calls per
   core-second, h2load's cores, every process's cores on the machine (/proc/stat: other users
   too), and how many connections each worker got (``ss``).
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
import resource
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
                 max_concurrent_calls: int = 0, cpus: str | None = None, pin_workers: bool = False) -> None:
        self.name = name
        self.port = free_port()
        config = {
            "host": "127.0.0.1", "port": self.port, "log_level": "WARNING", "workers": workers, "metrics_port": 0,
            "default_provider": "mock", "providers": {"mock": {"type": "mock", "latency_ms": latency_ms}},
            "fallback": {"enabled": False}, "health_check": {"interval": 3600},
            "server": {"max_concurrent_calls": max_concurrent_calls, "shed_retry_after": 0.25, "grace_period": 2,
                       "pin_workers": pin_workers},
        }
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = tmp / f"{name}.log"
        with open(self.log, "wb") as log:
            # cpus: every thread of the gateway on these CPUs (taskset before exec: gRPC's threads inherit it).
            pin = ["taskset", "-c", cpus] if cpus is not None else []
            self.proc = subprocess.Popen([*pin, sys.executable, "-m", "gateway_server", "--config", str(path)],
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

    @staticmethod
    def process_cpu(pid: int) -> float:
        """CPU time (user + system, all threads) used so far by one process."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            fields = stat[stat.rindex(b")") + 2:].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return 0.0

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

# The runs compared, in the order each round runs them: (name, workers, CPUs the whole gateway is pinned
# to with taskset, server.pin_workers: each worker on a CPU of its own).
RUNS: tuple[tuple[str, int, str | None, bool], ...] = (
    ("1 worker", 1, None, False),
    ("1 worker pinned to CPU 0", 1, "0", False),
    ("2 workers", 2, None, False),
    ("2 workers, pin_workers", 2, None, True),
)
PINNED_RUNS = {"1 worker pinned to CPU 0", "2 workers, pin_workers"}


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far (/proc/stat), every process on the machine counted."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def connections_per_process(port: int) -> dict[int, int]:
    """Established connections on ``port`` by the pid that owns them (``ss -tnp``); {} without ss."""
    if shutil.which("ss") is None:
        return {}
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=False).stdout
    counts: dict[int, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        counts[int(pid)] = counts.get(int(pid), 0) + 1
    return counts


def h2load_command(port: int, body: Path, args: argparse.Namespace, *, seconds: float | None = None,
                   calls: int | None = None) -> list[str]:
    # -D (a fixed duration), not -n: with -n, h2load gives every connection the same number of calls,
    # so a worker that the kernel handed fewer connections runs out of work and idles while the other
    # finishes (seen: 11 of 16 connections on one worker, the other at 0.45 of a core).
    amount = ["-D", f"{seconds:g}", "--warm-up-time", "1"] if seconds is not None else ["-n", str(calls)]
    return ["h2load", *amount, "-c", str(args.connections), "-m", str(args.streams), "-t", "1", "-d", str(body),
            "-H", "content-type: application/grpc", "-H", "te: trailers", f"http://127.0.0.1:{port}{METHOD}"]


def parse_h2load(out: str) -> dict[str, Any]:
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    ok = re.search(r"status codes: (\d+) 2xx", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", out)
    return {"calls_per_s": float(rate.group(1)) if rate else 0.0, "http_2xx": int(ok.group(1)) if ok else 0,
            "done": int(done.group(1)) if done else 0}


def measure(gateway: Gateway, body: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One h2load run of ``args.duration`` against ``gateway``: calls/s and where the CPU went."""
    pids = gateway.pids()
    cpu_before = {pid: gateway.process_cpu(pid) for pid in pids}
    busy_before = machine_busy()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(h2load_command(gateway.port, body, args, seconds=args.duration),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    split: dict[int, int] = {}
    for _ in range(20):  # until h2load has made its connections (a busy machine can take seconds)
        time.sleep(min(0.5, args.duration / 8))
        split = connections_per_process(gateway.port)
        if sum(split.values()) >= args.connections or proc.poll() is not None:
            break
    out, _ = proc.communicate(timeout=args.duration + 60)
    elapsed = time.monotonic() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # h2load only: the gateways are still running
    busy_after = machine_busy()
    result = parse_h2load(out)
    if result["calls_per_s"] <= 0 or result["http_2xx"] != result["done"]:
        raise RuntimeError(f"h2load against {gateway.name}: {out[-1500:]}")
    workers = pids[1:] if len(pids) > 1 else pids
    per_worker = [(gateway.process_cpu(pid) - cpu_before[pid]) / elapsed for pid in workers]
    gateway_cores = sum(gateway.process_cpu(pid) - cpu_before[pid] for pid in pids) / elapsed
    h2load_cores = (children.ru_utime - children_before.ru_utime
                    + children.ru_stime - children_before.ru_stime) / elapsed
    busy = busy_after[0] - busy_before[0], busy_after[1] - busy_before[1]
    return {**result, "gateway_cores": gateway_cores, "worker_cores": per_worker,
            "connections_per_worker": [split.get(pid, 0) for pid in workers],
            "h2load_cores": h2load_cores, "machine_busy_cores": busy[0] / busy[1] * (os.cpu_count() or 1)
            if busy[1] else 0.0, "load_1min": os.getloadavg()[0]}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    per_core = [r["calls_per_s"] / r["gateway_cores"] for r in runs if r["gateway_cores"]]
    return {"calls_per_s": med("calls_per_s"), "rounds": [r["calls_per_s"] for r in runs],
            "gateway_cores": med("gateway_cores"), "calls_per_core_s": statistics.median(per_core) if per_core else 0,
            "h2load_cores": med("h2load_cores"), "machine_busy_cores": med("machine_busy_cores"),
            "connections_per_worker": [r["connections_per_worker"] for r in runs],
            "worker_cores": [[round(c, 2) for c in r["worker_cores"]] for r in runs],
            "h2load_us_per_call": statistics.median(r["h2load_cores"] / r["calls_per_s"] * 1e6 for r in runs)}


async def scaling(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("h2load") is None:
        return {"skipped": "h2load not found (Debian package nghttp2-client; make bench installs it as root)"}
    if shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2:
        runs = tuple(r for r in RUNS if r[0] not in PINNED_RUNS)
    else:
        runs = RUNS
    body = tmp / "generate.bin"
    payload = request().SerializeToString()
    body.write_bytes(b"\x00" + struct.pack(">I", len(payload)) + payload)
    gateways = {name: Gateway(tmp, f"scaling-{i}", workers=w, cpus=cpus, pin_workers=pin)
                for i, (name, w, cpus, pin) in enumerate(runs)}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in gateways}
    try:
        await asyncio.gather(*(g.ready() for g in gateways.values()))
        warm_up = max(2000, args.connections * args.streams * 4)
        for g in gateways.values():  # warm-up: every worker's first calls
            await asyncio.to_thread(subprocess.run, h2load_command(g.port, body, args, calls=warm_up),
                                    capture_output=True, timeout=120, check=False)
        load_before = os.getloadavg()
        for _ in range(args.rounds):
            for name, g in gateways.items():
                results[name].append(await asyncio.to_thread(measure, g, body, args))
    finally:
        for g in gateways.values():
            g.stop()
    summary = {name: summarize(r) for name, r in results.items()}
    one, two = summary["1 worker"], summary["2 workers"]
    out: dict[str, Any] = {
        "runs": summary, "raw": results, "seconds": args.duration, "connections": args.connections,
        "streams_per_connection": args.streams, "load_before": load_before, "load_after": os.getloadavg(),
        "ratio": two["calls_per_s"] / one["calls_per_s"],
        "ratio_calls_per_core_s": two["calls_per_core_s"] / one["calls_per_core_s"],
        # The most 2 workers can reach against 1 at the same CPU per call: every core but h2load's.
        "ceiling": ((os.cpu_count() or 1) - two["h2load_cores"]) / one["gateway_cores"],
    }
    pinned, two_pinned = summary.get("1 worker pinned to CPU 0"), summary.get("2 workers, pin_workers")
    if pinned and two_pinned:
        out["ratio_vs_pinned"] = two["calls_per_s"] / pinned["calls_per_s"]
        out["ceiling_vs_pinned"] = ((os.cpu_count() or 1) - two["h2load_cores"]) / pinned["gateway_cores"]
        out["ratio_pin_workers"] = two_pinned["calls_per_s"] / one["calls_per_s"]
        out["ratio_pin_workers_vs_pinned"] = two_pinned["calls_per_s"] / pinned["calls_per_s"]
        out["ratio_calls_per_core_s_pinned"] = two_pinned["calls_per_core_s"] / pinned["calls_per_core_s"]
    return out


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
        lines += ["| run | calls/s (median) | rounds | gateway cores | calls per gateway core-s | h2load cores "
                  "| all processes' cores | connections per worker |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in s["runs"].items():
            split = " ".join("/".join(str(c) for c in conns) if any(conns) else "?"  # ?: ss saw none
                             for conns in r["connections_per_worker"])
            lines.append(f"| {name} | {r['calls_per_s']:.0f} | {', '.join(f'{v:.0f}' for v in r['rounds'])} "
                         f"| {r['gateway_cores']:.2f} | {r['calls_per_core_s']:.0f} | {r['h2load_cores']:.2f} "
                         f"| {r['machine_busy_cores']:.2f} | {split} |")
        lines += ["", f"2 workers / 1 worker: **{s['ratio']:.2f}x** calls/s (goal >= 1.7x); the most it can be "
                  f"at the same CPU per call: {s['ceiling']:.2f}x (the cores h2load leaves / the cores one "
                  "worker used)."]
        one = s["runs"]["1 worker"]
        others = one["machine_busy_cores"] - one["gateway_cores"] - one["h2load_cores"]
        if others > 0.2:
            lines.append(f"**Other processes used {others:.2f} cores during the 1-worker runs**: one worker got less "
                         "than it would alone and two workers take a larger share from the neighbours, so the calls/s "
                         "ratios read high; calls per gateway core-second does not depend on it.")
        if "ratio_vs_pinned" in s:
            lines.append(f"2 workers / 1 worker pinned to one CPU: **{s['ratio_vs_pinned']:.2f}x** "
                         f"(ceiling {s['ceiling_vs_pinned']:.2f}x).")
            lines.append(f"2 workers with pin_workers / 1 worker: **{s['ratio_pin_workers']:.2f}x**; / 1 worker "
                         f"pinned to one CPU: **{s['ratio_pin_workers_vs_pinned']:.2f}x**.")
        lines.append(f"Calls per gateway core-second, 2 workers / 1 worker: **{s['ratio_calls_per_core_s']:.2f}x**"
                     + (f"; pinned (pin_workers / one CPU): **{s['ratio_calls_per_core_s_pinned']:.2f}x**"
                        if "ratio_calls_per_core_s_pinned" in s else "")
                     + " (1.00 = the work per call does not grow with a second worker).")
        lines.append(f"h2load -D {s['seconds']:g} s, {s['connections']} connections x {s['streams_per_connection']} "
                     f"streams, mock provider, log level WARNING, metrics off; rounds interleaved; load average "
                     f"before/after {s['load_before'][0]:.1f}/{s['load_after'][0]:.1f} on {os.cpu_count()} CPUs "
                     "(all processes' cores: the whole machine, other users included).")
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
    p.add_argument("--duration", type=float, default=8.0, help="seconds of each h2load run (after 1 s of warm-up)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; each runs every configuration once, interleaved")
    p.add_argument("--connections", type=int, default=64, help="h2load connections (the kernel spreads them)")
    p.add_argument("--streams", type=int, default=4, help="concurrent streams per connection")
    p.add_argument("--capacity", type=int, default=16, help="max_concurrent_calls of the shedding gateway")
    p.add_argument("--latency-ms", type=float, default=20.0, help="mock provider latency in the shedding part")
    p.add_argument("--seconds", type=float, default=6.0, help="length of each shedding phase")
    p.add_argument("--only", choices=["scaling", "shedding"], default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.seconds = 3.0, 1, 2.0
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
