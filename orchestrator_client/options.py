"""``GenerateOptions``: everything :meth:`GatewayClient.generate` and :meth:`GatewayClient.stream` take
besides the prompt, in one frozen dataclass.

Both methods accept the options as keyword arguments (``client.generate("hi", max_tokens=64)``),
as an object (``client.generate("hi", options=opts)``), or both (the keywords replace the object's
fields: ``client.stream("hi", options=opts, timeout=5)``). An options object can be built once and
reused across calls and threads.

Adding a request option is a change to this class only: a field below, and its line in
:meth:`GenerateOptions.to_request` (where the field becomes part of the ``GenerateRequest``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from modelgateway.v1 import model_gateway_pb2 as pb
from orchestrator_client.content import (
    BlockLike,
    ToolChoiceLike,
    ToolLike,
    blocks_to_proto,
    tool_choice_to_proto,
    tool_to_proto,
)
from orchestrator_client.results import ChatMessage

__all__ = ["GenerateOptions", "MessageLike", "to_message"]

MessageLike: TypeAlias = (
    ChatMessage | pb.Message | tuple[str, str] | tuple[str, Sequence[BlockLike]] | Mapping[str, Any]
)

_ROLES: dict[str, pb.Role.ValueType] = {
    "user": pb.ROLE_USER,
    "human": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "ai": pb.ROLE_ASSISTANT,
}


def to_message(item: MessageLike) -> pb.Message:
    """One conversation turn as the protobuf message (roles: user/human, assistant/ai)."""
    if isinstance(item, pb.Message):
        return item
    content: str | Sequence[BlockLike]
    if isinstance(item, ChatMessage):
        role, content = item.role, item.content
    elif isinstance(item, tuple):
        role, content = item
    else:
        role, content = str(item.get("role", "user")), item.get("content", "")
    role_value = _ROLES.get(role.lower())
    if role_value is None:
        raise ValueError(f"unknown message role {role!r} (use 'user' or 'assistant')")
    if isinstance(content, str):
        return pb.Message(role=role_value, content=content)
    return pb.Message(role=role_value, blocks=blocks_to_proto(content))


@dataclass(frozen=True, kw_only=True)
class GenerateOptions:
    """The options of one ``generate``/``stream`` call.

    Request: ``messages`` (instead of a prompt string), ``system``, ``provider`` and ``model``
    (None: the client's defaults), ``max_tokens``, ``temperature``, ``top_p``, ``stop_sequences``,
    ``metadata``, ``tools``, ``tool_choice``.

    Call: ``timeout`` (the budget of the whole call, waits included; None: the client's),
    ``deadline`` (an absolute time on the client's clock that caps the budget) and ``request_id``
    (the ``x-request-id`` of every attempt; None: a new one).
    """

    messages: Sequence[MessageLike] | None = None
    system: str | None = None
    provider: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: Sequence[str] = ()
    metadata: Mapping[str, str] | None = None
    tools: Sequence[ToolLike] = ()
    tool_choice: ToolChoiceLike = None
    timeout: float | None = None
    deadline: float | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be > 0")

    @classmethod
    def build(cls, method: str, options: GenerateOptions | None, overrides: Mapping[str, Any]) -> GenerateOptions:
        """``options`` (or the defaults) with the keyword ``overrides`` of a ``method()`` call applied;
        an unknown keyword raises TypeError naming it, as a misspelt parameter would."""
        names = _FIELD_NAMES
        for name in overrides:
            if name not in names:
                raise TypeError(f"{method}() got an unexpected keyword argument {name!r}")
        if options is None:
            return cls(**overrides)
        return dataclasses.replace(options, **overrides) if overrides else options

    def to_request(
        self,
        method: str,
        prompt: str | Sequence[MessageLike] | None,
        *,
        default_provider: str | None = None,
        default_model: str | None = None,
    ) -> pb.GenerateRequest:
        """The ``GenerateRequest`` for ``prompt`` (or :attr:`messages`: exactly one of them)."""
        if (prompt is None) == (self.messages is None):
            raise TypeError(f"{method}() takes a prompt string or messages, exactly one of them")
        source = self.messages if self.messages is not None else prompt
        if isinstance(source, str):
            turns = [pb.Message(role=pb.ROLE_USER, content=source)]
        else:
            assert source is not None
            turns = [to_message(m) for m in source]
        fields: dict[str, Any] = {
            "messages": turns,
            "system": self.system or "",
            "provider": self.provider or default_provider or "",
            "model": self.model or default_model or "",
            "max_tokens": self.max_tokens or 0,
        }
        if self.temperature is not None:
            fields["temperature"] = self.temperature
        if self.top_p is not None:
            fields["top_p"] = self.top_p
        if self.stop_sequences:
            fields["stop_sequences"] = list(self.stop_sequences)
        if self.metadata:
            fields["metadata"] = dict(self.metadata)
        if self.tools:
            fields["tools"] = [tool_to_proto(t) for t in self.tools]
        choice = tool_choice_to_proto(self.tool_choice)
        if choice is not None:
            fields["tool_choice"] = choice
        return pb.GenerateRequest(**fields)


_FIELD_NAMES: frozenset[str] = frozenset(f.name for f in dataclasses.fields(GenerateOptions))
