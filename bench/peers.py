"""``python -m bench.peers``: this gateway beside the Portkey gateway and the bare gRPC floor, one interleaved run.

Every process under test is pinned to one core (``taskset -c --core``); the load client and the fake
upstream are pinned to the other cores. All targets talk to the same fake Anthropic upstream
(bench/fake_upstream.py):

  floor     bench/echo_server.py: a bare grpc.aio server, fixed answer (what any grpc.aio call costs)
  gateway   python -m gateway_server, anthropic provider, one row per --transports entry: ``direct`` (the
            default: one aiohttp session, the SDK's headers and errors) and ``aiohttp`` (the SDK's own
            client on its aiohttp transport, the path before ``direct``) -> fake upstream
  baseline  (with --baseline REF) the same gateway built from git REF, for before/after in one run
  portkey   the Portkey AI gateway (npm @portkey-ai/gateway, Node), POST /v1/messages with
            x-portkey-provider: anthropic and x-portkey-custom-host: the fake upstream

Closed-loop load: --concurrency callers, each sending its next call when the last one answered.
Rounds are interleaved (floor, gateway, portkey, floor, gateway, portkey, ...) so a burst of load from
elsewhere on a shared machine hits one round of each. CPU per call = the target process's CPU time
(every thread, /proc schedstat) during the measured phase / calls; median of the rounds.

Then the latency phase: the fake upstream answers after --latency (0.05) s (switched at run time,
PUT /bench/latency), and each target that calls it (not the floor) and the upstream called directly
(the load client's aiohttp, "direct") take closed-loop load from 16 and from 64 callers, interleaved
over --latency-rounds; Δp50/Δp99 = the target's latency percentile minus direct's (rounds pooled).

Portkey is installed by ``scripts/node_deps.sh bench/portkey`` (``make bench-peers`` runs it) into
bench/portkey/node_modules (git-ignored); without it that row is skipped, saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import MODEL
from bench.fake_upstream import STREAM_DELTAS
from bench.load import EXPECTED_CONTENT, percentile
from bench.procs import CpuSample, Proc, StartError, last_core, rss_mb, stop_all, wait_for_ports
from bench.run import FAKE_API_KEY, REPO, STARTED_RE, child_env, gateway_config
from bench.run import Scenario as _Scenario

PORTKEY_DIR = REPO / "bench" / "portkey"
PORTKEY_JS = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
PROMPT = "What is 25 + 75?"
HTTP_BODY = json.dumps({"model": MODEL, "max_tokens": 64,
                        "messages": [{"role": "user", "content": PROMPT}]}).encode()
CALL_TIMEOUT = 5.0
TRANSPORTS = {"direct": "direct (aiohttp)", "aiohttp": "SDK (aiohttp)", "httpx": "SDK (httpx)"}
LATENCY_CALLERS = (16, 64)


@dataclass
class Target:
    key: str
    title: str
    proc: Proc
    kind: str  # "grpc" | "grpc-stream" (GenerateStream read to its end) | "http"
    call: Callable[[], Awaitable[bool]] | None = None  # one call; True when it answered correctly
    failed: str = ""
    rounds: list[dict[str, float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def cpu(self) -> CpuSample:
        return self.proc.cpu()

    def rss_mb(self) -> float | None:
        return rss_mb(self.proc.pid)


async def closed_loop(call: Callable[[], Awaitable[bool]], n: int, concurrency: int,
                      cap_s: float, errors: list[str] | None = None) -> tuple[list[float], int, float]:
    """``n`` calls by ``concurrency`` callers, each calling again as soon as it has its answer; the first
    few failures' texts go to ``errors``."""
    latencies: list[float] = []
    issued = failed = 0
    deadline = time.perf_counter() + cap_s

    async def caller() -> None:
        nonlocal issued, failed
        while issued < n:
            started = time.perf_counter()
            if started > deadline:
                return
            issued += 1
            try:
                ok = await call()
                text = "a wrong answer"
            except Exception as exc:
                ok = False
                text = f"{type(exc).__name__}: {exc}"[:160].replace("\n", " ")
            if not ok and errors is not None and len(errors) < 3:
                errors.append(text)
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(max(1, min(concurrency, n)))))
    return latencies, failed, time.perf_counter() - started


