"""AWS Bedrock's Converse API <-> ours: pure translation, no I/O.

Our request -> ``converse`` / ``converse_stream`` arguments, the Converse body -> our response,
the stream's events -> ours, stop reasons -> finish reasons, and what Bedrock cannot take.
The transport (the SDK, its clients, timeouts, threads, error classification) is in bedrock.py.
"""

from __future__ import annotations

from typing import Any

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers.base import (
    ImagePart,
    Part,
    ProviderRequest,
    ProviderResponse,
    StreamDone,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolInputBuffer,
    ToolResultPart,
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
    "guardrail_intervened": pb.FINISH_REASON_CONTENT_FILTERED,
    "content_filtered": pb.FINISH_REASON_CONTENT_FILTERED,
}


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ImagePart):
        return {"image": {"format": part.media_type.removeprefix("image/"), "source": {"bytes": part.data}}}
    if isinstance(part, ToolUsePart):
        return {"toolUse": {"toolUseId": part.id, "name": part.name, "input": part.input}}
    return {"toolResult": {"toolUseId": part.tool_use_id, "content": [{"text": part.content}],
                           "status": "error" if part.is_error else "success"}}


def build_params(request: ProviderRequest, model: str) -> dict[str, Any]:
    """Our request -> keyword arguments of ``client.converse`` / ``converse_stream``."""
    params: dict[str, Any] = {
        "modelId": model,
        "messages": [{"role": m.role, "content": [_part(p) for p in m.all_parts()]} for m in request.messages],
    }
    if request.system:
        params["system"] = [{"text": request.system}]
    if request.tools:
        tool_config: dict[str, Any] = {"tools": [
            {"toolSpec": {"name": t.name, "description": t.description or t.name,
                          "inputSchema": {"json": t.input_schema}}} for t in request.tools]}
        if request.tool_choice == "tool":
            tool_config["toolChoice"] = {"tool": {"name": request.tool_choice_name}}
        elif request.tool_choice in ("auto", "any"):
            tool_config["toolChoice"] = {request.tool_choice: {}}
        params["toolConfig"] = tool_config
    inference: dict[str, Any] = {"maxTokens": request.max_tokens}
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop_sequences:
        inference["stopSequences"] = list(request.stop_sequences)
    params["inferenceConfig"] = inference
    return params


def parse_response(body: Any, model: str) -> ProviderResponse:
    """The Converse response -> ours; a body without ``output.message.content`` is malformed."""
    try:
        blocks = body["output"]["message"]["content"]
        parts: list[TextPart | ToolUsePart] = []
        for block in blocks:
            if "text" in block:
                parts.append(TextPart(block["text"]))
            elif "toolUse" in block:
                use = block["toolUse"]
                parts.append(tool_use_part(use["toolUseId"], use["name"], use.get("input") or {}))
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
        finish_reason=FINISH_REASONS.get(stop_reason, pb.FINISH_REASON_UNSPECIFIED),
        stop_reason=stop_reason,
    )


def unsupported(request: ProviderRequest) -> tuple[str, str] | None:
    """(field, why) when Bedrock cannot take the request as it is; None when it can."""
    if request.tool_choice == "none" and request.tools:
        return "tool_choice.mode", "Bedrock cannot forbid tool use while tools are given; omit the tools"
    if not request.tools and any(isinstance(p, ToolUsePart | ToolResultPart)
                                 for m in request.messages for p in m.parts):
        return "tools", "Bedrock needs the tool definitions when the conversation contains tool calls"
    return None


class ConverseStreamTranslator:
    """converse_stream events -> ours (text deltas, whole tool calls, one StreamDone)."""

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
                          finish_reason=FINISH_REASONS.get(self.stop_reason, pb.FINISH_REASON_UNSPECIFIED),
                          stop_reason=self.stop_reason)

    def feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        if "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            index = int(body.get("contentBlockIndex", 0))
            delta = body.get("delta", {})
            if "text" in delta:
                return [TextDelta(index, delta["text"])]
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
