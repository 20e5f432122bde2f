"""Anthropic Messages API translation, pure: our request -> ``messages.create`` arguments, the SDK's
Message and raw stream events -> our response and stream events. No I/O here (anthropic.py calls the SDK).
"""

from __future__ import annotations

import base64
from typing import Any

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers.base import (
    AnswerPart,
    CacheControl,
    ChatMessage,
    DocumentPart,
    ImagePart,
    Part,
    ProviderRequest,
    ProviderResponse,
    RedactedThinkingDelta,
    RedactedThinkingPart,
    SignatureDelta,
    StreamDone,
    StreamEvent,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolInputBuffer,
    ToolResultPart,
    ToolUseDelta,
    ToolUsePart,
    finish_reason,
    tool_use_part,
)
from modelgateway.v1 import model_gateway_pb2 as pb

# Every stop reason of the Messages API (anthropic.types.StopReason); others -> FINISH_REASON_OTHER.
FINISH_REASONS: dict[str, pb.FinishReason.ValueType] = {
    "end_turn": pb.FINISH_REASON_END_TURN,
    "max_tokens": pb.FINISH_REASON_MAX_TOKENS,
    "stop_sequence": pb.FINISH_REASON_STOP_SEQUENCE,
    "tool_use": pb.FINISH_REASON_TOOL_USE,
    "pause_turn": pb.FINISH_REASON_PAUSE_TURN,
    "refusal": pb.FINISH_REASON_REFUSAL,
    "model_context_window_exceeded": pb.FINISH_REASON_CONTEXT_WINDOW_EXCEEDED,
}


def _cache_control(cache: CacheControl) -> dict[str, str]:
    control = {"type": "ephemeral"}
    if cache.ttl:
        control["ttl"] = cache.ttl
    return control


def _with_cache(block: dict[str, Any], cache: CacheControl | None) -> dict[str, Any]:
    if cache is not None:
        block["cache_control"] = _cache_control(cache)
    return block


def _document(part: DocumentPart) -> dict[str, Any]:
    source: dict[str, Any]
    if part.media_type == "text/plain":
        source = {"type": "text", "media_type": "text/plain", "data": part.data.decode("utf-8")}
    else:
        source = {"type": "base64", "media_type": part.media_type,
                  "data": base64.b64encode(part.data).decode("ascii")}
    block: dict[str, Any] = {"type": "document", "source": source}
    if part.title:
        block["title"] = part.title
    return block


def _part(part: Part) -> dict[str, Any]:
    block: dict[str, Any]
    if isinstance(part, TextPart):
        block = {"type": "text", "text": part.text}
    elif isinstance(part, ImagePart):
        block = {"type": "image", "source": {"type": "base64", "media_type": part.media_type,
                                             "data": base64.b64encode(part.data).decode("ascii")}}
    elif isinstance(part, DocumentPart):
        block = _document(part)
    elif isinstance(part, ToolUsePart):
        block = {"type": "tool_use", "id": part.id, "name": part.name, "input": part.input}
    elif isinstance(part, ThinkingPart):
        return {"type": "thinking", "thinking": part.thinking, "signature": part.signature}
    elif isinstance(part, RedactedThinkingPart):
        return {"type": "redacted_thinking", "data": part.data.decode("utf-8", errors="replace")}
    else:
        block = _tool_result(part)
    return _with_cache(block, part.cache)


def _tool_result(part: ToolResultPart) -> dict[str, Any]:
    content: str | list[dict[str, Any]] = (
        [_part(b) for b in part.all_blocks()] if part.blocks else part.content
    )
    return {"type": "tool_result", "tool_use_id": part.tool_use_id, "content": content, "is_error": part.is_error}


def _message(message: ChatMessage) -> dict[str, Any]:
    if not message.parts:
        return {"role": message.role, "content": message.content}
    return {"role": message.role, "content": [_part(p) for p in message.all_parts()]}


def _input_params(request: ProviderRequest, model: str) -> dict[str, Any]:
    """What Generate and CountTokens share: model, messages, system, tools, tool choice, thinking."""
    params: dict[str, Any] = {
        "model": model,
        "messages": [_message(m) for m in request.messages],
    }
    if request.system_blocks:
        params["system"] = [_part(p) for p in request.system_parts()]
    elif request.system:
        params["system"] = request.system
    if request.tools:
        params["tools"] = [_with_cache({"name": t.name, "description": t.description, "input_schema": t.input_schema},
                                       t.cache) for t in request.tools]
    if request.tool_choice is not None:
        choice: dict[str, Any] = {"type": request.tool_choice}
        if request.tool_choice == "tool":
            choice["name"] = request.tool_choice_name
        params["tool_choice"] = choice
    if request.thinking is not None:
        thinking: dict[str, Any] = {"type": request.thinking.mode}
        if request.thinking.mode == "enabled":
            thinking["budget_tokens"] = request.thinking.budget_tokens
        params["thinking"] = thinking
    return params


