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
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from orchestrator_client.client import GatewayClient
from orchestrator_client.results import GenerateResult
from orchestrator_client.settings import GatewaySettings, OrchestratorConfig, load_config
from orchestrator_client.stats import ClientStats, StatsSnapshot

__all__ = ["GatewayReasoner"]


class GatewayReasoner:
    """Answers the orchestrator's queries through the Model Gateway, with retries and statistics."""

    def __init__(
        self,
        settings: GatewaySettings | OrchestratorConfig | None = None,
        *,
        client: GatewayClient | None = None,
        system_prompt: str | None = None,
        **client_options: Any,
    ) -> None:
        if isinstance(settings, OrchestratorConfig):
            settings = settings.gateway
        self.settings = settings if settings is not None else GatewaySettings()
        if client is None:
            client = GatewayClient.from_settings(self.settings, **client_options)
        self.client = client
        self.system_prompt = system_prompt

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
    ) -> GenerateResult:
        """The full typed result (provider, usage, attempts, request id) for ``query``."""
        return await self.client.generate(
            query,
            system=self._system(context),
            timeout=timeout,
            deadline=deadline,
            metadata=metadata,
        )

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
