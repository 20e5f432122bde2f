"""``python -m bench.observability [--quick] [--calls N] ...``: what metrics, traces and JSON logs cost per call.

The same gateway in several configurations, each a separate process measured like ``python -m bench``
(round-robin, CPU time of the gateway process per call in the throughput phase), on each provider
of ``--providers``: ``mock`` (the gateway's own work only) and ``anthropic`` (the Anthropic SDK
against bench's fake upstream: a real call's CPU, the denominator an operator sees):

  plain      INFO text access log, metrics off (GATEWAY_METRICS_PORT=0), tracing off
  metrics    + Prometheus metrics on (recorded per call; nothing scrapes during the run)
  json       JSON access log instead of text, metrics off
  metrics+json  metrics on and the JSON log line: the budget configuration (tracing off)
  tracing    + OpenTelemetry traces, every call sampled, OTLP/gRPC export to a local sink
  all        metrics, JSON logs and traces
  quiet      WARNING: no access log line, metrics off (the floor of the gateway's own work)

Prints a table with each configuration's CPU ms/call and its difference from ``plain``, and
writes JSON (bench/results-observability.json; --quick: bench/results-observability-quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.procs import Proc, StartError, stop_all, wait_for_ports
from bench.run import BENCH_DIR, REPO, STARTED_RE, _fmt, _measure_all, child_env, gateway_config
from bench.run import Scenario as _BaseScenario

BUDGET_SHARE = 0.05  # observability work per call: at most 5% of the gateway's CPU per call


@dataclass(frozen=True)
class Variant:
    name: str
    metrics: bool = False
    log_format: str = "text"
    log_level: str = "INFO"
    tracing: bool = False
    provider: str = "mock"

    @property
    def key(self) -> str:
        """bench.run's scenario key (its scheduler weighs rounds by it)."""
        return "a" if self.provider == "mock" else "b"

    @property
    def title(self) -> str:
        return f"{self.provider} {self.name}"