def pinned(core: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if core is not None else argv


def other_cores(core: str | None) -> set[int] | None:
    if core is None:
        return None
    mine = {int(c) for c in core.split(",")}
    rest = set(os.sched_getaffinity(0)) - mine
    return rest or None


def baseline_tree(ref: str, dest: Path) -> Path:
    """The repository at ``ref`` (git archive) with this tree's generated stubs: a gateway to compare with.

    ``ref`` may also be a directory holding a copy of the repository (an experiment): used as it is.
    """
    if Path(ref).is_dir():
        tree = Path(ref).resolve()
        if not (tree / "modelgateway").exists():
            shutil.copytree(REPO / "modelgateway", tree / "modelgateway")
        return tree
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    shutil.copytree(REPO / "modelgateway", dest / "modelgateway")
    return dest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=6000, help="measured calls per target, split over the rounds (6000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop callers (32)")
    p.add_argument("--warmup", type=int, default=2000,
                   help="calls to each target before the first round (2000): Node's JIT needs them")
    p.add_argument("--core", default=None,
                   help="CPU list the targets are pinned to (default: the last CPU; 'none': no pinning)")
    p.add_argument("--log-level", default="INFO", help="the gateway's log level (INFO: one access line a call)")
    p.add_argument("--transports", default="direct,aiohttp",
                   help="this gateway's Anthropic http_transport(s), one row each (direct,aiohttp)")
    p.add_argument("--baseline", metavar="REF",
                   help="also run the gateway as of git REF, or from a directory holding a copy (before/after)")
    p.add_argument("--baseline-transport", default="aiohttp",
                   help="the baseline's http_transport (aiohttp: releases before `direct` know no other)")
    p.add_argument("--latency", type=float, default=0.05,
                   help="the upstream's answer time in the latency phase, seconds (0.05; 0: no latency phase)")
    p.add_argument("--latency-calls", type=int, default=800,
                   help="calls per target, caller count and latency round (800)")
    p.add_argument("--latency-rounds", type=int, default=2, help="interleaved latency rounds (2)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: --calls 1500 --rounds 2 --warmup 500 --latency-calls 200 --latency-rounds 1")
    p.add_argument("--no-portkey", action="store_true", help="skip the Portkey row")
    p.add_argument("--no-streams", action="store_true", help="skip the gateway's Anthropic stream row")
    p.add_argument("--no-bedrock", action="store_true", help="skip the gateway's Bedrock rows (unary and stream)")
    p.add_argument("--budget", type=float, default=150.0, help="seconds the measured phases may take in all (150)")
    p.add_argument("--output", type=Path, default=REPO / "bench" / "results-peers.json")
    args = p.parse_args(argv)
    if args.quick:
        args.calls, args.rounds, args.warmup, args.latency_calls, args.latency_rounds = 1500, 2, 500, 200, 1
    if args.core is None:
        args.core = last_core()
    elif args.core.lower() == "none":
        args.core = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-peers-"))
    env = child_env()
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    python = sys.executable
    rest = other_cores(args.core)
    load_before = os.getloadavg()
    targets: list[Target] = []
    upstream: Proc | None = None
    notes: list[str] = []
    try:
        upstream_argv = [python, "-m", "bench.fake_upstream"]
        if rest:
            upstream_argv = ["taskset", "-c", ",".join(map(str, sorted(rest))), *upstream_argv]
        upstream = Proc("fake upstream", upstream_argv, cwd=REPO, env=env, log_path=tmp / "upstream.log",
                        port_from="stdout")
        wait_for_ports([upstream], timeout=20)
        up = upstream.port

        targets.append(Target("floor", "bare grpc.aio echo (floor)",
                              Proc("floor", pinned(args.core, [python, "-m", "bench.echo_server"]), cwd=REPO,
                                   env=env, log_path=tmp / "floor.log", port_from="stdout"), "grpc"))
        level = args.log_level.upper()
        gateways = [("gateway" if i == 0 else f"gateway-{t}", f"this gateway, Anthropic {TRANSPORTS[t]}", env, t)
                    for i, t in enumerate(args.transports.split(","))]
        if args.baseline:
            tree = baseline_tree(args.baseline, tmp / "baseline")
            gateways.append(("baseline", f"this gateway as of {args.baseline}, {TRANSPORTS[args.baseline_transport]}",
                             {**env, "PYTHONPATH": str(tree)}, args.baseline_transport))
        for key, title, genv, transport in gateways:
            scenario = _Scenario("b", "anthropic", "anthropic", transport, level)
            config = tmp / f"{key}.yaml"
            config.write_text(json.dumps(gateway_config(scenario, up)))
            announces = scenario.log_level in ("DEBUG", "INFO")
            proc = Proc(key, pinned(args.core, [python, "-m", "gateway_server", "--config", str(config)]), cwd=tmp,
                        env=genv, log_path=tmp / f"{key}.log", port_from="log" if announces else "proc",
                        port_pattern=STARTED_RE)
            targets.append(Target(key, f"{title}, {scenario.log_level} log", proc, "grpc"))
        if not args.no_streams:  # the Anthropic gateway's streams: the same process, GenerateStream
            first = next(t for t in targets if t.key == "gateway")
            targets.append(Target("gateway-stream", f"{first.title}, GenerateStream ({STREAM_DELTAS} deltas)",
                                  first.proc, "grpc-stream"))
        if not args.no_bedrock:
            scenario = _Scenario("e", "bedrock", "bedrock", "aiobotocore", level)
            config = tmp / "bedrock.yaml"
            config.write_text(json.dumps(gateway_config(scenario, up)))
            proc = Proc("bedrock", pinned(args.core, [python, "-m", "gateway_server", "--config", str(config)]),
                        cwd=tmp, env=env, log_path=tmp / "bedrock.log",
                        port_from="log" if level in ("DEBUG", "INFO") else "proc", port_pattern=STARTED_RE)
            title = f"this gateway, Bedrock (aiobotocore), {level} log"
            targets.append(Target("bedrock", title, proc, "grpc"))
            targets.append(Target("bedrock-stream", f"{title}, GenerateStream ({STREAM_DELTAS} deltas)", proc,
                                  "grpc-stream"))
        if args.no_portkey:
            pass
        elif not PORTKEY_JS.exists() or shutil.which("node") is None:
            notes.append(f"Portkey skipped: {PORTKEY_JS.relative_to(REPO)} or node not found "
                         "(run `scripts/node_deps.sh bench/portkey`)")
        else:
            proc = Proc("portkey", pinned(args.core, ["node", str(PORTKEY_JS), "--port=0", "--headless"]),
                        cwd=PORTKEY_DIR, env={**env, "NODE_ENV": "production"}, log_path=tmp / "portkey.log",
                        port_from="proc")
            targets.append(Target("portkey", f"Portkey gateway {_portkey_version()} (Node {_node_version()})",
                                  proc, "http"))
        wait_for_ports(_procs(targets), timeout=60)
        rss_start = {t.key: t.rss_mb() for t in targets}
        if rest:
            os.sched_setaffinity(0, rest)  # the load client stays off the targets' core
        latency = asyncio.run(_measure(targets, args, up))
        rss_end = {t.key: t.rss_mb() for t in targets}
    except KeyboardInterrupt:
        print("interrupted: stopping the processes", file=sys.stderr)
        return 130
    except StartError as exc:
        print(f"bench.peers: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all([*_procs(targets), *([upstream] if upstream else [])], timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [_row(t, args, rss_start, rss_end) for t in targets]
    _add_ratios(rows)
    _add_latency(rows, latency)
    result = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m bench.peers " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "targets_pinned_to": args.core,
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "settings": {"calls": args.calls, "rounds": args.rounds, "concurrency": args.concurrency, "warmup": args.warmup,
                     "log_level": args.log_level, "latency_s": args.latency, "latency_calls": args.latency_calls,
                     "latency_rounds": args.latency_rounds},
        "results": rows,
        "latency_direct": {n: {"p50_ms": (percentile(sorted(v), 50) or 0) * 1000,
                               "p99_ms": (percentile(sorted(v), 99) or 0) * 1000, "calls": len(v)}
                           for n, v in latency.get("direct", {}).items()},
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    if latency:
        print()
        print(latency_table(rows, latency, args.latency))
    print(f"\n{os.cpu_count()} CPUs, targets pinned to CPU {args.core}, load average {load_before[0]:.2f} before / "
          f"{os.getloadavg()[0]:.2f} after; {args.calls} calls per target in {args.rounds} interleaved rounds, "
          f"{args.concurrency} closed-loop callers. CPU ms/call: median of the rounds. JSON: {args.output}")
    for note in notes:
        print(note)
    for t in targets:
        for text in t.error_samples:
            print(f"error, {t.title}: {text}")
    return 1 if any(r.get("failed") or r["errors"] for r in rows) else 0


def _procs(targets: list[Target]) -> list[Proc]:
    """Each process once (a gateway's unary and stream rows share it)."""
    return list({id(t.proc): t.proc for t in targets}.values())


def _portkey_version() -> str:
    try:
        return str(json.loads((PORTKEY_JS.parent.parent / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def _node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


async def _measure(targets: list[Target], args: argparse.Namespace,
                   upstream_port: int | None) -> dict[str, dict[int, list[float]]]:
    import aiohttp
    import grpc

    from modelgateway.v1 import model_gateway_pb2 as pb
    from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc

    request = pb.GenerateRequest(messages=[pb.Message(role=pb.ROLE_USER, content=PROMPT)], max_tokens=64)
    channels: list[grpc.aio.Channel] = []
    # Enough connections for the latency phase's 64 callers too (else they queue for one in this client).
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(args.concurrency, *LATENCY_CALLERS)),
                                    timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT))
    headers = {"content-type": "application/json", "x-api-key": FAKE_API_KEY, "anthropic-version": "2023-06-01",
               "x-portkey-provider": "anthropic",
               "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1"}
    try:
        for t in targets:
            if t.kind == "grpc-stream":
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{t.proc.port}")
                channels.append(channel)
                stub = pb_grpc.ModelGatewayStub(channel)

                async def stream_call(stub: Any = stub) -> bool:
                    deltas = ends = 0
                    async for event in stub.GenerateStream(request, timeout=CALL_TIMEOUT):
                        kind = event.WhichOneof("event")
                        deltas += kind == "delta"
                        ends += kind == "end"
                    return deltas == STREAM_DELTAS and ends == 1

                t.call = stream_call
            elif t.kind == "grpc":
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{t.proc.port}")
                channels.append(channel)
                stub = pb_grpc.ModelGatewayStub(channel)

                async def grpc_call(stub: Any = stub) -> bool:
                    reply = await stub.Generate(request, timeout=CALL_TIMEOUT)
                    return bool(reply.content == EXPECTED_CONTENT)

                t.call = grpc_call
            else:
                url = f"http://127.0.0.1:{t.proc.port}/v1/messages"

                async def http_call(url: str = url) -> bool:
                    async with session.post(url, data=HTTP_BODY, headers=headers) as resp:
                        body = await resp.read()
                    if resp.status != 200:
                        return False
                    return bool(json.loads(body)["content"][0]["text"] == EXPECTED_CONTENT)

                t.call = http_call
            try:
                if not await t.call():
                    t.failed = "the first call did not answer " + EXPECTED_CONTENT
            except Exception as exc:
                t.failed = f"{type(exc).__name__}: {exc}"[:200]
        live = [t for t in targets if not t.failed]
        per_round = -(-args.calls // args.rounds)
        cap = args.budget / max(1, len(live) * args.rounds)
        for t in live:
            assert t.call is not None
            print(f"warm-up: {t.title}", file=sys.stderr, flush=True)
            await closed_loop(t.call, args.warmup, args.concurrency, cap)
        for r in range(args.rounds):
            for t in live:
                assert t.call is not None
                print(f"round {r + 1}/{args.rounds}: {t.title}", file=sys.stderr, flush=True)
                # Warm-up at the measured concurrency (connection pools full, caches hot), then measure.
                await closed_loop(t.call, max(args.concurrency * 4, per_round // 5), args.concurrency, cap / 4)
                c0 = t.cpu()
                lat, failed, wall = await closed_loop(t.call, per_round, args.concurrency, cap, t.error_samples)
                c1 = t.cpu()
                made = len(lat) + failed
                t.errors += failed
                t.latencies += lat
                if made:
                    t.rounds.append({"calls": made, "ok": len(lat), "wall_s": wall, "calls_per_s": len(lat) / wall,
                                     "cpu_ms_per_call": (c1 - c0) * 1000 / made})
        if args.latency > 0:
            upstream = f"http://127.0.0.1:{upstream_port}"

            async def direct_call() -> bool:
                async with session.post(f"{upstream}/v1/messages", data=HTTP_BODY, headers=headers) as resp:
                    body = await resp.read()
                return resp.status == 200 and bool(json.loads(body)["content"][0]["text"] == EXPECTED_CONTENT)

            anthropic = [t for t in live
                         if t.key.startswith(("gateway", "baseline", "portkey")) and t.kind != "grpc-stream"]
            return await _latency_phase(session, upstream, direct_call, anthropic, args)
        return {}
    finally:
        await session.close()
        for channel in channels:
            await channel.close()


async def _latency_phase(session: Any, upstream: str, direct_call: Callable[[], Awaitable[bool]],
                         targets: list[Target], args: argparse.Namespace) -> dict[str, dict[int, list[float]]]:
    """Latencies (s) by target key ("direct": the upstream called directly) and caller count, the upstream
    answering after ``args.latency`` s; rounds interleaved, pooled."""
    async with session.put(f"{upstream}/bench/latency", data=str(args.latency).encode()) as resp:
        resp.raise_for_status()
    calls: list[tuple[str, str, Callable[[], Awaitable[bool]]]] = [("direct", "the upstream, called directly",
                                                                    direct_call)]
    calls += [(t.key, t.title, t.call) for t in targets if t.call is not None]
    out: dict[str, dict[int, list[float]]] = {key: {n: [] for n in LATENCY_CALLERS} for key, _, _ in calls}
    errors: dict[str, int] = {}
    try:
        for r in range(args.latency_rounds):
            for callers in LATENCY_CALLERS:
                for key, title, call in calls:
                    print(f"latency round {r + 1}/{args.latency_rounds}, {callers} callers: {title}",
                          file=sys.stderr, flush=True)
                    await closed_loop(call, callers * 2, callers, 30)  # the pool at this concurrency
                    lat, failed, _ = await closed_loop(call, args.latency_calls, callers, 120)
                    out[key][callers] += lat
                    errors[key] = errors.get(key, 0) + failed
    finally:
        async with session.put(f"{upstream}/bench/latency", data=b"0") as resp:
            resp.raise_for_status()
    for key, failed in errors.items():
        if failed:
            print(f"latency phase: {failed} failed calls to {key}", file=sys.stderr)
    return out


def _add_latency(rows: list[dict[str, Any]], latency: dict[str, dict[int, list[float]]]) -> None:
    direct = latency.get("direct")
    if not direct:
        return
    base = {n: (percentile(sorted(v), 50), percentile(sorted(v), 99)) for n, v in direct.items()}
    for r in rows:
        mine = latency.get(r["key"])
        if not mine:
            continue
        for n, values in mine.items():
            p50, p99 = percentile(sorted(values), 50), percentile(sorted(values), 99)
            if p50 is None or p99 is None or base[n][0] is None or base[n][1] is None:
                continue
            r[f"latency_{n}"] = {"p50_ms": p50 * 1000, "p99_ms": p99 * 1000, "calls": len(values),
                                 "delta_p50_ms": (p50 - base[n][0]) * 1000, "delta_p99_ms": (p99 - base[n][1]) * 1000}


def latency_table(rows: list[dict[str, Any]], latency: dict[str, dict[int, list[float]]], seconds: float) -> str:
    direct = latency.get("direct", {})
    cells = []
    for n in LATENCY_CALLERS:
        values = sorted(direct.get(n, []))
        p50, p99 = percentile(values, 50), percentile(values, 99)
        cells.append(f"{n} callers: p50 {_fmt(p50 and p50 * 1000, 1)} / p99 {_fmt(p99 and p99 * 1000, 1)} ms")
    lines = [f"Upstream answering after {seconds * 1000:g} ms; called directly: {'; '.join(cells)}.", "",
             "| target | Δp50 / Δp99 ms, 16 callers | Δp50 / Δp99 ms, 64 callers |",
             "| --- | ---: | ---: |"]
    for r in rows:
        if "latency_16" not in r and "latency_64" not in r:
            continue
        out = []
        for n in LATENCY_CALLERS:
            d = r.get(f"latency_{n}")
            out.append(f"{d['delta_p50_ms']:.1f} / {d['delta_p99_ms']:.1f}" if d else "—")
        lines.append(f"| {r['title']} | {out[0]} | {out[1]} |")
    return "\n".join(lines)


def _row(t: Target, args: argparse.Namespace, rss_start: dict[str, float | None],
         rss_end: dict[str, float | None]) -> dict[str, Any]:
    lat = sorted(v * 1000 for v in t.latencies)
    cpu = [r["cpu_ms_per_call"] for r in t.rounds]
    cps = [r["calls_per_s"] for r in t.rounds]
    row: dict[str, Any] = {
        "key": t.key, "title": t.title, "errors": t.errors,
        "cpu_ms_per_call": statistics.median(cpu) if cpu else None,
        "cpu_ms_per_call_rounds": cpu,
        "calls_per_s": statistics.median(cps) if cps else None,
        "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
        "rss_mb_start": rss_start.get(t.key), "rss_mb_end": rss_end.get(t.key),
        "rounds": t.rounds,
    }
    if t.failed:
        row["failed"] = t.failed
    return row


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    by_key = {r["key"]: r for r in rows if r.get("cpu_ms_per_call")}
    for r in rows:
        if r["key"].endswith("-stream"):  # a stream's CPU is not comparable with a unary call's
            continue
        for ref in ("portkey", "floor"):
            base = by_key.get(ref)
            if base is not None and r.get("cpu_ms_per_call"):
                r[f"cpu_vs_{ref}"] = r["cpu_ms_per_call"] / base["cpu_ms_per_call"]


def _fmt(v: float | None, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| target (pinned to one core) | CPU ms/call | CPU × Portkey | CPU × floor | calls/s "
             "| p50 / p99 ms (at the concurrency) | RSS MB start → end |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['title']} | failed: {r['failed']} | | | | | |")
            continue
        flag = f" ⚠ {r['errors']} errors" if r["errors"] else ""
        lines.append(f"| {r['title']}{flag} | {_fmt(r['cpu_ms_per_call'], 3)} | {_fmt(r.get('cpu_vs_portkey'), 2)} "
                     f"| {_fmt(r.get('cpu_vs_floor'), 2)} | {_fmt(r['calls_per_s'], 0)} "
                     f"| {_fmt(r['p50_ms'], 1)} / {_fmt(r['p99_ms'], 1)} "
                     f"| {_fmt(r['rss_mb_start'], 0)} → {_fmt(r['rss_mb_end'], 0)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
