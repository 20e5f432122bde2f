"""The retry policy, as pure functions: what is retried and how long to wait.

The rules follow the seed guide's "Orchestrator Retry Configuration":

* ``max_retries`` is the total number of attempts ("attempt 1/3" ... "failed after 3 attempts").
* The wait before retry *n* (that is, after failed attempt *n*) is ``retry_delay × 2^(n-1)``:
  1 s, 2 s, 4 s ... with the default ``retry_delay`` of 1.0 s.
* After RESOURCE_EXHAUSTED (the gateway's rate limit, HTTP 429) that wait is doubled.
* A server pushback (``google.rpc.RetryInfo.retry_delay`` or the ``grpc-retry-pushback-ms``
  trailer; the longer of the two when both come) replaces that schedule: the client waits exactly
  what the server asked for, shorter or longer, as gRPC's retry design (A6) has it. A pushback
  that ends past the call's time budget is not waited for: the call fails at once (the client
  says so in its log line). A negative pushback means "do not retry".
* Jitter is off by default so the timings above hold; with ``jitter=j`` the computed wait is
  scaled by a uniform factor in ``[1 - j, 1 + j]`` (a server pushback is not jittered).

Retried by default: UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, and DEADLINE_EXCEEDED
only when the attempt ran under a per-attempt limit (``attempt_timeout``) with call budget left.
RESOURCE_EXHAUSTED is retried only as a rate limit, that is when the server sent
``google.rpc.RetryInfo``, ``google.rpc.ErrorInfo`` or a ``grpc-retry-pushback-ms`` trailer (the
gateway's rate limits carry all three; see :func:`is_rate_limit`): without them it is gRPC's own
"Received message larger than max", which the same message would meet again.
Never retried by default: INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND,
FAILED_PRECONDITION, UNIMPLEMENTED, OUT_OF_RANGE, CANCELLED. Codes in neither set (UNKNOWN,
ALREADY_EXISTS, DATA_LOSS) are not retried either. Both sets are configurable; a code in both
is not retried.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Iterable

import grpc

__all__ = [
    "DEFAULT_NON_RETRYABLE_CODES",
    "DEFAULT_RETRYABLE_CODES",
    "backoff_delay",
    "is_rate_limit",
    "is_retryable",
    "parse_codes",
    "parse_pushback_ms",
]

DEFAULT_RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)

DEFAULT_NON_RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.CANCELLED,
    }
)

_CODES_BY_NAME: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}


def parse_codes(names: Iterable[str | grpc.StatusCode]) -> frozenset[grpc.StatusCode]:
    """Status codes from names such as ``"UNAVAILABLE"`` (case-insensitive) or codes.

    Raises ValueError naming the first unknown name.
    """
    codes: set[grpc.StatusCode] = set()
    for item in names:
        if isinstance(item, grpc.StatusCode):
            codes.add(item)
            continue
        key = item.strip().upper()
        if key.startswith("STATUSCODE."):
            key = key[len("STATUSCODE.") :]
        code = _CODES_BY_NAME.get(key)
        if code is None:
            known = ", ".join(_CODES_BY_NAME)
            raise ValueError(f"unknown gRPC status code {item!r} (expected one of {known})")
        codes.add(code)
    return frozenset(codes)


def is_retryable(
    code: grpc.StatusCode,
    *,
    retryable_codes: frozenset[grpc.StatusCode] = DEFAULT_RETRYABLE_CODES,
    non_retryable_codes: frozenset[grpc.StatusCode] = DEFAULT_NON_RETRYABLE_CODES,
    attempt_limited: bool = False,
) -> bool:
    """Whether a failed attempt with ``code`` may be retried.

    ``attempt_limited`` tells whether the attempt's gRPC deadline was the per-attempt limit
    (``attempt_timeout``, smaller than the call budget left) rather than the call budget itself:
    DEADLINE_EXCEEDED is retryable only then, since otherwise the whole budget is spent.
    """
    if code in non_retryable_codes or code not in retryable_codes:
        return False
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return attempt_limited
    return True


def is_rate_limit(
    code: grpc.StatusCode,
    *,
    retry_info: bool = False,
    error_info: bool = False,
    pushback: bool = False,
) -> bool:
    """Whether a failure is a server's rate limit: RESOURCE_EXHAUSTED that came with the server's
    ``google.rpc.RetryInfo`` (``retry_info``), ``google.rpc.ErrorInfo`` (``error_info``) or
    ``grpc-retry-pushback-ms`` trailer (``pushback``).

    A RESOURCE_EXHAUSTED with none of them is raised by gRPC itself, on either side, for a message
    over the size limit ("Received message larger than max"): re-sending the request (or asking
    for the same too-large answer) fails the same way, so it is not retried. False for other codes.
    """
    return code is grpc.StatusCode.RESOURCE_EXHAUSTED and (retry_info or error_info or pushback)


def backoff_delay(
    attempt: int,
    code: grpc.StatusCode | None,
    retry_delay: float,
    pushback: float | None = None,
    jitter: float = 0.0,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based) before the next one.

    ``pushback`` (seconds the server asked for, >= 0) when the server sent one: it replaces the
    client's own schedule. Otherwise ``retry_delay × 2^(attempt-1)``, doubled after
    RESOURCE_EXHAUSTED, scaled by the jitter factor when ``jitter`` > 0. (A negative pushback,
    "do not retry", is decided before any wait: see ``GatewayError.retry_forbidden``; here it
    counts as none.)
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if pushback is not None and pushback >= 0.0:
        return pushback
    delay = retry_delay * (2.0 ** (attempt - 1))
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        delay *= 2.0
    if jitter > 0.0:
        delay *= 1.0 + jitter * (2.0 * random() - 1.0)
    return max(delay, 0.0)


def parse_pushback_ms(value: str | bytes | None) -> float | None:
    """The ``grpc-retry-pushback-ms`` trailer as seconds.

    None when absent or unparseable; a negative number (the server asks not to retry, per
    gRPC's retry design A6) is returned as -1.0.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        millis = int(value.strip())
    except ValueError:
        return None
    if millis < 0:
        return -1.0
    return millis / 1000.0
