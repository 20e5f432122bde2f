"""Typed results of the gateway's RPCs (frozen dataclasses built from the protobuf responses).

Enum values become short lower-case names: ``FINISH_REASON_END_TURN`` → ``"end_turn"``,
``HEALTH_STATUS_DEGRADED`` → ``"degraded"``, ``PROVIDER_STATUS_UNCONFIGURED`` → ``"unconfigured"``,
``ATTEMPT_OUTCOME_OK`` → ``"ok"``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from modelgateway.v1 import model_gateway_pb2 as pb

__all__ = [
    "Attempt",
    "ChatMessage",
    "GenerateResult",
    "HealthReport",
    "ProviderHealth",
    "ProviderInfo",
    "ProviderList",
    "Status",
    "Usage",
    "to_jsonable",
]


def _enum_names(items: Iterable[tuple[str, int]], prefix: str) -> dict[int, str]:
    return {number: name.removeprefix(prefix).lower() for name, number in items}


_FINISH_REASONS = _enum_names(pb.FinishReason.items(), "FINISH_REASON_")
_OUTCOMES = _enum_names(pb.AttemptOutcome.items(), "ATTEMPT_OUTCOME_")
_HEALTH = _enum_names(pb.HealthStatus.items(), "HEALTH_STATUS_")
_PROVIDER_STATUS = _enum_names(pb.ProviderStatus.items(), "PROVIDER_STATUS_")


def _name(table: dict[int, str], value: int) -> str:
    return table.get(value) or f"unknown_{value}"


def _timestamp(msg: Timestamp, present: bool) -> _dt.datetime | None:
    if not present:
        return None
    return msg.ToDatetime(tzinfo=_dt.UTC)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One conversation turn to send: role ``"user"`` or ``"assistant"``."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_proto(cls, msg: pb.Usage) -> Usage:
        return cls(msg.input_tokens, msg.output_tokens, msg.total_tokens)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider the gateway tried for a request (its fallback trail), in order."""

    provider: str
    model: str
    outcome: str  # "ok", "error", "skipped"
    code: str = ""
    reason: str = ""
    message: str = ""
    latency_ms: float = 0.0
    retries: int = 0

    @classmethod
    def from_proto(cls, msg: pb.Attempt) -> Attempt:
        return cls(
            provider=msg.provider,
            model=msg.model,
            outcome=_name(_OUTCOMES, msg.outcome),
            code=msg.code,
            reason=msg.reason,
            message=msg.message,
            latency_ms=msg.latency_ms,
            retries=msg.retries,
        )


@dataclass(frozen=True, slots=True)
class GenerateResult:
    """A completion.

    ``latency_ms`` is the gateway's own latency (fallbacks included); ``elapsed_ms`` is what
    the client measured for the whole call (its retries and waits included). ``attempts`` is
    how many times the client sent the request (1 = no retry); ``provider_attempts`` is the
    gateway's provider fallback trail.
    """

    content: str
    model: str
    provider: str
    usage: Usage
    finish_reason: str
    latency_ms: float
    request_id: str
    attempts: int = 1
    stop_reason: str = ""
    elapsed_ms: float = 0.0
    provider_attempts: tuple[Attempt, ...] = field(default=())

    @property
    def retries(self) -> int:
        return self.attempts - 1

    @classmethod
    def from_proto(
        cls, msg: pb.GenerateResponse, *, attempts: int, request_id: str, elapsed_ms: float
    ) -> GenerateResult:
        return cls(
            content=msg.content,
            model=msg.model,
            provider=msg.provider,
            usage=Usage.from_proto(msg.usage),
            finish_reason=_name(_FINISH_REASONS, msg.finish_reason),
            latency_ms=msg.latency_ms,
            request_id=msg.request_id or request_id,
            attempts=attempts,
            stop_reason=msg.stop_reason,
            elapsed_ms=elapsed_ms,
            provider_attempts=tuple(Attempt.from_proto(a) for a in msg.attempts),
        )


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    name: str
    status: str  # "healthy", "unhealthy", "unconfigured", "disabled", "unknown"
    type: str = ""
    latency_ms: float = 0.0
    default_model: str = ""
    region: str = ""
    last_error: str = ""
    checked_at: _dt.datetime | None = None

    @classmethod
    def from_proto(cls, msg: pb.ProviderHealth) -> ProviderHealth:
        return cls(
            name=msg.name,
            status=_name(_PROVIDER_STATUS, msg.status),
            type=msg.type,
            latency_ms=msg.latency_ms,
            default_model=msg.default_model,
            region=msg.region,
            last_error=msg.last_error,
            checked_at=_timestamp(msg.checked_at, msg.HasField("checked_at")),
        )


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: str  # "healthy", "degraded", "unhealthy"
    providers: tuple[ProviderHealth, ...] = ()
    timestamp: _dt.datetime | None = None

    @property
    def healthy(self) -> bool:
        """True unless the gateway reports no healthy provider ("degraded" still serves)."""
        return self.status in ("healthy", "degraded")

    @classmethod
    def from_proto(cls, msg: pb.HealthResponse) -> HealthReport:
        return cls(
            status=_name(_HEALTH, msg.status),
            providers=tuple(ProviderHealth.from_proto(p) for p in msg.providers),
            timestamp=_timestamp(msg.timestamp, msg.HasField("timestamp")),
        )


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    name: str
    type: str = ""
    models: tuple[str, ...] = ()
    default_model: str = ""
    region: str = ""
    enabled: bool = True
    configured: bool = True

    @classmethod
    def from_proto(cls, msg: pb.ProviderInfo) -> ProviderInfo:
        return cls(
            name=msg.name,
            type=msg.type,
            models=tuple(msg.models),
            default_model=msg.default_model,
            region=msg.region,
            enabled=msg.enabled,
            configured=msg.configured,
        )


@dataclass(frozen=True, slots=True)
class ProviderList:
    providers: tuple[ProviderInfo, ...] = ()
    default_provider: str = ""
    fallback_order: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.providers)

    @classmethod
    def from_proto(cls, msg: pb.ListProvidersResponse) -> ProviderList:
        return cls(
            providers=tuple(ProviderInfo.from_proto(p) for p in msg.providers),
            default_provider=msg.default_provider,
            fallback_order=tuple(msg.fallback_order),
        )


@dataclass(frozen=True, slots=True)
class Status:
    service: str
    version: str
    status: str  # "running" or "draining"
    providers: tuple[str, ...] = ()
    default_provider: str = ""

    @classmethod
    def from_proto(cls, msg: pb.GetStatusResponse) -> Status:
        return cls(
            service=msg.service,
            version=msg.version,
            status=msg.status,
            providers=tuple(msg.providers),
            default_provider=msg.default_provider,
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def to_jsonable(result: Any) -> Any:
    """A result dataclass as JSON-ready dicts and lists (datetimes as ISO 8601)."""
    data = asdict(result)
    if isinstance(result, GenerateResult):
        data["retries"] = result.retries
    elif isinstance(result, HealthReport):
        data["healthy"] = result.healthy
    return _jsonable(data)
