"""The retry/fallback policy and model resolution, as pure functions."""

from __future__ import annotations

import grpc
import pytest

from gateway_server import policy
from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.model_aliases import ModelResolver


@pytest.mark.parametrize("kind", [ErrorKind.SERVER, ErrorKind.OVERLOADED, ErrorKind.CONNECTION])
def test_fast_transient_failures_retry_the_same_provider(kind: ErrorKind) -> None:
    assert policy.retries_same_provider(kind)


@pytest.mark.parametrize("kind", [ErrorKind.TIMEOUT, ErrorKind.RATE_LIMITED, ErrorKind.AUTH,
                                  ErrorKind.INVALID_REQUEST, ErrorKind.NOT_FOUND, ErrorKind.MALFORMED_RESPONSE])
def test_other_failures_do_not_retry_the_same_provider(kind: ErrorKind) -> None:
    assert not policy.retries_same_provider(kind)


@pytest.mark.parametrize("kind", [k for k in ErrorKind if k is not ErrorKind.INVALID_REQUEST])
def test_provider_side_failures_fall_back(kind: ErrorKind) -> None:
    assert policy.falls_back(kind)


def test_invalid_request_does_not_fall_back_unless_configured() -> None:
    assert not policy.falls_back(ErrorKind.INVALID_REQUEST)
    assert policy.falls_back(ErrorKind.INVALID_REQUEST, on_invalid_request=True)


def test_retry_wait_doubles_and_is_capped() -> None:
    waits = [policy.retry_wait(n, base=0.1, cap=0.5, retry_after=None) for n in (1, 2, 3, 4)]
    assert waits == [0.1, 0.2, 0.4, 0.5]


def test_retry_wait_honours_a_longer_retry_after_and_gives_up_on_a_too_long_one() -> None:
    assert policy.retry_wait(1, base=0.1, cap=2.0, retry_after=1.5) == 1.5
    assert policy.retry_wait(3, base=0.1, cap=2.0, retry_after=0.05) == 0.4
    assert policy.retry_wait(1, base=0.1, cap=2.0, retry_after=30) is None


def test_attempt_budget_is_bounded_by_the_deadline_less_the_margin() -> None:
    assert policy.attempt_budget(60, None, margin=0.02) == (60, False)
    assert policy.attempt_budget(60, 10.0, margin=0.5) == (9.5, True)
    assert policy.attempt_budget(2, 10.0, margin=0.5) == (2, False)


def _e(kind: ErrorKind, retry_after: float | None = None) -> ProviderError:
    return ProviderError(kind, kind.value, retry_after=retry_after)


@pytest.mark.parametrize(
    ("kinds", "code", "reason"),
    [
        ([ErrorKind.SERVER, ErrorKind.TIMEOUT], grpc.StatusCode.UNAVAILABLE, "PROVIDER_TIMEOUT"),
        ([ErrorKind.RATE_LIMITED, ErrorKind.RATE_LIMITED], grpc.StatusCode.RESOURCE_EXHAUSTED,
         "PROVIDER_RATE_LIMITED"),
        ([ErrorKind.AUTH, ErrorKind.RATE_LIMITED], grpc.StatusCode.RESOURCE_EXHAUSTED, "PROVIDER_RATE_LIMITED"),
        ([ErrorKind.RATE_LIMITED, ErrorKind.SERVER], grpc.StatusCode.UNAVAILABLE, "PROVIDER_ERROR"),
        ([ErrorKind.AUTH, ErrorKind.AUTH], grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_CREDENTIALS_REJECTED"),
        ([ErrorKind.SERVER, ErrorKind.INVALID_REQUEST], grpc.StatusCode.INVALID_ARGUMENT,
         "PROVIDER_REJECTED_REQUEST"),
        ([ErrorKind.NOT_FOUND, ErrorKind.NOT_FOUND], grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND"),
        ([ErrorKind.MALFORMED_RESPONSE], grpc.StatusCode.UNAVAILABLE, "PROVIDER_BAD_RESPONSE"),
        ([ErrorKind.OVERLOADED, ErrorKind.AUTH], grpc.StatusCode.UNAVAILABLE, "PROVIDER_OVERLOADED"),
    ],
)
def test_final_status_tells_whether_a_retry_can_help(kinds: list[ErrorKind], code: grpc.StatusCode,
                                                      reason: str) -> None:
    got_code, got_reason, _ = policy.final_status([_e(k) for k in kinds])
    assert (got_code, got_reason) == (code, reason)


def test_shortest_retry_after() -> None:
    assert policy.shortest_retry_after([_e(ErrorKind.RATE_LIMITED, 3), _e(ErrorKind.RATE_LIMITED, 1.5)]) == 1.5
    assert policy.shortest_retry_after([_e(ErrorKind.SERVER)]) is None


ALIASES = {"sonnet": {"anthropic": "claude-sonnet", "bedrock": "anthropic.claude-sonnet-v1:0"}}


@pytest.mark.parametrize(
    ("requested", "provider", "first", "models", "expected"),
    [
        ("", "bedrock", True, (), "default"),
        ("sonnet", "anthropic", True, (), "claude-sonnet"),
        ("sonnet", "bedrock", False, (), "anthropic.claude-sonnet-v1:0"),
        ("sonnet", "mock", False, (), "default"),
        ("claude-sonnet", "anthropic", True, (), "claude-sonnet"),
        ("claude-sonnet", "bedrock", False, (), "anthropic.claude-sonnet-v1:0"),
        ("some-model", "bedrock", False, ("some-model",), "some-model"),
        ("unknown-model", "bedrock", False, ("other",), "default"),
        ("unknown-model", "bedrock", True, (), "unknown-model"),
        ("anthropic.claude-sonnet-v1:0", "anthropic", True, ("claude-sonnet",), "claude-sonnet"),
    ],
)
def test_model_resolution(requested: str, provider: str, first: bool, models: tuple[str, ...],
                          expected: str) -> None:
    resolver = ModelResolver(ALIASES)
    assert resolver.resolve(requested, provider, default_model="default", provider_models=models,
                            first=first) == expected
