"""Bedrock transports compared: ``python -m bench.bedrock_transports [--calls N] [--concurrency C] [--rounds R]``

The shipped aiobotocore transport (gateway_server/providers/bedrock.py) against the boto3-in-threads
transport it replaced (bench/bedrock_threads.py), both driving fake Bedrock upstreams
(``python -m bench.fake_upstream``, processes of their own). Each (transport, round) runs in a fresh
child process that starts the provider, warms it up, then runs two regimes, each with
``--concurrency`` (64) calls in flight, Converse calls then ConverseStream calls (20 text deltas,
read to the end):

- saturated (an upstream answering at once, ``--calls`` calls per phase): the transport's CPU cost.
  CPU ms/call is the child's CPU time (user + system, every thread) / calls; the child also runs the
  load (the same asyncio tasks for every transport), so the difference between rows is the
  transport. Run-queue ms/call: time the child's threads were ready to run but waited for a CPU
  (/proc schedstat): on a shared machine, the latency of this regime is mostly that.
- model-like (an upstream taking ``--latency`` seconds per answer, streams spread over it;
  ``--model-calls`` calls per phase): p50 / p99 wall latency, the floor being ``--latency``: what a
  caller waits at 64 concurrent calls, thread queueing included.
- RSS MB: the child's resident memory after both regimes (VmRSS) and its peak (VmHWM); threads: the
  most the child had.

On a shared, oversubscribed machine a single-threaded process (aiobotocore's) gets a smaller share
of the CPUs than a process with 64 threads, which shows in the saturated regime's latency (the
run-queue column says how much). ``--nice N`` (root) runs the children and the upstreams N nice
levels above everything else, to approximate a host of their own; keep such runs short.

Rows: aiobotocore; boto3 with 16 threads (the old default ``executor_workers``, so calls queue for
a thread at 64 in flight: the starvation this change removes); boto3 with 64 threads (no queueing,
the old transport at its best). Rounds alternate between transports so a burst of load from
elsewhere hits all of them. Prints a Markdown table and writes bench/bedrock-transports.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
MODEL = "global.anthropic.claude-sonnet-5-5"
TRANSPORTS = {"aiobotocore": ("aiobotocore", 0), "boto3-16-threads": ("boto3", 16),
              "boto3-64-threads": ("boto3", 64)}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _runqueue_wait_s() -> float:
    """Seconds the live threads of this process spent ready to run but waiting for a CPU."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


async def _child(transport: str, workers: int, ports: tuple[int, int], calls: int, model_calls: int,
                 concurrency: int, warmup: int) -> dict[str, Any]:
    from gateway_server.providers.base import ChatMessage, ProviderRequest, StreamDone
    from gateway_server.settings import BedrockProviderConfig

    def make(port: int) -> Any:
        cfg = BedrockProviderConfig(type="bedrock", endpoint_url=f"http://127.0.0.1:{port}", model_id=MODEL,
                                    timeout=60)
        if transport == "aiobotocore":
            from gateway_server.providers.bedrock import BedrockProvider

            return BedrockProvider("bedrock", cfg, "us-east-1")
        from bench.bedrock_threads import ThreadedBedrockProvider

        return ThreadedBedrockProvider("bedrock", cfg, "us-east-1", executor_workers=workers)

    rss_started_kb = _status_kb("VmRSS")
    request = ProviderRequest(messages=(ChatMessage("user", "What is 25 + 75?"),), system="", max_tokens=64,
                              temperature=None, top_p=None, stop_sequences=())
    out: dict[str, Any] = {"rss_started_mb": rss_started_kb / 1024}
    max_threads = 0
    for regime, port, n in (("saturated", ports[0], calls), ("model_like", ports[1], model_calls)):
        provider = make(port)
        await provider.start()
        if not provider.usable:
            raise RuntimeError("the provider has no credentials")
        out[regime] = await _regime(provider, request, StreamDone, n, concurrency,
                                    warmup if regime == "saturated" else concurrency)
        max_threads = max(max_threads, len(os.listdir("/proc/self/task")))
        await provider.close()
    out["rss_mb"] = _status_kb("VmRSS") / 1024
    out["peak_rss_mb"] = _status_kb("VmHWM") / 1024
    out["os_threads"] = max_threads
    return out


