"""The built-in mock provider: no network, no keys, deterministic.

It answers simple arithmetic ("What is 25 + 75?" -> "100") and otherwise quotes the prompt.
``latency_ms`` delays each answer; ``fail_with`` / ``fail_times`` inject failures (demos, tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncGenerator
from typing import Any

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers.base import (
    AnswerPart,
    DocumentPart,
    Part,
    Provider,
    ProviderRequest,
    ProviderResponse,
    SignatureDelta,
    StreamDone,
    StreamEvent,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolResultPart,
    ToolUseDelta,
    ToolUsePart,
)
from gateway_server.settings import MockProviderConfig
from modelgateway.v1 import model_gateway_pb2 as pb

log = logging.getLogger("gateway_server.providers.mock")

_ARITHMETIC = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/x×÷])\s*(-?\d+(?:\.\d+)?)")

_FAILURES: dict[str, tuple[ErrorKind, int | None, str]] = {
    "unavailable": (ErrorKind.SERVER, 500, "mock: injected internal server error"),
    "overloaded": (ErrorKind.OVERLOADED, 529, "mock: injected overload"),
    "rate_limited": (ErrorKind.RATE_LIMITED, 429, "mock: injected rate limit"),
    "timeout": (ErrorKind.TIMEOUT, None, "mock: injected timeout"),
    "auth": (ErrorKind.AUTH, 401, "mock: injected credential rejection"),
    "invalid_request": (ErrorKind.INVALID_REQUEST, 400, "mock: injected invalid request"),
    "malformed": (ErrorKind.MALFORMED_RESPONSE, None, "mock: injected malformed response"),
}


def answer(prompt: str) -> str:
    """The mock's deterministic answer to a prompt."""
    match = _ARITHMETIC.search(prompt)
    if match:
        left, op, right = float(match.group(1)), match.group(2), float(match.group(3))
        if op == "+":
            value = left + right
        elif op == "-":
            value = left - right
        elif op in "*x×":
            value = left * right
        elif right == 0:
            return "Division by zero is undefined."
        else:
            value = left / right
        return str(int(value)) if value == int(value) else f"{value:g}"
    return f"Mock response to: {prompt}"


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def _texts(part: Part) -> list[str]:
    """The input text of a block, for counting."""
    if isinstance(part, TextPart):
        return [part.text]
    if isinstance(part, DocumentPart) and part.media_type == "text/plain":
        return [part.data.decode("utf-8", errors="replace")]
    if isinstance(part, ToolResultPart):
        return [t for b in part.all_blocks() for t in _texts(b)]
    return []


def _input_segments(request: ProviderRequest) -> list[tuple[str, bool]]:
    """(text, a cache breakpoint follows it) for the prompt in the providers' cache order: tools, system,
    messages."""
    segments = [(json.dumps({"name": t.name, "schema": t.input_schema}), t.cache is not None) for t in request.tools]
    segments += [(p.text, p.cache is not None) for p in request.system_parts()]
    for message in request.messages:
        for part in message.all_parts():
            segments.append((" ".join(_texts(part)), getattr(part, "cache", None) is not None))
    return segments


def _schema_value(schema: dict[str, Any], text: str) -> Any:
    """A value matching a (simple) JSON schema, made up from ``text``."""
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: _schema_value(props.get(name) or {}, text) for name in schema.get("required") or props}
    if kind == "array":
        return []
    if kind in ("number", "integer"):
        match = re.search(r"-?\d+", text)
        return int(match.group(0)) if match else 0
    if kind == "boolean":
        return True
    if schema.get("enum"):
        return schema["enum"][0]
    return text


