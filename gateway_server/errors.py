"""Error model: provider failures (what went wrong upstream) and gateway errors (what the caller gets).

Providers translate their SDK's exceptions into ``ProviderError`` with an ``ErrorKind``; the
routing policy decides from the kind whether to retry or fall back; ``GatewayError`` carries the
final gRPC status with AIP-193 details (ErrorInfo, RetryInfo, BadRequest) to the caller.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "modelgateway"
PUSHBACK_TRAILER = "grpc-retry-pushback-ms"


class ErrorKind(enum.Enum):
    """Why a provider call failed, independent of the provider."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"  # refused, reset, dropped mid-response
    SERVER = "server"  # 5xx
    OVERLOADED = "overloaded"  # Anthropic 529, Bedrock ServiceUnavailable
    RATE_LIMITED = "rate_limited"  # 429 / ThrottlingException
    AUTH = "auth"  # the provider rejected the gateway's own credentials
    INVALID_REQUEST = "invalid_request"  # the provider rejected the request's content
    NOT_FOUND = "not_found"  # the model does not exist there
    MALFORMED_RESPONSE = "malformed_response"  # truncated or unparseable body

    @property
    def code(self) -> grpc.StatusCode:
        return _KIND_CODE[self]

    @property
    def reason(self) -> str:
        return _KIND_REASON[self]


_KIND_CODE: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.TIMEOUT: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.CONNECTION: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.SERVER: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.OVERLOADED: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.AUTH: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.MALFORMED_RESPONSE: grpc.StatusCode.UNAVAILABLE,
}

_KIND_REASON: dict[ErrorKind, str] = {
    ErrorKind.TIMEOUT: "PROVIDER_TIMEOUT",
    ErrorKind.CONNECTION: "PROVIDER_UNREACHABLE",
    ErrorKind.SERVER: "PROVIDER_ERROR",
    ErrorKind.OVERLOADED: "PROVIDER_OVERLOADED",
    ErrorKind.RATE_LIMITED: "PROVIDER_RATE_LIMITED",
    ErrorKind.AUTH: "PROVIDER_CREDENTIALS_REJECTED",
    ErrorKind.INVALID_REQUEST: "PROVIDER_REJECTED_REQUEST",
    ErrorKind.NOT_FOUND: "MODEL_NOT_FOUND",
    ErrorKind.MALFORMED_RESPONSE: "PROVIDER_BAD_RESPONSE",
}


# What never reaches a log nor a caller: access key ids, API keys, long tokens.
_SECRETS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA)[A-Z0-9]{8,}\b"), "<aws-key-id>"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"), "<key>"),
    (re.compile(r"\b[A-Za-z0-9+/_=-]{40,}"), "<token>"),
)
# What never reaches a caller either: AWS ARNs and account ids.
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\barn:aws[a-z-]*:[^\s\"',;)]*", re.IGNORECASE), "<arn>"),
    *_SECRETS,
    (re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])"), "<account>"),
)
_MAX_PROVIDER_TEXT = 300

# The caller-facing words for a provider failure, by kind: the provider's own text goes to the log.
_SUMMARY: dict[ErrorKind, str] = {
    ErrorKind.TIMEOUT: "the provider did not answer in time",
    ErrorKind.CONNECTION: "the connection to the provider failed",
    ErrorKind.SERVER: "the provider failed",
    ErrorKind.OVERLOADED: "the provider is overloaded",
    ErrorKind.RATE_LIMITED: "the provider's rate limit was reached",
    ErrorKind.AUTH: "the provider rejected the gateway's credentials",
    ErrorKind.INVALID_REQUEST: "the provider rejected the request",
    ErrorKind.NOT_FOUND: "the provider does not know the model",
    ErrorKind.MALFORMED_RESPONSE: "the provider's answer was unreadable",
}


def redact(text: str) -> str:
    """``text`` without ARNs, account ids, key ids, API keys or long tokens, at most 300 characters."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= _MAX_PROVIDER_TEXT else text[:_MAX_PROVIDER_TEXT - 3] + "..."


def redact_secrets(text: str) -> str:
    """``text`` without key ids, API keys or long tokens (ARNs and account ids kept): for the log."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def caller_message(kind: ErrorKind, provider_text: str) -> str:
    """What a caller may read about a provider's error response.

    An invalid request or an unknown model is the caller's to fix, so the provider's words are kept
    (redacted); for every other kind a fixed summary: the provider's text is for the log only.
    """
    if kind in (ErrorKind.INVALID_REQUEST, ErrorKind.NOT_FOUND) and provider_text:
        return redact(provider_text)
    return _SUMMARY[kind]


class ProviderError(Exception):
    """A failed provider call, already classified.

    ``message`` (and ``str()``) is the caller-facing summary: redacted, never a credential, an ARN,
    an account id or a raw provider body. ``error_type`` is the provider's error type
    (``overloaded_error``, ``AccessDeniedException``); ``detail`` the provider's full text, for the
    log only (``log_text()``).
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
        detail: str | None = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.error_type = error_type or None
        self.detail = detail or None

    def _facts(self) -> str:
        facts = [f"HTTP {self.status}"] if self.status is not None else []
        if self.error_type:
            facts.append(redact(self.error_type)[:80])
        return ", ".join(facts)

    def summary(self) -> str:
        """The caller-facing message with the HTTP status and the provider's error type (Attempt.message)."""
        facts = self._facts()
        return f"{self.message} ({facts})" if facts else self.message

    def __str__(self) -> str:
        facts = self._facts()
        return f"{self.kind.value} ({facts}): {self.message}" if facts else f"{self.kind.value}: {self.message}"

    def log_text(self) -> str:
        """The summary plus the provider's own text: for the gateway's log, never for a caller."""
        return f"{self} [provider said: {redact_secrets(self.detail)}]" if self.detail else str(self)


class GatewayError(Exception):
    """The status a call ends with, and its AIP-193 details."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after
        self.field = field
        self.attempts: list[Any] = []  # the provider attempts made, for the request log
        if field:
            self.metadata.setdefault("field", field)

    def status_proto(self) -> status_pb2.Status:
        details: list[any_pb2.Any] = []
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata))
        details.append(info)
        if self.retry_after is not None:
            retry = any_pb2.Any()
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(round(self.retry_after * 1000))
            retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            details.append(retry)
        if self.field:
            bad = any_pb2.Any()
            bad.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.message)
                    ]
                )
            )
            details.append(bad)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)

    def grpc_status(self) -> grpc.Status:
        """The status as grpcio-status builds it: code, message, and the ``grpc-status-details-bin``
        trailer carrying :meth:`status_proto`."""
        status: grpc.Status = rpc_status.to_status(self.status_proto())
        return status

    def trailing_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        """The trailers to abort with: the rich status, and ``grpc-retry-pushback-ms`` (gRPC A6)
        when the caller may retry after ``retry_after`` seconds."""
        trailers: list[tuple[str, str | bytes]] = list(self.grpc_status().trailing_metadata)
        if self.retry_after is not None:
            trailers.append((PUSHBACK_TRAILER, str(round(self.retry_after * 1000))))
        return trailers


def invalid_field(field: str, message: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", f"{field}: {message}", field=field)
