"""The built-in mock provider: no network, no keys, deterministic.

It answers simple arithmetic ("What is 25 + 75?" -> "100") and otherwise quotes the prompt.
``latency_ms`` delays each answer; ``fail_with`` / ``fail_times`` inject failures (demos, tests).
"""

from __future__ import annotations

import asyncio
import logging
import re

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers.base import Provider, ProviderRequest, ProviderResponse
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
        super().__init__(name, default_model=cfg.default_model or "mock-1", models=cfg.models,
                         timeout=cfg.timeout, max_retries=cfg.max_retries, enabled=cfg.enabled)
        self._latency = cfg.latency_ms / 1000
        self._failure = _FAILURES[cfg.fail_with] if cfg.fail_with else None
        self._fail_left = cfg.fail_times
        self._retry_after = cfg.retry_after
        self.calls = 0

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

    async def generate(self, request: ProviderRequest, model: str, timeout: float) -> ProviderResponse:
        self.calls += 1
        log.debug("mock provider '%s' received call %d", self.name, self.calls)
        if self._latency:
            if self._latency > timeout:
                await asyncio.sleep(timeout)
                raise ProviderError(ErrorKind.TIMEOUT, f"mock: no answer within {timeout:.3f}s")
            await asyncio.sleep(self._latency)
        self._maybe_fail()
        prompt = request.last_user_text()
        text = answer(prompt)
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
        input_tokens = count_tokens(request.system) * bool(request.system) + sum(
            count_tokens(m.content) for m in request.messages
        )
        return ProviderResponse(
            content=text, model=model, input_tokens=input_tokens, output_tokens=count_tokens(text),
            finish_reason=finish, stop_reason=stop_reason,
        )

    async def probe(self, timeout: float) -> None:
        if self._failure is not None and self._fail_left != 0:
            kind, status, message = self._failure
            raise ProviderError(kind, message, status=status)
