"""Typed failures of gateway calls.

Every failed call raises a :class:`GatewayError` subclass chosen by the final gRPC status
code, never a raw ``grpc.aio.AioRpcError``. The error carries the code, whether the code was
retryable, how many attempts the client made, the ``x-request-id`` of the call, and the
server's AIP-193 details parsed from the ``grpc-status-details-bin`` trailer: the
``google.rpc.ErrorInfo`` reason, domain and metadata, and the ``google.rpc.RetryInfo`` delay /
``grpc-retry-pushback-ms`` trailer (``retry_after``).

=========================  =====================================================
Class                      Codes
=========================  =====================================================
InvalidRequestError        INVALID_ARGUMENT, OUT_OF_RANGE
NotFoundError              NOT_FOUND, UNIMPLEMENTED
AuthenticationError        UNAUTHENTICATED
PermissionDeniedError      PERMISSION_DENIED
PreconditionError          FAILED_PRECONDITION
GatewayUnavailableError    UNAVAILABLE (connection refused, DNS failure, gateway down)
GatewayTimeoutError        DEADLINE_EXCEEDED
RateLimitedError           RESOURCE_EXHAUSTED with RetryInfo, ErrorInfo or pushback
MessageTooLargeError       RESOURCE_EXHAUSTED without them: gRPC's message size limit
ServerError                INTERNAL, ABORTED, UNKNOWN, DATA_LOSS, ALREADY_EXISTS, CANCELLED
=========================  =====================================================

``MessageTooLargeError`` is an ``InvalidRequestError`` and is never retried: gRPC itself refused a
message over its size limit ("Received message larger than max"), the request's on the gateway's
side or the answer's on the client's, and the same call would meet the same limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from orchestrator_client.retry_policy import is_rate_limit, parse_pushback_ms

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "GatewayClientError",
    "GatewayError",
    "GatewayTimeoutError",
    "GatewayUnavailableError",
    "InvalidRequestError",
    "MessageTooLargeError",
    "NotFoundError",
    "PermissionDeniedError",
    "PreconditionError",
    "RateLimitedError",
    "ServerError",
    "ToolRoundsExceededError",
    "error_class_for",
    "error_from_rpc",
]

PUSHBACK_TRAILER = "grpc-retry-pushback-ms"


class ConfigError(ValueError):
    """The client's configuration is invalid; the message names the offending key."""


class ToolRoundsExceededError(RuntimeError):
    """``GatewayReasoner.reason_with_tools`` ran its ``max_rounds`` tool rounds and the model still
    asks for tools. ``messages`` is the conversation so far (ready to continue), ``result`` the
    last answer (its ``tool_calls`` were not run)."""

    def __init__(self, max_rounds: int, messages: list[Any], result: Any) -> None:
        names = ", ".join(call.name for call in getattr(result, "tool_calls", ())) or "-"
        super().__init__(
            f"the model still asks for tools after {max_rounds} tool rounds (max_rounds={max_rounds}); "
            f"last tool calls: {names}"
        )
        self.max_rounds = max_rounds
        self.messages = messages
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.max_rounds, self.messages, self.result))


class GatewayClientError(Exception):
    """A gateway call failed (the client's error; ``GatewayError`` is the same class under its
    earlier name).

    Attributes:
        code: the final gRPC status code.
        message: the status message (details) of the last attempt.
        retryable: whether the last attempt's failure was one the policy retries (False also
            when the server's pushback asked not to retry).
        attempts: how many attempts the client made (0 when the budget was spent before any).
        request_id: the ``x-request-id`` sent with every attempt of the call.
        reason, domain, metadata: the server's ``google.rpc.ErrorInfo``, when it sent one.
        retry_after: the server's requested wait in seconds (RetryInfo or pushback trailer).
        status: the full ``google.rpc.Status`` when the server sent rich details.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        retryable: bool = False,
        attempts: int = 1,
        request_id: str = "",
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        status: status_pb2.Status | None = None,
        retry_forbidden: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.attempts = attempts
        self.request_id = request_id
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after
        self.status = status
        self.retry_forbidden = retry_forbidden

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the keyword-only arguments
        return (type(self), (self.code, self.message), self.__dict__.copy())

    @property
    def code_name(self) -> str:
        return str(self.code.name)

    def __str__(self) -> str:
        text = f"{self.code_name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        extras = [f"attempts={self.attempts}"]
        if self.request_id:
            extras.append(f"request_id={self.request_id}")
        return f"{text} ({', '.join(extras)})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code_name}, message={self.message!r}, "
            f"reason={self.reason!r}, retryable={self.retryable}, attempts={self.attempts}, "
            f"request_id={self.request_id!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": type(self).__name__,
            "code": self.code_name,
            "message": self.message,
            "reason": self.reason,
            "domain": self.domain,
            "metadata": dict(self.metadata),
            "retryable": self.retryable,
            "attempts": self.attempts,
            "request_id": self.request_id,
            "retry_after": self.retry_after,
        }


GatewayError = GatewayClientError  # the earlier name, kept for compatibility


class InvalidRequestError(GatewayError):
    """INVALID_ARGUMENT or OUT_OF_RANGE: the request itself is wrong."""


class MessageTooLargeError(InvalidRequestError):
    """RESOURCE_EXHAUSTED raised by gRPC itself, not a rate limit: a message over the size limit
    ("Received message larger than max"), the request's (the gateway's limit) or the answer's (the
    client's ``grpc.max_receive_message_length``). Never retried; ``code`` stays RESOURCE_EXHAUSTED."""


