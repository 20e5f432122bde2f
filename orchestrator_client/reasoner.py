"""``GatewayReasoner``: the orchestrator-facing adapter over :class:`GatewayClient`.

Built from the orchestrator configuration (``config/orchestrator.gateway.yaml``)::

    reasoner = GatewayReasoner.from_config("config/orchestrator.gateway.yaml")
    async with reasoner:
        answer = await reasoner.reason("What is 25 + 75?")   # "100"
    print(f"Total Requests: {reasoner.total_requests}")
    print(f"Total Failures: {reasoner.total_failures}")
    print(f"Consecutive Failures: {reasoner.consecutive_failures}")

The query is sent verbatim as the single user message; a ``context`` mapping is rendered as
JSON into the system prompt. Failures raise :class:`~orchestrator_client.errors.GatewayError`.
The statistics count the model calls (``reason*``, and ``generate``/``stream`` on ``client``);
health probes through ``reasoner.client.health()`` do not count.

Tool use: :meth:`GatewayReasoner.reason_with_tools` runs the model's tool calls through a
callback and sends their results back until the model answers::

    calculator = ToolSpec("calculator", "Evaluates arithmetic.",
                          {"type": "object", "properties": {"expression": {"type": "string"}},
                           "required": ["expression"]})
    answer = await reasoner.reason_with_tools(
        "Please use the tool to compute 25 + 75", {"calculator": calculator},
        lambda name, args: str(eval_arithmetic(args["expression"])))

Extended thinking: ``GatewayReasoner(..., thinking=2048)`` (a token budget, or "adaptive") turns it on
for every call; :meth:`GatewayReasoner.reason_with_thinking` returns the answer with the model's
reasoning beside it, and ``reason_with_tools`` sends the thinking blocks back with the tool results
as the providers require::

    reasoned = await reasoner.reason_with_thinking("Is 1001 prime?", thinking=2048)
    print(reasoned.thinking, "->", reasoned.answer)
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeAlias

from orchestrator_client.client import GatewayClient, MessageLike
from orchestrator_client.content import TextBlock, ToolChoiceLike, ToolResultBlock, ToolSpec
from orchestrator_client.errors import ToolRoundsExceededError
from orchestrator_client.options import ThinkingLike
from orchestrator_client.results import ChatMessage, GenerateResult
from orchestrator_client.settings import GatewaySettings, OrchestratorConfig, load_config
from orchestrator_client.stats import ClientStats, StatsSnapshot

__all__ = ["GatewayReasoner", "Reasoned", "ToolRunner"]

logger = logging.getLogger("orchestrator_client")

ToolRunner: TypeAlias = Callable[[str, dict[str, Any]], Awaitable[Any] | Any]
"""``run_tool(name, input)``: the tool's result as text (or an awaitable of it); raise on failure."""


@dataclass(frozen=True, slots=True)
class Reasoned:
    """An answer with the model's reasoning (``thinking``: "" when the model did not think)."""

    answer: str
    thinking: str
    result: GenerateResult