VARIANTS = [
    Variant("plain"),
    Variant("metrics", metrics=True),
    Variant("json", log_format="json"),
    Variant("metrics+json", metrics=True, log_format="json"),
    Variant("tracing", tracing=True),
    Variant("all", metrics=True, log_format="json", tracing=True),
    Variant("quiet", log_level="WARNING"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def variant_config(v: Variant, upstream_port: int | None) -> dict[str, Any]:
    if v.provider == "mock":
        base = _BaseScenario("a", "mock", "mock", log_level=v.log_level)
    else:
        base = _BaseScenario("b", "anthropic SDK, aiohttp", "anthropic", "aiohttp", v.log_level)
    config = gateway_config(base, upstream_port)
    config.update(log_format=v.log_format, metrics_port=_free_port() if v.metrics else 0,
                  pricing={config["providers"][v.provider]["default_model"]: {"input": 3.0, "output": 15.0}})
    return config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.observability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few calls: a smoke test")
    p.add_argument("--calls", type=int, help="calls per phase, split over the rounds (default 3000; --quick 200)")
    p.add_argument("--rounds", type=int, help="rounds (default 3; --quick 1)")
    p.add_argument("--warmup", type=int, help="warm-up calls (default 300; --quick 64)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--variants", default=",".join(v.name for v in VARIANTS),
                   help="comma-separated subset of " + ",".join(v.name for v in VARIANTS))
    p.add_argument("--providers", default="mock,anthropic", help="mock, anthropic or both (mock,anthropic)")
    p.add_argument("--budget", type=float, help="seconds for the whole run (default 200; --quick 30)")
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    known = {v.name: v for v in VARIANTS}
    if not names or any(n not in known for n in names):
        p.error(f"--variants: choose from {','.join(known)}")
    if "plain" not in names:
        names.insert(0, "plain")
    providers = [x.strip() for x in args.providers.split(",") if x.strip()]
    if not providers or any(x not in ("mock", "anthropic") for x in providers):
        p.error("--providers: mock, anthropic or both")
    args.variants = [replace(known[n], provider=x) for x in providers for n in names]
    args.calls = args.calls or (200 if args.quick else 3000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (64 if args.quick else 300)
    args.budget = args.budget or (30.0 if args.quick else 200.0)
    args.output = args.output or BENCH_DIR / ("results-observability-quick.json" if args.quick
                                              else "results-observability.json")
    args.scenarios, args.log_levels = ["a"], ["INFO"]
    return args


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| provider | configuration | CPU ms/call (gateway) | vs plain | calls/s | p50 ms | p99 ms |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['provider']} | {r['variant']} | failed: {r['failed']} | | | | |")
            continue
        plain = next((x.get("cpu_ms_per_call") for x in rows if x["variant"] == "plain"
                      and x["provider"] == r["provider"] and "failed" not in x), None)
        cpu = r["cpu_ms_per_call"]
        delta = "" if plain is None or cpu is None or r["variant"] == "plain" else \
            f"{cpu - plain:+.3f} ms ({(cpu - plain) / plain * 100:+.1f}%)"
        flag = " ⚠" if r["errors"] else ""
        lines.append(f"| {r['provider']} | {r['variant']}{flag} | {_fmt(cpu, 3)} | {delta} "
                     f"| {_fmt(r['calls_per_s'], 0)} | {_fmt(r['p50_ms'], 3)} | {_fmt(r['p99_ms'], 3)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    budget_end = started + args.budget
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-obs-"))
    env = child_env()
    python = sys.executable
    procs: dict[str, Proc] = {}
    sink: Proc | None = None
    rows: list[dict[str, Any]] = []
    status = 0
    upstream: Proc | None = None
    try:
        upstream_port: int | None = None
        if any(v.provider == "anthropic" for v in args.variants):
            upstream = Proc("fake upstream", [python, "-m", "bench.fake_upstream"], cwd=REPO, env=env,
                            log_path=tmp / "upstream.log", port_from="stdout")
            wait_for_ports([upstream], timeout=20)
            upstream_port = upstream.port
        if any(v.tracing for v in args.variants):
            sink = Proc("otlp sink", [python, "-m", "bench.otlp_sink"], cwd=REPO, env=env,
                        log_path=tmp / "sink.log", port_from="stdout")
            wait_for_ports([sink], timeout=20)
        for v in args.variants:
            config = tmp / f"{_slug(v)}.yaml"
            config.write_text(json.dumps(variant_config(v, upstream_port), indent=1))
            venv = dict(env)
            if v.tracing and sink is not None:
                venv.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink.port}",
                            OTEL_SERVICE_NAME="model-gateway-bench", OTEL_TRACES_SAMPLER="always_on")
            announces = v.log_level == "INFO"
            procs[v.title] = Proc(v.title, [python, "-m", "gateway_server", "--config", str(config)], cwd=tmp,
                                  env=venv, log_path=tmp / f"{_slug(v)}.log",
                                 port_from="log" if announces else "proc", port_pattern=STARTED_RE)
        wait_for_ports(list(procs.values()), timeout=max(10.0, min(45.0, budget_end - time.monotonic())))

        from bench.load import Target

        targets = [Target(_slug(v), f"127.0.0.1:{procs[v.title].port}", v.provider, procs[v.title].cpu, None)
                   for v in args.variants]
        asyncio.run(_measure_all(targets, args.variants, args, started, budget_end))
        for v, t in zip(args.variants, targets, strict=True):
            row: dict[str, Any] = {"provider": v.provider, "variant": v.name, "metrics": v.metrics,
                                   "log_format": v.log_format, "log_level": v.log_level, "tracing": v.tracing,
                                   **t.summary(args.concurrency)}
            if t.failed or t.errors:
                status = 1
                print(f"{v.title}: {t.failed or ''} errors {dict(t.errors)} (first: {t.first_error})"
                      f"{procs[v.title].tail()}", file=sys.stderr)
            rows.append(row)
    except KeyboardInterrupt:
        return 130
    except StartError as exc:
        print(f"bench.observability: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all([*procs.values(), *([sink] if sink else []), *([upstream] if upstream else [])], timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)

    result = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": "python -m bench.observability " + " ".join(sys.argv[1:] if argv is None else argv),
              "settings": {"calls": args.calls, "rounds": args.rounds, "concurrency": args.concurrency},
              "results": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print()
    for provider in dict.fromkeys(r["provider"] for r in rows):
        cpu: dict[str, float] = {r["variant"]: r["cpu_ms_per_call"] for r in rows
                                 if r["provider"] == provider and r.get("cpu_ms_per_call") is not None}
        if not (cpu.get("plain") and cpu.get("metrics+json")):
            continue
        added = cpu["metrics+json"] - cpu["plain"]
        line = (f"{provider}: metrics and the JSON log line add {added:+.3f} ms/call over plain, "
                f"{added / cpu['metrics+json'] * 100:+.1f}% of the gateway's CPU per call (budget {BUDGET_SHARE:.0%})")
        if cpu.get("quiet"):
            whole = cpu["metrics+json"] - cpu["quiet"]
            line += (f"; with the access log line itself (metrics+json - quiet): {whole:+.3f} ms/call, "
                     f"{whole / cpu['metrics+json'] * 100:+.1f}%")
        print(line + ".")
    us = micro(2000 if args.quick else 20000)
    result["micro_us_per_call"] = us
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for provider in dict.fromkeys(r["provider"] for r in rows):
        plain = next((r.get("cpu_ms_per_call") for r in rows if r["provider"] == provider and r["variant"] == "plain"),
                     None)
        print(f"\nThe observability work alone, measured in-process, against {provider}'s plain CPU/call:")
        print(micro_table(us, plain))
    print(f"{time.monotonic() - started:.1f}s in all. CPU ms/call moves by a few percent between runs on a "
          f"shared machine. JSON: {args.output}")
    return status


def _slug(v: Variant) -> str:
    return f"obs-{v.provider}-{v.name.replace('+', '-')}"



def micro(calls: int = 20000) -> dict[str, float]:
    """The per-call observability work alone, in this process: CPU microseconds per call (every thread).

    Stable where the process figures are not (they move with the machine's load): the same work the
    servicer and the metrics interceptor do for one answered Generate with one attempt.
    """
    import io
    import logging

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from prometheus_client import CollectorRegistry

    from gateway_server import logging_setup
    from gateway_server.metrics import GatewayMetrics
    from gateway_server.observe import CallObserver
    from gateway_server.pricing import ModelPrice, PriceTable
    from gateway_server.tracing import GatewayTracer
    from modelgateway.v1 import model_gateway_pb2 as pb

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    prices = PriceTable({"mock-1": ModelPrice(input=3.0, output=15.0)})
    attempts = [pb.Attempt(provider="mock", model="mock-1", outcome=pb.ATTEMPT_OUTCOME_OK, latency_ms=0.2)]
    method = "modelgateway.v1.ModelGateway/Generate"

    def run(observer: CallObserver, metrics: GatewayMetrics | None, log_line: bool) -> float:
        log = logging.getLogger("gateway_server.requests")
        grpc_children = None
        if metrics is not None:
            grpc_children = (metrics.grpc_started.labels(method), metrics.in_flight.labels(method),
                             metrics.grpc_duration.labels(method, "OK"))
        t0 = time.process_time()
        for i in range(calls):
            if grpc_children is not None:  # what GrpcMetricsInterceptor does per call
                grpc_children[0].inc()
                grpc_children[1].inc()
            call = observer.start(method, f"req-{i}", "", "", "")
            call.provider, call.attempts, call.finish_reason = "mock", attempts, pb.FINISH_REASON_END_TURN
            cost = observer.price(call, "mock-1", 12, 3)
            latency_ms = observer.finish(call) * 1000
            if log_line:
                log.info("Generated response: request_id=%s provider=%s model=%s tokens=%d latency_ms=%.2f "
                         "path=%s cost_usd=%.6f caller=%s%s%s%s", call.request_id, "mock", "mock-1", 15, latency_ms,
                         "mock", cost, call.caller, "", "", "", extra=observer.log_fields(call, latency_ms))
            if grpc_children is not None:
                grpc_children[1].dec()
                grpc_children[2].observe(0.001)
            if i % 32 == 0:
                time.sleep(0)
        logging_setup.stop_logging()  # the listener's share is process CPU too
        return (time.process_time() - t0) / calls * 1e6

    def observer(with_metrics: bool, traced: bool) -> tuple[CallObserver, GatewayMetrics | None]:
        m = GatewayMetrics(models=["mock-1"], callers=["anonymous"], providers=["mock"],
                           registry=CollectorRegistry()) if with_metrics else None
        tracer = None
        if traced:
            tp = TracerProvider()
            tp.add_span_processor(BatchSpanProcessor(Drop()))
            tracer = GatewayTracer(tp, {"mock": "mock"})
        return CallObserver(provider_types={"mock": "mock"}, prices=prices, metrics=m, tracer=tracer), m

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out: dict[str, float] = {}
    try:
        for name, with_metrics, traced, fmt in (("hooks only (metrics off, no log line)", False, False, None),
                                                ("text log line", False, False, "text"),
                                                ("JSON log line", False, False, "json"),
                                                ("metrics", True, False, None),
                                                ("metrics + JSON log line", True, False, "json"),
                                                ("tracing (spans built, exported to nowhere)", False, True, None)):
            if fmt is not None:
                logging_setup.configure_logging("INFO", fmt, stream=io.StringIO())
            obs, m = observer(with_metrics, traced)
            out[name] = run(obs, m, fmt is not None)
            if obs.tracer is not None:
                obs.tracer.shutdown()
    finally:
        logging_setup.stop_logging()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    return out


def micro_table(us: dict[str, float], plain_cpu_ms: float | None) -> str:
    lines = ["| per-call work (in-process) | CPU µs/call | share of the plain gateway CPU/call |",
             "| --- | ---: | ---: |"]
    for name, value in us.items():
        share = "" if not plain_cpu_ms else f"{value / (plain_cpu_ms * 1000) * 100:.1f}%"
        lines.append(f"| {name} | {value:.1f} | {share} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
