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
    dict_to_struct,
    tool_choice_to_proto,
    tool_to_proto,
)
from orchestrator_client.results import ChatMessage

__all__ = ["GenerateOptions", "MessageLike", "ThinkingLike", "thinking_to_proto", "to_message"]

ThinkingLike: TypeAlias = int | str | None
"""Extended thinking: a budget in tokens (>= 1024, below max_tokens), "adaptive" (the model decides),
"disabled", or None (the provider's default: off)."""


def thinking_to_proto(thinking: ThinkingLike) -> pb.ThinkingConfig | None:
    if thinking is None:
        return None
    if isinstance(thinking, bool):
        raise TypeError("thinking is a token budget, 'adaptive' or 'disabled', not a bool")
    if isinstance(thinking, int):
        return pb.ThinkingConfig(mode=pb.THINKING_MODE_ENABLED, budget_tokens=thinking)
    modes = {"adaptive": pb.THINKING_MODE_ADAPTIVE, "disabled": pb.THINKING_MODE_DISABLED}
    if thinking.lower() not in modes:
        raise ValueError(f"unknown thinking {thinking!r} (a token budget, 'adaptive' or 'disabled')")
    return pb.ThinkingConfig(mode=modes[thinking.lower()])

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

    Request: ``messages`` (instead of a prompt string), ``system`` (text, or text blocks that may
    carry cache breakpoints), ``provider`` and ``model`` (None: the client's defaults),
    ``max_tokens``, ``temperature``, ``top_p``, ``stop_sequences``, ``metadata``, ``tools``,
    ``tool_choice``, ``thinking`` (a token budget, "adaptive" or "disabled"), ``output_schema``
    (structured output: a JSON schema of an object the answer's text must match; named
    ``output_schema_name``).

    Call: ``timeout`` (the budget of the whole call, waits included; None: the client's),
    ``deadline`` (an absolute time on the client's clock that caps the budget) and ``request_id``
    (the ``x-request-id`` of every attempt; None: a new one).
    """

    messages: Sequence[MessageLike] | None = None
    system: str | Sequence[BlockLike] | None = None
    provider: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: Sequence[str] = ()
    metadata: Mapping[str, str] | None = None
    tools: Sequence[ToolLike] = ()
    tool_choice: ToolChoiceLike = None
    thinking: ThinkingLike = None
    output_schema: Mapping[str, Any] | None = None
    output_schema_name: str = ""
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
        if isinstance(self.system, str):
            fields["system"] = self.system
        elif self.system is not None:
            fields["system_blocks"] = blocks_to_proto(self.system)
        thinking = thinking_to_proto(self.thinking)
        if thinking is not None:
            fields["thinking"] = thinking
        if self.output_schema is not None:
            output = pb.OutputFormat(name=self.output_schema_name)
            dict_to_struct(self.output_schema, output.json_schema)
            fields["output_format"] = output
        return pb.GenerateRequest(**fields)

    def to_count_request(
        self,
        method: str,
        prompt: str | Sequence[MessageLike] | None,
        *,
        default_provider: str | None = None,
        default_model: str | None = None,
    ) -> pb.CountTokensRequest:
        """The ``CountTokensRequest`` of the conversation :meth:`to_request` would send."""
        request = self.to_request(method, prompt, default_provider=default_provider, default_model=default_model)
        count = pb.CountTokensRequest(messages=request.messages, system=request.system, provider=request.provider,
                                      model=request.model, tools=request.tools, system_blocks=request.system_blocks,
                                      metadata=request.metadata)
        if request.HasField("tool_choice"):
            count.tool_choice.CopyFrom(request.tool_choice)
        if request.HasField("thinking"):
            count.thinking.CopyFrom(request.thinking)
        return count


_FIELD_NAMES: frozenset[str] = frozenset(f.name for f in dataclasses.fields(GenerateOptions))