class GatewayReasoner:
    """Answers the orchestrator's queries through the Model Gateway, with retries and statistics.

    ``thinking`` (a token budget, "adaptive" or None) applies extended thinking to every call."""

    def __init__(
        self,
        settings: GatewaySettings | OrchestratorConfig | None = None,
        *,
        client: GatewayClient | None = None,
        system_prompt: str | None = None,
        thinking: ThinkingLike = None,
        **client_options: Any,
    ) -> None:
        if isinstance(settings, OrchestratorConfig):
            settings = settings.gateway
        self.settings = settings if settings is not None else GatewaySettings()
        if client is None:
            client = GatewayClient.from_settings(self.settings, **client_options)
        self.client = client
        self.system_prompt = system_prompt
        self.thinking = thinking

    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str] | None = None, **options: Any
    ) -> GatewayReasoner:
        """A reasoner from the YAML file (and ``ORCHESTRATOR_GATEWAY_*`` overrides)."""
        return cls(load_config(path), **options)

    # ------------------------------------------------------------------ reasoning

    def _system(self, context: Mapping[str, Any] | str | None) -> str | None:
        if context is None or context == {}:
            return self.system_prompt
        rendered = context if isinstance(context, str) else json.dumps(context, default=str, sort_keys=True)
        block = f"Context:\n{rendered}"
        return f"{self.system_prompt}\n\n{block}" if self.system_prompt else block

    async def reason_with_result(
        self,
        query: str,
        context: Mapping[str, Any] | str | None = None,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        metadata: Mapping[str, str] | None = None,
        thinking: ThinkingLike = None,
    ) -> GenerateResult:
        """The full typed result (provider, usage, attempts, request id) for ``query``; ``thinking``
        overrides the reasoner's."""
        return await self.client.generate(
            query,
            system=self._system(context),
            timeout=timeout,
            deadline=deadline,
            metadata=metadata,
            thinking=thinking if thinking is not None else self.thinking,
        )

    async def reason_with_thinking(
        self,
        query: str,
        context: Mapping[str, Any] | str | None = None,
        *,
        thinking: ThinkingLike = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Reasoned:
        """The answer to ``query`` and the model's reasoning: ``thinking`` is a token budget (at least
        1024, below ``max_tokens``) or "adaptive"; default: the reasoner's, else "adaptive"."""
        result = await self.client.generate(
            query,
            system=self._system(context),
            timeout=timeout,
            deadline=deadline,
            max_tokens=max_tokens,
            thinking=thinking if thinking is not None else (self.thinking or "adaptive"),
        )
        return Reasoned(answer=result.content.strip(), thinking=result.thinking, result=result)

    async def reason(
        self,
        query: str,
        context: Mapping[str, Any] | str | None = None,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> str:
        """The model's answer to ``query`` (``context`` goes into the system prompt)."""
        result = await self.reason_with_result(query, context, timeout=timeout, deadline=deadline)
        return result.content.strip()

    async def reason_with_tools(
        self,
        query: str,
        tools: Mapping[str, ToolSpec] | Sequence[ToolSpec],
        run_tool: ToolRunner,
        *,
        context: Mapping[str, Any] | str | None = None,
        max_rounds: int = 4,
        tool_choice: ToolChoiceLike = None,
        timeout: float | None = None,
        deadline: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Answer ``query`` letting the model call ``tools``; returns the final answer's text.

        Sends the query with the tools. While the answer's ``finish_reason`` is ``"tool_use"``,
        runs each of its tool calls, in order, through ``run_tool(name, input)`` (a function or a
        coroutine function returning the result as text; other values are sent as JSON), appends
        the assistant's answer (its text and tool_use blocks) and a user message with one
        tool_result block per call, and asks again. A call that raises is reported to the model
        as ``is_error=True`` with the exception's text; a call of a tool not in ``tools`` is
        reported as an error without calling ``run_tool``.

        ``max_rounds`` bounds the tool rounds (so the model is asked at most ``max_rounds + 1``
        times); when the model still asks for tools after them,
        :class:`~orchestrator_client.errors.ToolRoundsExceededError` is raised. ``timeout`` is
        the budget of each model call, ``deadline`` (client clock) bounds them all; the
        ``tool_choice`` applies to the first call only (later calls use the default, auto, so a
        forced choice cannot loop). Gateway failures raise
        :class:`~orchestrator_client.errors.GatewayError`.
        """
        if max_rounds < 0:
            raise ValueError("max_rounds must be >= 0")
        specs = _tool_specs(tools)
        known = {spec.name for spec in specs}
        messages: list[MessageLike] = [ChatMessage("user", query)]
        system = self._system(context)
        choice = tool_choice
        rounds = 0
        while True:
            result = await self.client.generate(
                messages=messages,
                system=system,
                tools=specs,
                tool_choice=choice,
                timeout=timeout,
                deadline=deadline,
                metadata=metadata,
                thinking=self.thinking,
            )
            calls = result.tool_calls
            if result.finish_reason != "tool_use" or not calls:
                return result.content.strip()
            if rounds >= max_rounds:
                raise ToolRoundsExceededError(max_rounds, list(messages), result)
            rounds += 1
            choice = None
            outputs: list[ToolResultBlock] = []
            for tool_call in calls:
                if tool_call.name not in known:
                    outputs.append(ToolResultBlock(tool_call.id, f"unknown tool {tool_call.name!r}", is_error=True))
                    continue
                try:
                    output = run_tool(tool_call.name, dict(tool_call.input))
                    if inspect.isawaitable(output):
                        output = await output
                except Exception as exc:  # the tool failed: tell the model, let it decide
                    logger.info("Tool %s failed (round %d): %s: %s", tool_call.name, rounds, type(exc).__name__, exc)
                    outputs.append(ToolResultBlock(tool_call.id, str(exc) or type(exc).__name__, is_error=True))
                    continue
                outputs.append(ToolResultBlock(tool_call.id, _as_text(output)))
            answer = tuple(b for b in result.blocks if not (isinstance(b, TextBlock) and not b.text))
            messages.append(ChatMessage("assistant", answer))
            messages.append(ChatMessage("user", tuple(outputs)))

    # ------------------------------------------------------------------ statistics

    @property
    def stats(self) -> ClientStats:
        return self.client.stats

    @property
    def total_requests(self) -> int:
        return self.client.stats.total_requests

    @property
    def total_failures(self) -> int:
        return self.client.stats.total_failures

    @property
    def consecutive_failures(self) -> int:
        return self.client.stats.consecutive_failures

    @property
    def total_retries(self) -> int:
        return self.client.stats.total_retries

    @property
    def success_rate(self) -> float:
        return self.client.stats.success_rate

    def statistics(self) -> StatsSnapshot:
        return self.client.stats.snapshot()

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> Self:
        await self.client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"GatewayReasoner(client={self.client!r})"


def _tool_specs(tools: Mapping[str, ToolSpec] | Sequence[ToolSpec]) -> list[ToolSpec]:
    if isinstance(tools, Mapping):
        specs = []
        for name, spec in tools.items():
            if spec.name != name:
                raise ValueError(f"tool {name!r} is registered under another name than its ToolSpec's ({spec.name!r})")
            specs.append(spec)
        return specs
    return list(tools)


def _as_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return json.dumps(output, default=str)
