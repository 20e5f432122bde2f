"""A small scripted, fault-injecting ModelGateway server for the client's tests.

Each RPC takes the next step of a script; when the script is empty it answers normally
(Generate answers "100" to any prompt, or the ``default_content``). Steps:

* ``Fail(code, ...)``: abort with ``code``, optional ErrorInfo reason/metadata, RetryInfo delay
  and ``grpc-retry-pushback-ms`` trailer;
* ``Hang()``: never answer; ``hang_started`` is set when it begins and ``hang_cancelled``
  when the client gives up (deadline or cancellation);
* ``Reply(content)``: answer with that content;
* ``CallTool(name, input)``: Generate answers with a tool call (finish reason tool_use).

GenerateStream plays the same steps (``Fail`` before any event, ``Hang`` before any event,
``Reply``: start, one delta per word, end) and three of its own, each after a start event and
``after`` word deltas: ``Interrupt`` aborts with its code (no end event), ``Stall`` hangs (as
``Hang``), ``Truncate`` ends the call OK without an end event. ``delta_sent`` is set after each
delta, and ``stall_started`` when a ``Stall`` begins to wait.

Every call is recorded (method, metadata, peer, request, arrival time, ``done`` from the server
context's done callback, and ``cancelled`` when the server-side handler of a GenerateStream was
cancelled, by the client or its deadline, which also sets ``call_cancelled``); ``call_arrived`` is
set on each call so tests wait on events, not on sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc


@dataclass
class Fail:
    code: grpc.StatusCode
    message: str = "injected failure"
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_delay: float | None = None  # google.rpc.RetryInfo, seconds
    pushback_ms: int | str | None = None  # grpc-retry-pushback-ms trailer
    times: int = 1


@dataclass
class Hang:
    times: int = 1


@dataclass
class Reply:
    content: str = "100"
    times: int = 1


@dataclass
class Interrupt:
    """GenerateStream: start, ``after`` word deltas of ``content``, then abort with ``code``."""

    after: int = 1
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    message: str = "injected: the provider's stream broke"
    reason: str = "STREAM_INTERRUPTED"
    content: str = "one two three four"
    times: int = 1


@dataclass
class Stall:
    """GenerateStream: start, ``after`` word deltas of ``content``, then never another event."""

    after: int = 1
    content: str = "one two three four"
    times: int = 1


@dataclass
class Truncate:
    """GenerateStream: start, ``after`` word deltas of ``content``, then end OK without an end event."""

    after: int = 1
    content: str = "one two three four"
    times: int = 1


@dataclass
class CallTool:
    """Generate: answer with a text block ``text`` (when set) and a tool call, finish reason tool_use."""

    name: str = "calculator"
    input: dict[str, Any] = field(default_factory=lambda: {"expression": "25 + 75"})
    id: str = "toolu_fault_1"
    text: str = ""
    times: int = 1


Step = Fail | Hang | Reply | Interrupt | Stall | Truncate | CallTool


@dataclass
class CallRecord:
    method: str
    metadata: dict[str, str]
    peer: str
    request: Any
    at: float
    time_remaining: float | None  # the call's gRPC deadline as the server sees it, in seconds
    cancelled: bool = False  # the call ended cancelled (client cancel or deadline), seen by the server
    done: bool = False


class FaultServicer(pb_grpc.ModelGatewayServicer):  # type: ignore[misc]
    def __init__(self, name: str = "fault") -> None:
        self.name = name
        self.script: deque[Step] = deque()
        self.calls: list[CallRecord] = []
        self.call_arrived = asyncio.Event()
        self.hang_started = asyncio.Event()
        self.hang_cancelled = asyncio.Event()
        self.call_cancelled = asyncio.Event()
        self.call_done = asyncio.Event()
        self.delta_sent = asyncio.Event()
        self.stall_started = asyncio.Event()
        self.default_content = "100"
        self.health_status: int = pb.HEALTH_STATUS_DEGRADED

    # ---------------------------------------------------------------- scripting

    def then(self, *steps: Step) -> FaultServicer:
        for step in steps:
            for _ in range(step.times):
                self.script.append(step)
        return self

    def fail(self, times: int, code: grpc.StatusCode, **kwargs: Any) -> FaultServicer:
        return self.then(Fail(code, times=times, **kwargs))

    def hang(self, times: int = 1) -> FaultServicer:
        return self.then(Hang(times=times))

    @property
    def count(self) -> int:
        return len(self.calls)

    def calls_to(self, method: str) -> list[CallRecord]:
        return [c for c in self.calls if c.method == method]

    # ---------------------------------------------------------------- RPCs

    def _record(self, method: str, request: Any, context: aio.ServicerContext) -> CallRecord:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        record = CallRecord(method, metadata, context.peer(), request, time.monotonic(), context.time_remaining())
        self.calls.append(record)

        def done(ctx: aio.ServicerContext) -> None:
            record.done = True
            self.call_done.set()
            if ctx.cancelled():
                record.cancelled = True
                self.call_cancelled.set()

        context.add_done_callback(done)
        self.call_arrived.set()
        return record

    async def _hang(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.hang_cancelled.set()
            raise

    async def _step(self, method: str, request: Any, context: aio.ServicerContext) -> Reply | CallTool | None:
        """Record the call and play the next step; returns a Reply or CallTool step, if any."""
        self._record(method, request, context)
        if not self.script:
            return None
        step = self.script.popleft()
        if isinstance(step, Reply | CallTool):
            return step
        if isinstance(step, Hang):
            self.hang_started.set()
            await self._hang()
        assert isinstance(step, Fail), f"{step!r} is a GenerateStream step"
        await self._abort(step, context)
        return None

    async def _abort(self, step: Fail, context: aio.ServicerContext) -> None:
        trailers: list[tuple[str, str | bytes]] = []
        status = status_pb2.Status(code=step.code.value[0], message=step.message)
        if step.reason:
            info = error_details_pb2.ErrorInfo(
                reason=step.reason, domain="modelgateway", metadata=step.metadata
            )
            packed = any_pb2.Any()
            packed.Pack(info)
            status.details.append(packed)
        if step.retry_delay is not None:
            seconds = int(step.retry_delay)
            nanos = round((step.retry_delay - seconds) * 1e9)
            delay = duration_pb2.Duration(seconds=seconds, nanos=nanos)
            retry = error_details_pb2.RetryInfo(retry_delay=delay)
            packed = any_pb2.Any()
            packed.Pack(retry)
            status.details.append(packed)
        if status.details:
            trailers.extend(rpc_status.to_status(status).trailing_metadata)
        if step.pushback_ms is not None:
            trailers.append(("grpc-retry-pushback-ms", str(step.pushback_ms)))
        await context.abort(step.code, step.message, trailing_metadata=tuple(trailers))

    async def Generate(
        self, request: pb.GenerateRequest, context: aio.ServicerContext
    ) -> pb.GenerateResponse:
        step = await self._step("Generate", request, context)
        content = step.content if isinstance(step, Reply) else self.default_content
        metadata = dict(context.invocation_metadata() or ())
        blocks: list[pb.ContentBlock] = []
        finish, stop = pb.FINISH_REASON_END_TURN, "end_turn"
        if isinstance(step, CallTool):
            content = step.text
            if step.text:
                blocks.append(pb.ContentBlock(text=pb.TextBlock(text=step.text)))
            use = pb.ToolUseBlock(id=step.id, name=step.name)
            use.input.update(step.input)
            blocks.append(pb.ContentBlock(tool_use=use))
            finish, stop = pb.FINISH_REASON_TOOL_USE, "tool_use"
        return pb.GenerateResponse(
            content=content,
            blocks=blocks,
            model=request.model or "fault-model-1",
            provider=request.provider or self.name,
            usage=pb.Usage(input_tokens=7, output_tokens=1, total_tokens=8),
            finish_reason=finish,
            latency_ms=0.5,
            request_id=str(metadata.get("x-request-id", "")),
            attempts=[
                pb.Attempt(
                    provider=request.provider or self.name,
                    model=request.model or "fault-model-1",
                    outcome=pb.ATTEMPT_OUTCOME_OK,
                    latency_ms=0.4,
                )
            ],
            stop_reason=stop,
        )

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        record = self._record("GenerateStream", request, context)
        try:
            async for message in self._stream(request, context):
                yield message
        except (asyncio.CancelledError, GeneratorExit):
            record.cancelled = True
            self.call_cancelled.set()
            raise

    async def _stream(
        self, request: pb.GenerateRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        step = self.script.popleft() if self.script else None
        if isinstance(step, Fail):
            await self._abort(step, context)
            return
        if isinstance(step, Hang):
            self.hang_started.set()
            await self._hang()
        content = step.content if isinstance(step, Reply | Interrupt | Stall | Truncate) else self.default_content
        words = content.split(" ")
        if isinstance(step, Interrupt | Stall | Truncate):
            words = words[: step.after]
        metadata = dict(context.invocation_metadata() or ())
        provider = request.provider or self.name
        model = request.model or "fault-model-1"
        yield pb.GenerateStreamResponse(start=pb.StreamStart(
            provider=provider, model=model, request_id=str(metadata.get("x-request-id", ""))))
        for n, word in enumerate(words):
            yield pb.GenerateStreamResponse(delta=pb.ContentDelta(index=0, text=word if n == 0 else " " + word))
            self.delta_sent.set()
        if isinstance(step, Interrupt):
            await self._abort(Fail(step.code, step.message, reason=step.reason), context)
            return
        if isinstance(step, Stall):
            self.stall_started.set()
            await self._hang()
        if isinstance(step, Truncate):
            return
        yield pb.GenerateStreamResponse(end=pb.StreamEnd(
            finish_reason=pb.FINISH_REASON_END_TURN, stop_reason="end_turn",
            usage=pb.Usage(input_tokens=7, output_tokens=len(words), total_tokens=7 + len(words)),
            attempts=[pb.Attempt(provider=provider, model=model, outcome=pb.ATTEMPT_OUTCOME_OK, latency_ms=0.4)],
            latency_ms=0.5, first_token_ms=0.2))

    async def Health(self, request: pb.HealthRequest, context: aio.ServicerContext) -> pb.HealthResponse:
        await self._step("Health", request, context)
        response = pb.HealthResponse(
            status=self.health_status,  # type: ignore[arg-type]
            providers=[
                pb.ProviderHealth(name="mock", status=pb.PROVIDER_STATUS_HEALTHY, latency_ms=1.5,
                                  default_model="mock-1", type="mock"),
                pb.ProviderHealth(name="bedrock", status=pb.PROVIDER_STATUS_UNCONFIGURED,
                                  default_model="claude", region="us-east-1", type="bedrock",
                                  last_error="no credentials"),
            ],
        )
        response.timestamp.GetCurrentTime()
        response.providers[0].checked_at.GetCurrentTime()
        return response

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: aio.ServicerContext
    ) -> pb.ListProvidersResponse:
        await self._step("ListProviders", request, context)
        return pb.ListProvidersResponse(
            providers=[
                pb.ProviderInfo(name="mock", type="mock", models=["mock-1", "mock-2"], default_model="mock-1",
                                enabled=True, configured=True),
                pb.ProviderInfo(name="bedrock", type="bedrock", models=["claude"], default_model="claude",
                                region="us-east-1", enabled=True, configured=False),
            ],
            default_provider="mock",
            fallback_order=["mock", "bedrock"],
        )

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: aio.ServicerContext
    ) -> pb.GetStatusResponse:
        await self._step("GetStatus", request, context)
        return pb.GetStatusResponse(
            service="Model Gateway", version="0.1.0-fault", status="running",
            providers=["mock", "bedrock"], default_provider="mock",
        )


class FaultServer:
    """A running grpc.aio server around a FaultServicer on 127.0.0.1:<random port>."""

    def __init__(self, name: str = "fault") -> None:
        self.servicer = FaultServicer(name)
        self.server: aio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0, credentials: grpc.ServerCredentials | None = None) -> FaultServer:
        self.server = aio.server()
        pb_grpc.add_ModelGatewayServicer_to_server(self.servicer, self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        else:
            self.port = self.server.add_secure_port(f"127.0.0.1:{port}", credentials)
        await self.server.start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None
