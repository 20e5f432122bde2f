"""The pure retry rules: which codes are retried, and the backoff schedule."""

from __future__ import annotations

import grpc
import pytest

from orchestrator_client.retry_policy import (
    DEFAULT_NON_RETRYABLE_CODES,
    DEFAULT_RETRYABLE_CODES,
    backoff_delay,
    is_rate_limit,
    is_retryable,
    parse_codes,
    parse_pushback_ms,
)

from .codes import NEVER, RETRIED

C = grpc.StatusCode


@pytest.mark.parametrize("code", list(RETRIED), ids=lambda c: c.name)
def test_transient_codes_are_retried(code: grpc.StatusCode) -> None:
    assert is_retryable(code)
    assert code in DEFAULT_RETRYABLE_CODES


@pytest.mark.parametrize("code", list(NEVER), ids=lambda c: c.name)
def test_caller_errors_are_never_retried(code: grpc.StatusCode) -> None:
    assert not is_retryable(code)
    assert not is_retryable(code, attempt_limited=True)
    assert code in DEFAULT_NON_RETRYABLE_CODES


@pytest.mark.parametrize("code", [C.UNKNOWN, C.ALREADY_EXISTS, C.DATA_LOSS, C.OK], ids=lambda c: c.name)
def test_codes_in_neither_set_are_not_retried(code: grpc.StatusCode) -> None:
    assert not is_retryable(code)


def test_deadline_exceeded_is_retried_only_under_a_per_attempt_limit() -> None:
    assert not is_retryable(C.DEADLINE_EXCEEDED)
    assert is_retryable(C.DEADLINE_EXCEEDED, attempt_limited=True)


def test_the_sets_are_configurable_and_non_retryable_wins() -> None:
    retryable = parse_codes(["unknown", "UNAVAILABLE"])
    assert is_retryable(C.UNKNOWN, retryable_codes=retryable)
    assert not is_retryable(C.INTERNAL, retryable_codes=retryable)
    assert not is_retryable(
        C.UNAVAILABLE, retryable_codes=retryable, non_retryable_codes=frozenset({C.UNAVAILABLE})
    )


def test_parse_codes_accepts_names_and_codes_and_names_the_unknown_one() -> None:
    assert parse_codes(["unavailable", " Internal ", C.ABORTED, "StatusCode.NOT_FOUND"]) == {
        C.UNAVAILABLE, C.INTERNAL, C.ABORTED, C.NOT_FOUND}
    with pytest.raises(ValueError, match="UNAVAILBLE"):
        parse_codes(["UNAVAILBLE"])


def test_backoff_is_retry_delay_times_two_to_the_attempt_minus_one() -> None:
    assert [backoff_delay(n, C.UNAVAILABLE, 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert [backoff_delay(n, C.INTERNAL, 0.5) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_rate_limits_double_the_backoff() -> None:
    assert [backoff_delay(n, C.RESOURCE_EXHAUSTED, 1.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]


def test_a_server_pushback_replaces_the_schedule() -> None:
    assert backoff_delay(1, C.RESOURCE_EXHAUSTED, 1.0, pushback=5.0) == 5.0
    assert backoff_delay(1, C.RESOURCE_EXHAUSTED, 1.0, pushback=0.5) == 0.5
    assert backoff_delay(3, C.UNAVAILABLE, 1.0, pushback=0.0) == 0.0
    assert backoff_delay(2, C.UNAVAILABLE, 1.0, pushback=None) == 2.0
    assert backoff_delay(2, C.UNAVAILABLE, 1.0, pushback=-1.0) == 2.0  # "do not retry" is decided elsewhere


def test_jitter_is_off_by_default_and_bounded_when_on() -> None:
    assert backoff_delay(2, C.UNAVAILABLE, 1.0, random=lambda: 0.0) == 2.0
    assert backoff_delay(2, C.UNAVAILABLE, 1.0, jitter=0.25, random=lambda: 0.0) == pytest.approx(1.5)
    assert backoff_delay(2, C.UNAVAILABLE, 1.0, jitter=0.25, random=lambda: 1.0) == pytest.approx(2.5)
    assert backoff_delay(2, C.UNAVAILABLE, 1.0, jitter=0.25, random=lambda: 0.5) == pytest.approx(2.0)
    # the server's pushback is not jittered
    assert backoff_delay(1, C.UNAVAILABLE, 1.0, pushback=3.0, jitter=0.5, random=lambda: 1.0) == 3.0
    assert backoff_delay(1, C.UNAVAILABLE, 1.0, pushback=0.2, jitter=0.5, random=lambda: 1.0) == 0.2


def test_attempts_are_one_based() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0, C.UNAVAILABLE, 1.0)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("2500", 2.5), (b"100", 0.1), (" 0 ", 0.0), ("-1", -1.0), ("soon", None), (None, None)],
)
def test_pushback_trailer_parsing(raw: str | bytes | None, seconds: float | None) -> None:
    assert parse_pushback_ms(raw) == seconds


@pytest.mark.parametrize(
    ("retry_info", "error_info", "pushback", "expected"),
    [
        (False, False, False, False),  # gRPC's own "Received message larger than max"
        (True, False, False, True),
        (False, True, False, True),
        (False, False, True, True),
        (True, True, True, True),  # the gateway's rate limit: RetryInfo + ErrorInfo + pushback trailer
    ],
)
def test_resource_exhausted_is_a_rate_limit_only_with_the_servers_details(
    retry_info: bool, error_info: bool, pushback: bool, expected: bool
) -> None:
    assert is_rate_limit(C.RESOURCE_EXHAUSTED, retry_info=retry_info, error_info=error_info,
                         pushback=pushback) is expected


@pytest.mark.parametrize("code", [C.UNAVAILABLE, C.INVALID_ARGUMENT, C.INTERNAL], ids=lambda c: c.name)
def test_only_resource_exhausted_is_a_rate_limit(code: grpc.StatusCode) -> None:
    assert not is_rate_limit(code, retry_info=True, error_info=True, pushback=True)
    assert not is_rate_limit(C.RESOURCE_EXHAUSTED)
