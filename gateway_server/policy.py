"""Retry and fallback policy: small pure functions, tested directly.

- Same-provider retries only for fast transient failures (5xx, overloaded, connection refused/reset).
- Fallback to the next provider for any provider-side failure (timeouts, 429, bad responses and a
  rejected gateway credential included), but not for a request the provider rejected for its content.
- The final status tells the caller whether a retry can help.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import grpc

from gateway_server.errors import ErrorKind, ProviderError

_RETRY_SAME_PROVIDER = frozenset({ErrorKind.SERVER, ErrorKind.OVERLOADED, ErrorKind.CONNECTION})
_NO_FALLBACK = frozenset({ErrorKind.INVALID_REQUEST})


def retries_same_provider(kind: ErrorKind, *, alternatives: bool = False) -> bool:
    """Whether a failure of this kind is worth re-trying on the same provider.

    An overloaded provider is never re-tried while the chain has another provider (``alternatives``):
    hammering it is what keeps it overloaded, and the caller's own retry multiplies every re-try.
    """
    if kind is ErrorKind.OVERLOADED and alternatives:
        return False
    return kind in _RETRY_SAME_PROVIDER


_EJECTING = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.SERVER, ErrorKind.OVERLOADED,
                       ErrorKind.MALFORMED_RESPONSE})


def counts_for_ejection(kind: ErrorKind) -> bool:
    """Whether a failure counts towards outlier ejection: timeout, connection, 5xx, 529, bad response.

    Rate limits cool a provider down by their retry-after instead; rejected credentials and invalid
    requests fail fast and say nothing about the provider's availability.
    """
    return kind in _EJECTING


def retry_budget_allows(active_calls: int, active_retries: int, *, budget_percent: float,
                        min_retry_concurrency: int) -> bool:
    """Envoy's retry budget: one more re-try may start while the re-tries in flight stay within
    ``budget_percent`` of the calls in flight, or below ``min_retry_concurrency``."""
    allowed = max(float(min_retry_concurrency), active_calls * budget_percent / 100.0)
    return active_retries + 1 <= allowed


def pushback(now: float, ready_at: Sequence[float]) -> float | None:
    """Seconds until a retry could help: the soonest moment a provider of the chain takes traffic
    again (``ready_at``, the same clock as ``now``); None when none is known."""
    if not ready_at:
        return None
    return max(0.0, min(ready_at) - now)


def falls_back(kind: ErrorKind, *, on_invalid_request: bool = False) -> bool:
    """Whether a failure of this kind moves the request on to the next provider."""
    if kind in _NO_FALLBACK:
        return on_invalid_request
    return True


def counts_against_health(kind: ErrorKind) -> bool:
    """Whether the failure says something about the provider (not about the request)."""
    return kind not in (ErrorKind.INVALID_REQUEST, ErrorKind.NOT_FOUND)


def retry_wait(retry: int, *, base: float, cap: float, retry_after: float | None) -> float | None:
    """Seconds to wait before same-provider retry number ``retry`` (1-based).

    Exponential (base, 2*base, ...) capped at ``cap``; a provider's retry-after wins when longer.
    None when the provider asks for longer than ``cap``: better to move on to the next provider.
    """
    wait: float = min(base * 2.0 ** (retry - 1), cap)
    if retry_after is not None:
        if retry_after > cap:
            return None
        wait = max(wait, retry_after)
    return wait


def attempt_budget(provider_timeout: float, remaining: float | None, *, margin: float) -> tuple[float, bool]:
    """(seconds this attempt may take, whether the caller's deadline is what bounds it)."""
    if remaining is None:
        return provider_timeout, False
    left = remaining - margin
    if left < provider_timeout:
        return left, True
    return provider_timeout, False


class AttemptLimit(enum.Enum):
    """What bounds an attempt's time."""

    PROVIDER = "provider"  # the provider's own timeout: a timeout is the provider's failure
    RESERVE = "reserve"  # the share kept for the next provider: a timeout moves on
    DEADLINE = "deadline"  # the caller's deadline: a timeout ends the call


def attempt_limit(provider_timeout: float, remaining: float | None, *, margin: float, reserve_ratio: float = 0.0,
                  more_providers: bool = False, min_attempt: float = 0.0) -> tuple[float, AttemptLimit]:
    """The time law: (seconds this attempt may take, what bounds it).

    An attempt gets its provider's timeout, but never more than the time left before the caller's
    deadline less ``margin``; while another provider is still in the chain (``more_providers``),
    never more than ``1 - reserve_ratio`` of that time (at least ``min_attempt``), so the next
    provider keeps a usable share.
    """
    if remaining is None:
        return provider_timeout, AttemptLimit.PROVIDER
    left = remaining - margin
    if more_providers and reserve_ratio > 0:
        share = max(left * (1.0 - reserve_ratio), min(left, min_attempt))
        if share < provider_timeout and share < left:
            return share, AttemptLimit.RESERVE
    if left < provider_timeout:
        return left, AttemptLimit.DEADLINE
    return provider_timeout, AttemptLimit.PROVIDER


def final_status(errors: Sequence[ProviderError]) -> tuple[grpc.StatusCode, str, ProviderError]:
    """The status for a call whose every attempt failed: (code, reason, the decisive error).

    - every failure a rejected credential -> FAILED_PRECONDITION (an operator must act);
    - otherwise, ignoring credential failures: all rate limits -> RESOURCE_EXHAUSTED, all
      model-not-found -> NOT_FOUND, an invalid request (which stops the chain) -> INVALID_ARGUMENT;
    - anything else transient -> UNAVAILABLE, with the last transient error's reason.
    """
    if not errors:
        raise ValueError("final_status needs at least one error")
    last = errors[-1]
    if last.kind is ErrorKind.INVALID_REQUEST:
        return last.kind.code, last.kind.reason, last
    others = [e for e in errors if e.kind is not ErrorKind.AUTH]
    if not others:
        return last.kind.code, last.kind.reason, last
    kinds = {e.kind for e in others}
    if len(kinds) == 1:
        (kind,) = kinds
        decisive = others[-1]
        return kind.code, kind.reason, decisive
    transient = [e for e in others if e.kind.code is grpc.StatusCode.UNAVAILABLE]
    decisive = transient[-1] if transient else others[-1]
    return grpc.StatusCode.UNAVAILABLE, decisive.kind.reason, decisive


def shortest_retry_after(errors: Sequence[ProviderError]) -> float | None:
    hints = [e.retry_after for e in errors if e.retry_after is not None]
    return min(hints) if hints else None
