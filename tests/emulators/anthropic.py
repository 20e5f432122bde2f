"""An emulator of Anthropic's Messages API, for the official ``anthropic`` SDK pointed at ``base_url``.

Routes: ``POST /v1/messages`` (JSON or Server-Sent Events with ``"stream": true``), ``POST
/v1/messages/count_tokens``, ``GET /v1/models`` and ``GET /v1/models/{model_id}``. Only ``/v1/messages`` is a
generation ("model") call; the others are probes (faults injected with ``on="probe"``).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from .answers import (
    Answer,
    Prompt,
    ToolSpec,
    cache_usage,
    compose_answer,
    count_words,
    json_chunks,
    mapping,
    optional_int,
    sign,
)
from .base import (
    EmulatorBase,
    Fault,
    JsonReply,
    RecordedRequest,
    StreamEvent,
    StreamReply,
    retry_after_value,
)

DEFAULT_MODELS: tuple[str, ...] = ("claude-sonnet-4-6", "claude-opus-4-7", "claude-haiku-4-5-20251001")

# Error type and default message per HTTP status, as the API documents them.
_ERRORS_BY_STATUS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error."),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}
_STATUS_BY_ERROR_TYPE: dict[str, int] = {error_type: status for status, (error_type, _) in _ERRORS_BY_STATUS.items()}


def _error_for_status(status: int) -> tuple[str, str]:
    if status in _ERRORS_BY_STATUS:
        return _ERRORS_BY_STATUS[status]
    return _ERRORS_BY_STATUS[500] if status >= 500 else _ERRORS_BY_STATUS[400]


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


class AnthropicEmulator(EmulatorBase):
    """Anthropic Messages API on ``base_url``.

    Credentials: ``x-api-key: <api_key>`` or ``Authorization: Bearer <api_key>`` (the SDK 2.x sends the
    latter); anything else is a 401 ``authentication_error``. Requests lacking ``model``, ``max_tokens`` or
    ``messages`` get a 400 ``invalid_request_error`` naming the field.

    Faults: ``status`` is ``{"type":"error","error":{"type","message"},"request_id"}`` with a ``request-id``
    header (error type from the status: 400 invalid_request_error, 401 authentication_error, 402 billing_error,
    403 permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500 api_error, 504
    timeout_error, 529 overloaded_error; other 4xx/5xx as 400/500). ``stream_error`` is an SSE ``event: error``
    then the end of the stream; on a non-streaming call, the status of its error type (overloaded_error: 529).
    ``missing_output`` drops ``content`` (models list: ``data``; token count: ``input_tokens``).

    Stream events, in order: message_start, content_block_start, content_block_delta (one per word, or per
    repetition with ``stream_repeat`` > 1; tool input as ~3 ``input_json_delta`` parts), content_block_stop,
    message_delta, message_stop. ``after_events`` counts from message_start. With thinking on, a thinking block
    (index 0: its text in one ``thinking_delta``, then a ``signature_delta``; or a whole ``redacted_thinking``
    block with ``redact_thinking``) comes before the answer's block (index 1).

    Agent features: ``cache_control`` breakpoints on tools, system blocks and message blocks drive
    ``cache_creation_input_tokens`` / ``cache_read_input_tokens`` (see answers.py); ``thinking`` (enabled or
    adaptive) adds a thinking block whose signature is checked when it is sent back (a changed block is a 400
    ``invalid_request_error``); ``output_config.format`` (json_schema) makes the answer JSON of the schema; text
    documents count as input. ``stop_reason`` overrides the answer's stop reason.
    """

    provider = "anthropic"

    def __init__(self, api_key: str = "test-key", *, models: Sequence[str] = DEFAULT_MODELS) -> None:
        super().__init__()
        self.api_key = api_key
        self.models: list[str] = list(models)
        """Model ids listed by ``GET /v1/models`` (any model id is accepted by ``/v1/messages``)."""

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self._messages),
            web.post("/v1/messages/count_tokens", self._count_tokens),
            web.get("/v1/models", self._list_models),
            web.get("/v1/models/{model_id}", self._get_model),
        ]

    # ---------------------------------------------------------------- handlers

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        record = await self._receive(request, "model")
        rejection = self._authenticate(record) or self._validate(record.json, ("model", "max_tokens", "messages"))
        if rejection is not None:
            return rejection
        body: dict[str, Any] = record.json
        if (bad := _bad_thinking_block(body)) is not None:
            return self._error_response(Fault.status(400, message=bad))
        stream = bool(body.get("stream"))
        fault = self._take_fault("model")
        answer = compose_answer(
            _prompt(body),
            provider=self.provider,
            reply_text=self.reply_text,
            repeat=self.stream_repeat if stream else 1,
        )
        with self._lock:
            usage = cache_usage(_cache_segments(body), self.prompt_cache)
        if usage is not None:
            answer = dataclasses.replace(answer, input_tokens=usage[0], cache_read=usage[1], cache_creation=usage[2])
        if self.stop_reason is not None:
            answer = dataclasses.replace(answer, stop_reason=self.stop_reason)
        message = _message(answer, model=str(body["model"]), redact=self.redact_thinking)
        headers = {"request-id": _request_id()}
        if stream:
            events = _stream_events(message, answer, self._text_deltas(answer.text), redact=self.redact_thinking)
            return await self._serve(request, fault, StreamReply(events, "text/event-stream", headers))
        return await self._serve(request, fault, JsonReply(message, "content", headers))

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        record = await self._receive(request, "probe")
        rejection = self._authenticate(record) or self._validate(record.json, ("model", "messages"))
        if rejection is not None:
            return rejection
        tokens = count_words(_prompt(record.json).input_text)
        reply = JsonReply({"input_tokens": tokens}, "input_tokens", {"request-id": _request_id()})
        return await self._serve(request, self._take_fault("probe"), reply)

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        record = await self._receive(request, "probe")
        if (rejection := self._authenticate(record)) is not None:
            return rejection
        ids = list(self.models)
        if after := request.query.get("after_id"):
            ids = ids[ids.index(after) + 1 :] if after in ids else []
        if before := request.query.get("before_id"):
            ids = ids[: ids.index(before)] if before in ids else []
        limit_text = request.query.get("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            return self._error_response(Fault.status(400, message="limit: must be an integer from 1 to 1000"))
        limit = int(limit_text)
        page = ids[:limit]
        payload = {
            "data": [_model_info(model_id) for model_id in page],
            "has_more": len(ids) > limit,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
        reply = JsonReply(payload, "data", {"request-id": _request_id()})
        return await self._serve(request, self._take_fault("probe"), reply)

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        record = await self._receive(request, "probe")
        if (rejection := self._authenticate(record)) is not None:
            return rejection
        model_id = request.match_info["model_id"]
        if model_id not in self.models:
            return self._error_response(Fault.status(404, message=f"model: {model_id}"))
        reply = JsonReply(_model_info(model_id), "id", {"request-id": _request_id()})
        return await self._serve(request, self._take_fault("probe"), reply)

    # ---------------------------------------------------------------- checks and errors

    def _authenticate(self, record: RecordedRequest) -> web.Response | None:
        api_key = record.headers.get("x-api-key")
        authorization = record.headers.get("authorization", "")
        if api_key == self.api_key or authorization == f"Bearer {self.api_key}":
            return None
        return self._error_response(Fault.status(401))

    def _validate(self, body: Any, required: Sequence[str]) -> web.Response | None:
        if not isinstance(body, dict):
            return self._error_response(Fault.status(400, message="The request body is not valid JSON."))
        for name in required:
            if name not in body:
                return self._error_response(Fault.status(400, message=f"{name}: Field required"))
        if "messages" in required and (not isinstance(body["messages"], list) or not body["messages"]):
            return self._error_response(Fault.status(400, message="messages: at least one message is required"))
        if "max_tokens" in required and (not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1):
            return self._error_response(Fault.status(400, message="max_tokens: must be a positive integer"))
        return None

    def _error_response(self, fault: Fault) -> web.Response:
        status = fault.status_code or 500
        default_type, default_message = _error_for_status(status)
        request_id = _request_id()
        payload = {
            "type": "error",
            "error": {"type": fault.error_type or default_type, "message": fault.message or default_message},
            "request_id": request_id,
        }
        headers = {"request-id": request_id}
        if fault.retry_after is not None:
            headers["retry-after"] = retry_after_value(fault.retry_after)
        return web.json_response(payload, status=status, headers=headers)

    def _stream_error_status(self, fault: Fault) -> Fault:
        error_type = fault.error_type or "overloaded_error"
        return Fault.status(_STATUS_BY_ERROR_TYPE.get(error_type, 500), message=fault.message, error_type=error_type)

    def _stream_error_event(self, fault: Fault) -> bytes:
        error_type = fault.error_type or "overloaded_error"
        message = fault.message or _error_for_status(_STATUS_BY_ERROR_TYPE.get(error_type, 500))[1]
        return _sse("error", {"type": "error", "error": {"type": error_type, "message": message}})

    def _malformed_stream_event(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"ty\n\n'

    def _not_found(self, request: web.Request) -> web.Response:
        return self._error_response(Fault.status(404, message=f"Not found: {request.method} {request.path}"))


# -------------------------------------------------------------------- request and response shapes


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, Mapping) and block.get("type") == "text":
        return str(block.get("text", ""))
    if isinstance(block, Mapping) and block.get("type") == "document":
        source = mapping(block.get("source"))
        return str(source.get("data", "")) if source.get("type") == "text" else ""
    return ""


def _bad_thinking_block(body: Mapping[str, Any]) -> str | None:
    """Why a thinking block sent back is not as the emulator returned it, or None."""
    for i, message in enumerate(body.get("messages") or []):
        content = mapping(message).get("content")
        for j, block in enumerate(content if isinstance(content, list) else []):
            if isinstance(block, Mapping) and block.get("type") == "thinking" \
                    and block.get("signature") != sign(str(block.get("thinking", ""))):
                return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
    return None


def _cache_segments(body: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """The prompt in cache order (tools, system, messages) as (text, a cache_control follows) segments."""
    segments: list[tuple[str, bool]] = []
    for tool in body.get("tools") or []:
        tool = mapping(tool)
        plain = {k: v for k, v in tool.items() if k != "cache_control"}
        segments.append((json.dumps(plain, sort_keys=True), "cache_control" in tool))
    system = body.get("system")
    if isinstance(system, str):
        segments.append((system, False))
    for block in system if isinstance(system, list) else []:
        segments.append((_block_text(block), "cache_control" in mapping(block)))
    for message in body.get("messages") or []:
        content = mapping(message).get("content")
        if isinstance(content, str):
            segments.append((content, False))
        for block in content if isinstance(content, list) else []:
            text = _tool_result_text(block) if mapping(block).get("type") == "tool_result" else _block_text(block)
            segments.append((text, "cache_control" in mapping(block)))
    return segments


def _content_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [text for block in content if (text := _block_text(block))]
    return []


def _tool_result_text(block: Mapping[str, Any]) -> str:
    content = block.get("content", "")
    return "\n".join(_content_texts(content)) if not isinstance(content, str) else content


def _prompt(body: Mapping[str, Any]) -> Prompt:
    """The provider-neutral view of a Messages API request body."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, Mapping)]
    inputs = _content_texts(body.get("system"))
    for message in messages:
        content = message.get("content")
        inputs += _content_texts(content)
        if isinstance(content, list):
            inputs += [
                _tool_result_text(b) for b in content if isinstance(b, Mapping) and b.get("type") == "tool_result"
            ]

    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    last_content = last_user.get("content") if last_user is not None else None
    tool_results: tuple[str, ...] = ()
    if isinstance(last_content, list):
        tool_results = tuple(
            _tool_result_text(b) for b in last_content if isinstance(b, Mapping) and b.get("type") == "tool_result"
        )

    tools = tuple(
        ToolSpec(str(t["name"]), t.get("input_schema") or {})
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and "name" in t
    )
    choice = mapping(body.get("tool_choice"))
    stop_sequences = body.get("stop_sequences") or []
    output_format = mapping(mapping(body.get("output_config")).get("format"))
    return Prompt(
        thinking=mapping(body.get("thinking")).get("type") in ("enabled", "adaptive"),
        output_schema=mapping(output_format.get("schema")) if output_format.get("type") == "json_schema" else None,
        last_user_text="\n".join(_content_texts(last_content)),
        tool_results=tool_results,
        input_text=" ".join(inputs),
        tools=tools,
        tool_required=choice.get("type") in ("any", "tool"),
        forced_tool=choice.get("name") if choice.get("type") == "tool" else None,
        max_tokens=optional_int(body.get("max_tokens")),
        stop_sequences=tuple(str(s) for s in stop_sequences),
    )


