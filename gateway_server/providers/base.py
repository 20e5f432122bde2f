"""The one small interface every provider implements, and the request/response it speaks.

A provider translates ``ProviderRequest`` into its SDK's call and the SDK's answer or exception
into ``ProviderResponse`` / ``ProviderError`` (see errors.py); that translation lives in the
provider's own module. Routing, retries and fallback live in router.py, never in a provider.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

from modelgateway.v1 import model_gateway_pb2 as pb


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """A validated request, provider-neutral. The model is chosen per attempt, so it is not here."""

    messages: tuple[ChatMessage, ...]
    system: str
    max_tokens: int
    temperature: float | None
    top_p: float | None
    stop_sequences: tuple[str, ...]

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    content: str
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: pb.FinishReason.ValueType
    stop_reason: str


class Provider(abc.ABC):
    """One configured provider instance (a name in the config, e.g. ``anthropic``)."""

    type: str = ""

    def __init__(self, name: str, *, default_model: str, models: list[str], timeout: float,
                 max_retries: int, enabled: bool, region: str = "") -> None:
        self.name = name
        self.default_model = default_model
        self.models = tuple(models)
        self.timeout = timeout
        self.max_retries = max_retries
        self.enabled = enabled
        self.region = region

    @property
    @abc.abstractmethod
    def configured(self) -> bool:
        """Whether it has what it needs (credentials) to be called."""

    @property
    def usable(self) -> bool:
        return self.enabled and self.configured

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Build SDK clients (called once, inside the running event loop)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release SDK clients and threads."""

    @abc.abstractmethod
    async def generate(self, request: ProviderRequest, model: str, timeout: float) -> ProviderResponse:
        """One call, no retries, finished (or failed with ProviderError) within ``timeout`` seconds."""

    @abc.abstractmethod
    async def probe(self, timeout: float) -> None:
        """A health check that spends no tokens; raises ProviderError when the provider is unwell."""