class MockProvider(Provider):
    type = "mock"

    def __init__(self, name: str, cfg: MockProviderConfig) -> None:
        super().__init__(name, cfg)
        self._latency = cfg.latency_ms / 1000
        self._failure = _FAILURES[cfg.fail_with] if cfg.fail_with else None
        self._fail_left = cfg.fail_times
        self._retry_after = cfg.retry_after
        self._chunk_delay = cfg.stream_chunk_delay_ms / 1000
        self._fail_after_chunks = cfg.fail_after_chunks
        self.calls = 0
        self._cached_prefixes: set[str] = set()
        self.open_streams = 0  # streams being read right now (tests check they are closed)

    @property
    def configured(self) -> bool:
        return True

    def _maybe_fail(self) -> None:
        if self._failure is None or self._fail_left == 0:
            return
        if self._fail_left > 0:
            self._fail_left -= 1
        kind, status, message = self._failure
        raise ProviderError(kind, message, status=status, retry_after=self._retry_after)

    async def _answer(self, request: ProviderRequest, model: str, timeout: float) -> ProviderResponse:
        self.calls += 1
        log.debug("mock provider '%s' received call %d", self.name, self.calls)
        if self._latency:
            if self._latency > timeout:
                await asyncio.sleep(timeout)
                raise ProviderError(ErrorKind.TIMEOUT, f"mock: no answer within {timeout:.3f}s")
            await asyncio.sleep(self._latency)
        self._maybe_fail()
        input_tokens, cache_read, cache_creation = self._input_tokens(request)
        thinking: tuple[AnswerPart, ...] = ()
        if request.thinking is not None and request.thinking.mode != "disabled":
            reasoning = f"The user asks: {request.last_user_text()}"
            thinking = (ThinkingPart(reasoning, hashlib.sha256(reasoning.encode()).hexdigest()[:32]),)
        tool = self._tool_call(request)
        if tool is not None:
            return ProviderResponse(content="", model=model, input_tokens=input_tokens, output_tokens=1,
                                    finish_reason=pb.FINISH_REASON_TOOL_USE, stop_reason="tool_use",
                                    parts=(*thinking, tool), cache_read_tokens=cache_read,
                                    cache_creation_tokens=cache_creation)
        text = self._text(request)
        if request.output is not None:
            text = json.dumps(_schema_value(request.output.schema, request.last_user_text()))
        finish = pb.FINISH_REASON_END_TURN
        stop_reason = "end_turn"
        for seq in request.stop_sequences:
            if seq and seq in text:
                text = text[: text.index(seq)]
                finish, stop_reason = pb.FINISH_REASON_STOP_SEQUENCE, "stop_sequence"
        words = text.split()
        if len(words) > request.max_tokens:
            text = " ".join(words[: request.max_tokens])
            finish, stop_reason = pb.FINISH_REASON_MAX_TOKENS, "max_tokens"
        return ProviderResponse(
            content=text, model=model, input_tokens=input_tokens, output_tokens=count_tokens(text),
            finish_reason=finish, stop_reason=stop_reason, parts=(*thinking, TextPart(text)),
            cache_read_tokens=cache_read, cache_creation_tokens=cache_creation,
        )

    def _input_tokens(self, request: ProviderRequest) -> tuple[int, int, int]:
        """(uncached, read from cache, written to cache) input tokens. The mock remembers every prefix that
        ends at a cache breakpoint, as a provider's prompt cache would; the longest remembered one is read."""
        segments = _input_segments(request)
        if not any(breakpoint for _, breakpoint in segments):
            return count_tokens(request.system) * bool(request.system) + sum(
                count_tokens(m.content) for m in request.messages), 0, 0
        prefix = hashlib.sha256()
        total = up_to_breakpoint = read = 0
        for text, breakpoint in segments:
            prefix.update(text.encode() + b"\0")
            total += len(text.split())
            if breakpoint:
                key = prefix.hexdigest()
                if key in self._cached_prefixes:
                    read = total
                self._cached_prefixes.add(key)
                up_to_breakpoint = total
        return total - up_to_breakpoint, read, up_to_breakpoint - read

    async def count_tokens(self, request: ProviderRequest, model: str, timeout: float) -> int:
        self.calls += 1
        self._maybe_fail()
        return max(1, sum(len(text.split()) for text, _ in _input_segments(request)))

    @staticmethod
    def _last_tool_result(request: ProviderRequest) -> ToolResultPart | None:
        last = request.messages[-1]
        return next((p for p in last.parts if isinstance(p, ToolResultPart)), None) if last.role == "user" else None

    def _tool_call(self, request: ProviderRequest) -> ToolUsePart | None:
        """A tool call when tools are given and the prompt (or tool_choice) asks for one."""
        if not request.tools or request.tool_choice == "none" or self._last_tool_result(request) is not None:
            return None
        prompt = request.last_user_text()
        if request.tool_choice not in ("any", "tool") and "tool" not in prompt.lower():
            return None
        name = request.tool_choice_name if request.tool_choice == "tool" else request.tools[0].name
        match = _ARITHMETIC.search(prompt)
        return ToolUsePart(f"toolu_mock_{self.calls}", name, {"expression": match.group(0) if match else prompt})

    def _text(self, request: ProviderRequest) -> str:
        result = self._last_tool_result(request)
        if result is not None:
            return f"The tool returned: {result.content}"
        return answer(request.last_user_text())

    async def generate(self, request: ProviderRequest, model: str, timeout: float) -> ProviderResponse:
        return await self._answer(request, model, timeout)

    async def stream(self, request: ProviderRequest, model: str, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        response = await self._answer(request, model, timeout)
        self.open_streams += 1
        try:
            chunks = 0
            for index, part in enumerate(response.parts):
                if isinstance(part, ToolUsePart):
                    yield ToolUseDelta(index, part)
                    continue
                if isinstance(part, ThinkingPart):
                    yield ThinkingDelta(index, part.thinking)
                    yield SignatureDelta(index, part.signature)
                    continue
                if not isinstance(part, TextPart):
                    continue
                for n, word in enumerate(part.text.split(" ")):
                    if self._fail_after_chunks is not None and chunks >= self._fail_after_chunks:
                        raise ProviderError(ErrorKind.SERVER, f"mock: stream failed after {chunks} chunks")
                    if self._chunk_delay:
                        await asyncio.sleep(self._chunk_delay)
                    chunks += 1
                    yield TextDelta(index, word if n == 0 else " " + word)
            yield StreamDone(model=response.model, input_tokens=response.input_tokens,
                             output_tokens=response.output_tokens, finish_reason=response.finish_reason,
                             stop_reason=response.stop_reason, cache_read_tokens=response.cache_read_tokens,
                             cache_creation_tokens=response.cache_creation_tokens)
        finally:
            self.open_streams -= 1

    async def probe(self, timeout: float) -> None:
        if self._failure is not None and self._fail_left != 0:
            kind, status, message = self._failure
            raise ProviderError(kind, message, status=status)