class NotFoundError(GatewayError):
    """NOT_FOUND (unknown provider or model) or UNIMPLEMENTED (no such RPC)."""


class AuthenticationError(GatewayError):
    """UNAUTHENTICATED: missing or wrong API key."""


class PermissionDeniedError(GatewayError):
    """PERMISSION_DENIED."""


class PreconditionError(GatewayError):
    """FAILED_PRECONDITION, e.g. a provider that is disabled or has no credentials."""


class GatewayUnavailableError(GatewayError):
    """UNAVAILABLE: gateway down, connection refused, DNS failure, all providers down."""


class GatewayTimeoutError(GatewayError):
    """DEADLINE_EXCEEDED: the call's time budget ran out."""


class RateLimitedError(GatewayError):
    """RESOURCE_EXHAUSTED with the server's RetryInfo, ErrorInfo or pushback: rate limited; see
    ``retry_after``."""


class ServerError(GatewayError):
    """INTERNAL, ABORTED, UNKNOWN, DATA_LOSS and other server-side failures."""


_CLASS_BY_CODE: dict[grpc.StatusCode, type[GatewayError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNIMPLEMENTED: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionError,
    grpc.StatusCode.UNAVAILABLE: GatewayUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: GatewayTimeoutError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitedError,
}


def error_class_for(code: grpc.StatusCode) -> type[GatewayError]:
    return _CLASS_BY_CODE.get(code, ServerError)


def _rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    try:
        status: status_pb2.Status | None = rpc_status.from_call(err)
        return status
    except Exception:  # mismatched code/message or undecodable details: ignore them
        return None


def error_from_rpc(
    err: grpc.aio.AioRpcError,
    *,
    retryable: bool,
    attempts: int,
    request_id: str,
) -> GatewayError:
    """The typed error for a failed attempt, with the server's details parsed."""
    code: grpc.StatusCode = err.code()
    message = err.details() or ""
    reason = domain = ""
    metadata: dict[str, str] = {}
    retry_after: float | None = None
    retry_forbidden = False
    has_error_info = has_retry_info = has_pushback = False
    status = _rich_status(err)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                has_error_info = True
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                has_retry_info = True
                delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
                retry_after = delay if retry_after is None else max(retry_after, delay)
    trailers = err.trailing_metadata()
    if trailers:
        for key, value in trailers:
            if key == PUSHBACK_TRAILER:
                pushback = parse_pushback_ms(value)
                if pushback is None:
                    continue
                has_pushback = True
                if pushback < 0:
                    retry_forbidden = True
                else:
                    retry_after = pushback if retry_after is None else max(retry_after, pushback)
    error_class = error_class_for(code)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and not is_rate_limit(
        code, retry_info=has_retry_info, error_info=has_error_info, pushback=has_pushback
    ):
        error_class, retryable = MessageTooLargeError, False
    return error_class(
        code,
        message,
        retryable=retryable and not retry_forbidden,
        attempts=attempts,
        request_id=request_id,
        reason=reason,
        domain=domain,
        metadata=metadata,
        retry_after=retry_after,
        status=status,
        retry_forbidden=retry_forbidden,
    )
