"""The one small interface every provider implements, and the request/response it speaks.

A provider translates ``ProviderRequest`` into its SDK's call and the SDK's answer or exception
into ``ProviderResponse`` / ``ProviderError`` (see errors.py); that translation lives in the
provider's own module. Routing, retries and fallback live in router.py, never in a provider.
"""

from __future__ import annotations

import abc
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf import struct_pb2

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.settings import ProviderSettings
from modelgateway.v1 import model_gateway_pb2 as pb


@dataclass(frozen=True, slots=True)
class CacheControl:
    """A prompt-cache breakpoint after the block (or tool) that carries it."""

    ttl: str = ""  # "5m", "1h"; empty: the provider's default


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    cache: CacheControl | None = None


@dataclass(frozen=True, slots=True)
class ImagePart:
    media_type: str
    data: bytes
    cache: CacheControl | None = None


@dataclass(frozen=True, slots=True)
class DocumentPart:
    media_type: str  # "application/pdf" or "text/plain"
    data: bytes
    title: str = ""
    cache: CacheControl | None = None


@dataclass(frozen=True, slots=True)
class ToolUsePart:
    id: str
    name: str
    input: dict[str, Any]
    cache: CacheControl | None = None


@dataclass(frozen=True, slots=True)
class ThinkingPart:
    """The model's reasoning; sent back unchanged (text and signature) in the next turn."""

    thinking: str
    signature: str


@dataclass(frozen=True, slots=True)
class RedactedThinkingPart:
    data: bytes


def tool_use_part(id: str, name: str, value: Any) -> ToolUsePart:
    """A provider's tool call, checked to be a JSON object our API can carry (google.protobuf.Struct)."""
    if not isinstance(value, dict):
        raise ProviderError(ErrorKind.MALFORMED_RESPONSE, f"tool '{name}' input is not an object")
    try:
        struct_pb2.Struct().update(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProviderError(ErrorKind.MALFORMED_RESPONSE, f"tool '{name}' input is not JSON: {exc}") from None
    return ToolUsePart(str(id), str(name), value)


ResultBlock = TextPart | ImagePart | DocumentPart


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    tool_use_id: str
    content: str
    is_error: bool = False
    # Blocks beyond the plain text (which, when not empty, comes first).
    blocks: tuple[ResultBlock, ...] = ()
    cache: CacheControl | None = None

    def all_blocks(self) -> tuple[ResultBlock, ...]:
        return ((TextPart(self.content),) if self.content else ()) + self.blocks


Part = TextPart | ImagePart | DocumentPart | ToolUsePart | ToolResultPart | ThinkingPart | RedactedThinkingPart
# What a provider answers with.
AnswerPart = TextPart | ToolUsePart | ThinkingPart | RedactedThinkingPart


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    content: str
    # Content blocks beyond the plain text (which, when not empty, comes first).
    parts: tuple[Part, ...] = ()

    def all_parts(self) -> tuple[Part, ...]:
        return ((TextPart(self.content),) if self.content else ()) + self.parts


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]
    cache: CacheControl | None = None


ToolChoiceMode = Literal["auto", "any", "none", "tool"]


@dataclass(frozen=True, slots=True)
class ThinkingSpec:
    mode: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: int = 0


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """Structured output: the answer is JSON matching ``schema``."""

    schema: dict[str, Any]
    name: str = "response"
    description: str = ""


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """A validated request, provider-neutral. The model is chosen per attempt, so it is not here."""

    messages: tuple[ChatMessage, ...]
    system: str
    max_tokens: int
    temperature: float | None
    top_p: float | None
    stop_sequences: tuple[str, ...]
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoiceMode | None = None
    tool_choice_name: str = ""
    system_blocks: tuple[TextPart, ...] = ()
    thinking: ThinkingSpec | None = None
    output: OutputSpec | None = None

    def system_parts(self) -> tuple[TextPart, ...]:
        """The system prompt as blocks: the plain ``system`` text first, then ``system_blocks``."""
        return ((TextPart(self.system),) if self.system else ()) + self.system_blocks

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                texts = [p.text for p in message.all_parts() if isinstance(p, TextPart)]
                return "\n".join(texts)
        return ""


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    content: str
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: pb.FinishReason.ValueType
    stop_reason: str
    # Text, tool calls and thinking, in order; `content` is their text.
    parts: tuple[AnswerPart, ...] = ()
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


