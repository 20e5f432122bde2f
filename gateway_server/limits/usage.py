"""GetUsage's answer from the limiter's reports."""

from __future__ import annotations

import time

from google.protobuf import timestamp_pb2

from gateway_server.limits.limiter import KeyReport
from modelgateway.v1 import model_gateway_pb2 as pb


def _period(label: str, counts: dict[str, float]) -> pb.UsagePeriod:
    return pb.UsagePeriod(period=label, requests=int(counts.get("req", 0)), input_tokens=int(counts.get("in", 0)),
                          output_tokens=int(counts.get("out", 0)), spend_usd=counts.get("usd", 0.0))


def usage_response(reports: list[KeyReport], available: bool, backend: str) -> pb.GetUsageResponse:
    read_at = timestamp_pb2.Timestamp()
    read_at.FromNanoseconds(time.time_ns())
    keys = [
        pb.KeyUsage(
            name=r.caller.name, team=r.caller.team,
            minute=_period(r.periods.minute, r.minute), day=_period(r.periods.day, r.day),
            month=_period(r.periods.month, r.month),
            limits=[pb.LimitStatus(name=name, limit=limit, remaining=remaining) for name, limit, remaining in r.limits],
            in_flight=r.in_flight)
        for r in reports
    ]
    return pb.GetUsageResponse(keys=keys, backend=backend, backend_available=available, read_at=read_at)
