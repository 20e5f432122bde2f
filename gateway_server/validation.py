"""Request validation: a GenerateRequest -> a provider-neutral ProviderRequest, or INVALID_ARGUMENT
naming the field. Runs before anything reaches a provider."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict

from gateway_server.errors import invalid_field
from gateway_server.providers import ChatMessage, ProviderRequest
from gateway_server.providers.base import (
    CacheControl,
    DocumentPart,
    ImagePart,
    OutputSpec,
    Part,
    RedactedThinkingPart,
    ResultBlock,
    TextPart,
    ThinkingPart,
    ThinkingSpec,
    ToolChoiceMode,
    ToolResultPart,
    ToolSpec,
    ToolUsePart,
)
from gateway_server.settings import LimitsConfig
from modelgateway.v1 import model_gateway_pb2 as pb

_ROLES = {pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant"}
MAX_STOP_SEQUENCES = 16
MAX_METADATA_ENTRIES = 64
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
DOCUMENT_TYPES = frozenset({"application/pdf", "text/plain"})
CACHE_TTLS = frozenset({"5m", "1h"})
MIN_THINKING_BUDGET = 1024
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_CHOICES: dict[int, ToolChoiceMode | None] = {
    pb.TOOL_CHOICE_MODE_UNSPECIFIED: None,
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_ANY: "any",
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_TOOL: "tool",
}


def _plain(value: Any) -> Any:
    """JSON from a Struct, with integral numbers as ints (a schema's maxItems: 5, not 5.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = _plain(MessageToDict(struct))
    return result


def _cache(message: pb.ContentBlock | pb.Tool, where: str) -> CacheControl | None:
    if not message.HasField("cache_control"):
        return None
    cache = message.cache_control
    if cache.type not in (pb.CACHE_TYPE_UNSPECIFIED, pb.CACHE_TYPE_EPHEMERAL):
        raise invalid_field(f"{where}.cache_control.type", "unknown cache type")
    if cache.ttl and cache.ttl not in CACHE_TTLS:
        raise invalid_field(f"{where}.cache_control.ttl", f"must be one of {', '.join(sorted(CACHE_TTLS))} or empty")
    return CacheControl(cache.ttl)


def _document(document: pb.DocumentBlock, cache: CacheControl | None, where: str) -> DocumentPart:
    if document.media_type not in DOCUMENT_TYPES:
        raise invalid_field(f"{where}.document.media_type", f"must be one of {', '.join(sorted(DOCUMENT_TYPES))}")
    if not document.data:
        raise invalid_field(f"{where}.document.data", "must not be empty")
    if document.media_type == "text/plain":
        try:
            document.data.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_field(f"{where}.document.data", "a text/plain document must be UTF-8") from None
    return DocumentPart(document.media_type, document.data, document.title, cache)


def _block(block: pb.ContentBlock, role: str, where: str) -> Part:
    kind = block.WhichOneof("block")
    cache = _cache(block, where)
    if kind == "text":
        if not block.text.text:
            raise invalid_field(f"{where}.text.text", "must not be empty")
        return TextPart(block.text.text, cache)
    if kind == "image":
        if block.image.media_type not in IMAGE_TYPES:
            raise invalid_field(f"{where}.image.media_type", f"must be one of {', '.join(sorted(IMAGE_TYPES))}")
        if not block.image.data:
            raise invalid_field(f"{where}.image.data", "must not be empty")
        return ImagePart(block.image.media_type, block.image.data, cache)
    if kind == "document":
        if role != "user":
            raise invalid_field(f"{where}.document", "only user messages carry documents")
        return _document(block.document, cache, where)
    if kind == "tool_use":
        use = block.tool_use
        if role != "assistant":
            raise invalid_field(f"{where}.tool_use", "only assistant messages carry tool calls")
        if not use.id or not use.name:
            raise invalid_field(f"{where}.tool_use", "needs an id and a name")
        return ToolUsePart(use.id, use.name, struct_to_dict(use.input), cache)
    if kind == "tool_result":
        result = block.tool_result
        if role != "user":
            raise invalid_field(f"{where}.tool_result", "only user messages carry tool results")
        if not result.tool_use_id:
            raise invalid_field(f"{where}.tool_result.tool_use_id", "must not be empty")
        blocks = tuple(_result_block(b, f"{where}.tool_result.blocks[{j}]") for j, b in enumerate(result.blocks))
        return ToolResultPart(result.tool_use_id, result.content, result.is_error, blocks, cache)
    if kind in ("thinking", "redacted_thinking"):
        if role != "assistant":
            raise invalid_field(f"{where}.{kind}", "only assistant messages carry thinking")
        if cache is not None:
            raise invalid_field(f"{where}.cache_control", "a thinking block cannot be a cache breakpoint")
        if kind == "redacted_thinking":
            if not block.redacted_thinking.data:
                raise invalid_field(f"{where}.redacted_thinking.data", "must not be empty")
            return RedactedThinkingPart(block.redacted_thinking.data)
        if not block.thinking.signature:
            raise invalid_field(f"{where}.thinking.signature", "must be sent back as the provider returned it")
        return ThinkingPart(block.thinking.thinking, block.thinking.signature)
    raise invalid_field(where, "set one of text, image, document, tool_use, tool_result, thinking, redacted_thinking")


def _result_block(block: pb.ContentBlock, where: str) -> ResultBlock:
    """A block inside a tool result: text, image or document."""
    kind = block.WhichOneof("block")
    if kind not in ("text", "image", "document"):
        raise invalid_field(where, "a tool result holds text, image and document blocks only")
    if block.HasField("cache_control"):
        raise invalid_field(f"{where}.cache_control", "set the breakpoint on the tool_result block itself")
    part = _block(block, "user", where)
    assert isinstance(part, TextPart | ImagePart | DocumentPart)
    return part


def _system_blocks(blocks: Sequence[pb.ContentBlock], field: str) -> tuple[TextPart, ...]:
    out = []
    for i, block in enumerate(blocks):
        if block.WhichOneof("block") != "text":
            raise invalid_field(f"{field}[{i}]", "the system prompt holds text blocks only")
        part = _block(block, "user", f"{field}[{i}]")
        assert isinstance(part, TextPart)
        out.append(part)
    return tuple(out)


def _thinking(config: pb.ThinkingConfig, max_tokens: int | None) -> ThinkingSpec | None:
    if config.mode == pb.THINKING_MODE_UNSPECIFIED:
        if config.budget_tokens:
            raise invalid_field("thinking.mode", "set THINKING_MODE_ENABLED with a budget")
        return None
    if config.mode == pb.THINKING_MODE_ENABLED:
        if config.budget_tokens < MIN_THINKING_BUDGET:
            raise invalid_field("thinking.budget_tokens", f"must be at least {MIN_THINKING_BUDGET}, "
                                                          f"got {config.budget_tokens}")
        if max_tokens is not None and config.budget_tokens >= max_tokens:
            raise invalid_field("thinking.budget_tokens", f"must be less than max_tokens ({max_tokens})")
        return ThinkingSpec("enabled", config.budget_tokens)
    if config.budget_tokens:
        raise invalid_field("thinking.budget_tokens", "is only for THINKING_MODE_ENABLED")
    if config.mode == pb.THINKING_MODE_ADAPTIVE:
        return ThinkingSpec("adaptive")
    if config.mode == pb.THINKING_MODE_DISABLED:
        return ThinkingSpec("disabled")
    raise invalid_field("thinking.mode", "unknown mode")


def _output(request: pb.GenerateRequest) -> OutputSpec | None:
    if not request.HasField("output_format"):
        return None
    fmt = request.output_format
    schema = struct_to_dict(fmt.json_schema)
    if schema.get("type") != "object":
        raise invalid_field("output_format.json_schema", "must be a JSON schema of type object")
    if fmt.name and not _TOOL_NAME.match(fmt.name):
        raise invalid_field("output_format.name", "must match [a-zA-Z0-9_-]{1,64}")
    return OutputSpec(schema, fmt.name or "response", fmt.description)


def _tools(
    request: pb.GenerateRequest | pb.CountTokensRequest,
) -> tuple[tuple[ToolSpec, ...], ToolChoiceMode | None, str]:
    tools = []
    seen: set[str] = set()
    for i, tool in enumerate(request.tools):
        if not _TOOL_NAME.match(tool.name):
            raise invalid_field(f"tools[{i}].name", "must match [a-zA-Z0-9_-]{1,64}")
        if tool.name in seen:
            raise invalid_field(f"tools[{i}].name", f"'{tool.name}' is given twice")
        seen.add(tool.name)
        schema = struct_to_dict(tool.input_schema) or {"type": "object", "properties": {}}
        if schema.get("type") != "object":
            raise invalid_field(f"tools[{i}].input_schema", "must be a JSON schema of type object")
        tools.append(ToolSpec(tool.name, tool.description, schema, _cache(tool, f"tools[{i}]")))
    choice = _TOOL_CHOICES.get(request.tool_choice.mode)
    if request.tool_choice.mode not in _TOOL_CHOICES:
        raise invalid_field("tool_choice.mode", "unknown mode")
    name = request.tool_choice.name
    if choice in ("any", "tool") and not tools:
        raise invalid_field("tool_choice.mode", "needs tools")
    if choice == "tool" and name not in seen:
        raise invalid_field("tool_choice.name", f"'{name}' is not one of the tools")
    return tuple(tools), choice, name


def _unit_interval(value: float, field: str) -> float:
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise invalid_field(field, f"must be between 0 and 1, got {value:g}")
    return value


def _messages(request: pb.GenerateRequest | pb.CountTokensRequest, max_request_bytes: int) -> tuple[ChatMessage, ...]:
    size = request.ByteSize()
    if size > max_request_bytes:
        raise invalid_field("request", f"is {size} bytes, more than the limit of {max_request_bytes}")
    if not request.messages:
        raise invalid_field("messages", "at least one message is required")
    messages = []
    for i, message in enumerate(request.messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise invalid_field(f"messages[{i}].role", "must be ROLE_USER or ROLE_ASSISTANT")
        parts = tuple(_block(b, role, f"messages[{i}].blocks[{j}]") for j, b in enumerate(message.blocks))
        if not message.content.strip() and not parts:
            raise invalid_field(f"messages[{i}].content", "must not be empty")
        messages.append(ChatMessage(role, message.content, parts))  # type: ignore[arg-type]
    return tuple(messages)


def validate_count(request: pb.CountTokensRequest, limits: LimitsConfig, max_request_bytes: int) -> ProviderRequest:
    """A CountTokensRequest -> the ProviderRequest whose input would be counted."""
    messages = _messages(request, max_request_bytes)
    tools, tool_choice, tool_choice_name = _tools(request)
    if len(request.metadata) > MAX_METADATA_ENTRIES:
        raise invalid_field("metadata", f"at most {MAX_METADATA_ENTRIES} entries")
    return ProviderRequest(
        messages=messages, system=request.system, max_tokens=limits.default_max_tokens, temperature=None,
        top_p=None, stop_sequences=(), tools=tools, tool_choice=tool_choice, tool_choice_name=tool_choice_name,
        system_blocks=_system_blocks(request.system_blocks, "system_blocks"),
        thinking=_thinking(request.thinking, None),
    )


def validate_generate(request: pb.GenerateRequest, limits: LimitsConfig, max_request_bytes: int) -> ProviderRequest:
    messages = _messages(request, max_request_bytes)
    tools, tool_choice, tool_choice_name = _tools(request)
    max_tokens = request.max_tokens or limits.default_max_tokens
    if not 1 <= max_tokens <= limits.max_output_tokens:
        raise invalid_field("max_tokens", f"must be between 1 and {limits.max_output_tokens} (0 means "
                                          f"{limits.default_max_tokens}), got {request.max_tokens}")
    system_blocks = _system_blocks(request.system_blocks, "system_blocks")
    thinking = _thinking(request.thinking, max_tokens)
    output = _output(request)
    temperature = _unit_interval(request.temperature, "temperature") if request.HasField("temperature") else None
    top_p = _unit_interval(request.top_p, "top_p") if request.HasField("top_p") else None
    if len(request.stop_sequences) > MAX_STOP_SEQUENCES:
        raise invalid_field("stop_sequences", f"at most {MAX_STOP_SEQUENCES} entries")
    for i, seq in enumerate(request.stop_sequences):
        if not seq:
            raise invalid_field(f"stop_sequences[{i}]", "must not be empty")
    if len(request.metadata) > MAX_METADATA_ENTRIES:
        raise invalid_field("metadata", f"at most {MAX_METADATA_ENTRIES} entries")
    return ProviderRequest(
        messages=messages,
        system=request.system,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop_sequences=tuple(request.stop_sequences),
        tools=tools,
        tool_choice=tool_choice,
        tool_choice_name=tool_choice_name,
        system_blocks=system_blocks,
        thinking=thinking,
        output=output,
    )
