"""AWS Bedrock's Converse API <-> ours: pure translation, no I/O.

Our request -> ``converse`` / ``converse_stream`` arguments, the Converse body -> our response,
the stream's events -> ours, stop reasons -> finish reasons, and what Bedrock cannot take.
The transport (the SDK, its clients, timeouts, threads, error classification) is in bedrock.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers import capabilities
from gateway_server.providers.base import (
    AnswerPart,
    CacheControl,
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

# Every Converse stopReason (botocore's StopReason enum); others -> FINISH_REASON_OTHER.
FINISH_REASONS: dict[str, pb.FinishReason.ValueType] = {
    "end_turn": pb.FINISH_REASON_END_TURN,
    "max_tokens": pb.FINISH_REASON_MAX_TOKENS,
    "stop_sequence": pb.FINISH_REASON_STOP_SEQUENCE,
    "tool_use": pb.FINISH_REASON_TOOL_USE,
    "guardrail_intervened": pb.FINISH_REASON_GUARDRAIL_INTERVENED,
    "content_filtered": pb.FINISH_REASON_CONTENT_FILTERED,
    "malformed_model_output": pb.FINISH_REASON_MALFORMED_OUTPUT,
    "malformed_tool_use": pb.FINISH_REASON_MALFORMED_TOOL_USE,
    "model_context_window_exceeded": pb.FINISH_REASON_CONTEXT_WINDOW_EXCEEDED,
}

_DOCUMENT_FORMATS = {"application/pdf": "pdf", "text/plain": "txt"}
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9\s\-()\[\]]+")


def _cache_point(cache: CacheControl) -> dict[str, Any]:
    point: dict[str, Any] = {"type": "default"}
    if cache.ttl:
        point["ttl"] = cache.ttl
    return {"cachePoint": point}


class _Documents:
    """Names the request's documents: Converse requires a name, unique within the request."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def block(self, part: DocumentPart) -> dict[str, Any]:
        base = " ".join(_NAME_UNSAFE.sub("-", part.title).split())[:180] or f"document-{len(self.names) + 1}"
        name, n = base, 1
        while name in self.names:
            n += 1
            name = f"{base} ({n})"
        self.names.add(name)
        return {"document": {"format": _DOCUMENT_FORMATS[part.media_type], "name": name,
                             "source": {"bytes": part.data}}}


def _blocks(part: Part, documents: _Documents) -> list[dict[str, Any]]:
    """A part -> its Converse content block, followed by a cache point where it carries a breakpoint."""
    block: dict[str, Any]
    if isinstance(part, TextPart):
        block = {"text": part.text}
    elif isinstance(part, ImagePart):
        block = {"image": {"format": part.media_type.removeprefix("image/"), "source": {"bytes": part.data}}}
    elif isinstance(part, DocumentPart):
        block = documents.block(part)
    elif isinstance(part, ToolUsePart):
        block = {"toolUse": {"toolUseId": part.id, "name": part.name, "input": part.input}}
    elif isinstance(part, ThinkingPart):
        return [{"reasoningContent": {"reasoningText": {"text": part.thinking, "signature": part.signature}}}]
    elif isinstance(part, RedactedThinkingPart):
        return [{"reasoningContent": {"redactedContent": part.data}}]
    else:
        content = [b for item in part.all_blocks() for b in _blocks(item, documents)]
        block = {"toolResult": {"toolUseId": part.tool_use_id, "content": content or [{"text": ""}],
                                "status": "error" if part.is_error else "success"}}
    return [block] if part.cache is None else [block, _cache_point(part.cache)]


def _input_params(request: ProviderRequest) -> dict[str, Any]:
    """What converse and CountTokens share: messages, system, tools, thinking."""
    documents = _Documents()
    params: dict[str, Any] = {
        "messages": [{"role": m.role, "content": [b for p in m.all_parts() for b in _blocks(p, documents)]}
                     for m in request.messages],
    }
    system = [b for p in request.system_parts() for b in _blocks(p, documents)]
    if system:
        params["system"] = system
    if request.tools:
        tools: list[dict[str, Any]] = []
        for t in request.tools:
            tools.append({"toolSpec": {"name": t.name, "description": t.description or t.name,
                                       "inputSchema": {"json": t.input_schema}}})
            if t.cache is not None:
                tools.append(_cache_point(t.cache))
        tool_config: dict[str, Any] = {"tools": tools}
        if request.tool_choice == "tool":
            tool_config["toolChoice"] = {"tool": {"name": request.tool_choice_name}}
        elif request.tool_choice in ("auto", "any"):
            tool_config["toolChoice"] = {request.tool_choice: {}}
        params["toolConfig"] = tool_config
    if request.thinking is not None:
        # Claude on Bedrock takes Anthropic's thinking configuration as a model-specific field.
        thinking: dict[str, Any] = {"type": request.thinking.mode}
        if request.thinking.mode == "enabled":
            thinking["budget_tokens"] = request.thinking.budget_tokens
        params["additionalModelRequestFields"] = {"thinking": thinking}
    return params


def build_params(request: ProviderRequest, model: str) -> dict[str, Any]:
    """Our request -> keyword arguments of ``client.converse`` / ``converse_stream``."""
    params: dict[str, Any] = {"modelId": model, **_input_params(request)}
    inference: dict[str, Any] = {"maxTokens": request.max_tokens}
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop_sequences:
        inference["stopSequences"] = list(request.stop_sequences)
    params["inferenceConfig"] = inference
    if request.output is not None:
        schema: dict[str, Any] = {"schema": json.dumps(request.output.schema), "name": request.output.name}
        if request.output.description:
            schema["description"] = request.output.description
        params["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": schema}}}
    return params


