"""The retry loop against the fault-injecting server: codes, backoff, pushback, budget, gateway down."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import pytest

from orchestrator_client import (
    GatewayError,
    GatewayTimeoutError,
    GatewayUnavailableError,
    InvalidRequestError,
    MessageTooLargeError,
    NotFoundError,
    RateLimitedError,
    ServerError,
)

from .codes import NEVER, RETRIED
from .conftest import ClientFactory, FakeTime
from .fault_server import FaultServer, FaultServicer, Reply

C = grpc.StatusCode

def fast(fake_time: FakeTime, **options: object) -> dict[str, object]:
    """Client options with the injected clock and sleep."""
    return {"sleep": fake_time.sleep, "clock": fake_time.clock, **options}


def as_the_server_sends(code: grpc.StatusCode) -> dict[str, object]:
    """Fail() options: a rate limit (RESOURCE_EXHAUSTED) comes with the server's ErrorInfo."""
    return {"reason": "RATE_LIMITED"} if code is C.RESOURCE_EXHAUSTED else {}


async def test_a_normal_success_needs_no_retry(
    fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    client = make_client(fault_server.address, **fast(fake_time))
    result = await client.generate("What is 25 + 75?")
    assert result.content == "100"
    assert result.attempts == 1 and result.retries == 0
    assert fake_time.sleeps == []
    assert fault_server.servicer.count == 1


@pytest.mark.parametrize("code", list(RETRIED), ids=lambda c: c.name)
async def test_retried_codes_back_off_then_succeed(
    code: grpc.StatusCode, fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory,
    fake_time: FakeTime,
) -> None:
    fault.fail(2, code, **as_the_server_sends(code))
    client = make_client(fault_server.address, **fast(fake_time))
    result = await client.generate("What is 25 + 75?")
    assert result.content == "100" and result.attempts == 3
    assert fault.count == 3
    # retry_delay × 2^(n-1): 1 s then 2 s; doubled on RESOURCE_EXHAUSTED
    expected = [2.0, 4.0] if code is C.RESOURCE_EXHAUSTED else [1.0, 2.0]
    assert fake_time.sleeps == expected
    assert client.stats.total_retries == 2 and client.stats.total_failures == 0


@pytest.mark.parametrize("code", list(RETRIED), ids=lambda c: c.name)
async def test_retried_codes_give_up_after_max_retries_attempts(
    code: grpc.StatusCode, fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory,
    fake_time: FakeTime,
) -> None:
    fault.fail(10, code, message="still broken", **as_the_server_sends(code))
    client = make_client(fault_server.address, **fast(fake_time))
    with pytest.raises(RETRIED[code]) as caught:
        await client.generate("What is 25 + 75?")
    err = caught.value
    assert err.code is code and err.retryable and err.attempts == 3
    assert err.message == "still broken"
    assert fault.count == 3
    assert len(fake_time.sleeps) == 2


@pytest.mark.parametrize("code", list(NEVER), ids=lambda c: c.name)
async def test_non_retried_codes_fail_at_once(
    code: grpc.StatusCode, fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory,
    fake_time: FakeTime,
) -> None:
    fault.fail(1, code, reason="SOME_REASON", metadata={"field": "messages"})
    client = make_client(fault_server.address, **fast(fake_time))
    with pytest.raises(NEVER[code]) as caught:
        await client.generate("What is 25 + 75?")
    err = caught.value
    assert isinstance(err, GatewayError)
    assert err.code is code and not err.retryable and err.attempts == 1
    assert (err.reason, err.domain, err.metadata) == ("SOME_REASON", "modelgateway", {"field": "messages"})
    assert fault.count == 1 and fake_time.sleeps == []
    assert client.stats.total_failures == 1 and client.stats.consecutive_failures == 1


async def test_unlisted_codes_are_not_retried_unless_configured(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(1, C.UNKNOWN)
    client = make_client(fault_server.address, **fast(fake_time))
    with pytest.raises(ServerError):
        await client.generate("hi")
    assert fault.count == 1

    fault.fail(1, C.UNKNOWN)
    custom = make_client(fault_server.address, **fast(fake_time), retryable_codes=["UNKNOWN"])
    assert (await custom.generate("hi")).attempts == 2

    fault.fail(1, C.UNAVAILABLE)
    strict = make_client(fault_server.address, **fast(fake_time), non_retryable_codes=["UNAVAILABLE"])
    with pytest.raises(GatewayUnavailableError) as caught:
        await strict.generate("hi")
    assert not caught.value.retryable and caught.value.attempts == 1


async def test_retry_info_replaces_the_backoff(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(1, C.RESOURCE_EXHAUSTED, reason="RATE_LIMITED", retry_delay=5.5)
    client = make_client(fault_server.address, **fast(fake_time))
    assert (await client.generate("hi")).attempts == 2
    assert fake_time.sleeps == [5.5]


async def test_pushback_trailer_replaces_the_backoff(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(1, C.UNAVAILABLE, pushback_ms=7000)
    fault.fail(1, C.RESOURCE_EXHAUSTED, retry_delay=1.0, pushback_ms=3000)
    client = make_client(fault_server.address, **fast(fake_time))
    assert (await client.generate("hi")).attempts == 3
    # attempt 1: the pushback (7 s), not the backoff (1 s); attempt 2: the longer of RetryInfo and
    # the trailer (3 s), not the doubled backoff (4 s)
    assert fake_time.sleeps == [7.0, 3.0]


async def test_a_shorter_pushback_shortens_the_backoff(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(1, C.RESOURCE_EXHAUSTED, retry_delay=0.1, pushback_ms=100)
    client = make_client(fault_server.address, **fast(fake_time))
    await client.generate("hi")
    assert fake_time.sleeps == [0.1]  # not the client's own 2 s


async def test_a_pushback_past_the_budget_is_not_waited_for(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime,
    client_logs: pytest.LogCaptureFixture,
) -> None:
    fault.fail(1, C.UNAVAILABLE, pushback_ms=30_000)
    client = make_client(fault_server.address, **fast(fake_time, timeout=10.0))
    with pytest.raises(GatewayUnavailableError) as caught:
        await client.generate("hi")
    assert caught.value.retry_after == 30.0 and caught.value.attempts == 1
    assert fault.count == 1 and fake_time.sleeps == []
    [line] = [r.getMessage() for r in client_logs.records]
    assert "the server's pushback (30.0s) is past the time budget" in line and "not retried" in line
    # the same for a stream, before its first event
    fault.fail(1, C.UNAVAILABLE, pushback_ms=30_000)
    with pytest.raises(GatewayUnavailableError):
        async for _ in client.stream("hi"):
            pass
    assert fault.count == 2 and fake_time.sleeps == []


async def test_negative_pushback_means_do_not_retry(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(1, C.UNAVAILABLE, pushback_ms=-1)
    client = make_client(fault_server.address, **fast(fake_time))
    with pytest.raises(GatewayUnavailableError) as caught:
        await client.generate("hi")
    assert caught.value.retry_forbidden and not caught.value.retryable
    assert fault.count == 1


async def test_rate_limit_error_carries_the_server_details(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(3, C.RESOURCE_EXHAUSTED, message="slow down", reason="RATE_LIMITED",
               metadata={"provider": "anthropic"}, retry_delay=2.5, pushback_ms=1500)
    client = make_client(fault_server.address, **fast(fake_time))
    with pytest.raises(RateLimitedError) as caught:
        await client.generate("hi")
    err = caught.value
    assert err.reason == "RATE_LIMITED" and err.domain == "modelgateway"
    assert err.metadata == {"provider": "anthropic"}
    assert err.retry_after == 2.5  # the longer of RetryInfo and the trailer
    assert err.status is not None and err.status.message == "slow down"
    assert "RESOURCE_EXHAUSTED: slow down [RATE_LIMITED]" in str(err)
    assert err.to_dict()["code"] == "RESOURCE_EXHAUSTED"
    assert fake_time.sleeps == [2.5, 2.5]  # the server's pushback, not the client's 2 s, 4 s


@pytest.mark.parametrize(
    "details",
    [{"reason": "RATE_LIMITED"}, {"retry_delay": 0.0}, {"pushback_ms": 0}],
    ids=["ErrorInfo", "RetryInfo", "pushback"],
)
async def test_resource_exhausted_with_any_server_detail_is_a_rate_limit(
    details: dict[str, object], fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory,
    fake_time: FakeTime,
) -> None:
    fault.fail(1, C.RESOURCE_EXHAUSTED, **details)
    client = make_client(fault_server.address, **fast(fake_time))
    assert (await client.generate("hi")).attempts == 2
    # a pushback of 0 (RetryInfo or trailer) means "retry now"; ErrorInfo alone: the doubled backoff
    assert fake_time.sleeps == ([2.0] if "reason" in details else [0.0])


async def test_plain_resource_exhausted_is_not_a_rate_limit_and_not_retried(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime,
    client_logs: pytest.LogCaptureFixture,
) -> None:
    """RESOURCE_EXHAUSTED without RetryInfo, ErrorInfo or pushback is gRPC's own size limit."""
    fault.fail(3, C.RESOURCE_EXHAUSTED, message="Received message larger than max (5242880 vs. 4194304)")
    client = make_client(fault_server.address, **fast(fake_time))
    with pytest.raises(MessageTooLargeError) as caught:
        await client.generate("hi")
    err = caught.value
    assert isinstance(err, InvalidRequestError) and not isinstance(err, RateLimitedError)
    assert err.code is C.RESOURCE_EXHAUSTED and not err.retryable and err.attempts == 1
    assert err.to_dict()["error"] == "MessageTooLargeError"
    assert fault.count == 1 and fake_time.sleeps == []
    messages = [r.getMessage() for r in client_logs.records]
    assert len(messages) == 1 and messages[0].startswith("Gateway request failed after 1 attempt (not retryable)")
    # the same for a stream
    with pytest.raises(MessageTooLargeError):
        async for _ in client.stream("hi"):
            pass
    assert fault.count == 2 and fake_time.sleeps == []


async def test_an_answer_over_the_clients_size_limit_is_asked_for_once(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    """gRPC's real "Received message larger than max", raised on the client's side."""
    fault.then(Reply("x" * 5000, times=3))
    client = make_client(fault_server.address, **fast(fake_time),
                         channel_options=[("grpc.max_receive_message_length", 1024)])
    with pytest.raises(MessageTooLargeError) as caught:
        await client.generate("hi")
    assert caught.value.code is C.RESOURCE_EXHAUSTED and "larger than max" in caught.value.message
    assert caught.value.attempts == 1 and fault.count == 1 and fake_time.sleeps == []


async def test_jitter_spreads_the_waits_when_switched_on(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(2, C.UNAVAILABLE)
    client = make_client(fault_server.address, **fast(fake_time), jitter=0.5, random=lambda: 1.0)
    await client.generate("hi")
    assert fake_time.sleeps == [1.5, 3.0]


async def test_the_same_request_id_on_every_attempt_and_a_new_one_per_call(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(2, C.UNAVAILABLE)
    client = make_client(fault_server.address, **fast(fake_time))
    first = await client.generate("hi")
    second = await client.generate("hi")
    ids = [call.metadata["x-request-id"] for call in fault.calls]
    assert ids[0] == ids[1] == ids[2] == first.request_id
    assert ids[3] == second.request_id != first.request_id
    assert len(first.request_id) == 32

    fault.fail(1, C.INVALID_ARGUMENT)
    with pytest.raises(InvalidRequestError) as caught:
        await client.generate("hi", request_id="caller-id-1")
    assert caught.value.request_id == "caller-id-1" == fault.calls[-1].metadata["x-request-id"]


async def test_api_key_is_sent_as_bearer_metadata(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    await make_client(fault_server.address, api_key="sk-secret").status()
    await make_client(fault_server.address).status()
    assert fault.calls[0].metadata["authorization"] == "Bearer sk-secret"
    assert "authorization" not in fault.calls[1].metadata


async def test_logs_in_the_seed_words(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime,
    client_logs: pytest.LogCaptureFixture,
) -> None:
    fault.fail(3, C.UNAVAILABLE, message="Cannot connect to host")
    client = make_client(fault_server.address, **fast(fake_time))
    with pytest.raises(GatewayUnavailableError):
        await client.generate("hi")
    lines = [(r.levelname, r.getMessage()) for r in client_logs.records]
    assert lines[:4] == [
        ("WARNING", "Gateway connection error (attempt 1/3): UNAVAILABLE: Cannot connect to host"),
        ("INFO", "Retrying in 1.0s..."),
        ("WARNING", "Gateway connection error (attempt 2/3): UNAVAILABLE: Cannot connect to host"),
        ("INFO", "Retrying in 2.0s..."),
    ]
    assert lines[4][0] == "ERROR"
    assert lines[4][1].startswith(
        "Gateway request failed after 3 attempts: UNAVAILABLE: Cannot connect to host"
    )
    assert len(lines) == 5


# ---------------------------------------------------------------------- the time budget


async def test_a_wait_past_the_budget_is_not_slept(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime,
    client_logs: pytest.LogCaptureFixture,
) -> None:
    fault.fail(10, C.UNAVAILABLE)
    client = make_client(fault_server.address, **fast(fake_time), timeout=2.5)
    with pytest.raises(GatewayUnavailableError) as caught:
        await client.generate("hi")
    # attempt 1, wait 1 s (ends at 1.0 < 2.5), attempt 2, wait 2 s would end at 3.0 > 2.5: give up
    assert fake_time.sleeps == [1.0]
    assert caught.value.attempts == 2 and fault.count == 2
    assert "would pass the time budget" in client_logs.records[-1].getMessage()


async def test_each_attempt_gets_the_budget_left_as_its_deadline(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(1, C.UNAVAILABLE)
    client = make_client(fault_server.address, **fast(fake_time), timeout=30.0)
    await client.generate("hi")
    assert fake_time.sleeps == [1.0]
    first, second = (call.time_remaining for call in fault.calls)
    assert first is not None and second is not None
    # the 2nd attempt's deadline is the budget left: 1 s (the wait) less (gRPC's deadline
    # encoding rounds up a little)
    assert 29.0 < first <= 30.2 and 28.0 < second <= 29.2
    assert first - second == pytest.approx(1.0, abs=0.2)


async def test_attempt_timeout_caps_each_attempts_deadline(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    client = make_client(fault_server.address, **fast(fake_time), timeout=30.0, attempt_timeout=2.0)
    await client.generate("hi")
    remaining = fault.calls[0].time_remaining
    assert remaining is not None and 1.0 < remaining <= 2.1
    # and a budget smaller than attempt_timeout wins
    await client.generate("hi", timeout=0.9)
    remaining = fault.calls[1].time_remaining
    assert remaining is not None and remaining <= 0.95


async def test_a_callers_deadline_caps_the_budget(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    fault.fail(10, C.UNAVAILABLE)
    client = make_client(fault_server.address, **fast(fake_time), timeout=60.0)
    with pytest.raises(GatewayUnavailableError) as caught:
        await client.generate("hi", deadline=fake_time.clock() + 1.5)
    assert fake_time.sleeps == [1.0] and caught.value.attempts == 2


async def test_a_deadline_already_past_sends_nothing(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    client = make_client(fault_server.address, **fast(fake_time))
    with pytest.raises(GatewayTimeoutError) as caught:
        await client.generate("hi", deadline=fake_time.clock() - 1)
    assert caught.value.attempts == 0 and fault.count == 0
    assert client.stats.total_failures == 1


async def test_hanging_server_the_call_never_runs_past_its_budget(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.hang(5)
    client = make_client(fault_server.address, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(GatewayTimeoutError) as caught:
        await client.generate("hi")
    elapsed = time.monotonic() - started
    assert elapsed <= 0.5 + 1.0  # slack for a loaded machine; the server hangs for 5 s
    # the budget itself ran out: DEADLINE_EXCEEDED is not retried
    assert caught.value.attempts == 1 and not caught.value.retryable
    await asyncio.wait_for(fault.hang_cancelled.wait(), 2)


async def test_per_attempt_limit_retries_a_hung_attempt(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.hang(1)
    client = make_client(fault_server.address, timeout=5.0, attempt_timeout=0.2, retry_delay=0.05)
    started = time.monotonic()
    result = await client.generate("What is 25 + 75?")
    assert result.content == "100" and result.attempts == 2
    assert 0.2 <= time.monotonic() - started < 2.0


async def test_per_attempt_limit_with_a_hanging_server_stays_within_the_budget(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    """The seed's "gateway timeout" scenario: the call fails within its budget."""
    fault.hang(10)
    client = make_client(fault_server.address, timeout=0.7, attempt_timeout=0.2, retry_delay=0.05)
    started = time.monotonic()
    with pytest.raises(GatewayTimeoutError) as caught:
        await client.generate("hi")
    elapsed = time.monotonic() - started
    assert elapsed <= 0.7 + 0.1
    assert caught.value.attempts >= 2


async def test_real_time_backoff_schedule(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.fail(2, C.UNAVAILABLE)
    client = make_client(fault_server.address, retry_delay=0.1)
    started = time.monotonic()
    result = await client.generate("hi")
    elapsed = time.monotonic() - started
    assert result.attempts == 3
    gaps = [b.at - a.at for a, b in zip(fault.calls, fault.calls[1:], strict=False)]
    assert 0.09 <= gaps[0] < 0.5 and 0.19 <= gaps[1] < 0.7
    assert 0.29 <= elapsed < 1.5
    assert result.elapsed_ms >= 290


# ---------------------------------------------------------------------- gateway down


async def test_gateway_down_three_attempts_in_about_three_seconds(
    refused_address: str, make_client: ClientFactory, client_logs: pytest.LogCaptureFixture
) -> None:
    """The seed's "gateway unavailable" scenario, in real time: 1 s + 2 s waits, then a clear error."""
    client = make_client(refused_address)
    started = time.monotonic()
    with pytest.raises(GatewayUnavailableError) as caught:
        await client.generate("What is 25 + 75?")
    elapsed = time.monotonic() - started
    assert 2.9 <= elapsed <= 4.5
    err = caught.value
    assert err.attempts == 3 and err.retryable and err.code is C.UNAVAILABLE
    messages = [r.getMessage() for r in client_logs.records]
    assert messages[0].startswith("Gateway connection error (attempt 1/3): UNAVAILABLE")
    assert messages[1] == "Retrying in 1.0s..."
    assert messages[3] == "Retrying in 2.0s..."
    assert messages[4].startswith("Gateway request failed after 3 attempts")
    assert client.stats.total_failures == 1 and client.stats.total_retries == 2


async def test_gateway_down_with_injected_sleep(
    refused_address: str, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    client = make_client(refused_address, **fast(fake_time), max_retries=4)
    with pytest.raises(GatewayUnavailableError) as caught:
        await client.health()
    assert caught.value.attempts == 4
    assert fake_time.sleeps == [1.0, 2.0, 4.0]


async def test_dns_failure_is_retried_as_unavailable(make_client: ClientFactory, fake_time: FakeTime) -> None:
    client = make_client("dns:///no-such-gateway.invalid:50051", **fast(fake_time))
    with pytest.raises(GatewayUnavailableError) as caught:
        await client.status(timeout=10)
    assert caught.value.attempts == 3 and fake_time.sleeps == [1.0, 2.0]


async def test_the_gateway_coming_back_is_picked_up(
    refused_address: str, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    port = int(refused_address.rsplit(":", 1)[1])
    client = make_client(refused_address, **fast(fake_time), max_retries=1)
    with pytest.raises(GatewayUnavailableError):
        await client.status()
    server = await FaultServer().start(port)
    try:
        client2 = make_client(refused_address, max_retries=10, retry_delay=0.1, timeout=10)
        assert (await client2.status()).status == "running"
    finally:
        await server.stop()


# ---------------------------------------------------------------------- cancellation, channel


async def test_a_cancelled_call_propagates_and_is_counted_apart(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.hang(1)
    client = make_client(fault_server.address)
    task = asyncio.create_task(client.generate("hi"))
    await asyncio.wait_for(fault.hang_started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fault.hang_cancelled.wait(), 5)
    assert client.stats.total_cancelled == 1 and client.stats.total_requests == 0


async def test_one_channel_is_reused_for_every_call(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    client = make_client(fault_server.address)
    await client.generate("hi")
    channel = client.channel
    assert channel is not None
    for _ in range(10):
        await client.generate("hi")
        await client.status()
    assert client.channel is channel
    assert len({call.peer for call in fault.calls}) == 1  # one connection, one client port


async def test_context_manager_and_close(fault_server: FaultServer) -> None:
    from orchestrator_client import GatewayClient

    async with GatewayClient(fault_server.address) as client:
        assert client.channel is not None
        await client.wait_ready(5)
        assert (await client.status()).service == "Model Gateway"
    assert client.channel is None
    with pytest.raises(RuntimeError, match="closed"):
        await client.status()


def test_grpc_retries_are_switched_off_on_the_channel() -> None:
    from orchestrator_client import GatewayClient

    client = GatewayClient("localhost:1")
    options = dict(client._channel_options)
    assert options["grpc.enable_retries"] == 0
    assert options["grpc.use_local_subchannel_pool"] == 1
    assert '"round_robin"' in options["grpc.service_config"]
    assert options["grpc.keepalive_time_ms"] == 60_000


def test_invalid_client_options_are_refused() -> None:
    from orchestrator_client import GatewayClient

    for bad in ({"max_retries": 0}, {"timeout": 0}, {"retry_delay": -1}, {"jitter": 2},
                {"attempt_timeout": 0}, {"load_balancing": "random"}):
        with pytest.raises(ValueError):
            GatewayClient("localhost:1", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        GatewayClient("localhost:1", retryable_codes=["NOPE"])


async def test_logs_stay_quiet_on_success(
    fault_server: FaultServer, make_client: ClientFactory, client_logs: pytest.LogCaptureFixture
) -> None:
    await make_client(fault_server.address).generate("hi")
    assert [r for r in client_logs.records if r.levelno >= logging.INFO] == []


async def test_errors_pickle_with_their_details(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    import pickle

    fault.fail(1, C.NOT_FOUND, reason="UNKNOWN_MODEL", metadata={"model": "x"})
    with pytest.raises(NotFoundError) as caught:
        await make_client(fault_server.address).generate("hi")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is NotFoundError and copy.code is C.NOT_FOUND
    assert (copy.reason, copy.metadata, copy.attempts, str(copy)) == (
        "UNKNOWN_MODEL", {"model": "x"}, 1, str(caught.value))