def build_params(request: ProviderRequest, model: str) -> dict[str, Any]:
    """Our request -> keyword arguments of ``client.messages.create``."""
    params = _input_params(request, model)
    params["max_tokens"] = request.max_tokens
    if request.output is not None:
        params["output_config"] = {"format": {"type": "json_schema", "schema": request.output.schema}}
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


def build_count_params(request: ProviderRequest, model: str) -> dict[str, Any]:
    """Our request -> keyword arguments of ``client.messages.count_tokens``."""
    return _input_params(request, model)


def _tokens(usage: Any, name: str) -> int:
    return int(getattr(usage, name, 0) or 0)


def parse_message(message: Any, model: str) -> ProviderResponse:
    """The SDK's Message -> our response; a body without content is a malformed response."""
    blocks = getattr(message, "content", None)
    if not isinstance(blocks, list):
        raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "response has no content")
    parts: list[AnswerPart] = []
    for block in blocks:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(TextPart(block.text))
        elif kind == "tool_use":
            parts.append(tool_use_part(block.id, block.name, block.input if block.input is not None else {}))
        elif kind == "thinking":
            parts.append(ThinkingPart(str(block.thinking or ""), str(block.signature or "")))
        elif kind == "redacted_thinking":
            parts.append(RedactedThinkingPart(str(block.data).encode("utf-8")))
    text = "".join(p.text for p in parts if isinstance(p, TextPart))
    usage = getattr(message, "usage", None)
    stop_reason = getattr(message, "stop_reason", None) or ""
    return ProviderResponse(
        parts=tuple(parts),
        content=text,
        model=getattr(message, "model", None) or model,
        input_tokens=_tokens(usage, "input_tokens"),
        output_tokens=_tokens(usage, "output_tokens"),
        finish_reason=finish_reason(stop_reason, FINISH_REASONS),
        stop_reason=stop_reason,
        cache_read_tokens=_tokens(usage, "cache_read_input_tokens"),
        cache_creation_tokens=_tokens(usage, "cache_creation_input_tokens"),
    )


class StreamTranslator:
    """Anthropic's raw stream events -> ours (text and thinking deltas, signatures, whole tool calls and
    redacted thinking blocks, one StreamDone)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_creation_tokens = 0
        self.stop_reason = ""
        self.done = False
        self._tools: dict[int, ToolInputBuffer] = {}

    def _usage(self, usage: Any) -> None:
        """Counts of message_start, updated by message_delta's (cumulative) ones where it sends them."""
        for name, attr in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                           ("cache_read_input_tokens", "cache_read_tokens"),
                           ("cache_creation_input_tokens", "cache_creation_tokens")):
            value = getattr(usage, name, None)
            if value is not None:
                setattr(self, attr, int(value))

    def feed(self, event: Any) -> list[StreamEvent]:
        kind = getattr(event, "type", "")
        if kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                return [TextDelta(event.index, delta.text)]
            if delta.type == "thinking_delta":
                return [ThinkingDelta(event.index, delta.thinking)]
            if delta.type == "signature_delta":
                return [SignatureDelta(event.index, delta.signature)]
            if delta.type == "input_json_delta" and event.index in self._tools:
                self._tools[event.index].chunks.append(delta.partial_json)
            return []
        if kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                self._tools[event.index] = ToolInputBuffer(block.id, block.name)
            elif block.type == "redacted_thinking":
                return [RedactedThinkingDelta(event.index, str(block.data).encode("utf-8"))]
            elif block.type == "thinking" and block.thinking:
                return [ThinkingDelta(event.index, block.thinking)]
            return []
        if kind == "content_block_stop":
            buffer = self._tools.pop(event.index, None)
            return [ToolUseDelta(event.index, buffer.finish())] if buffer is not None else []
        if kind == "message_start":
            message = event.message
            self.model = message.model or self.model
            self._usage(message.usage)
            return []
        if kind == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self._usage(event.usage)
            return []
        if kind == "message_stop":
            self.done = True
            return [StreamDone(model=self.model, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                               finish_reason=finish_reason(self.stop_reason, FINISH_REASONS),
                               stop_reason=self.stop_reason, cache_read_tokens=self.cache_read_tokens,
                               cache_creation_tokens=self.cache_creation_tokens)]
        return []


