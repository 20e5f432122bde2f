"""``python -m bench.summary``: one table from the last ``make bench`` run (``python -m bench`` and
``python -m bench.streams``, whose JSON files it reads): the floor, the mock provider, Anthropic unary
and streams (TTFT overhead, CPU per chunk), Bedrock unary and streams, and each process's RSS.

``--results`` / ``--streams`` name other JSON files (e.g. bench/results-quick.json after ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
# (row title, scenario key of ``python -m bench``)
ROWS = (("bare grpc.aio echo (the floor)", "d"), ("gateway, mock provider", "a"),
        ("gateway, Anthropic unary (direct transport)", "h"),
        ("gateway, Anthropic GenerateStream, 20 deltas (direct)", "i"),
        ("gateway, Bedrock Converse (aiobotocore)", "e"),
        ("gateway, Bedrock ConverseStream, 20 deltas", "f"))
STREAMS_ROW = "gateway, direct aiohttp"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any], streams: dict[str, Any] | None) -> str:
    by_key: dict[str, dict[str, Any]] = {}
    for row in results.get("results", []):
        # One row per scenario: the INFO-log one when several log levels ran.
        if row["scenario"] not in by_key or row.get("log_level") == "INFO":
            by_key[row["scenario"]] = row
    stream = (streams or {}).get("targets", {}).get(STREAMS_ROW)
    lines = ["| target | CPU ms/call (a stream: per stream) | calls/s | p50 / p99 ms | TTFT overhead ms "
             "| CPU µs/chunk | RSS MB |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for title, key in ROWS:
        row = by_key.get(key)
        if row is None or "failed" in row:
            continue
        ttft = chunk = "—"
        rss = _fmt(row.get("rss_mb"), 0)
        if key == "i" and stream is not None:
            ttft = _fmt(stream["ttft_overhead_ms"])
            chunk = _fmt(stream["cpu_us_per_chunk"], 0)
            rss += f" ({_fmt(stream['rss_mb_open'], 0)} with 64 streams open)"
        lines.append(f"| {title} | {_fmt(row.get('cpu_ms_per_call'), 3)} | {_fmt(row.get('calls_per_s'), 0)} "
                     f"| {_fmt(row.get('p50_ms'))} / {_fmt(row.get('p99_ms'))} | {ttft} | {chunk} | {rss} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=None,
                   help="python -m bench's JSON (default: the newer of bench/results.json and results-quick.json)")
    p.add_argument("--streams", type=Path, default=BENCH_DIR / "results-streams.json")
    args = p.parse_args(argv)
    if args.results is None:
        found = [f for f in (BENCH_DIR / "results.json", BENCH_DIR / "results-quick.json") if f.exists()]
        args.results = max(found, key=lambda f: f.stat().st_mtime) if found else BENCH_DIR / "results.json"
    try:
        results = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        print(f"bench.summary: {args.results}: {exc} (run `make bench` first)", file=sys.stderr)
        return 2
    try:
        streams = json.loads(args.streams.read_text())
    except (OSError, ValueError):
        streams = None
    print("\n## One table: make bench\n")
    print(table(results, streams))
    machine = results.get("machine", {})
    print(f"\n{machine.get('cpus')} CPUs, load average {machine.get('loadavg_before', [0])[0]:.2f} before the "
          f"run; p50/p99: one call at a time; TTFT overhead and CPU per chunk: python -m bench.streams "
          f"(50 deltas, pinned); RSS after the calls. Sources: {args.results.name}, {args.streams.name}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
