"""GatewayClient.stream against the fault-injecting server: typed events, retries only before the
first event, no replay after it, early close cancels the server-side call, the budget bounds the stream."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
import pytest

from orchestrator_client import (
    EventStream,
    GatewayClient,
    GatewayTimeoutError,
    GatewayUnavailableError,
    InvalidRequestError,
    RateLimitedError,
    ServerError,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolSpec,
)

from .conftest import ClientFactory, FakeTime
from .fault_server import FaultServer, FaultServicer, Hang, Interrupt, Reply, Stall, Truncate

C = grpc.StatusCode
WAIT = 10.0  # generous bound on waiting for a server-side event


def fast(fake_time: FakeTime, **options: object) -> dict[str, object]:
    """Client options with the injected clock and sleep."""
    return {"sleep": fake_time.sleep, "clock": fake_time.clock, **options}


async def collect(events: EventStream) -> list[StreamEvent]:
    return [event async for event in events]


async def collect_until_error(events: EventStream) -> tuple[list[StreamEvent], BaseException | None]:
    seen: list[StreamEvent] = []
    try:
        async for event in events:
            seen.append(event)
    except Exception as exc:
        return seen, exc
    return seen, None


def kinds(events: list[StreamEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


async def test_events_are_typed_and_in_order(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.then(Reply("one two three"))
    client = make_client(fault_server.address)
    stream = client.stream("count", request_id="req-stream-1", metadata={"agent": "planner"})
    assert stream.request_id == "req-stream-1" and stream.attempts == 0 and fault.count == 0  # lazy
    events = await collect(stream)
    assert kinds(events) == ["StreamStart", "ClientTextDelta", "ClientTextDelta", "ClientTextDelta", "StreamEnd"]
    assert events[0] == StreamStart(provider="fault", model="fault-model-1", request_id="req-stream-1")
    assert events[1:4] == [TextDelta(0, "one"), TextDelta(0, " two"), TextDelta(0, " three")]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert (end.finish_reason, end.stop_reason, end.usage.output_tokens) == ("end_turn", "end_turn", 3)
    assert [(a.provider, a.outcome) for a in end.attempts] == [("fault", "ok")]
    assert (end.latency_ms, end.first_token_ms, end.client_attempts, end.retries) == (0.5, 0.2, 1, 0)
    assert end.request_id == "req-stream-1" and end.elapsed_ms > 0
    assert stream.text == "one two three" and stream.start == events[0] and stream.end == end
    assert stream.complete and stream.attempts == 1
    call = fault.calls_to("GenerateStream")[0]
    assert call.metadata["x-request-id"] == "req-stream-1"
    assert dict(call.request.metadata) == {"agent": "planner"}
    assert call.request.messages[0].content == "count"
    snap = client.stats.snapshot()
    assert (snap.total_requests, snap.total_failures, snap.total_attempts, snap.total_cancelled) == (1, 0, 1, 0)


async def test_tools_and_options_are_sent_with_the_stream(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    client = make_client(fault_server.address, provider="p1")
    tool = ToolSpec("calculator", "Evaluates arithmetic.", {"type": "object", "properties": {}})
    await collect(client.stream(messages=[("user", "hi")], system="terse", max_tokens=5, temperature=0.5,
                                stop_sequences=["STOP"], tools=[tool], tool_choice={"tool": "calculator"}))
    request = fault.calls[0].request
    assert (request.provider, request.system, request.max_tokens, request.temperature) == ("p1", "terse", 5, 0.5)
    assert list(request.stop_sequences) == ["STOP"]
    assert [t.name for t in request.tools] == ["calculator"]
    assert (request.tool_choice.name, request.tool_choice.mode) == ("calculator", 4)


def test_arguments_are_checked_when_the_stream_is_made() -> None:
    client = GatewayClient("127.0.0.1:1")
    with pytest.raises(TypeError):
        client.stream("a", messages=[("user", "b")])
    with pytest.raises(TypeError):
        client.stream()
    with pytest.raises(ValueError, match="timeout"):
        client.stream("a", timeout=0)
    with pytest.raises(ValueError, match="tool_choice"):
        client.stream("a", tool_choice="sometimes")  # type: ignore[arg-type]
    assert client.channel is None  # nothing was sent


# ---------------------------------------------------------------------- retries before the first event


@pytest.mark.parametrize(("code", "sleeps"), [(C.UNAVAILABLE, [1.0, 2.0]), (C.RESOURCE_EXHAUSTED, [2.0, 4.0])],
                         ids=["UNAVAILABLE", "RESOURCE_EXHAUSTED"])
async def test_retried_before_the_first_event_exactly_as_generate(
    code: grpc.StatusCode, sleeps: list[float], fault: FaultServicer, fault_server: FaultServer,
    make_client: ClientFactory, fake_time: FakeTime, client_logs: pytest.LogCaptureFixture,
) -> None:
    client = make_client(fault_server.address, **fast(fake_time))
    # a rate limit (ErrorInfo, no pushback: the client's own doubled backoff)
    details = {"reason": "RATE_LIMITED"} if code is C.RESOURCE_EXHAUSTED else {}
    fault.fail(2, code, **details)
    result = await client.generate("What is 25 + 75?")
    generate_sleeps, fake_time.sleeps = fake_time.sleeps, []
    generate_log = [(r.levelno, r.getMessage()) for r in client_logs.records]
    client_logs.clear()

    fault.fail(2, code, **details)
    stream = client.stream("What is 25 + 75?")
    events = await collect(stream)
    assert fake_time.sleeps == generate_sleeps == sleeps
    assert [(r.levelno, r.getMessage()) for r in client_logs.records] == generate_log
    assert generate_log[:2] == [
        (logging.WARNING, f"{generate_log[0][1].split(' (')[0]} (attempt 1/3): {code.name}: injected failure"),
        (logging.INFO, f"Retrying in {sleeps[0]:.1f}s..."),
    ]
    assert result.attempts == 3 and stream.attempts == 3
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.client_attempts == 3 and end.retries == 2
    assert stream.text == "100"
    attempts = fault.calls_to("GenerateStream")
    assert len(attempts) == 3 and len({a.metadata["x-request-id"] for a in attempts}) == 1
    snap = client.stats.snapshot()
    assert (snap.total_requests, snap.total_failures, snap.total_retries, snap.total_attempts) == (2, 0, 4, 6)


async def test_each_stream_attempt_gets_the_budget_left_as_its_deadline(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(2, C.UNAVAILABLE)
    client = make_client(fault_server.address, timeout=10, **fast(fake_time))
    await collect(client.stream("x"))
    remaining = [c.time_remaining for c in fault.calls]
    assert fake_time.sleeps == [1.0, 2.0]
    # budget 10 s on the injected clock: 10, then 10 - 1, then 10 - 1 - 2 (minus real transit time)
    for seen, expected in zip(remaining, [10.0, 9.0, 7.0], strict=True):
        assert seen is not None and expected - 1.0 < seen <= expected + 0.1


async def test_retries_exhausted_before_the_first_event(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime,
    client_logs: pytest.LogCaptureFixture,
) -> None:
    fault.fail(3, C.UNAVAILABLE, reason="ALL_PROVIDERS_UNAVAILABLE")
    client = make_client(fault_server.address, **fast(fake_time))
    stream = client.stream("x")
    with pytest.raises(GatewayUnavailableError) as caught:
        await collect(stream)
    err = caught.value
    assert err.attempts == 3 and err.retryable and err.reason == "ALL_PROVIDERS_UNAVAILABLE"
    assert err.request_id == stream.request_id and stream.attempts == 3
    assert fake_time.sleeps == [1.0, 2.0] and fault.count == 3
    errors = [r.getMessage() for r in client_logs.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("Gateway request failed after 3 attempts: UNAVAILABLE")
    assert "GenerateStream" in errors[0]
    snap = client.stats.snapshot()
    assert (snap.total_requests, snap.total_failures, snap.consecutive_failures, snap.total_retries) == (1, 1, 1, 2)


async def test_a_non_retryable_failure_before_the_first_event_is_not_retried(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(1, C.INVALID_ARGUMENT, message="messages: at least one", reason="INVALID_MESSAGES")
    client = make_client(fault_server.address, **fast(fake_time))
    with pytest.raises(InvalidRequestError) as caught:
        await collect(client.stream("x"))
    assert caught.value.attempts == 1 and not caught.value.retryable
    assert fault.count == 1 and fake_time.sleeps == []


# ---------------------------------------------------------------------- never a retry after the first event


@pytest.mark.parametrize("code", [C.UNAVAILABLE, C.RESOURCE_EXHAUSTED, C.INTERNAL], ids=lambda c: c.name)
async def test_no_retry_once_an_event_has_arrived(
    code: grpc.StatusCode, fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory,
    fake_time: FakeTime, client_logs: pytest.LogCaptureFixture,
) -> None:
    fault.then(Interrupt(after=1, code=code), Reply("must never be asked for"))
    client = make_client(fault_server.address, **fast(fake_time))
    stream = client.stream("x")
    events, err = await collect_until_error(stream)
    assert kinds(events) == ["StreamStart", "ClientTextDelta"] and stream.text == "one"
    assert isinstance(err, {C.UNAVAILABLE: GatewayUnavailableError, C.RESOURCE_EXHAUSTED: RateLimitedError,
                            C.INTERNAL: ServerError}[code])
    assert err.code is code and err.reason == "STREAM_INTERRUPTED" and err.attempts == 1
    assert err.retryable  # the code is one the policy retries: re-asking from scratch is the caller's call
    assert fault.count == 1 and len(fault.script) == 1  # exactly one call; the Reply is still queued
    assert fake_time.sleeps == []
    assert [r.levelno for r in client_logs.records] == [logging.ERROR]  # no "Retrying in" line
    assert "a started stream is never retried" in client_logs.records[0].getMessage()
    snap = client.stats.snapshot()
    assert (snap.total_requests, snap.total_failures, snap.total_retries, snap.total_cancelled) == (1, 1, 0, 0)


async def test_a_stream_that_ends_without_its_end_event_is_an_error(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.then(Truncate(after=2))
    client = make_client(fault_server.address, **fast(fake_time))
    events, err = await collect_until_error(client.stream("x"))
    assert kinds(events) == ["StreamStart", "ClientTextDelta", "ClientTextDelta"]
    assert isinstance(err, ServerError) and not err.retryable and "without an end event" in err.message
    assert fault.count == 1 and fake_time.sleeps == []
    assert (client.stats.total_requests, client.stats.total_failures) == (1, 1)


# ---------------------------------------------------------------------- closing early cancels the call


async def _read_two(stream: EventStream) -> list[StreamEvent]:
    seen = []
    async for event in stream:
        seen.append(event)
        if len(seen) == 2:
            break
    return seen


@pytest.mark.parametrize("how", ["aclose", "async_with", "break_and_drop"])
async def test_closing_the_stream_early_cancels_the_server_call(
    how: str, fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.then(Stall(after=1))
    client = make_client(fault_server.address)
    if how == "aclose":
        stream = client.stream("x")
        seen = await _read_two(stream)
        await stream.aclose()
        await stream.aclose()  # idempotent
    elif how == "async_with":
        async with client.stream("x") as stream:
            seen = await _read_two(stream)
    else:
        seen = []
        async for event in client.stream("x"):  # dropped after the break: finalized, call cancelled
            seen.append(event)
            if len(seen) == 2:
                break
    assert kinds(seen) == ["StreamStart", "ClientTextDelta"]
    await asyncio.wait_for(fault.call_cancelled.wait(), WAIT)
    await asyncio.wait_for(fault.hang_cancelled.wait(), WAIT)
    assert fault.calls[0].cancelled and fault.count == 1
    snap = client.stats.snapshot()
    assert (snap.total_requests, snap.total_failures, snap.total_cancelled, snap.total_attempts) == (0, 0, 1, 1)


async def test_cancelling_the_consuming_task_cancels_the_server_call(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.then(Stall(after=1))
    client = make_client(fault_server.address)
    got_delta = asyncio.Event()

    async def consume() -> None:
        async for event in client.stream("x"):
            if isinstance(event, TextDelta):
                got_delta.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_delta.wait(), WAIT)
    await asyncio.wait_for(fault.stall_started.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fault.call_cancelled.wait(), WAIT)
    assert fault.calls[0].cancelled
    assert (client.stats.total_cancelled, client.stats.total_requests) == (1, 0)


async def test_cancelling_during_the_retry_wait_sends_nothing_more(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.fail(1, C.UNAVAILABLE)
    waiting = asyncio.Event()

    async def sleep(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    client = make_client(fault_server.address, sleep=sleep)
    task = asyncio.create_task(collect(client.stream("x")))
    await asyncio.wait_for(waiting.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fault.count == 1
    assert (client.stats.total_cancelled, client.stats.total_attempts) == (1, 1)


# ---------------------------------------------------------------------- the budget bounds the stream


@pytest.mark.parametrize("step", [Stall(after=1), Hang()], ids=["after-first-event", "before-first-event"])
async def test_the_budget_bounds_a_hanging_stream(
    step: Any, fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.then(step)
    client = make_client(fault_server.address, timeout=0.5, sleep=fake_time.sleep)
    started = time.monotonic()
    events, err = await collect_until_error(client.stream("x"))
    elapsed = time.monotonic() - started
    assert isinstance(err, GatewayTimeoutError) and err.code is C.DEADLINE_EXCEEDED
    assert not err.retryable and err.attempts == 1
    assert 0.4 <= elapsed <= 0.5 + 1.5  # slack for a loaded machine; unbounded, the hang never ends
    assert kinds(events) == (["StreamStart", "ClientTextDelta"] if isinstance(step, Stall) else [])
    assert fault.count == 1 and fake_time.sleeps == []
    await asyncio.wait_for(fault.hang_cancelled.wait(), WAIT)


async def test_a_deadline_caps_the_stream(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.then(Stall(after=2))
    client = make_client(fault_server.address, timeout=60)
    started = time.monotonic()
    events, err = await collect_until_error(client.stream("x", deadline=time.monotonic() + 0.4))
    assert isinstance(err, GatewayTimeoutError)
    assert time.monotonic() - started <= 0.4 + 1.5  # slack for a loaded machine; uncapped: the 60 s timeout
    assert len(events) == 3


async def test_attempt_timeout_bounds_the_wait_for_the_first_event_only(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.then(Hang(), Reply("one two"))
    client = make_client(fault_server.address, timeout=30, attempt_timeout=0.3, sleep=fake_time.sleep)
    started = time.monotonic()
    stream = client.stream("x")
    events = await collect(stream)
    assert time.monotonic() - started < 5
    assert stream.text == "one two" and stream.attempts == 2 and fake_time.sleeps == [1.0]
    assert isinstance(events[-1], StreamEnd) and events[-1].client_attempts == 2
    await asyncio.wait_for(fault.hang_cancelled.wait(), WAIT)
    # the gRPC deadline of a stream attempt is the call's budget, not the attempt timeout
    second = fault.calls[1].time_remaining
    assert second is not None and second > 20