def _thinking_block(answer: Answer, redact: bool) -> list[dict[str, Any]]:
    if answer.thinking is None:
        return []
    if redact:
        return [{"type": "redacted_thinking", "data": "redacted_" + answer.signature}]
    return [{"type": "thinking", "thinking": answer.thinking, "signature": answer.signature}]


def _usage(answer: Answer) -> dict[str, int]:
    return {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
            "cache_creation_input_tokens": answer.cache_creation, "cache_read_input_tokens": answer.cache_read}


def _message(answer: Answer, *, model: str, redact: bool = False) -> dict[str, Any]:
    """The Message object of ``answer``."""
    content: list[dict[str, Any]] = _thinking_block(answer, redact)
    if answer.tool_call is not None:
        call = answer.tool_call
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input})
    else:
        content.append({"type": "text", "text": answer.text})
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": answer.stop_reason,
        "stop_sequence": answer.stop_sequence,
        "usage": _usage(answer),
    }


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _thinking_events(answer: Answer, redact: bool) -> list[StreamEvent]:
    if answer.thinking is None:
        return []
    if redact:
        (block,) = _thinking_block(answer, redact)
        start = {"type": "content_block_start", "index": 0, "content_block": block}
        return [StreamEvent(_sse("content_block_start", start), "block"),
                StreamEvent(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}), "block")]
    start = {"type": "content_block_start", "index": 0,
             "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
    deltas = [{"type": "thinking_delta", "thinking": answer.thinking},
              {"type": "signature_delta", "signature": answer.signature}]
    return [
        StreamEvent(_sse("content_block_start", start), "block"),
        *(StreamEvent(_sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}), "delta")
          for d in deltas),
        StreamEvent(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}), "block"),
    ]


