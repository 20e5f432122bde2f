"""Typed results of the gateway's RPCs (frozen dataclasses built from the protobuf responses),
and the typed events of a streamed completion (:data:`StreamEvent`).

Enum values become short lower-case names: ``FINISH_REASON_END_TURN`` → ``"end_turn"``,
``HEALTH_STATUS_DEGRADED`` → ``"degraded"``, ``PROVIDER_STATUS_UNCONFIGURED`` → ``"unconfigured"``,
``ATTEMPT_OUTCOME_OK`` → ``"ok"``.

The dataclasses cannot drift from the contract: tests/client/test_results_drift.py walks every
field of every RPC response message in the proto descriptor and fails when setting one leaves the
typed result unchanged (a new response field must be mapped here, or listed there with a reason).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeAlias

from google.protobuf.timestamp_pb2 import Timestamp

from modelgateway.v1 import model_gateway_pb2 as pb
from orchestrator_client.content import (
    AnswerBlock,
    BlockLike,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolCall,
    block_from_proto,
    block_to_dict,
    tool_call_from_proto,
)

__all__ = [
    "Attempt",
    "ChatMessage",
    "ClientTextDelta",
    "GenerateResult",
    "HealthReport",
    "ProviderHealth",
    "ProviderInfo",
    "ProviderList",
    "Status",
    "StreamEnd",
    "StreamEvent",
    "StreamStart",
    "TextDelta",
    "ThinkingDelta",
    "TokenCount",
    "ToolCall",
    "Usage",
    "event_from_proto",
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
    """One conversation turn to send: role ``"user"`` or ``"assistant"``.

    ``content`` is text, or a sequence of content blocks (see :mod:`orchestrator_client.content`):
    text, images, the assistant's tool calls, the user's tool results.
    """

    role: str
    content: str | Sequence[BlockLike]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts; ``input_tokens`` excludes the prompt-cache reads and writes, ``total_tokens``
    includes them."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cost_usd: float = 0.0  # at the gateway's configured list prices; 0 when the model has none

    @classmethod
    def from_proto(cls, msg: pb.Usage) -> Usage:
        return cls(msg.input_tokens, msg.output_tokens, msg.total_tokens, msg.cache_read_input_tokens,
                   msg.cache_creation_input_tokens, msg.cost_usd)


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
    blocks: tuple[AnswerBlock, ...] = field(default=())

    @property
    def retries(self) -> int:
        return self.attempts - 1

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls of the answer, in order (``finish_reason == "tool_use"`` when any)."""
        return tuple(b for b in self.blocks if isinstance(b, ToolCall))

    @property
    def thinking(self) -> str:
        """The text of the answer's thinking blocks (thinking on), joined by blank lines; "" without."""
        return "\n\n".join(b.thinking for b in self.blocks if isinstance(b, ThinkingBlock))

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
            blocks=_answer_blocks(msg),
        )


def _answer_blocks(msg: pb.GenerateResponse) -> tuple[AnswerBlock, ...]:
    """The answer's text and tool-call blocks (a gateway that sends no blocks: its text, as one)."""
    if not msg.blocks:
        return (TextBlock(msg.content),) if msg.content else ()
    blocks: list[AnswerBlock] = []
    for index, raw in enumerate(msg.blocks):
        if raw.HasField("cache_control"):  # request-only: an answer's blocks carry no breakpoint
            plain = pb.ContentBlock()
            plain.CopyFrom(raw)
            plain.ClearField("cache_control")
            raw = plain
        block = block_from_proto(raw, index)
        if isinstance(block, TextBlock | ToolCall | ThinkingBlock | RedactedThinkingBlock):
            blocks.append(block)
    return tuple(blocks)


@dataclass(frozen=True, slots=True)
class TokenCount:
    """The input tokens of a conversation as the chosen model counts them (``provider_attempts``: the
    gateway's fallback trail)."""

    input_tokens: int
    provider: str
    model: str
    request_id: str = ""
    latency_ms: float = 0.0
    provider_attempts: tuple[Attempt, ...] = ()

    @classmethod
    def from_proto(cls, msg: pb.CountTokensResponse, *, request_id: str) -> TokenCount:
        return cls(input_tokens=msg.input_tokens, provider=msg.provider, model=msg.model,
                   request_id=msg.request_id or request_id, latency_ms=msg.latency_ms,
                   provider_attempts=tuple(Attempt.from_proto(a) for a in msg.attempts))