def build_count_params(request: ProviderRequest, model: str) -> dict[str, Any]:
    """Our request -> keyword arguments of ``client.count_tokens`` (the Converse form of the input)."""
    return {"modelId": model, "input": {"converse": _input_params(request)}}


def parse_count(body: Any) -> int:
    try:
        value = body["inputTokens"]
    except (KeyError, TypeError) as exc:
        raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "token count has no inputTokens") from exc
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "token count is not a number")
    return value


def _reasoning(block: Any) -> ThinkingPart | RedactedThinkingPart:
    if "redactedContent" in block:
        return RedactedThinkingPart(bytes(block["redactedContent"]))
    text = block["reasoningText"]
    return ThinkingPart(str(text.get("text") or ""), str(text.get("signature") or ""))


def parse_response(body: Any, model: str) -> ProviderResponse:
    """The Converse response -> ours; a body without ``output.message.content`` is malformed."""
    try:
        blocks = body["output"]["message"]["content"]
        parts: list[AnswerPart] = []
        for block in blocks:
            if "text" in block:
                parts.append(TextPart(block["text"]))
            elif "toolUse" in block:
                use = block["toolUse"]
                parts.append(tool_use_part(use["toolUseId"], use["name"], use.get("input") or {}))
            elif "reasoningContent" in block:
                parts.append(_reasoning(block["reasoningContent"]))
    except (KeyError, TypeError) as exc:
        raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "response has no output message") from exc
    text = "".join(p.text for p in parts if isinstance(p, TextPart))
    usage = body.get("usage") or {}
    stop_reason = str(body.get("stopReason") or "")
    return ProviderResponse(
        parts=tuple(parts),
        content=text,
        model=model,
        input_tokens=int(usage.get("inputTokens", 0)),
        output_tokens=int(usage.get("outputTokens", 0)),
        finish_reason=finish_reason(stop_reason, FINISH_REASONS),
        stop_reason=stop_reason,
        cache_read_tokens=int(usage.get("cacheReadInputTokens", 0)),
        cache_creation_tokens=int(usage.get("cacheWriteInputTokens", 0)),
    )


def unsupported(request: ProviderRequest, model: str = "") -> tuple[str, str] | None:
    """(field, why) when Bedrock (with ``model``, when given) cannot take the request as it is; None when
    it can. An ARN names no model family: Bedrock decides."""
    if request.tool_choice == "none" and request.tools:
        return "tool_choice.mode", "Bedrock cannot forbid tool use while tools are given; omit the tools"
    if not request.tools and any(isinstance(p, ToolUsePart | ToolResultPart)
                                 for m in request.messages for p in m.parts):
        return "tools", "Bedrock needs the tool definitions when the conversation contains tool calls"
    known = bool(model) and not model.startswith("arn:")
    if request.output is not None and known and not capabilities.has_structured_output(model):
        return "output_format", f"model '{model}' has no native structured output on Bedrock"
    if request.thinking is not None and request.thinking.mode != "disabled" and known \
            and not capabilities.has_thinking(model):
        return "thinking", f"model '{model}' has no extended thinking on Bedrock"
    return None


class ConverseStreamTranslator:
    """converse_stream events -> ours (text and reasoning deltas, signatures, whole tool calls, one StreamDone)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.stop_reason = ""
        self.stopped = False
        self.done = False
        self._tools: dict[int, ToolInputBuffer] = {}

    def _done(self, usage: dict[str, Any]) -> StreamDone:
        self.done = True
        return StreamDone(model=self.model, input_tokens=int(usage.get("inputTokens", 0)),
                          output_tokens=int(usage.get("outputTokens", 0)),
                          finish_reason=finish_reason(self.stop_reason, FINISH_REASONS),
                          stop_reason=self.stop_reason,
                          cache_read_tokens=int(usage.get("cacheReadInputTokens", 0)),
                          cache_creation_tokens=int(usage.get("cacheWriteInputTokens", 0)))

    def feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        if "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            index = int(body.get("contentBlockIndex", 0))
            delta = body.get("delta", {})
            if "text" in delta:
                return [TextDelta(index, delta["text"])]
            if "reasoningContent" in delta:
                reasoning = delta["reasoningContent"]
                if "text" in reasoning:
                    return [ThinkingDelta(index, str(reasoning["text"]))]
                if "signature" in reasoning:
                    return [SignatureDelta(index, str(reasoning["signature"]))]
                if "redactedContent" in reasoning:
                    return [RedactedThinkingDelta(index, bytes(reasoning["redactedContent"]))]
                return []
            if "toolUse" in delta and index in self._tools:
                self._tools[index].chunks.append(str(delta["toolUse"].get("input", "")))
            return []
        if "contentBlockStart" in event:
            body = event["contentBlockStart"]
            use = body.get("start", {}).get("toolUse")
            if use is not None:
                self._tools[int(body.get("contentBlockIndex", 0))] = ToolInputBuffer(use["toolUseId"], use["name"])
            return []
        if "contentBlockStop" in event:
            buffer = self._tools.pop(int(event["contentBlockStop"].get("contentBlockIndex", 0)), None)
            index = int(event["contentBlockStop"].get("contentBlockIndex", 0))
            return [ToolUseDelta(index, buffer.finish())] if buffer is not None else []
        if "messageStop" in event:
            self.stop_reason = str(event["messageStop"].get("stopReason") or "")
            self.stopped = True
            return []
        if "metadata" in event and self.stopped and not self.done:
            return [self._done(event["metadata"].get("usage") or {})]
        return []

    def finish(self) -> StreamDone | None:
        """At the end of the HTTP stream: the StreamDone if not sent yet; a stream cut short is an error."""
        if self.done:
            return None
        if not self.stopped:
            raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "stream ended before messageStop")
        return self._done({})