def _stream_events(
    message: Mapping[str, Any], answer: Answer, text_deltas: Sequence[str], *, redact: bool = False
) -> list[StreamEvent]:
    """The Server-Sent Events streaming ``message``."""
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**_usage(answer), "output_tokens": 1},
    }
    events = [StreamEvent(_sse("message_start", {"type": "message_start", "message": start}))]
    events += _thinking_events(answer, redact)
    index = 1 if answer.thinking is not None else 0
    if answer.tool_call is not None:
        call = answer.tool_call
        block: dict[str, Any] = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": part} for part in json_chunks(call.input)]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": chunk} for chunk in text_deltas]
    events.append(
        StreamEvent(
            _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}),
            "block",
        )
    )
    events += [
        StreamEvent(
            _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}), "delta"
        )
        for delta in deltas
    ]
    events.append(StreamEvent(_sse("content_block_stop", {"type": "content_block_stop", "index": index}), "block"))
    events.append(
        StreamEvent(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
                    "usage": {"output_tokens": answer.output_tokens},
                },
            )
        )
    )
    events.append(StreamEvent(_sse("message_stop", {"type": "message_stop"})))
    return events


def _model_info(model_id: str) -> dict[str, Any]:
    """A ModelInfo; display name "claude-sonnet-4-6" -> "Claude Sonnet 4.6" (a trailing date is left out)."""
    parts = [part for part in model_id.split("-") if not (part.isdigit() and len(part) == 8)]
    words = [part.capitalize() for part in parts if not part.isdigit()]
    version = ".".join(part for part in parts if part.isdigit())
    return {
        "type": "model",
        "id": model_id,
        "display_name": " ".join([*words, version] if version else words),
        "created_at": "2025-01-01T00:00:00Z",
        "lifecycle": "active",
    }
