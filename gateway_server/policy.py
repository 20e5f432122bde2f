"""Retry and fallback policy: small pure functions, tested directly.

- Same-provider retries only for fast transient failures (5xx, overloaded, connection refused/reset).
- Fallback to the next provider for any provider-side failure (timeouts, 429, bad responses and a
  rejected gateway credential included), but not for a request the provider rejected for its content.
- The final status tells the caller whether a retry can help.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from gateway_server.errors import ErrorKind, ProviderError

_RETRY_SAME_PROVIDER = frozenset({ErrorKind.SERVER, ErrorKind.OVERLOADED, ErrorKind.CONNECTION})
_NO_FALLBACK = frozenset({ErrorKind.INVALID_REQUEST})


def retries_same_provider(kind: ErrorKind) -> bool:
    """Whether a failure of this kind is worth re-trying on the same provider."""
    return kind in _RETRY_SAME_PROVIDER


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
