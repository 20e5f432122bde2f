"""The built-in mock provider: no network, no keys, deterministic.

It answers simple arithmetic ("What is 25 + 75?" -> "100") and otherwise quotes the prompt.
``latency_ms`` delays each answer; ``fail_with`` / ``fail_times`` inject failures (demos, tests).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers.base import (
    Provider,
    ProviderRequest,
    ProviderResponse,
    StreamDone,
    StreamEvent,
    TextDelta,
    TextPart,
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
        input_tokens = count_tokens(request.system) * bool(request.system) + sum(
            count_tokens(m.content) for m in request.messages
        )
        tool = self._tool_call(request)
        if tool is not None:
            return ProviderResponse(content="", model=model, input_tokens=input_tokens, output_tokens=1,
                                    finish_reason=pb.FINISH_REASON_TOOL_USE, stop_reason="tool_use", parts=(tool,))
        text = self._text(request)
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
            finish_reason=finish, stop_reason=stop_reason, parts=(TextPart(text),),
        )

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
                for n, word in enumerate(part.text.split(" ")):
                    if self._fail_after_chunks is not None and chunks >= self._fail_after_chunks:
                        raise ProviderError(ErrorKind.SERVER, f"mock: stream failed after {chunks} chunks")
                    if self._chunk_delay:
                        await asyncio.sleep(self._chunk_delay)
                    chunks += 1
                    yield TextDelta(index, word if n == 0 else " " + word)
            yield StreamDone(model=response.model, input_tokens=response.input_tokens,
                             output_tokens=response.output_tokens, finish_reason=response.finish_reason,
                             stop_reason=response.stop_reason)
        finally:
            self.open_streams -= 1

    async def probe(self, timeout: float) -> None:
        if self._failure is not None and self._fail_left != 0:
            kind, status, message = self._failure
            raise ProviderError(kind, message, status=status)
