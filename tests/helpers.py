"""Small helpers for reading gRPC errors in tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2

from modelgateway.v1 import model_gateway_pb2 as pb


@dataclass
class ErrorDetails:
    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_delay_ms: int | None = None
    pushback_ms: str | None = None
    field_violations: list[str] = field(default_factory=list)
    request_id: str | None = None


def error_details(err: grpc.aio.AioRpcError) -> ErrorDetails:
    out = ErrorDetails(code=err.code(), message=err.details() or "")
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for any_ in status.details:
                if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    any_.Unpack(info)
                    out.reason, out.domain, out.metadata = info.reason, info.domain, dict(info.metadata)
                elif any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    retry = error_details_pb2.RetryInfo()
                    any_.Unpack(retry)
                    out.retry_delay_ms = retry.retry_delay.ToMilliseconds()
                elif any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    any_.Unpack(bad)
                    out.field_violations = [v.field for v in bad.field_violations]
        elif key == "grpc-retry-pushback-ms":
            out.pushback_ms = value
        elif key == "x-request-id":
            out.request_id = value
    return out


def ask(prompt: str = "What is 25 + 75?", **kwargs: object) -> pb.GenerateRequest:
    return pb.GenerateRequest(messages=[pb.Message(role=pb.ROLE_USER, content=prompt)], **kwargs)  # type: ignore[arg-type]
