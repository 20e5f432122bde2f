"""Request validation: a GenerateRequest -> a provider-neutral ProviderRequest, or INVALID_ARGUMENT
naming the field. Runs before anything reaches a provider."""

from __future__ import annotations

import math

from gateway_server.errors import invalid_field
from gateway_server.providers import ChatMessage, ProviderRequest
from gateway_server.settings import LimitsConfig
from modelgateway.v1 import model_gateway_pb2 as pb

_ROLES = {pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant"}
MAX_STOP_SEQUENCES = 16
MAX_METADATA_ENTRIES = 64


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
        if not message.content.strip():
            raise invalid_field(f"messages[{i}].content", "must not be empty")
        messages.append(ChatMessage(role, message.content))  # type: ignore[arg-type]
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
    )
