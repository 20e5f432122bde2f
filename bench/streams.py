"""``python -m bench.streams``: Anthropic streams through the gateway: TTFT overhead, CPU per chunk, RSS.

A fake streaming upstream (``python -m bench.streams --serve``: aiohttp's low-level server, one fixed
SSE stream of ``--chunks`` text deltas, pre-encoded, optionally ``--gap-ms`` apart) stands in for the
Messages API. Measured, with the gateway (Anthropic provider; one row per --transports entry: direct,
the default, and the SDK's aiohttp transport) pinned like bench.peers:

  TTFT overhead   time to the first text delta through the gateway (gRPC GenerateStream) minus the same
                  straight from the upstream (aiohttp, SSE), one stream at a time; medians
  CPU per chunk   gateway CPU time while --concurrency streams run back to back / text deltas delivered
  RSS             the gateway's resident memory at start, and with --open streams open at once
                  (the upstream holding each stream open between chunks)

TTFT only, no CPU or RSS figures, measured in the same loop, interleaved with the first gateway row:

  mock            the gateway with the mock provider: no upstream, no HTTP (the gateway's streaming path)
  floor           bench/echo_server.py: a bare grpc.aio server whose GenerateStream yields the gateway's
                  messages (StreamStart, --chunks fixed text deltas, StreamEnd) and does nothing else:
                  what any grpc.aio server-streaming hop costs to the first delta on this machine
  portkey         the Portkey gateway (bench.peers; node_modules from `make bench-peers`), POST
                  /v1/messages "stream": true to the same upstream (x-portkey-custom-host), TTFT to the
                  first content_block_delta; its overhead is its TTFT minus the direct TTFT

With --baseline REF the gateway as of git REF runs beside it, interleaved (before/after in one run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import MODEL
from bench.procs import last_core, rss_mb

EVENT = "event: {name}\ndata: {data}\n\n"
MOCK = "gateway, mock provider"
FLOOR = "bare grpc.aio streaming echo (the floor)"
PORTKEY = "Portkey gateway"
TRANSPORTS = {"direct": "direct aiohttp", "aiohttp": "SDK, aiohttp", "httpx": "SDK, httpx"}


def sse_body(chunks: int) -> tuple[bytes, list[bytes]]:
    """(head, per-chunk events + tail as separate writes)."""
    def ev(name: str, data: dict[str, Any]) -> bytes:
        return EVENT.format(name=name, data=json.dumps(data, separators=(",", ":"))).encode()

    head = ev("message_start", {"type": "message_start", "message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}})
    head += ev("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})
    parts = [ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": f"tok{i} "}}) for i in range(chunks)]
    tail = ev("content_block_stop", {"type": "content_block_stop", "index": 0})
    tail += ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": chunks}})
    tail += ev("message_stop", {"type": "message_stop"})
    return head, [*parts, tail]


async def serve(chunks: int, gap_ms: float) -> None:
    from aiohttp import web

    head, rest = sse_body(chunks)
    models = json.dumps({"data": [{"type": "model", "id": MODEL, "display_name": "x",
                                   "created_at": "2025-09-29T00:00:00Z"}],
                         "has_more": False, "first_id": MODEL, "last_id": MODEL}).encode()
    whole = head + b"".join(rest)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/v1/models":
            return web.Response(body=models, content_type="application/json")
        await request.read()
        if gap_ms <= 0:
            return web.Response(body=whole, content_type="text/event-stream")
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(head)
        for part in rest:
            await asyncio.sleep(gap_ms / 1000)
            await resp.write(part)
        await resp.write_eof()
        return resp

    from bench.fake_upstream import serve as serve_handler

    await serve_handler(handle)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", action="store_true", help="run the fake streaming upstream (prints its port)")
    p.add_argument("--chunks", type=int, default=50, help="text deltas per stream (50)")
    p.add_argument("--gap-ms", type=float, default=0.0, help="--serve: pause between chunks (0)")
    p.add_argument("--streams", type=int, default=300, help="streams in the CPU phase, per target and round (300)")
    p.add_argument("--ttft-calls", type=int, default=100, help="sequential streams for TTFT, per round (100)")
    p.add_argument("--concurrency", type=int, default=16, help="streams in flight in the CPU phase (16)")
    p.add_argument("--open", type=int, default=64, help="streams held open at once for the RSS figure (64)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--core", default=None, help="CPU list the gateways are pinned to (default: the last CPU)")
    p.add_argument("--transports", default="direct,aiohttp",
                   help="the Anthropic http_transport(s) of this tree's gateway, one row each (direct,aiohttp)")
    p.add_argument("--no-mock", action="store_true",
                   help="skip the mock-provider gateway's TTFT (the gateway's streaming floor)")
    p.add_argument("--no-floor", action="store_true", help="skip the bare grpc.aio streaming echo's TTFT")
    p.add_argument("--no-portkey", action="store_true", help="skip the Portkey gateway's TTFT")
    p.add_argument("--baseline", metavar="REF", help="also run the gateway as of git REF")
    p.add_argument("--baseline-transport", default="aiohttp",
                   help="the baseline's http_transport (aiohttp: releases before `direct` know no other)")
    p.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results-streams.json")
    args = p.parse_args(argv)
    if args.core is None:
        args.core = last_core()
    elif args.core.lower() == "none":
        args.core = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.chunks, args.gap_ms))
        return 0

    import shutil

    from bench.peers import PORTKEY_DIR, PORTKEY_JS, baseline_tree, other_cores, pinned
    from bench.procs import Proc, StartError, stop_all, wait_for_ports
    from bench.run import REPO, STARTED_RE, Scenario, child_env, gateway_config

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-streams-"))
    env = child_env()
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    python = sys.executable
    rest = other_cores(args.core)
    rest_list = ",".join(map(str, sorted(rest))) if rest else None
    load_before = os.getloadavg()
    procs: list[Proc] = []
    gateways: dict[str, Proc] = {}
    try:
        fast = Proc("upstream", pinned(rest_list, [python, "-m", "bench.streams", "--serve", "--chunks",
                                                   str(args.chunks)]),
                    cwd=REPO, env=env, log_path=tmp / "up.log", port_from="stdout")
        slow = Proc("slow upstream", pinned(rest_list, [python, "-m", "bench.streams", "--serve", "--chunks", "20",
                                                        "--gap-ms", "250"]),
                    cwd=REPO, env=env, log_path=tmp / "slow.log", port_from="stdout")
        procs += [fast, slow]
        wait_for_ports(procs, timeout=20)
        trees = [(f"gateway, {TRANSPORTS[t]}", env, t) for t in args.transports.split(",")]
        if args.baseline:
            trees.append((f"as of {args.baseline}, {TRANSPORTS[args.baseline_transport]}",
                          {**env, "PYTHONPATH": str(baseline_tree(args.baseline, tmp / "baseline"))},
                          args.baseline_transport))
        for name, genv, transport in trees:
            scenario = Scenario("b", "anthropic", "anthropic", transport, "INFO")
            for upstream, suffix in ((fast, ""), (slow, " (slow upstream)")):
                cfg = tmp / f"{len(gateways)}.yaml"
                cfg.write_text(json.dumps(gateway_config(scenario, upstream.port)))
                proc = Proc(name + suffix, pinned(args.core, [python, "-m", "gateway_server", "--config", str(cfg)]),
                            cwd=tmp, env=genv, log_path=tmp / f"{len(gateways)}.log", port_from="log",
                            port_pattern=STARTED_RE)
                gateways[name + suffix] = proc
                procs.append(proc)
        if not args.no_mock:  # the streaming floor: the same gateway with the mock provider, no upstream at all
            cfg = tmp / "mock.yaml"
            cfg.write_text(json.dumps(gateway_config(Scenario("a", "mock", "mock", None, "INFO"), None)))
            gateways[MOCK] = Proc(MOCK, pinned(args.core, [python, "-m", "gateway_server", "--config", str(cfg)]),
                                  cwd=tmp, env=env, log_path=tmp / "mock.log", port_from="log", port_pattern=STARTED_RE)
            procs.append(gateways[MOCK])
        if not args.no_floor:
            gateways[FLOOR] = Proc(FLOOR, pinned(args.core, [python, "-m", "bench.echo_server", "--chunks",
                                                            str(args.chunks)]),
                                   cwd=REPO, env=env, log_path=tmp / "floor.log", port_from="stdout")
            procs.append(gateways[FLOOR])
        if args.no_portkey:
            pass
        elif not PORTKEY_JS.exists() or shutil.which("node") is None:
            print(f"bench.streams: Portkey skipped: {PORTKEY_JS} or node not found (make bench-peers installs it)",
                  file=sys.stderr)
        else:
            gateways[PORTKEY] = Proc(PORTKEY, pinned(args.core, ["node", str(PORTKEY_JS), "--port=0", "--headless"]),
                                     cwd=PORTKEY_DIR, env={**env, "NODE_ENV": "production"},
                                     log_path=tmp / "portkey.log", port_from="proc")
            procs.append(gateways[PORTKEY])
        wait_for_ports(list(gateways.values()), timeout=60)
        if rest:
            os.sched_setaffinity(0, rest)
        result = asyncio.run(_measure(args, fast.port, gateways, [n for n, _, _ in trees]))
    except KeyboardInterrupt:
        return 130
    except StartError as exc:
        print(f"bench.streams: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all(procs, timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
    result.update(generated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), loadavg_before=load_before,
                  loadavg_after=os.getloadavg(), cpus=os.cpu_count(), pinned_to=args.core,
                  settings={k: v for k, v in vars(args).items() if k != "output"} | {"output": str(args.output)})
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| Anthropic streams | TTFT ms (direct → gateway) | TTFT overhead ms | CPU ms/stream "
             f"({args.chunks} chunks) | CPU µs/chunk | RSS MB start → {args.open} streams open |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in result["targets"].items():
        lines.append(f"| {name} | {r['ttft_direct_ms']:.2f} → {r['ttft_ms']:.2f} | {r['ttft_overhead_ms']:.2f} "
                     f"| {r['cpu_ms_per_stream']:.2f} | {r['cpu_us_per_chunk']:.0f} "
                     f"| {r['rss_mb_start']:.0f} → {r['rss_mb_open']:.0f} |")
    print("\n".join(lines))
    extra = result["ttft_only"]
    if extra:
        print(f"\n| TTFT only (interleaved with {result['ttft_only_beside']}) | TTFT ms | TTFT overhead ms |\n"
              "| --- | ---: | ---: |")
        for name, r in extra.items():
            print(f"| {name} | {r['ttft_ms']:.2f} | {r['ttft_overhead_ms']:.2f} |")
        print("(mock and floor have no upstream: their whole TTFT is overhead; Portkey: minus the direct TTFT "
              f"measured beside it, {result['ttft_only_direct_ms']:.2f} ms)")
    for note in result["notes"]:
        print(note)
    print(f"\n{os.cpu_count()} CPUs, gateways pinned to CPU {args.core}, load average {load_before[0]:.2f} before / "
          f"{os.getloadavg()[0]:.2f} after; medians of {args.rounds} interleaved rounds. JSON: {args.output}")
    return 0 if not result["errors"] else 1


def _rss_mb(pid: int) -> float:
    value = rss_mb(pid)
    return float("nan") if value is None else value


async def _measure(args: argparse.Namespace, upstream_port: int | None, gateways: dict[str, Any],
                   names: list[str]) -> dict[str, Any]:
    import aiohttp
    import grpc

    from bench.peers import FAKE_API_KEY, closed_loop
    from modelgateway.v1 import model_gateway_pb2 as pb
    from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc

    request = pb.GenerateRequest(messages=[pb.Message(role=pb.ROLE_USER, content="count")], max_tokens=256)
    body = json.dumps({"model": MODEL, "max_tokens": 256, "stream": True,
                       "messages": [{"role": "user", "content": "count"}]}).encode()
    headers = {"x-api-key": FAKE_API_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    session = aiohttp.ClientSession()
    url = f"http://127.0.0.1:{upstream_port}/v1/messages"
    errors = 0

    async def direct_ttft(url: str = url, headers: dict[str, str] = headers) -> float:
        started = time.perf_counter()
        first = 0.0
        async with session.post(url, data=body, headers=headers) as resp:
            async for line in resp.content:
                if not first and line.startswith(b"data:") and b'"text_delta"' in line:
                    first = time.perf_counter() - started
        if not first:
            raise RuntimeError(f"no text delta from {url} (HTTP {resp.status})")
        return first

    portkey = gateways.pop(PORTKEY, None)
    portkey_url = f"http://127.0.0.1:{portkey.port}/v1/messages" if portkey else ""
    portkey_headers = {**headers, "x-portkey-provider": "anthropic",
                       "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1"}
    channels = {name: grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") for name, p in gateways.items()}
    stubs = {name: pb_grpc.ModelGatewayStub(ch) for name, ch in channels.items()}

    async def gateway_stream(stub: Any, ttft: list[float] | None = None) -> int:
        started = time.perf_counter()
        chunks = 0
        async for event in stub.GenerateStream(request, timeout=30):
            if event.WhichOneof("event") == "delta":
                if not chunks and ttft is not None:
                    ttft.append(time.perf_counter() - started)
                chunks += 1
        return chunks

    per: dict[str, dict[str, list[float]]] = {n: {"ttft": [], "direct": [], "cpu_stream": [], "cpu_chunk": []}
                                              for n in names}
    rss_start = {n: _rss_mb(gateways[n + " (slow upstream)"].pid) for n in names}
    # TTFT-only targets, each measured right after the first gateway row's pair (direct, gateway)
    out: dict[str, Any] = {"targets": {}, "errors": 0}
    only: dict[str, Any] = {n: (lambda stub=stubs[n]: gateway_stream(stub, [])) for n in (MOCK, FLOOR) if n in stubs}
    if portkey:
        only[PORTKEY] = lambda: direct_ttft(portkey_url, portkey_headers)
    only_ttft: dict[str, list[float]] = {n: [] for n in only}
    out["notes"] = []
    try:
        if portkey:
            try:
                await direct_ttft(portkey_url, portkey_headers)
            except (RuntimeError, aiohttp.ClientError) as exc:
                # Portkey 1.15.2 on Node answers every stream through /v1/messages with HTTP 500
                # ("TypeError: immutable" in updateHeaders; Portkey-AI/gateway issues 1389, 1550).
                out["notes"].append(f"Portkey skipped: {exc}")
                del only[PORTKEY], only_ttft[PORTKEY]
        for name in names:  # warm-up: connection pools and caches
            for _ in range(20):
                await gateway_stream(stubs[name])
                await direct_ttft()
        for _ in range(20):
            for fn in only.values():
                await fn()
        for r in range(args.rounds):
            for name in names:
                print(f"round {r + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                stub, proc = stubs[name], gateways[name]
                for _ in range(args.ttft_calls):  # sequential, direct and gateway alternating
                    per[name]["direct"].append(await direct_ttft())
                    await gateway_stream(stub, per[name]["ttft"])
                    if name == names[0]:
                        for n in only:
                            if n == PORTKEY:
                                only_ttft[n].append(await direct_ttft(portkey_url, portkey_headers))
                            else:
                                await gateway_stream(stubs[n], only_ttft[n])
                delivered = 0

                async def one(stub: Any = stub) -> bool:
                    nonlocal delivered
                    got = await gateway_stream(stub)
                    delivered += got
                    return got == args.chunks

                c0 = proc.cpu()
                lat, failed, _ = await closed_loop(one, args.streams, args.concurrency, 120)
                c1 = proc.cpu()
                errors += failed
                cpu_ms = (c1 - c0) * 1000
                per[name]["cpu_stream"].append(cpu_ms / max(1, len(lat) + failed))
                per[name]["cpu_chunk"].append(cpu_ms * 1000 / max(1, delivered))
        rss_open: dict[str, float] = {}
        for name in names:  # RSS with --open streams open at once on the slow upstream
            slow_name = name + " (slow upstream)"
            stub, pid = stubs[slow_name], gateways[slow_name].pid
            calls = [stub.GenerateStream(request, timeout=60) for _ in range(args.open)]
            firsts = await asyncio.gather(*(c.read() for c in calls))  # each stream has started
            errors += sum(1 for f in firsts if f is grpc.aio.EOF)
            await asyncio.sleep(0.5)
            rss_open[name] = _rss_mb(pid)
            for c in calls:
                c.cancel()
    finally:
        await session.close()
        for ch in channels.values():
            await ch.close()
    for name in names:
        d = per[name]
        ttft = statistics.median(d["ttft"]) * 1000
        direct = statistics.median(d["direct"]) * 1000
        out["targets"][name] = {
            "ttft_ms": ttft, "ttft_direct_ms": direct, "ttft_overhead_ms": ttft - direct,
            "cpu_ms_per_stream": statistics.median(d["cpu_stream"]),
            "cpu_us_per_chunk": statistics.median(d["cpu_chunk"]),
            "cpu_us_per_chunk_rounds": d["cpu_chunk"],
            "rss_mb_start": rss_start[name], "rss_mb_open": rss_open[name],
        }
    out["errors"] = errors
    direct0 = out["targets"][names[0]]["ttft_direct_ms"]
    out["ttft_only_beside"], out["ttft_only_direct_ms"] = names[0], direct0
    out["ttft_only"] = {}
    for n, samples in only_ttft.items():
        ttft = statistics.median(samples) * 1000
        out["ttft_only"][n] = {"ttft_ms": ttft, "ttft_overhead_ms": ttft - direct0 if n == PORTKEY else ttft,
                               "samples": len(samples)}
    out["mock_ttft_ms"] = out["ttft_only"][MOCK]["ttft_ms"] if MOCK in out["ttft_only"] else None
    return out


if __name__ == "__main__":
    sys.exit(main())
