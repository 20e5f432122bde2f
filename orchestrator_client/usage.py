"""GetUsage's answer as typed results: each API key's requests, tokens, spend, limits and what remains."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from modelgateway.v1 import model_gateway_pb2 as pb

__all__ = ["KeyUsage", "LimitStatus", "UsagePeriod", "UsageReport"]


@dataclass(frozen=True, slots=True)
class UsagePeriod:
    period: str  # "2026-12-02T01:07", "2026-12-02" or "2026-12" (UTC)
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    spend_usd: float = 0.0

    @classmethod
    def from_proto(cls, msg: pb.UsagePeriod) -> UsagePeriod:
        return cls(msg.period, msg.requests, msg.input_tokens, msg.output_tokens, msg.spend_usd)


@dataclass(frozen=True, slots=True)
class LimitStatus:
    name: str  # requests_per_minute, tokens_per_minute, max_concurrent, daily_usd, monthly_usd
    limit: float
    remaining: float


@dataclass(frozen=True, slots=True)
class KeyUsage:
    name: str
    team: str
    minute: UsagePeriod
    day: UsagePeriod
    month: UsagePeriod
    limits: tuple[LimitStatus, ...] = ()
    in_flight: int = 0

    @classmethod
    def from_proto(cls, msg: pb.KeyUsage) -> KeyUsage:
        return cls(name=msg.name, team=msg.team, minute=UsagePeriod.from_proto(msg.minute),
                   day=UsagePeriod.from_proto(msg.day), month=UsagePeriod.from_proto(msg.month),
                   limits=tuple(LimitStatus(x.name, x.limit, x.remaining) for x in msg.limits),
                   in_flight=msg.in_flight)


@dataclass(frozen=True, slots=True)
class UsageReport:
    keys: tuple[KeyUsage, ...]
    backend: str  # "memory" or "redis"
    backend_available: bool
    read_at: _dt.datetime | None = None

    @classmethod
    def from_proto(cls, msg: pb.GetUsageResponse) -> UsageReport:
        read_at = msg.read_at.ToDatetime(tzinfo=_dt.UTC) if msg.HasField("read_at") else None
        return cls(keys=tuple(KeyUsage.from_proto(k) for k in msg.keys), backend=msg.backend,
                   backend_available=msg.backend_available, read_at=read_at)