# ---- streaming: a provider's stream yields these, in order ----

@dataclass(frozen=True, slots=True)
class TextDelta:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolUseDelta:
    """A whole tool call, its input assembled from the provider's partial JSON deltas."""

    index: int
    tool_use: ToolUsePart


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    index: int
    thinking: str


@dataclass(frozen=True, slots=True)
class SignatureDelta:
    """The signature of the thinking block at ``index``, after its last ThinkingDelta."""

    index: int
    signature: str


@dataclass(frozen=True, slots=True)
class RedactedThinkingDelta:
    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamDone:
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: pb.FinishReason.ValueType
    stop_reason: str
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


StreamEvent = TextDelta | ToolUseDelta | ThinkingDelta | SignatureDelta | RedactedThinkingDelta | StreamDone


def finish_reason(stop_reason: str, known: dict[str, pb.FinishReason.ValueType]) -> pb.FinishReason.ValueType:
    """A provider's stop reason -> ours: a known value, UNSPECIFIED when none was sent, else the
    documented catch-all OTHER (never END_TURN: an unknown stop is not a finished turn)."""
    if not stop_reason:
        return pb.FINISH_REASON_UNSPECIFIED
    return known.get(stop_reason, pb.FINISH_REASON_OTHER)


@dataclass(slots=True)
class ToolInputBuffer:
    """Collects a tool call's partial JSON input until its block ends."""

    id: str
    name: str
    chunks: list[str] = field(default_factory=list)

    def finish(self) -> ToolUsePart:
        raw = "".join(self.chunks)
        try:
            value = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise ProviderError(ErrorKind.MALFORMED_RESPONSE, f"tool '{self.name}' input is not JSON") from None
        return tool_use_part(self.id, self.name, value)


class Provider(abc.ABC):
    """One configured provider instance (a name in the config, e.g. ``anthropic``)."""

    type: str = ""

    def __init__(self, name: str, cfg: ProviderSettings, *, region: str = "") -> None:
        self.name = name
        self.default_model = cfg.default_model
        self.models = tuple(cfg.models)
        self.timeout = cfg.timeout
        self.first_token_timeout = cfg.first_token_timeout or cfg.timeout
        self.stream_timeout = cfg.stream_timeout
        self.max_retries = cfg.max_retries
        self.enabled = cfg.enabled
        self.region = region

    @property
    @abc.abstractmethod
    def configured(self) -> bool:
        """Whether it has what it needs (credentials) to be called."""

    @property
    def usable(self) -> bool:
        return self.enabled and self.configured

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Build SDK clients (called once, inside the running event loop)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release SDK clients and threads."""

    @abc.abstractmethod
    async def generate(self, request: ProviderRequest, model: str, timeout: float) -> ProviderResponse:
        """One call, no retries, finished (or failed with ProviderError) within ``timeout`` seconds."""

    @abc.abstractmethod
    def stream(self, request: ProviderRequest, model: str, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        """Stream one answer: content events, then one StreamDone. Errors (ProviderError) may come at
        any point, also lazily on the first read. Closing the iterator closes the upstream stream."""

    @abc.abstractmethod
    async def probe(self, timeout: float) -> None:
        """A health check that spends no tokens; raises ProviderError when the provider is unwell."""

    @abc.abstractmethod
    async def count_tokens(self, request: ProviderRequest, model: str, timeout: float) -> int:
        """The input tokens of the request's messages, system and tools for ``model``; one call, no retries."""

    def unsupported(self, request: ProviderRequest, model: str = "") -> tuple[str, str] | None:
        """(field, why) when this provider (with ``model``, when given) cannot take the request as it
        is; None when it can."""
        return None
