"""Anthropic Messages API through the official ``anthropic`` SDK (async client).

Translation kept here: our request -> ``messages.create`` arguments, the SDK's Message -> our
response, and every SDK failure -> a classified ``ProviderError``. The SDK's own retries are off
(``max_retries=0``): the gateway owns the one retry loop.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
from typing import Any

import anthropic
import httpx2
from pydantic import SecretStr

from gateway_server.errors import ErrorKind, ProviderError, caller_message
from gateway_server.providers.base import (
    ChatMessage,
    ImagePart,
    Part,
    Provider,
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
from gateway_server.settings import AnthropicProviderConfig
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


def _retry_after(headers: httpx2.Headers | None) -> float | None:
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    try:
        if ms is not None:
            return float(ms) / 1000
        seconds = headers.get("retry-after")
        return float(seconds) if seconds is not None else None
    except ValueError:
        return None


def _api_error(exc: anthropic.APIStatusError) -> tuple[str, str]:
    """(error type, message) from the API's error body."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("type") or ""), str(error.get("message") or f"HTTP {exc.status_code}")
    return "", f"HTTP {exc.status_code}"


# Error types of an `event: error` inside a 200 stream, where the status code says nothing.
_STREAM_ERROR_KINDS = {
    "overloaded_error": ErrorKind.OVERLOADED,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "api_error": ErrorKind.SERVER,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "not_found_error": ErrorKind.NOT_FOUND,
    "invalid_request_error": ErrorKind.INVALID_REQUEST,
    "request_too_large": ErrorKind.INVALID_REQUEST,
    "timeout_error": ErrorKind.TIMEOUT,
}


def classify(exc: BaseException) -> ProviderError:
    """Any failure of an SDK call -> ProviderError (never leaks the key: messages come from the API)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(ErrorKind.TIMEOUT, "request timed out")
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = type(cause).__name__ if cause is not None else "connection error"
        return ProviderError(ErrorKind.CONNECTION, f"connection failed ({detail})")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        error_type, message = _api_error(exc)
        retry_after = _retry_after(exc.response.headers if exc.response is not None else None)
        if status < 400:
            kind = _STREAM_ERROR_KINDS.get(error_type, ErrorKind.SERVER)
        elif status == 429:
            kind = ErrorKind.RATE_LIMITED
        elif status in (401, 402, 403):
            kind = ErrorKind.AUTH
        elif status == 404:
            kind = ErrorKind.NOT_FOUND
        elif status == 408:
            kind = ErrorKind.TIMEOUT
        elif status in (503, 529):
            kind = ErrorKind.OVERLOADED
        elif status >= 500:
            kind = ErrorKind.SERVER
        else:
            kind = ErrorKind.INVALID_REQUEST
        # The caller gets a summary (kind, HTTP status, error type); the API's text goes to the log only.
        return ProviderError(kind, caller_message(kind, message), status=status, retry_after=retry_after,
                             error_type=error_type or None, detail=message)
    if isinstance(exc, anthropic.APIResponseValidationError | json.JSONDecodeError | ValueError | TypeError
                  | AttributeError | KeyError):
        return ProviderError(ErrorKind.MALFORMED_RESPONSE, f"unreadable response ({type(exc).__name__})")
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderError(ErrorKind.TIMEOUT, "request timed out")
    if isinstance(exc, httpx2.TransportError | OSError):
        return ProviderError(ErrorKind.CONNECTION, f"connection failed ({type(exc).__name__})")
    return ProviderError(ErrorKind.SERVER, f"unexpected provider failure ({type(exc).__name__})")


class AnthropicProvider(Provider):
    type = "anthropic"

    def __init__(self, name: str, cfg: AnthropicProviderConfig, api_key: SecretStr | None) -> None:
        super().__init__(name, cfg)
        self._cfg = cfg
        self._api_key = api_key
        self._client: anthropic.AsyncAnthropic | None = None

    @property
    def configured(self) -> bool:
        return self._api_key is not None and bool(self._api_key.get_secret_value())

    async def start(self) -> None:
        if not self.usable:
            return
        limits = httpx2.Limits(max_connections=self._cfg.max_connections,
                               max_keepalive_connections=self._cfg.max_connections)
        http_client: httpx2.AsyncClient = (
            anthropic.DefaultAioHttpClient(limits=limits)
            if self._cfg.http_transport == "aiohttp"
            else anthropic.DefaultAsyncHttpxClient(limits=limits)
        )
        assert self._api_key is not None
        self._client = anthropic.AsyncAnthropic(
            api_key=self._api_key.get_secret_value(),
            base_url=self._cfg.base_url,
            max_retries=0,
            timeout=self.timeout,
            http_client=http_client,
            # No tracer is set up here; the SDK's per-call span work costs ~4% of a call (make bench).
            open_telemetry=False,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _require_client(self) -> anthropic.AsyncAnthropic:
        if self._client is None:
            raise ProviderError(ErrorKind.AUTH, "provider has no credentials")
        return self._client

    async def generate(self, request: ProviderRequest, model: str, timeout: float) -> ProviderResponse:
        client = self._require_client()
        try:
            message = await client.messages.create(**build_params(request, model), timeout=timeout)
            return parse_message(message, model)
        except Exception as exc:  # every SDK failure is classified; nothing escapes raw
            raise classify(exc) from exc

    async def stream(self, request: ProviderRequest, model: str, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        client = self._require_client()
        try:
            upstream = await client.messages.create(**build_params(request, model), stream=True, timeout=timeout)
        except Exception as exc:
            raise classify(exc) from exc
        try:
            translator = StreamTranslator(model)
            async for event in upstream:
                for out in translator.feed(event):
                    yield out
            if not translator.done:
                raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "stream ended before message_stop")
        except Exception as exc:
            raise classify(exc) from exc
        finally:
            await upstream.close()  # closes the HTTP response: no orphaned upstream reads

    async def probe(self, timeout: float) -> None:
        client = self._require_client()
        try:
            await client.models.list(limit=1, timeout=timeout)
        except Exception as exc:
            raise classify(exc) from exc


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
