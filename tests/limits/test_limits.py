"""Each limit kind on both backends (memory, a real Redis): RPM, TPM, concurrency, budgets,
provider limits with fallback, reservation and reconciliation with streams and failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from modelgateway.v1 import model_gateway_pb2 as pb
from tests.helpers import ask, error_details

from .conftest import FakeClock, bearer, keyed_config

START = datetime(2026, 1, 31, 23, 59, 0, tzinfo=UTC).timestamp()


async def start(gateway_factory, config: dict[str, Any], clock: FakeClock | None = None):
    app = await gateway_factory(config)
    app.limiter.clock = clock or FakeClock(START)
    return app


async def trailers(call_or_err: Any) -> dict[str, str]:
    """The string trailers of a finished call or of its error."""
    metadata = call_or_err.trailing_metadata()
    if asyncio.iscoroutine(metadata):
        metadata = await metadata
    return {k: v for k, v in metadata or () if isinstance(v, str)}


async def refused(rpc: Any, request: pb.GenerateRequest, key: str = "alpha"):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc(request, metadata=bearer(key), timeout=10)
    return caught.value


async def test_requests_per_minute(gateway_factory, stub_for, backend) -> None:
    clock = FakeClock(START)
    app = await start(gateway_factory, keyed_config(
        [{"name": "alpha", "limits": {"requests_per_minute": 3}}, {"name": "beta"}], backend), clock)
    stub = await stub_for(app)
    for left in (2, 1, 0):
        call = stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)
        assert (await call).content == "100"
        assert (await trailers(call))["x-ratelimit-remaining-requests"] == str(left)
    err = await refused(stub.Generate, ask())
    details = error_details(err)
    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "KEY_RATE_LIMITED")
    assert details.metadata == {"key": "alpha", "limit_name": "requests_per_minute", "limit": "3"}
    # One request comes back every 20 s.
    assert 19_000 <= details.retry_delay_ms <= 20_000 and details.pushback_ms == str(details.retry_delay_ms)
    assert (await trailers(err))["x-ratelimit-remaining-requests"] == "0"
    # Another key is not affected; streams count the same.
    assert (await stub.Generate(ask(), metadata=bearer("beta"), timeout=10)).content == "100"
    err = await refused(lambda r, **kw: _drain(stub.GenerateStream(r, **kw)), ask())
    assert error_details(err).reason == "KEY_RATE_LIMITED"
    clock.now += 20.5
    assert (await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)).content == "100"
    err = await refused(stub.Generate, ask())
    assert error_details(err).reason == "KEY_RATE_LIMITED"


async def _drain(stream: Any) -> list[Any]:
    return [event async for event in stream]


async def test_tokens_per_minute_reserve_and_reconcile(gateway_factory, stub_for, backend) -> None:
    clock = FakeClock(START)
    app = await start(gateway_factory, keyed_config([{"name": "alpha", "limits": {"tokens_per_minute": 1000}}],
                                                    backend), clock)
    stub = await stub_for(app)
    call = stub.Generate(ask(max_tokens=200), metadata=bearer("alpha"), timeout=10)
    answer = await call
    used = answer.usage.total_tokens
    # Reserved: the input estimate + 200; settled with the real usage.
    assert (await trailers(call))["x-ratelimit-remaining-tokens"] == str(1000 - used)
    stream = stub.GenerateStream(ask(max_tokens=200), metadata=bearer("alpha"), timeout=10)
    events = await _drain(stream)
    used += events[-1].end.usage.total_tokens
    assert (await trailers(stream))["x-ratelimit-remaining-tokens"] == str(1000 - used)
    # A request whose reservation does not fit what is left waits for the refill.
    err = await refused(stub.Generate, ask(max_tokens=1000 - used))
    details = error_details(err)
    assert (details.reason, details.metadata["limit_name"]) == ("KEY_RATE_LIMITED", "tokens_per_minute")
    assert details.retry_delay_ms is not None and details.retry_delay_ms > 0
    # A refused request took nothing.
    call = stub.Generate(ask(max_tokens=10), metadata=bearer("alpha"), timeout=10)
    used += (await call).usage.total_tokens
    assert (await trailers(call))["x-ratelimit-remaining-tokens"] == str(1000 - used)


async def test_failed_calls_give_their_tokens_back(gateway_factory, stub_for, backend) -> None:
    config = keyed_config([{"name": "alpha", "limits": {"tokens_per_minute": 1000, "requests_per_minute": 10}}],
                          backend)
    config["providers"]["mock"].update(fail_with="unavailable", fail_times=2, max_retries=0)
    app = await start(gateway_factory, config)
    stub = await stub_for(app)
    err = await refused(stub.Generate, ask(max_tokens=300))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert (await trailers(err))["x-ratelimit-remaining-tokens"] == "1000"
    assert (await trailers(err))["x-ratelimit-remaining-requests"] == "9"  # the request stays counted
    err = await refused(lambda r, **kw: _drain(stub.GenerateStream(r, **kw)), ask(max_tokens=300))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert (await trailers(err))["x-ratelimit-remaining-tokens"] == "1000"


async def test_a_stream_failing_midway_and_a_cancelled_stream_release(gateway_factory, stub_for, backend) -> None:
    limits = {"tokens_per_minute": 1000, "max_concurrent": 1}
    config = keyed_config([{"name": "alpha", "limits": limits}, {"name": "beta", "limits": limits},
                           {"name": "root", "admin": True}], backend)
    config["providers"]["mock"].update(fail_after_chunks=2, stream_chunk_delay_ms=5)
    app = await start(gateway_factory, config)
    stub = await stub_for(app)
    err = await refused(lambda r, **kw: _drain(stub.GenerateStream(r, **kw)), ask("tell me a long story please"))
    assert error_details(err).reason == "STREAM_INTERRUPTED"
    assert (await trailers(err))["x-ratelimit-remaining-tokens"] == "1000"
    # A cancelled stream gives its slot and tokens back when the RPC ends (another gateway on the
    # same backend, another key: the first gateway's settlements may still be on their way).
    config["providers"]["mock"].update(fail_after_chunks=None, stream_chunk_delay_ms=200)
    app = await start(gateway_factory, config)
    stub = await stub_for(app)
    stream = stub.GenerateStream(ask(" ".join(["word"] * 50)), metadata=bearer("beta"), timeout=30)
    assert (await stream.read()).HasField("start")
    assert (await stub.GetUsage(pb.GetUsageRequest(key="beta"), metadata=bearer("root"), timeout=5)
            ).keys[0].in_flight == 1
    stream.cancel()
    async with asyncio.timeout(10):
        while True:
            usage = (await stub.GetUsage(pb.GetUsageRequest(key="beta"), metadata=bearer("root"), timeout=5)).keys[0]
            if usage.in_flight == 0:
                break
            await asyncio.sleep(0.02)
    limits_left = {limit.name: limit.remaining for limit in usage.limits}
    assert limits_left == {"tokens_per_minute": 1000, "max_concurrent": 1}


async def test_concurrency(gateway_factory, stub_for, backend) -> None:
    config = keyed_config([{"name": "alpha", "limits": {"max_concurrent": 2}}], backend)
    config["providers"]["mock"]["stream_chunk_delay_ms"] = 100
    app = await start(gateway_factory, config)
    stub = await stub_for(app)
    streams = [stub.GenerateStream(ask(" ".join(["word"] * 40)), metadata=bearer("alpha"), timeout=30)
               for _ in range(2)]
    for stream in streams:
        assert (await stream.read()).HasField("start")
    err = await refused(stub.Generate, ask())
    details = error_details(err)
    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "KEY_CONCURRENCY_LIMITED")
    assert details.metadata["limit"] == "2" and details.retry_delay_ms is not None
    streams[0].cancel()
    async with asyncio.timeout(10):
        while True:  # the cancelled call's slot is released when its RPC ends
            try:
                assert (await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)).content == "100"
                break
            except grpc.aio.AioRpcError as again:
                assert error_details(again).reason == "KEY_CONCURRENCY_LIMITED"
                await asyncio.sleep(0.02)
    streams[1].cancel()


async def test_a_limit_under_one_reservation_admits_a_first_request(gateway_factory, stub_for, backend) -> None:
    # max_tokens defaults to 4096: far more than the key's 50 tokens per minute (LiteLLM #29191).
    app = await start(gateway_factory, keyed_config([{"name": "alpha", "limits": {"tokens_per_minute": 50}}],
                                                    backend))
    stub = await stub_for(app)
    call = stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)
    used = (await call).usage.total_tokens
    assert (await trailers(call))["x-ratelimit-remaining-tokens"] == str(50 - used)
    err = await refused(stub.Generate, ask())
    assert error_details(err).reason == "KEY_RATE_LIMITED"
    # A request whose input alone is over the limit can never pass: no retry hint.
    err = await refused(stub.Generate, ask("word " * 200))
    details = error_details(err)
    assert details.reason == "KEY_RATE_LIMITED" and details.retry_delay_ms is None and "never" in details.message


async def test_fifty_concurrent_calls_never_pass_a_100_tpm_key(gateway_factory, stub_for, backend) -> None:
    app = await start(gateway_factory, keyed_config([{"name": "alpha", "limits": {"tokens_per_minute": 100}},
                                                     {"name": "root", "admin": True}], backend))
    stub = await stub_for(app)

    async def one() -> int | str:
        try:
            return (await stub.Generate(ask(max_tokens=5), metadata=bearer("alpha"), timeout=20)).usage.total_tokens
        except grpc.aio.AioRpcError as err:
            return error_details(err).reason

    results = await asyncio.gather(*(one() for _ in range(50)))
    used = [r for r in results if isinstance(r, int)]
    assert set(results) - set(used) == {"KEY_RATE_LIMITED"}
    # Each reserves its input estimate + 5 (15 tokens); refunds let a few more in after the first ones end.
    assert 6 <= len(used) and sum(used) <= 100
    usage = (await stub.GetUsage(pb.GetUsageRequest(key="alpha"), metadata=bearer("root"), timeout=5)).keys[0]
    assert usage.minute.requests == len(used)
    assert usage.minute.input_tokens + usage.minute.output_tokens == sum(used) <= 100


async def test_budgets_roll_over(gateway_factory, stub_for, backend) -> None:
    # 2026-01-31 23:59 UTC; the mock's answer to ask() costs 5 input tokens * $0.1 = $0.50.
    clock = FakeClock(START)
    app = await start(gateway_factory, keyed_config(
        [{"name": "alpha", "budget": {"daily_usd": 1.0, "monthly_usd": 1.5}}, {"name": "root", "admin": True}],
        backend, pricing={"mock-1": {"input": 100_000, "output": 0}}), clock)
    stub = await stub_for(app)
    for _ in range(2):
        await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)
    err = await refused(stub.Generate, ask())
    details = error_details(err)
    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "KEY_BUDGET_EXCEEDED")
    assert details.metadata == {"key": "alpha", "limit_name": "daily_usd", "limit": "1"}
    assert 59_000 <= details.retry_delay_ms <= 60_000  # until midnight UTC
    usage = (await stub.GetUsage(pb.GetUsageRequest(key="alpha"), metadata=bearer("root"), timeout=5)).keys[0]
    assert (usage.day.period, usage.day.spend_usd, usage.month.period) == ("2026-01-31", 1.0, "2026-01")
    clock.now += 61  # 2026-02-01 00:00:01: a new day and a new month
    await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)
    usage = (await stub.GetUsage(pb.GetUsageRequest(key="alpha"), metadata=bearer("root"), timeout=5)).keys[0]
    assert (usage.day.period, usage.day.spend_usd, usage.day.requests) == ("2026-02-01", 0.5, 1)
    # The monthly budget: $1.50 in February, so one more call today, then none until March.
    clock.now += 86400
    await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)
    await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)
    err = await refused(stub.Generate, ask())
    details = error_details(err)
    assert (details.reason, details.metadata["limit_name"]) == ("KEY_BUDGET_EXCEEDED", "monthly_usd")
    clock.now = datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC).timestamp()
    await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)


def two_providers(backend: dict[str, Any], provider_limits: dict[str, Any]) -> dict[str, Any]:
    return keyed_config([{"name": "alpha"}], {**backend, "providers": provider_limits},
                        providers={"mock": {"type": "mock"}, "mock2": {"type": "mock"}},
                        fallback={"enabled": True, "fallback_order": ["mock", "mock2"]})


async def test_a_provider_at_its_limit_is_skipped_and_the_fallback_answers(gateway_factory, stub_for,
                                                                           backend) -> None:
    clock = FakeClock(START)
    app = await start(gateway_factory, two_providers(backend, {"mock": {"requests_per_minute": 2}}), clock)
    stub = await stub_for(app)
    for _ in range(2):
        assert (await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)).provider == "mock"
    answer = await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)
    assert answer.provider == "mock2"
    skipped = answer.attempts[0]
    assert (skipped.provider, skipped.outcome, skipped.reason) == (
        "mock", pb.ATTEMPT_OUTCOME_SKIPPED, "PROVIDER_RATE_LIMITED")
    events = await _drain(stub.GenerateStream(ask(), metadata=bearer("alpha"), timeout=10))
    assert events[0].start.provider == "mock2"
    clock.now += 30  # one request back
    assert (await stub.Generate(ask(), metadata=bearer("alpha"), timeout=10)).provider == "mock"


async def test_every_provider_at_its_limit(gateway_factory, stub_for, backend) -> None:
    limits = {"mock": {"tokens_per_minute": 30}, "mock2": {"max_concurrent": 1, "requests_per_minute": 1}}
    app = await start(gateway_factory, two_providers(backend, limits))
    stub = await stub_for(app)
    assert (await stub.Generate(ask(max_tokens=10), metadata=bearer("alpha"), timeout=10)).provider == "mock"
    assert (await stub.Generate(ask(max_tokens=30), metadata=bearer("alpha"), timeout=10)).provider == "mock2"
    err = await refused(stub.Generate, ask(max_tokens=30))
    details = error_details(err)
    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "PROVIDER_RATE_LIMITED")
    assert details.metadata["providers"] == "mock,mock2" and details.retry_delay_ms > 0