# ---------------------------------------------------------------------------- stream events


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The first event of a stream: who answers."""

    type: ClassVar[str] = "start"

    provider: str
    model: str
    request_id: str


@dataclass(frozen=True, slots=True)
class ClientTextDelta:
    """More text of the answer's text block ``index`` (the client's stream event; ``TextDelta`` is
    the same class under its earlier name)."""

    type: ClassVar[str] = "text"

    index: int
    text: str


TextDelta = ClientTextDelta  # the earlier name, kept for compatibility


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """More reasoning of the thinking block ``index`` (``thinking``), or its ``signature`` (once, last)."""

    type: ClassVar[str] = "thinking"

    index: int
    thinking: str = ""
    signature: str = ""


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last event of a complete answer.

    ``attempts`` is the gateway's provider trail (as ``GenerateResult.provider_attempts``);
    ``latency_ms`` and ``first_token_ms`` are the gateway's. The client adds ``client_attempts``
    (how many times it sent the request: 1 = no retry), ``request_id`` and ``elapsed_ms`` (the
    client's wall time from the first attempt to this event, retries and waits included).
    """

    type: ClassVar[str] = "end"

    finish_reason: str
    stop_reason: str
    usage: Usage
    attempts: tuple[Attempt, ...] = ()
    latency_ms: float = 0.0
    first_token_ms: float = 0.0
    client_attempts: int = 1
    request_id: str = ""
    elapsed_ms: float = 0.0

    @property
    def retries(self) -> int:
        return self.client_attempts - 1

    @classmethod
    def from_proto(
        cls, msg: pb.StreamEnd, *, client_attempts: int = 1, request_id: str = "", elapsed_ms: float = 0.0
    ) -> StreamEnd:
        return cls(
            finish_reason=_name(_FINISH_REASONS, msg.finish_reason),
            stop_reason=msg.stop_reason,
            usage=Usage.from_proto(msg.usage),
            attempts=tuple(Attempt.from_proto(a) for a in msg.attempts),
            latency_ms=msg.latency_ms,
            first_token_ms=msg.first_token_ms,
            client_attempts=client_attempts,
            request_id=request_id,
            elapsed_ms=elapsed_ms,
        )


StreamEvent: TypeAlias = StreamStart | TextDelta | ThinkingDelta | RedactedThinkingBlock | ToolCall | StreamEnd
"""One event of :meth:`GatewayClient.stream`: start, text delta, thinking delta, redacted thinking (whole),
tool call (whole), end."""


def event_from_proto(
    msg: pb.GenerateStreamResponse, *, client_attempts: int = 1, request_id: str = "", elapsed_ms: float = 0.0
) -> StreamEvent | None:
    """The typed event of one stream message (None for a kind this client does not know)."""
    kind = msg.WhichOneof("event")
    if kind == "start":
        return StreamStart(msg.start.provider, msg.start.model, msg.start.request_id or request_id)
    if kind == "delta":
        delta = msg.delta
        which = delta.WhichOneof("delta")
        if which == "text":
            return TextDelta(delta.index, delta.text)
        if which == "tool_use":
            return tool_call_from_proto(delta.tool_use, delta.index)
        if which == "thinking":
            return ThinkingDelta(delta.index, thinking=delta.thinking)
        if which == "signature":
            return ThinkingDelta(delta.index, signature=delta.signature)
        if which == "redacted_thinking":
            return RedactedThinkingBlock(delta.redacted_thinking.data, delta.index)
        return None
    if kind == "end":
        return StreamEnd.from_proto(
            msg.end, client_attempts=client_attempts, request_id=request_id, elapsed_ms=elapsed_ms
        )
    return None


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    name: str
    status: str  # "healthy", "unhealthy", "ejected", "unconfigured", "disabled", "unknown"
    type: str = ""
    latency_ms: float = 0.0
    default_model: str = ""
    region: str = ""
    last_error: str = ""
    checked_at: _dt.datetime | None = None
    ejected_until: _dt.datetime | None = None  # while ejected from routing (outlier ejection)
    ejection_count: int = 0

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
            ejected_until=_timestamp(msg.ejected_until, msg.HasField("ejected_until")),
            ejection_count=msg.ejection_count,
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
    ejected: bool = False
    ejected_until: _dt.datetime | None = None

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
            ejected=msg.ejected,
            ejected_until=_timestamp(msg.ejected_until, msg.HasField("ejected_until")),
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
    worker_id: int = 0  # the answering server process's index (gateway --workers), and its pid
    worker_pid: int = 0

    @classmethod
    def from_proto(cls, msg: pb.GetStatusResponse) -> Status:
        return cls(
            service=msg.service,
            version=msg.version,
            status=msg.status,
            providers=tuple(msg.providers),
            default_provider=msg.default_provider,
            worker_id=msg.worker_id,
            worker_pid=msg.worker_pid,
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
    """A result dataclass (or stream event) as JSON-ready dicts and lists (datetimes as ISO 8601).

    Stream events and content blocks carry their ``"type"`` ("start", "text", "tool_use", "end").
    """
    if isinstance(result, ToolCall):
        return _jsonable(block_to_dict(result))
    data = asdict(result)
    if isinstance(result, GenerateResult):
        data["retries"] = result.retries
        data["blocks"] = [block_to_dict(b) for b in result.blocks]
    elif isinstance(result, HealthReport):
        data["healthy"] = result.healthy
    elif isinstance(result, StreamStart | TextDelta | StreamEnd):
        data = {"type": result.type, **data}
        if isinstance(result, StreamEnd):
            data["retries"] = result.retries
    return _jsonable(data)
