"""The load client: grpc.aio, one channel per target; warm-up, sequential latency, concurrent throughput.

The targets are measured in rounds, round-robin (a, b, c, d, a, b, c, d, ...), so a burst of load
from elsewhere on a shared machine hits one round of every target rather than all of one target;
each number is the median of its rounds (latency percentiles pool every round's samples).

Every phase is bounded twice: by a number of calls and by a time cap (a phase cut short by its
cap reports the calls it made and says so).
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench.procs import CpuSample
from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc

CALL_TIMEOUT = 5.0  # seconds, each call's gRPC deadline
REQUEST = pb.GenerateRequest(messages=[pb.Message(role=pb.ROLE_USER, content="What is 25 + 75?")], max_tokens=64)
EXPECTED_CONTENT = "100"
# GenerateStream: the fake upstream's streams carry this many text deltas (bench/fake_upstream.py).
EXPECTED_DELTAS = 20


class BenchError(RuntimeError):
    """The target answered wrongly (not what the scenario is meant to measure)."""


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100), at least 1
    return sorted_values[int(rank) - 1]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _client_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Target:
    """One process under test and everything measured on it so far."""

    name: str
    address: str
    expect_provider: str
    cpu: Callable[[], CpuSample]
    upstream_cpu: Callable[[], CpuSample] | None = None
    stream: bool = False  # GenerateStream (read to the end) instead of Generate
    channel: grpc.aio.Channel | None = None
    stub: pb_grpc.ModelGatewayAsyncStub | None = None
    failed: str = ""
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str = ""
    seq_latencies: list[float] = field(default_factory=list)
    seq_cpu_s: float = 0.0
    seq_calls: int = 0
    seq_capped: bool = False
    tput_latencies: list[float] = field(default_factory=list)
    rounds: list[dict[str, float]] = field(default_factory=list)
    tput_capped: bool = False

    def add_error(self, err: grpc.aio.AioRpcError) -> None:
        code = err.code().name if err.code() is not None else "UNKNOWN"
        self.errors[code] += 1
        if not self.first_error:
            self.first_error = f"{code}: {err.details()}"

    async def open(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.address)
        await asyncio.wait_for(self.channel.channel_ready(), timeout=15)
        self.stub = pb_grpc.ModelGatewayStub(self.channel)
        if self.stream:
            events = [e async for e in self.stub.GenerateStream(REQUEST, timeout=CALL_TIMEOUT)]
            kinds = [e.WhichOneof("event") for e in events]
            if (kinds != ["start"] + ["delta"] * EXPECTED_DELTAS + ["end"]
                    or events[0].start.provider != self.expect_provider):
                raise BenchError(f"expected a stream of {EXPECTED_DELTAS} deltas from provider "
                                 f"{self.expect_provider!r}, got {kinds} from "
                                 f"{events[0].start.provider if events else None!r}")
            return
        first = await self.stub.Generate(REQUEST, timeout=CALL_TIMEOUT)
        if first.content != EXPECTED_CONTENT or first.provider != self.expect_provider:
            raise BenchError(f"expected {EXPECTED_CONTENT!r} from provider {self.expect_provider!r}, "
                             f"got {first.content!r} from {first.provider!r}")

    async def call(self) -> None:
        """One measured call: Generate, or a GenerateStream read to its end."""
        assert self.stub is not None
        if self.stream:
            async for _ in self.stub.GenerateStream(REQUEST, timeout=CALL_TIMEOUT):
                pass
        else:
            await self.stub.Generate(REQUEST, timeout=CALL_TIMEOUT)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    # ---- phases ----

    async def sequential(self, n: int, cap_s: float) -> tuple[list[float], int, bool]:
        assert self.stub is not None
        latencies: list[float] = []
        failed = 0
        deadline = time.perf_counter() + cap_s
        for _ in range(n):
            started = time.perf_counter()
            if started > deadline:
                return latencies, failed, True
            try:
                await self.call()
            except grpc.aio.AioRpcError as err:
                self.add_error(err)
                failed += 1
            else:
                latencies.append(time.perf_counter() - started)
        return latencies, failed, False

    async def concurrent(self, n: int, concurrency: int, cap_s: float) -> tuple[list[float], int, float, bool]:
        """``n`` calls, ``concurrency`` in flight; (latencies, failures, wall seconds, cut short by the cap)."""
        assert self.stub is not None
        latencies: list[float] = []
        issued = failed = 0
        deadline = time.perf_counter() + cap_s
        capped = False

        async def worker() -> None:
            nonlocal issued, failed, capped
            while issued < n:
                started = time.perf_counter()
                if started > deadline:
                    capped = True
                    return
                issued += 1
                try:
                    await self.call()
                except grpc.aio.AioRpcError as err:
                    self.add_error(err)
                    failed += 1
                else:
                    latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, n)))))
        return latencies, failed, time.perf_counter() - started, capped

    async def one_round(self, *, warmup: int, calls: int, throughput_calls: int, concurrency: int,
                        time_s: float) -> None:
        """Warm-up (at the measured concurrency, so connection pools are full), sequential, throughput.

        The round should take at most ``time_s``: the warm-up gets 15% of it, the sequential phase
        until 65%, the throughput phase the rest but at least 30%.
        """
        begin = time.perf_counter()
        if warmup:
            await self.concurrent(warmup, concurrency, 0.15 * time_s)
        seq_cap = max(0.0, begin + 0.65 * time_s - time.perf_counter())
        c0 = self.cpu()
        seq, seq_failed, capped = await self.sequential(calls, seq_cap)
        c1 = self.cpu()
        self.seq_latencies += seq
        self.seq_calls += len(seq) + seq_failed
        self.seq_cpu_s += c1 - c0
        self.seq_capped |= capped

        up0 = self.upstream_cpu() if self.upstream_cpu else None
        client0 = _client_cpu()
        c2 = self.cpu()
        tput_cap = max(0.3 * time_s, begin + time_s - time.perf_counter())
        tput, tput_failed, wall, capped = await self.concurrent(throughput_calls, concurrency, tput_cap)
        c3 = self.cpu()
        client1 = _client_cpu()
        up1 = self.upstream_cpu() if self.upstream_cpu else None
        self.tput_latencies += tput
        self.tput_capped |= capped
        made = len(tput) + tput_failed
        if not made:
            return
        round_ = {"calls": made, "ok": len(tput), "wall_s": wall, "calls_per_s": len(tput) / wall,
                  "cpu_ms_per_call": (c3 - c2) * 1000 / made,
                  "cpu_ms_per_call_stat": (c3.ticks_s - c2.ticks_s) * 1000 / made,
                  "client_cpu_ms_per_call": (client1 - client0) * 1000 / made}
        if up0 is not None and up1 is not None:
            round_["upstream_cpu_ms_per_call"] = (up1 - up0) * 1000 / made
        self.rounds.append(round_)

    # ---- results ----

    def summary(self, concurrency: int) -> dict[str, Any]:
        seq = sorted(v * 1000 for v in self.seq_latencies)
        tput = sorted(v * 1000 for v in self.tput_latencies)

        def med(key: str) -> float | None:
            return _median([r[key] for r in self.rounds if key in r])

        out: dict[str, Any] = {
            "cpu_ms_per_call": med("cpu_ms_per_call"),
            "calls_per_s": med("calls_per_s"),
            "p50_ms": percentile(seq, 50),
            "p99_ms": percentile(seq, 99),
            "sequential": {
                "calls": len(seq), "p50_ms": percentile(seq, 50), "p90_ms": percentile(seq, 90),
                "p99_ms": percentile(seq, 99), "min_ms": seq[0] if seq else None,
                "max_ms": seq[-1] if seq else None,
                "cpu_ms_per_call": self.seq_cpu_s * 1000 / self.seq_calls if self.seq_calls else None,
                "capped": self.seq_capped,
            },
            "throughput": {
                "concurrency": concurrency, "calls": sum(int(r["calls"]) for r in self.rounds),
                "p50_ms": percentile(tput, 50), "p99_ms": percentile(tput, 99),
                "cpu_ms_per_call_stat": med("cpu_ms_per_call_stat"),
                "client_cpu_ms_per_call": med("client_cpu_ms_per_call"),
                "upstream_cpu_ms_per_call": med("upstream_cpu_ms_per_call"),
                "capped": self.tput_capped,
                "rounds": self.rounds,
            },
            "errors": dict(self.errors),
            "first_error": self.first_error,
        }
        if self.failed:
            out["failed"] = self.failed
        return out