# ---- the raw path: the API's JSON as plain dicts, no SDK models (anthropic.py's unary calls) ----


def build_body(request: ProviderRequest, model: str) -> dict[str, Any]:
    """Our request -> the Messages API's JSON body (``build_params`` with its ``extra_body`` merged in)."""
    body = build_params(request, model)
    extra = body.pop("extra_body", None)
    if extra:
        body.update(extra)
    return body


def _count(usage: dict[str, Any], name: str) -> int:
    return int(usage.get(name) or 0)


def parse_message_json(message: Any, model: str) -> ProviderResponse:
    """The Messages API's decoded JSON Message -> our response, as ``parse_message`` does for the SDK's model.

    A body that is not an object with a content list is a malformed response; a block without its
    fields raises KeyError/TypeError, which the transport classifies as malformed too.
    """
    blocks = message.get("content") if isinstance(message, dict) else None
    if not isinstance(blocks, list):
        raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "response has no content")
    parts: list[AnswerPart] = []
    texts: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            text = block["text"]
            if not isinstance(text, str):
                raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "text block without text")
            parts.append(TextPart(text))
            texts.append(text)
        elif kind == "tool_use":
            value = block.get("input")
            parts.append(tool_use_part(block["id"], block["name"], value if value is not None else {}))
        elif kind == "thinking":
            parts.append(ThinkingPart(str(block.get("thinking") or ""), str(block.get("signature") or "")))
        elif kind == "redacted_thinking":
            parts.append(RedactedThinkingPart(str(block["data"]).encode("utf-8")))
    usage = message.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    stop_reason = message.get("stop_reason") or ""
    return ProviderResponse(
        parts=tuple(parts),
        content="".join(texts),
        model=message.get("model") or model,
        input_tokens=_count(usage, "input_tokens"),
        output_tokens=_count(usage, "output_tokens"),
        finish_reason=finish_reason(stop_reason, FINISH_REASONS),
        stop_reason=stop_reason,
        cache_read_tokens=_count(usage, "cache_read_input_tokens"),
        cache_creation_tokens=_count(usage, "cache_creation_input_tokens"),
    )


class RawStreamTranslator(StreamTranslator):
    """``StreamTranslator`` for the stream's decoded JSON events (plain dicts, no SDK models per event)."""

    def _usage_json(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for name, attr in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                           ("cache_read_input_tokens", "cache_read_tokens"),
                           ("cache_creation_input_tokens", "cache_creation_tokens")):
            value = usage.get(name)
            if value is not None:
                setattr(self, attr, int(value))

    def feed_json(self, event: dict[str, Any]) -> list[StreamEvent]:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event["delta"]
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                return [TextDelta(event["index"], delta["text"])]
            if delta_type == "thinking_delta":
                return [ThinkingDelta(event["index"], delta["thinking"])]
            if delta_type == "signature_delta":
                return [SignatureDelta(event["index"], delta["signature"])]
            if delta_type == "input_json_delta" and event["index"] in self._tools:
                self._tools[event["index"]].chunks.append(delta["partial_json"])
            return []
        if kind == "content_block_start":
            block = event["content_block"]
            block_type = block.get("type")
            if block_type == "tool_use":
                self._tools[event["index"]] = ToolInputBuffer(block["id"], block["name"])
            elif block_type == "redacted_thinking":
                return [RedactedThinkingDelta(event["index"], str(block["data"]).encode("utf-8"))]
            elif block_type == "thinking" and block.get("thinking"):
                return [ThinkingDelta(event["index"], block["thinking"])]
            return []
        if kind == "content_block_stop":
            buffer = self._tools.pop(event["index"], None)
            return [ToolUseDelta(event["index"], buffer.finish())] if buffer is not None else []
        if kind == "message_start":
            message = event["message"]
            self.model = message.get("model") or self.model
            self._usage_json(message.get("usage"))
            return []
        if kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            self._usage_json(event.get("usage"))
            return []
        if kind == "message_stop":
            self.done = True
            return [StreamDone(model=self.model, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                               finish_reason=finish_reason(self.stop_reason, FINISH_REASONS),
                               stop_reason=self.stop_reason, cache_read_tokens=self.cache_read_tokens,
                               cache_creation_tokens=self.cache_creation_tokens)]
        return []
