"""``python -m bench.overhead [--baseline REF]``: the gateway's own CPU per call, mock provider, before/after.

The gateway with the ``mock`` provider (scenario a of ``python -m bench``: gRPC, validation, routing,
response, access log line; no provider I/O) beside the bare grpc.aio echo server (the floor) and,
with ``--baseline REF`` (repeatable), the same gateway as of git REF (or a directory holding a copy),
every one pinned to one core (``taskset``), the load client on the other cores. Rounds are interleaved
(floor, gateway, baseline, floor, ...) as in ``python -m bench.peers``, whose closed-loop load and
measurement this reuses; CPU per call = the target's CPU time (every thread) during the measured
phase / calls, median of the rounds. Prints µs per call and the gateway's own work over the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.peers import Target, _measure, baseline_tree, other_cores, pinned
from bench.procs import Proc, StartError, last_core, stop_all, wait_for_ports
from bench.run import REPO, STARTED_RE, child_env, gateway_config
from bench.run import Scenario as _Scenario


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=12000, help="measured calls per target, split over the rounds")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop callers (32)")
    p.add_argument("--warmup", type=int, default=1000, help="calls to each target before the first round")
    p.add_argument("--core", default=None, help="CPU list the targets are pinned to (default: the last CPU)")
    p.add_argument("--log-level", default="INFO", help="the gateway's log level (INFO: one access line a call)")
    p.add_argument("--baseline", metavar="REF", action="append", default=[],
                   help="also run the gateway as of git REF or from a directory (repeatable)")
    p.add_argument("--variant", metavar="NAME=JSON", action="append", default=[],
                   help="also run this tree with JSON merged into its configuration (repeatable), e.g. "
                        "'nocap={\"server\": {\"max_concurrent_calls\": 0}}'")
    p.add_argument("--budget", type=float, default=240.0, help="seconds the measured phases may take in all")
    args = p.parse_args(argv)
    args.latency = 0.0  # bench.peers' latency phase (an Anthropic upstream) does not apply here
    if args.core is None:
        args.core = last_core()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-overhead-"))
    env = child_env()
    python = sys.executable
    rest = other_cores(args.core)
    load_before = os.getloadavg()
    targets: list[Target] = []
    try:
        targets.append(Target("floor", "bare grpc.aio echo (floor)",
                              Proc("floor", pinned(args.core, [python, "-m", "bench.echo_server"]), cwd=REPO,
                                   env=env, log_path=tmp / "floor.log", port_from="stdout"), "grpc"))
        scenario = _Scenario("a", "mock", "mock", None, args.log_level.upper())
        gateways: list[tuple[str, str, dict[str, str], dict[str, Any]]] = [("gateway", "this tree", env, {})]
        for i, ref in enumerate(args.baseline):
            tree = baseline_tree(ref, tmp / f"baseline{i}")
            gateways.append((f"baseline{i}", f"as of {ref}", {**env, "PYTHONPATH": str(tree)}, {}))
        for i, variant in enumerate(args.variant):
            name, _, extra = variant.partition("=")
            gateways.append((f"variant{i}", f"this tree, {name}", env, json.loads(extra)))
        for key, title, genv, extra in gateways:
            config = tmp / f"{key}.yaml"
            settings = gateway_config(scenario, None)
            for k, v in extra.items():
                settings[k] = {**settings[k], **v} if isinstance(v, dict) and isinstance(settings.get(k), dict) else v
            config.write_text(json.dumps(settings))
            announces = str(settings["log_level"]).upper() in ("DEBUG", "INFO")
            proc = Proc(key, pinned(args.core, [python, "-m", "gateway_server", "--config", str(config)]), cwd=tmp,
                        env=genv, log_path=tmp / f"{key}.log", port_from="log" if announces else "proc",
                        port_pattern=STARTED_RE)
            targets.append(Target(key, f"gateway (mock, {settings['log_level']}), {title}", proc, "grpc"))
        wait_for_ports([t.proc for t in targets], timeout=60)
        if rest:
            os.sched_setaffinity(0, rest)
        asyncio.run(_measure(targets, args, None))
    except KeyboardInterrupt:
        return 130
    except StartError as exc:
        print(f"bench.overhead: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all([t.proc for t in targets], timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)

    floor = _median_us(targets[0])
    ref = targets[2] if len(targets) > 2 else None  # the first baseline
    print("| target (pinned to one core) | CPU µs/call (median) | over the floor | × first baseline, paired "
          "| rounds |")
    print("| --- | ---: | ---: | ---: | --- |")
    for t in targets:
        us = _median_us(t)
        rounds = ", ".join(f"{r['cpu_ms_per_call'] * 1000:.0f}" for r in t.rounds)
        over = "" if t is targets[0] or us is None or floor is None else f"{us - floor:+.0f}"
        paired = ""
        if ref is not None and t is not targets[0] and len(t.rounds) == len(ref.rounds) and t.rounds:
            # The median over rounds of this round's ratio: a burst from elsewhere hits both alike.
            ratios = [a["cpu_ms_per_call"] / b["cpu_ms_per_call"] for a, b in zip(t.rounds, ref.rounds, strict=True)]
            paired = f"{statistics.median(ratios):.3f}"
        flag = f" ⚠ {t.errors} errors" if t.errors else ""
        flag += f" failed: {t.failed}" if t.failed else ""
        print(f"| {t.title}{flag} | {'—' if us is None else f'{us:.0f}'} | {over} | {paired} | {rounds} |")
    print(f"\nload average {load_before[0]:.2f} before / {os.getloadavg()[0]:.2f} after; pinned to CPU {args.core}; "
          f"{args.calls} calls per target in {args.rounds} interleaved rounds, {args.concurrency} callers")
    return 1 if any(t.errors or t.failed for t in targets) else 0


def _median_us(t: Target) -> float | None:
    cpu = [r["cpu_ms_per_call"] for r in t.rounds]
    return statistics.median(cpu) * 1000 if cpu else None


if __name__ == "__main__":
    sys.exit(main())
