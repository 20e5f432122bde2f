"""Request validation: a GenerateRequest -> a provider-neutral ProviderRequest, or INVALID_ARGUMENT
naming the field. Runs before anything reaches a provider."""

from __future__ import annotations

import math
import re
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict

from gateway_server.errors import invalid_field
from gateway_server.providers import ChatMessage, ProviderRequest
from gateway_server.providers.base import (
    ImagePart,
    Part,
    TextPart,
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


def _block(block: pb.ContentBlock, role: str, where: str) -> Part:
    kind = block.WhichOneof("block")
    if kind == "text":
        if not block.text.text:
            raise invalid_field(f"{where}.text.text", "must not be empty")
        return TextPart(block.text.text)
    if kind == "image":
        if block.image.media_type not in IMAGE_TYPES:
            raise invalid_field(f"{where}.image.media_type", f"must be one of {', '.join(sorted(IMAGE_TYPES))}")
        if not block.image.data:
            raise invalid_field(f"{where}.image.data", "must not be empty")
        return ImagePart(block.image.media_type, block.image.data)
    if kind == "tool_use":
        use = block.tool_use
        if role != "assistant":
            raise invalid_field(f"{where}.tool_use", "only assistant messages carry tool calls")
        if not use.id or not use.name:
            raise invalid_field(f"{where}.tool_use", "needs an id and a name")
        return ToolUsePart(use.id, use.name, struct_to_dict(use.input))
    if kind == "tool_result":
        result = block.tool_result
        if role != "user":
            raise invalid_field(f"{where}.tool_result", "only user messages carry tool results")
        if not result.tool_use_id:
            raise invalid_field(f"{where}.tool_result.tool_use_id", "must not be empty")
        return ToolResultPart(result.tool_use_id, result.content, result.is_error)
    raise invalid_field(where, "set one of text, image, tool_use, tool_result")


def _tools(request: pb.GenerateRequest) -> tuple[tuple[ToolSpec, ...], ToolChoiceMode | None, str]:
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
        tools.append(ToolSpec(tool.name, tool.description, schema))
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


def validate_generate(request: pb.GenerateRequest, limits: LimitsConfig, max_request_bytes: int) -> ProviderRequest:
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
    tools, tool_choice, tool_choice_name = _tools(request)
    max_tokens = request.max_tokens or limits.default_max_tokens
    if not 1 <= max_tokens <= limits.max_output_tokens:
        raise invalid_field("max_tokens", f"must be between 1 and {limits.max_output_tokens} (0 means "
                                          f"{limits.default_max_tokens}), got {request.max_tokens}")
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
        messages=tuple(messages),
        system=request.system,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop_sequences=tuple(request.stop_sequences),
        tools=tools,
        tool_choice=tool_choice,
        tool_choice_name=tool_choice_name,
    )
