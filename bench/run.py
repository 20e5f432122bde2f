"""``python -m bench [--quick] [--calls N] [--concurrency C] [--scenarios a,b,...,i] [--log-levels INFO,WARNING]``

Scenarios (each gateway a separate ``python -m gateway_server --config <tmp yaml>`` process):

  a  mock provider: the gateway's own cost (gRPC, validation, routing, response, logging)
  b  anthropic provider, SDK with its aiohttp transport, against the fake upstream
  c  anthropic provider, SDK with its default httpx transport, against the fake upstream
  d  bare grpc.aio echo server, same RPC, fixed answer: the floor
  e  bedrock provider (aiobotocore), Converse against the fake upstream
  f  bedrock provider, GenerateStream (ConverseStream, 20 text deltas) read to the end
  g  anthropic provider (aiohttp), GenerateStream (20 text deltas) read to the end
  h  anthropic provider, the direct transport (the default: aiohttp with the SDK's headers and errors)
  i  anthropic provider, direct transport, GenerateStream (20 text deltas) read to the end

a, b, c, e, f, g, h and i run once per log level (INFO: one line per request, to a log file; WARNING: none).
Prints a Markdown table and writes JSON (bench/results.json; bench/results-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import MODEL
from bench.procs import Proc, StartError, rss_mb, stop_all, wait_for_ports

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
STARTED_RE = re.compile(r"Gateway started .* on [^\s]+:(\d+)")
FAKE_API_KEY = "sk-ant-bench-not-a-real-key"
# Fake AWS credentials for the bedrock scenarios (the fake upstream checks no signature).
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "AKIDBENCHNOTREAL", "AWS_SECRET_ACCESS_KEY": "bench-not-a-real-secret"}
BEDROCK_MODEL = "global.anthropic.claude-sonnet-5-5"
SCENARIOS = ("a", "b", "c", "d", "e", "f", "g", "h", "i")
# Relative time one round of a scenario takes, before any has been measured (then: measured).
PRIOR_WEIGHT = {"a": 1.0, "b": 3.5, "c": 5.0, "d": 0.8, "e": 6.0, "f": 12.0, "g": 8.0, "h": 2.0, "i": 5.0}


@dataclass(frozen=True)
class Scenario:
    key: str  # a, b, c, d
    label: str
    provider: str  # the provider expected in each answer
    transport: str | None = None  # anthropic http_transport; "aiobotocore" for bedrock
    log_level: str | None = None  # None: not a gateway (the echo server)
    stream: bool = False  # GenerateStream instead of Generate

    @property
    def name(self) -> str:
        """A slug for files and the JSON: a-mock-info, b-anthropic-aiohttp-warning, d-echo."""
        parts = [self.key, self.provider, self.transport or "", "stream" if self.stream else "",
                 (self.log_level or "").lower()]
        return "-".join(p for p in parts if p)

    @property
    def title(self) -> str:
        logs = f", {self.log_level} logs" if self.log_level else ""
        return f"{self.key}. {self.label}{logs}"


def plan(keys: list[str], levels: list[str]) -> list[Scenario]:
    out: list[Scenario] = []
    for key in keys:
        if key == "d":
            out.append(Scenario("d", "bare grpc.aio echo (floor)", "echo"))
            continue
        for level in levels:
            if key == "a":
                out.append(Scenario("a", "mock", "mock", log_level=level))
            elif key == "b":
                out.append(Scenario("b", "anthropic SDK, aiohttp", "anthropic", "aiohttp", level))
            elif key == "c":
                out.append(Scenario("c", "anthropic SDK, httpx", "anthropic", "httpx", level))
            elif key == "e":
                out.append(Scenario("e", "bedrock, aiobotocore", "bedrock", "aiobotocore", level))
            elif key == "f":
                out.append(Scenario("f", "bedrock, aiobotocore, stream of 20 deltas", "bedrock", "aiobotocore",
                                    level, stream=True))
            elif key == "g":
                out.append(Scenario("g", "anthropic SDK, aiohttp, stream of 20 deltas", "anthropic", "aiohttp",
                                    level, stream=True))
            elif key == "h":
                out.append(Scenario("h", "anthropic, direct transport (the default)", "anthropic", "direct", level))
            elif key == "i":
                out.append(Scenario("i", "anthropic, direct transport, stream of 20 deltas", "anthropic", "direct",
                                    level, stream=True))
    return out


def gateway_config(s: Scenario, upstream_port: int | None) -> dict[str, Any]:
    provider: dict[str, Any]
    if s.provider == "mock":
        provider = {"type": "mock", "default_model": MODEL}
    elif s.provider == "bedrock":
        provider = {"type": "bedrock", "endpoint_url": f"http://127.0.0.1:{upstream_port}", "region": "us-east-1",
                    "model_id": BEDROCK_MODEL, "max_retries": 0}
    else:
        provider = {"type": "anthropic", "base_url": f"http://127.0.0.1:{upstream_port}",
                    "api_key": FAKE_API_KEY, "http_transport": s.transport, "default_model": MODEL,
                    "max_retries": 0}
    return {
        "host": "127.0.0.1", "port": 0, "log_level": s.log_level, "log_format": "text", "metrics_port": 0,
        "default_provider": s.provider, "providers": {s.provider: provider},
        "fallback": {"enabled": False},
        # One token-free probe at start-up (GET /v1/models or count-tokens on the fake upstream), then none.
        "health_check": {"enabled": True, "interval": 3600},
        "server": {"grace_period": 0},
    }


def child_env() -> dict[str, str]:
    """The environment without anything that would override the YAML or reach real providers."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "ANTHROPIC_", "AWS_", "PYTHONPATH"))}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, PYTHONPATH=str(REPO), **FAKE_AWS)
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few calls: a smoke test in well under 20 s")
    p.add_argument("--calls", type=int, help="calls in the sequential phase and in the throughput phase, "
                                              "split over the rounds (default 3000; --quick 200)")
    p.add_argument("--rounds", type=int, help="round-robin rounds over the scenarios (default 3; --quick 1)")
    p.add_argument("--warmup", type=int, help="warm-up calls (default 300; --quick 64)")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight in the throughput phase (32)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset of {','.join(SCENARIOS)} (all)")
    p.add_argument("--log-levels", default="INFO,WARNING",
                   help="gateway log levels, each a run of a/b/c/e/f/g (INFO,WARNING)")
    p.add_argument("--budget", type=float,
                   help="seconds the whole run may take; phases are capped to fit (default 240; --quick 30)")
    p.add_argument("--output", type=Path, help="JSON file (bench/results.json; --quick: bench/results-quick.json)")
    p.add_argument("--keep-logs", action="store_true", help="keep the temporary directory with configs and logs")
    args = p.parse_args(argv)
    args.scenarios = [s.strip().lower() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in args.scenarios if s not in SCENARIOS]
    if bad or not args.scenarios:
        p.error(f"--scenarios: unknown {','.join(bad) or '(empty)'}; choose from {','.join(SCENARIOS)}")
    args.log_levels = [s.strip().upper() for s in args.log_levels.split(",") if s.strip()]
    if not args.log_levels or any(lv not in ("DEBUG", "INFO", "WARNING", "ERROR") for lv in args.log_levels):
        p.error("--log-levels: DEBUG, INFO, WARNING or ERROR, comma-separated")
    if args.calls is None:
        args.calls = 200 if args.quick else 3000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.warmup is None:
        args.warmup = 64 if args.quick else 300
    if args.budget is None:
        args.budget = 30.0 if args.quick else 240.0
    if args.output is None:
        args.output = BENCH_DIR / ("results-quick.json" if args.quick else "results.json")
    if min(args.calls, args.concurrency, args.rounds) < 1 or args.warmup < 0 or args.budget <= 0:
        p.error("--calls, --concurrency and --rounds must be >= 1, --warmup >= 0, --budget > 0")
    return args


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scenario | CPU ms/call (gateway) | calls/s | p50 ms | p99 ms |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['title']} | failed: {r['failed']} | | | |")
            continue
        flag = " ⚠" if r["errors"] else ""
        lines.append(f"| {r['title']}{flag} | {_fmt(r['cpu_ms_per_call'], 3)} | {_fmt(r['calls_per_s'], 0)} "
                     f"| {_fmt(r['p50_ms'], 3)} | {_fmt(r['p99_ms'], 3)} |")
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("grpcio", "protobuf", "anthropic", "aiohttp", "httpx2", "httpx", "aiobotocore", "botocore"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = plan(args.scenarios, args.log_levels)
    started = time.monotonic()
    budget_end = started + args.budget
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_sigterm)
    # Ctrl-C raises KeyboardInterrupt even where the shell started us with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    env = child_env()
    # The load client's gRPC core: no INFO lines (e.g. GOAWAY when a target stops under a live channel).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    python = sys.executable
    procs: dict[str, Proc] = {}
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    status = 0
    upstream: Proc | None = None
    try:
        upstream_port: int | None = None
        if any(s.provider in ("anthropic", "bedrock") for s in scenarios):
            upstream = Proc("fake upstream", [python, "-m", "bench.fake_upstream"], cwd=REPO, env=env,
                            log_path=tmp / "upstream.log", port_from="stdout")
            wait_for_ports([upstream], timeout=20)
            upstream_port = upstream.port
        # Every target starts at once (start-up in parallel), then each is measured alone.
        for s in scenarios:
            if s.log_level is None:
                procs[s.name] = Proc(s.title, [python, "-m", "bench.echo_server"], cwd=REPO, env=env,
                                     log_path=tmp / f"{s.name}.log", port_from="stdout")
                continue
            config = tmp / f"{s.name}.yaml"
            config.write_text(json.dumps(gateway_config(s, upstream_port), indent=1))  # JSON is YAML
            # cwd: the temp dir, so no .env file of the working tree is read.
            # INFO announces the port in its start-up line; WARNING logs nothing: read it from /proc.
            announces = s.log_level in ("DEBUG", "INFO")
            procs[s.name] = Proc(s.title, [python, "-m", "gateway_server", "--config", str(config)], cwd=tmp,
                                 env=env, log_path=tmp / f"{s.name}.log",
                                 port_from="log" if announces else "proc", port_pattern=STARTED_RE)
        wait_for_ports(list(procs.values()), timeout=max(10.0, min(45.0, budget_end - time.monotonic())))
        startup_s = time.monotonic() - started

        # gRPC only now: the children were forked (with a preexec_fn) while this process had no threads.
        from bench.load import Target

        targets = [Target(s.name, f"127.0.0.1:{procs[s.name].port}", s.provider, procs[s.name].cpu,
                          upstream.cpu if (upstream is not None and s.transport) else None, stream=s.stream)
                   for s in scenarios]
        asyncio.run(_measure_all(targets, scenarios, args, started, budget_end))
        for s, t in zip(scenarios, targets, strict=True):
            p = procs[s.name]
            row: dict[str, Any] = {"scenario": s.key, "name": s.name, "title": s.title, "provider": s.provider,
                                   "http_transport": s.transport, "log_level": s.log_level, "pid": p.pid,
                                   "rss_mb": rss_mb(p.pid), **t.summary(args.concurrency)}
            if t.failed or t.errors:
                status = 1
                print(f"{s.title}: {t.failed or ''} errors {dict(t.errors)} (first: {t.first_error}){p.tail()}",
                      file=sys.stderr)
            rows.append(row)
    except (KeyboardInterrupt, _Terminated) as exc:
        print(f"\ninterrupted ({type(exc).__name__} {exc}): stopping the processes", file=sys.stderr)
        return 130
    except StartError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all([*procs.values(), *([upstream] if upstream else [])], timeout=5)
        if args.keep_logs:
            print(f"logs and configs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.monotonic() - started
    result = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "versions": _versions(),
        "settings": {"calls": args.calls, "rounds": args.rounds, "warmup": args.warmup,
                     "concurrency": args.concurrency,
                     "quick": args.quick, "budget_s": args.budget},
        "startup_s": round(startup_s, 2),
        "elapsed_s": round(elapsed, 2),
        "metrics": {
            "cpu_ms_per_call": "gateway (or echo server) process CPU time (user+system, every thread) during "
                               "the throughput phase / calls; median of the rounds",
            "calls_per_s": "throughput phase: successful calls / wall time at --concurrency; median of the rounds",
            "p50_ms, p99_ms": "sequential phase (one call at a time), client-side wall latency, all rounds pooled",
        },
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    print(table(rows))
    print(f"\n{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before / {os.getloadavg()[0]:.2f} after; "
          f"{args.calls} calls per phase in {args.rounds} round(s), concurrency {args.concurrency}; "
          f"{elapsed:.1f}s in all "
          f"(start-up {startup_s:.1f}s). CPU ms/call is the most stable number on a shared machine; "
          f"calls/s and latencies move with the load. JSON: {_display(args.output)}")
    if any(r.get("errors") or "failed" in r for r in rows):
        print("⚠ some calls failed: see the errors above and in the JSON.")
    capped = [f"{r['scenario']}/{(r['log_level'] or '-').lower()} ({r['sequential']['calls']} sequential, "
              f"{r['throughput']['calls']} concurrent calls)"
              for r in rows if "failed" not in r and (r["sequential"]["capped"] or r["throughput"]["capped"])]
    if capped:
        print(f"Cut short by the time budget (--budget): {'; '.join(capped)}.")
    return status


async def _measure_all(targets: list[Any], scenarios: list[Scenario], args: argparse.Namespace,
                       started: float, budget_end: float) -> None:
    """Round-robin over the targets; each chunk's phases are capped to what the budget leaves."""
    titles = {t.name: s.title for s, t in zip(scenarios, targets, strict=True)}
    for t in targets:
        try:
            await t.open()
        except Exception as exc:  # one broken scenario must not hide the others
            t.failed = _why(exc)
    per_round = -(-args.calls // args.rounds)
    stop_reserve = 0.5 * len(targets)  # seconds kept for stopping the processes at the end
    # Each chunk (one round of one target) gets a share of the time left in proportion to its weight:
    # a prior from the scenario's expected cost per call, then the time its previous round took.
    weight = {t.name: PRIOR_WEIGHT[s.key] for s, t in zip(scenarios, targets, strict=True)}
    for r in range(args.rounds):
        for i, t in enumerate(targets):
            if t.failed:
                continue
            pending = [u for u in targets[i:] if not u.failed]
            pending_weight = sum(weight[u.name] for u in pending) + (args.rounds - r - 1) * sum(
                weight[u.name] for u in targets if not u.failed)
            left = budget_end - time.monotonic() - stop_reserve
            share = max(0.3, left * weight[t.name] / pending_weight)
            print(f"[{time.monotonic() - started:5.1f}s] round {r + 1}/{args.rounds}: {titles[t.name]}",
                  file=sys.stderr, flush=True)
            chunk_started = time.monotonic()
            try:
                await t.one_round(warmup=args.warmup if r == 0 else args.warmup // 3, calls=per_round,
                                  throughput_calls=per_round, concurrency=args.concurrency,
                                  time_s=share)
            except Exception as exc:
                t.failed = _why(exc)
            weight[t.name] = max(0.05, time.monotonic() - chunk_started)
    for t in targets:
        await t.close()


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
