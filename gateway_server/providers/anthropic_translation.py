"""Anthropic Messages API translation, pure: our request -> ``messages.create`` arguments, the SDK's
Message and raw stream events -> our response and stream events. No I/O here (anthropic.py calls the SDK).
"""

from __future__ import annotations

import base64
from typing import Any

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers.base import (
    ChatMessage,
    ImagePart,
    Part,
    ProviderRequest,
    ProviderResponse,
    StreamDone,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolInputBuffer,
    ToolUseDelta,
    ToolUsePart,
    tool_use_part,
)
from modelgateway.v1 import model_gateway_pb2 as pb

FINISH_REASONS: dict[str, pb.FinishReason.ValueType] = {
    "end_turn": pb.FINISH_REASON_END_TURN,
    "max_tokens": pb.FINISH_REASON_MAX_TOKENS,
    "stop_sequence": pb.FINISH_REASON_STOP_SEQUENCE,
    "tool_use": pb.FINISH_REASON_TOOL_USE,
    "refusal": pb.FINISH_REASON_CONTENT_FILTERED,
    "pause_turn": pb.FINISH_REASON_END_TURN,
}


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "image", "source": {"type": "base64", "media_type": part.media_type,
                                            "data": base64.b64encode(part.data).decode("ascii")}}
    if isinstance(part, ToolUsePart):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": part.input}
    return {"type": "tool_result", "tool_use_id": part.tool_use_id, "content": part.content,
            "is_error": part.is_error}


def _message(message: ChatMessage) -> dict[str, Any]:
    if not message.parts:
        return {"role": message.role, "content": message.content}
    return {"role": message.role, "content": [_part(p) for p in message.all_parts()]}


def build_params(request: ProviderRequest, model: str) -> dict[str, Any]:
    """Our request -> keyword arguments of ``client.messages.create``."""
    params: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens,
        "messages": [_message(m) for m in request.messages],
    }
    if request.system:
        params["system"] = request.system
    if request.tools:
        params["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                           for t in request.tools]
    if request.tool_choice is not None:
        choice: dict[str, Any] = {"type": request.tool_choice}
        if request.tool_choice == "tool":
            choice["name"] = request.tool_choice_name
        params["tool_choice"] = choice
    # This SDK version no longer types the sampling parameters; the API takes them in the body.
    sampling: dict[str, float] = {}
    if request.temperature is not None:
        sampling["temperature"] = request.temperature
    if request.top_p is not None:
        sampling["top_p"] = request.top_p
    if sampling:
        params["extra_body"] = sampling
    if request.stop_sequences:
        params["stop_sequences"] = list(request.stop_sequences)
    return params


def parse_message(message: Any, model: str) -> ProviderResponse:
    """The SDK's Message -> our response; a body without content is a malformed response."""
    blocks = getattr(message, "content", None)
    if not isinstance(blocks, list):
        raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "response has no content")
    parts: list[TextPart | ToolUsePart] = []
    for block in blocks:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(TextPart(block.text))
        elif kind == "tool_use":
            parts.append(tool_use_part(block.id, block.name, block.input if block.input is not None else {}))
    text = "".join(p.text for p in parts if isinstance(p, TextPart))
    usage = getattr(message, "usage", None)
    stop_reason = getattr(message, "stop_reason", None) or ""
    return ProviderResponse(
        parts=tuple(parts),
        content=text,
        model=getattr(message, "model", None) or model,
        input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
        finish_reason=FINISH_REASONS.get(stop_reason, pb.FINISH_REASON_UNSPECIFIED),
        stop_reason=stop_reason,
    )



class StreamTranslator:
    """Anthropic's raw stream events -> ours (text deltas, whole tool calls, one StreamDone)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop_reason = ""
        self.done = False
        self._tools: dict[int, ToolInputBuffer] = {}

    def feed(self, event: Any) -> list[StreamEvent]:
        kind = getattr(event, "type", "")
        if kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                return [TextDelta(event.index, delta.text)]
            if delta.type == "input_json_delta" and event.index in self._tools:
                self._tools[event.index].chunks.append(delta.partial_json)
            return []
        if kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                self._tools[event.index] = ToolInputBuffer(block.id, block.name)
            return []
        if kind == "content_block_stop":
            buffer = self._tools.pop(event.index, None)
            return [ToolUseDelta(event.index, buffer.finish())] if buffer is not None else []
        if kind == "message_start":
            message = event.message
            self.model = message.model or self.model
            self.input_tokens = int(getattr(message.usage, "input_tokens", 0) or 0)
            return []
        if kind == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self.output_tokens = int(getattr(event.usage, "output_tokens", 0) or 0)
            return []
        if kind == "message_stop":
            self.done = True
            return [StreamDone(model=self.model, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                               finish_reason=FINISH_REASONS.get(self.stop_reason, pb.FINISH_REASON_UNSPECIFIED),
                               stop_reason=self.stop_reason)]
        return []