async def _regime(provider: Any, request: Any, stream_done: type, calls: int, concurrency: int,
                  warmup: int) -> dict[str, Any]:

    async def unary() -> None:
        response = await provider.generate(request, MODEL, 60)
        if response.content != "100":
            raise RuntimeError(f"unexpected answer {response.content!r}")

    async def stream() -> None:
        last = None
        async for event in provider.stream(request, MODEL, 60):
            last = event
        if not isinstance(last, stream_done):
            raise RuntimeError("the stream did not end with StreamDone")

    async def phase(call: Any, n: int) -> tuple[list[float], float, float]:
        latencies: list[float] = []
        issued = 0

        async def worker() -> None:
            nonlocal issued
            while issued < n:
                issued += 1
                started = time.perf_counter()
                await call()
                latencies.append(time.perf_counter() - started)

        cpu0, wall0, wait0 = time.process_time(), time.perf_counter(), _runqueue_wait_s()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
        return latencies, time.process_time() - cpu0, time.perf_counter() - wall0, _runqueue_wait_s() - wait0

    await phase(unary, warmup)
    await phase(stream, warmup)
    out: dict[str, Any] = {}
    for name, call in (("unary", unary), ("stream", stream)):
        latencies, cpu_s, wall_s, wait_s = await phase(call, calls)
        out[name] = {"latencies_ms": [v * 1000 for v in latencies], "cpu_ms_per_call": cpu_s * 1000 / calls,
                     "calls_per_s": calls / wall_s, "runqueue_ms_per_call": max(0.0, wait_s) * 1000 / calls}
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bedrock_transports", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=2000, help="saturated regime: calls per phase per round (2000)")
    p.add_argument("--model-calls", type=int, default=256,
                   help="model-like regime: calls per phase per round (256)")
    p.add_argument("--latency", type=float, default=1.0, help="model-like regime: seconds per answer (1.0)")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight (64)")
    p.add_argument("--rounds", type=int, default=3, help="child processes per transport, alternating (3)")
    p.add_argument("--warmup", type=int, default=256, help="saturated regime: warm-up calls per phase (256)")
    p.add_argument("--transports", default=",".join(TRANSPORTS), help="comma-separated subset of " +
                   ",".join(TRANSPORTS))
    p.add_argument("--nice", type=int, default=0, help="run the processes measured N nice levels higher (root; 0)")
    p.add_argument("--output", type=Path, default=BENCH_DIR / "bedrock-transports.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--ports", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:  # one measurement, as JSON on stdout
        kind, workers = TRANSPORTS[args.child]
        fast, slow = (int(v) for v in args.ports.split(","))
        result = asyncio.run(_child(kind, workers, (fast, slow), args.calls, args.model_calls, args.concurrency,
                                    args.warmup))
        print(json.dumps(result))
        return 0

    names = [n.strip() for n in args.transports.split(",") if n.strip()]
    if not names or any(n not in TRANSPORTS for n in names):
        p.error(f"--transports: choose from {','.join(TRANSPORTS)}")
    from bench.procs import Proc, stop_all, wait_for_ports
    from bench.run import child_env

    env = child_env()  # fake AWS credentials included
    log_dir = Path(tempfile.mkdtemp(prefix="bench-bedrock-"))
    upstreams = [Proc(f"fake upstream ({latency}s)", [sys.executable, "-m", "bench.fake_upstream", "--latency",
                                                      str(latency)],
                      cwd=REPO, env=env, log_path=log_dir / f"upstream-{i}.log", port_from="stdout")
                 for i, latency in enumerate((0.0, args.latency))]
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    started = time.monotonic()
    load_before = os.getloadavg()
    def higher_priority() -> None:
        os.nice(-args.nice)

    try:
        for u in upstreams:
            if args.nice:
                os.setpriority(os.PRIO_PROCESS, u.pid, os.getpriority(os.PRIO_PROCESS, 0) - args.nice)
        wait_for_ports(upstreams, timeout=20)
        ports = ",".join(str(u.port) for u in upstreams)
        for r in range(args.rounds):
            for name in names:
                print(f"[{time.monotonic() - started:5.1f}s] round {r + 1}/{args.rounds}: {name}", file=sys.stderr,
                      flush=True)
                done = subprocess.run(
                    [sys.executable, "-m", "bench.bedrock_transports", "--child", name, "--ports", ports,
                     "--calls", str(args.calls), "--model-calls", str(args.model_calls),
                     "--concurrency", str(args.concurrency), "--warmup", str(args.warmup)],
                    cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
                    preexec_fn=higher_priority if args.nice else None)
                if done.returncode != 0:
                    print(f"{name} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                    return 1
                runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        stop_all(upstreams, timeout=5)
        shutil.rmtree(log_dir, ignore_errors=True)

    rows = []
    for name in names:
        rs = runs[name]
        row: dict[str, Any] = {"transport": name}
        for regime in ("saturated", "model_like"):
            row[regime] = {}
            for phase in ("unary", "stream"):
                pooled = [v for run in rs for v in run[regime][phase]["latencies_ms"]]
                row[regime][phase] = {
                    key: statistics.median(run[regime][phase][key] for run in rs)
                    for key in ("cpu_ms_per_call", "calls_per_s", "runqueue_ms_per_call")}
                row[regime][phase].update(p50_ms=percentile(pooled, 50), p99_ms=percentile(pooled, 99))
        for key in ("rss_mb", "peak_rss_mb", "rss_started_mb"):
            row[key] = statistics.median(run[key] for run in rs)
        row["os_threads"] = max(run["os_threads"] for run in rs)
        rows.append(row)

    print(f"\nBedrock transports, {args.concurrency} calls in flight, {args.rounds} round(s), nice -{args.nice}; "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before / {os.getloadavg()[0]:.2f} after\n")
    lines = [f"Saturated (upstream answers at once; {args.calls} calls per phase):", "",
             "| transport | unary CPU ms/call | unary p50 / p99 ms | stream CPU ms/call | stream p50 / p99 ms "
             "| run-queue ms/call (unary, stream) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        u, st = row["saturated"]["unary"], row["saturated"]["stream"]
        lines.append(f"| {row['transport']} | {u['cpu_ms_per_call']:.2f} | {u['p50_ms']:.0f} / {u['p99_ms']:.0f} "
                     f"| {st['cpu_ms_per_call']:.2f} | {st['p50_ms']:.0f} / {st['p99_ms']:.0f} "
                     f"| {u['runqueue_ms_per_call']:.2f}, {st['runqueue_ms_per_call']:.2f} |")
    lines += ["", f"Model-like (each answer takes {args.latency:g} s; {args.model_calls} calls per phase):", "",
              "| transport | unary p50 / p99 ms | stream p50 / p99 ms | RSS MB (peak) | threads |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        u, st = row["model_like"]["unary"], row["model_like"]["stream"]
        lines.append(f"| {row['transport']} | {u['p50_ms']:.0f} / {u['p99_ms']:.0f} "
                     f"| {st['p50_ms']:.0f} / {st['p99_ms']:.0f} "
                     f"| {row['rss_mb']:.0f} ({row['peak_rss_mb']:.0f}) | {row['os_threads']} |")
    print("\n".join(lines))
    args.output.write_text(json.dumps({
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv),
        "settings": {"nice": args.nice, "calls": args.calls, "model_calls": args.model_calls, "latency_s": args.latency,
                     "concurrency": args.concurrency, "rounds": args.rounds, "warmup": args.warmup},
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
