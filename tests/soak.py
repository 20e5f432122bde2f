"""`make soak`: a bounded loopback load test of fallback under faults.

The real gateway process runs against the two emulators: Anthropic first, with each fault kind
injected into about ``--fault-rate`` of the calls (5 % each by default: 500, 529, 429 with
retry-after, hang, dropped connection, truncated body, malformed body), Bedrock second and healthy.
``--callers`` concurrent callers send unary Generate calls for ``--duration`` seconds.

It prints the calls, their status codes, p50/p99 latency, the faults injected, how often the first
provider was skipped as ejected, and the gateway's RSS after the warm-up and at the end. It fails
(exit 1) when a call is lost (no answer within its deadline plus a grace), ends INTERNAL/UNKNOWN,
fails at all (Bedrock was healthy the whole time), the gateway logs a traceback, or RSS grows by
more than ``--max-rss-growth`` (15 %). ``tests/test_soak.py`` runs a short version in ``make test``.

    python -m tests.soak [--callers 16] [--duration 60] [--fault-rate 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml

from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from tests.emulators import AnthropicEmulator, BedrockEmulator, Fault
from tests.helpers import ask, gateway_process

API_KEY = "sk-ant-soak-0123456789"
AWS_KEY_ID = "AKIDSOAKTEST"
CALL_DEADLINE = 10.0
LOST_GRACE = 5.0

FAULTS: dict[str, Fault] = {
    "500": Fault.status(500),
    "529": Fault.status(529),
    "429": Fault.status(429, retry_after=0.2),
    "hang": Fault.hang(),
    "drop": Fault.drop(),
    "truncate": Fault.truncate(),
    "malformed": Fault.malformed(),
}


@dataclass
class SoakResult:
    calls: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    lost: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    ejected_skips: int = 0
    answered_by: Counter[str] = field(default_factory=Counter)
    upstream: Counter[str] = field(default_factory=Counter)  # generation requests each emulator received
    rss_before_kb: int = 0
    rss_after_kb: int = 0
    tracebacks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> float:
        return (self.rss_after_kb - self.rss_before_kb) / self.rss_before_kb if self.rss_before_kb else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def report(self) -> str:
        codes = ", ".join(f"{code} {n}" for code, n in self.codes.most_common())
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items()))
        answered = ", ".join(f"{name} {n}" for name, n in self.answered_by.most_common())
        return "\n".join([
            f"soak: calls {self.calls} (lost {self.lost}); codes: {codes or '-'}",
            f"soak: latency p50 {self.percentile(0.5):.1f} ms, p99 {self.percentile(0.99):.1f} ms, "
            f"max {max(self.latencies_ms, default=0.0):.1f} ms",
            f"soak: faults injected on anthropic: {faults or '-'}; anthropic skipped as ejected {self.ejected_skips} "
            f"times; answered by: {answered or '-'}; upstream requests: anthropic {self.upstream['anthropic']}, "
            f"bedrock {self.upstream['bedrock']}",
            f"soak: gateway RSS {self.rss_before_kb} kB after the warm-up -> {self.rss_after_kb} kB at the end "
            f"({self.rss_growth:+.1%})",
        ])


def rss_kb(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) if match else 0


def gateway_config(anthropic: AnthropicEmulator, bedrock: BedrockEmulator) -> dict[str, object]:
    return {
        "host": "127.0.0.1", "port": 0,  # INFO: the start-up line names the port
        "default_provider": "anthropic",
        "providers": {
            "anthropic": {"type": "anthropic", "base_url": anthropic.base_url, "api_key": API_KEY,
                          "default_model": "claude-sonnet-5-5", "timeout": 1.0},
            "bedrock": {"type": "bedrock", "endpoint_url": bedrock.endpoint_url, "region": "us-east-1",
                        "model_id": "global.anthropic.claude-sonnet-5-5", "timeout": 5.0},
        },
        "fallback": {"enabled": True, "fallback_order": ["anthropic", "bedrock"]},
        "health_check": {"interval": 2.0, "timeout": 1.0},
        # Short ejections, so that ejection, half-open trials and recovery all happen within the run.
        "outlier_detection": {"base_ejection_time": 1.0, "max_ejection_time": 5.0},
        "server": {"retry_backoff": 0.02, "retry_backoff_max": 0.2},
    }


async def _caller(stub: pb_grpc.ModelGatewayStub, anthropic: AnthropicEmulator, rng: random.Random,
                  until: float, fault_rate: float, result: SoakResult) -> None:
    while time.monotonic() < until:
        for kind, fault in FAULTS.items():
            if rng.random() < fault_rate:
                anthropic.inject(fault, times=1)
                result.faults[kind] += 1
        started = time.perf_counter()
        result.calls += 1
        try:
            response = await asyncio.wait_for(stub.Generate(ask(), timeout=CALL_DEADLINE),
                                              CALL_DEADLINE + LOST_GRACE)
        except TimeoutError:
            result.lost += 1
            result.codes["LOST"] += 1
            continue
        except grpc.aio.AioRpcError as err:
            result.codes[err.code().name] += 1
            result.problems.append(f"{err.code().name}: {err.details()}")
            continue
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
        result.codes["OK"] += 1
        result.answered_by[response.provider] += 1
        if response.content != "100":
            result.problems.append(f"wrong answer from {response.provider}: {response.content!r}")
        if any(a.reason == "PROVIDER_EJECTED" for a in response.attempts):
            result.ejected_skips += 1
            anthropic.clear()  # faults queued for calls that skipped it: keep the rate per call


async def soak(*, callers: int = 16, duration: float = 60.0, fault_rate: float = 0.05, warmup: float | None = None,
               max_rss_growth: float = 0.15, seed: int = 8) -> SoakResult:
    """Run the soak; the result's ``problems`` is empty when it passed."""
    warmup = min(10.0, duration / 4) if warmup is None else warmup
    rng = random.Random(seed)
    result = SoakResult()
    with AnthropicEmulator(api_key=API_KEY) as anthropic, BedrockEmulator(access_key_id=AWS_KEY_ID) as bedrock, \
            tempfile.TemporaryDirectory(prefix="gateway-soak-") as tmp:
        config = Path(tmp) / "gateway.yaml"
        config.write_text(yaml.safe_dump(gateway_config(anthropic, bedrock)))
        env = {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": "soak-secret",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
               "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        async with gateway_process(config, env=env) as gateway:
            assert gateway.proc.stderr is not None
            stderr = gateway.proc.stderr

            async def drain() -> None:  # the gateway must never block on a full stderr pipe
                while line := await stderr.readline():
                    if b"Traceback" in line:
                        result.tracebacks += 1
                        result.problems.append("the gateway logged a traceback")

            drainer = asyncio.create_task(drain())
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                stub = pb_grpc.ModelGatewayStub(channel)
                await asyncio.wait_for(channel.channel_ready(), timeout=10)
                for provider in ("anthropic", "bedrock"):  # untimed first calls
                    await stub.Generate(ask(provider=provider), timeout=30)
                # Warm-up under the same load, then the measured run.
                for phase_end, measure in ((warmup, False), (duration, True)):
                    if measure:
                        result.rss_before_kb = rss_kb(gateway.proc.pid)
                    until = time.monotonic() + phase_end
                    await asyncio.gather(*(
                        _caller(stub, anthropic, random.Random(rng.random()), until, fault_rate, result)
                        for _ in range(callers)))
                result.rss_after_kb = rss_kb(gateway.proc.pid)
                health = await stub.Health(pb.HealthRequest(), timeout=5)
                if health.status == pb.HEALTH_STATUS_UNHEALTHY:
                    result.problems.append("Health says UNHEALTHY although bedrock was healthy")
            drainer.cancel()
        result.upstream.update(anthropic=anthropic.model_calls, bedrock=bedrock.model_calls)
    if result.lost:
        result.problems.append(f"{result.lost} call(s) lost")
    for code in ("INTERNAL", "UNKNOWN"):
        if result.codes[code]:
            result.problems.append(f"{result.codes[code]} call(s) ended {code}")
    failed = result.calls - result.codes["OK"]
    if failed:
        result.problems.append(f"{failed} call(s) failed although bedrock was healthy")
    if result.rss_growth > max_rss_growth:
        result.problems.append(f"RSS grew by {result.rss_growth:.1%} (> {max_rss_growth:.0%})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of load before RSS is measured")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of calls per fault kind")
    parser.add_argument("--max-rss-growth", type=float, default=0.15)
    args = parser.parse_args(argv)
    result = asyncio.run(soak(callers=args.callers, duration=args.duration, fault_rate=args.fault_rate,
                              warmup=args.warmup, max_rss_growth=args.max_rss_growth))
    print(result.report())
    if result.problems:
        for problem in dict.fromkeys(result.problems):
            print(f"soak: FAILED: {problem}", file=sys.stderr)
        return 1
    print("soak: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
