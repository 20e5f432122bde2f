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
        ("sonnet", "mock", False, (), None),  # no alias for this provider: the model is unavailable there
        ("claude-sonnet", "anthropic", True, (), "claude-sonnet"),
        ("claude-sonnet", "bedrock", False, (), "anthropic.claude-sonnet-v1:0"),
        ("some-model", "bedrock", False, ("some-model",), "some-model"),
        ("unknown-model", "bedrock", False, ("other",), None),
        ("unknown-model", "bedrock", True, (), "unknown-model"),
        ("anthropic.claude-sonnet-v1:0", "anthropic", True, ("claude-sonnet",), "claude-sonnet"),
    ],
)
def test_model_resolution(requested: str, provider: str, first: bool, models: tuple[str, ...],
                          expected: str | None) -> None:
    resolver = ModelResolver(ALIASES)
    assert resolver.resolve(requested, provider, default_model="default", provider_models=models,
                            first=first) == expected


@pytest.mark.parametrize(("requested", "provider"), [("sonnet", "mock"), ("unknown-model", "bedrock")])
def test_the_default_model_substitutes_only_when_allowed(requested: str, provider: str) -> None:
    resolver = ModelResolver(ALIASES)
    kwargs = {"default_model": "default", "provider_models": ("other",), "first": False}
    assert resolver.resolve(requested, provider, **kwargs) is None  # type: ignore[arg-type]
    assert resolver.resolve(requested, provider, substitute_default=True, **kwargs) == "default"  # type: ignore[arg-type]


def test_overload_is_not_retried_on_the_same_provider_while_another_exists() -> None:
    assert policy.retries_same_provider(ErrorKind.OVERLOADED, alternatives=False)
    assert not policy.retries_same_provider(ErrorKind.OVERLOADED, alternatives=True)
    assert policy.retries_same_provider(ErrorKind.SERVER, alternatives=True)


@pytest.mark.parametrize("kind", [ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.SERVER, ErrorKind.OVERLOADED,
                                  ErrorKind.MALFORMED_RESPONSE])
def test_provider_outages_count_for_ejection(kind: ErrorKind) -> None:
    assert policy.counts_for_ejection(kind)


@pytest.mark.parametrize("kind", [ErrorKind.RATE_LIMITED, ErrorKind.AUTH, ErrorKind.INVALID_REQUEST,
                                  ErrorKind.NOT_FOUND])
def test_request_and_quota_failures_do_not_count_for_ejection(kind: ErrorKind) -> None:
    assert not policy.counts_for_ejection(kind)


def test_the_time_law_keeps_a_share_for_the_next_provider() -> None:
    law = policy.attempt_limit
    limit = policy.AttemptLimit
    # No deadline: the provider's own timeout.
    assert law(25, None, margin=0.02, reserve_ratio=0.5, more_providers=True) == (25, limit.PROVIDER)
    # Deadline = provider timeout, another provider left: half of the time left.
    assert law(6, 6.0, margin=0.0, reserve_ratio=0.5, more_providers=True) == (3.0, limit.RESERVE)
    # The last provider gets everything that is left.
    assert law(6, 3.0, margin=0.0, reserve_ratio=0.5, more_providers=False) == (3.0, limit.DEADLINE)
    # A timeout that fits the share is the provider's: the shipped defaults (25 s vs a 60 s budget).
    assert law(25, 60.0, margin=0.02, reserve_ratio=0.5, more_providers=True) == (25, limit.PROVIDER)
    # Never below min_attempt while the time allows it.
    assert law(6, 0.08, margin=0.0, reserve_ratio=0.5, more_providers=True, min_attempt=0.05) == (
        0.05, limit.RESERVE)
    # reserve_ratio 0 switches the reserve off.
    assert law(6, 6.0, margin=0.0, reserve_ratio=0.0, more_providers=True) == (6, limit.PROVIDER)


@pytest.mark.parametrize(("active", "retries", "allowed"), [
    (1, 0, True), (1, 2, True), (1, 3, False),  # min_retry_concurrency 3
    (100, 19, True), (100, 20, False),  # 20% of 100 calls in flight
])
def test_retry_budget(active: int, retries: int, allowed: bool) -> None:
    assert policy.retry_budget_allows(active, retries, budget_percent=20, min_retry_concurrency=3) is allowed


def test_pushback_is_the_soonest_provider_ready_again() -> None:
    assert policy.pushback(100.0, [103.0, 101.5]) == 1.5
    assert policy.pushback(100.0, []) is None
    assert policy.pushback(100.0, [99.0]) == 0.0
