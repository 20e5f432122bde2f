"""Small helpers for reading gRPC errors in tests."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

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
    """The status, its AIP-193 details (read with grpcio-status's ``rpc_status.from_call``, which also
    checks that the details' code and message match the call's), and the pushback/request-id trailers."""
    out = ErrorDetails(code=err.code(), message=err.details() or "")
    status = rpc_status.from_call(err)
    for any_ in status.details if status is not None else ():
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
    trailers = dict(err.trailing_metadata() or ())
    out.pushback_ms = trailers.get("grpc-retry-pushback-ms")
    out.request_id = trailers.get("x-request-id")
    return out


def ask(prompt: str = "What is 25 + 75?", **kwargs: object) -> pb.GenerateRequest:
    return pb.GenerateRequest(messages=[pb.Message(role=pb.ROLE_USER, content=prompt)], **kwargs)  # type: ignore[arg-type]


@dataclass
class GatewayProcess:
    """A `python -m gateway_server` child process, its port, and the stderr lines read so far."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    port: int = 0

    async def read_until(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        assert self.proc.stderr is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stderr.readline()
                if not raw:
                    raise AssertionError("gateway exited early:\n" + "".join(self.lines))
                self.lines.append(raw.decode())
                match = re.search(pattern, self.lines[-1])
                if match:
                    return match


@asynccontextmanager
async def gateway_process(config_file: Path, *, env: dict[str, str] | None = None) -> AsyncIterator[GatewayProcess]:
    """Start the real gateway process on ``config_file`` (which should say ``port: 0``), wait until it
    listens, yield it, and make sure it is gone afterwards."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway_server", "--config", str(config_file),
        stderr=asyncio.subprocess.PIPE, cwd=config_file.parent, env={**os.environ, **(env or {})})
    gateway = GatewayProcess(proc)
    try:
        gateway.port = int((await gateway.read_until(r"on 127\.0\.0\.1:(\d+)")).group(1))
        yield gateway
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
