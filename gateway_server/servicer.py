"""The ModelGateway gRPC servicer: validation in, router, response out, one log line per request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from gateway_server import __version__
from gateway_server.auth import KeyRing, Scope, current_caller
from gateway_server.errors import GatewayError
from gateway_server.health import HealthMonitor
from gateway_server.ids import new_id
from gateway_server.limits import CallQuota, Limiter, MemoryBackend
from gateway_server.limits.usage import usage_response
from gateway_server.logging_setup import structured
from gateway_server.observe import CallObserver, CallRecord
from gateway_server.pricing import PriceTable
from gateway_server.providers import Provider, ProviderRequest
from gateway_server.providers.base import (
    AnswerPart,
    RedactedThinkingDelta,
    RedactedThinkingPart,
    SignatureDelta,
    StreamDone,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolUseDelta,
    ToolUsePart,
)
from gateway_server.router import Router, StreamStarted
from gateway_server.settings import GatewaySettings
from gateway_server.tls import CALLER_IDENTITY
from gateway_server.validation import validate_count, validate_generate
from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc

log = logging.getLogger("gateway_server.requests")

SERVICE_NAME = "Model Gateway"
REQUEST_ID_HEADER = "x-request-id"
_Request = pb.GenerateRequest | pb.CountTokensRequest
_MAX_REQUEST_ID = 128
_GENERATE = f"{pb.DESCRIPTOR.services_by_name['ModelGateway'].full_name}/Generate"
_GENERATE_STREAM = f"{pb.DESCRIPTOR.services_by_name['ModelGateway'].full_name}/GenerateStream"
_COUNT_TOKENS = f"{pb.DESCRIPTOR.services_by_name['ModelGateway'].full_name}/CountTokens"


def _caller(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, str, str]:
    """(request id, W3C traceparent, tracestate) from the call's metadata, in one pass.
    (Who calls: auth.current_caller(), set by auth.AuthInterceptor.)"""
    request_id = traceparent = tracestate = ""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= _MAX_REQUEST_ID \
                and value.isprintable():
            request_id = value
        elif key == "traceparent" and isinstance(value, str):
            traceparent = value
        elif key == "tracestate" and isinstance(value, str):
            tracestate = value
    return request_id or new_id(), traceparent, tracestate


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


class ModelGatewayServicer(pb_grpc.ModelGatewayServicer):
    def __init__(self, settings: GatewaySettings, providers: Mapping[str, Provider], router: Router,
                 health: HealthMonitor, observer: CallObserver | None = None, limiter: Limiter | None = None) -> None:
        self._settings = settings
        self._providers = providers
        self._router = router
        self._health = health
        self._limits = settings.limits
        self._max_request_bytes = settings.server.max_request_bytes
        self.draining = False
        self.worker_id = 0  # this process's index under the supervisor (gateway_server.workers)
        # API keys are checked by auth.AuthInterceptor, before any of these methods runs.
        self._limiter = limiter or Limiter(settings, MemoryBackend(), KeyRing(()), Scope(router.default_provider, {}))
        self._observer = observer if observer is not None else CallObserver(
            provider_types={n: p.type for n, p in providers.items()}, prices=PriceTable(settings.pricing),
            metrics=None, tracer=None)
        self._provider_infos = [
            pb.ProviderInfo(name=name, type=p.type, models=list(p.models), default_model=p.default_model,
                            region=p.region, enabled=p.enabled, configured=p.configured)
            for name, p in providers.items()
        ]

    def _prepare(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any],
                 call: CallRecord) -> tuple[ProviderRequest, float | None]:
        """Validate and resolve the deadline (an event-loop time), or raise GatewayError."""
        provider_request = validate_generate(request, self._limits, self._max_request_bytes)
        self._router.check_target(request.provider, request.model)
        if self._observer.record_content:
            call.input_messages = _content_of(request)
        remaining = context.time_remaining()
        call.routing()
        return provider_request, None if remaining is None else asyncio.get_running_loop().time() + remaining

    def _prepare_count(self, request: pb.CountTokensRequest,
                       context: grpc.aio.ServicerContext[Any, Any]) -> tuple[ProviderRequest, float | None]:
        provider_request = validate_count(request, self._limits, self._max_request_bytes)
        self._router.check_target(request.provider, request.model)
        remaining = context.time_remaining()
        return provider_request, None if remaining is None else asyncio.get_running_loop().time() + remaining

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], request_id: str, request: _Request,
                     err: GatewayError | None, started: float, call: CallRecord, quota: CallQuota | None = None
                     ) -> None:
        """End the call with the error's status and details; None: a gateway bug (INTERNAL, no traceback)."""
        if err is None:
            log.exception("request_id=%s outcome=bug: unexpected failure", request_id)
            err = GatewayError(grpc.StatusCode.INTERNAL, "INTERNAL",
                               f"internal gateway error (request_id {request_id})")
            call.failed(err.code.name, ())
            self._observer.finish(call)
        else:
            self._log_failure(request_id, request, err, started, call)
        quota_trailers: tuple[tuple[str, str], ...] = ()
        if quota is not None:
            await quota.release()
            quota_trailers = quota.trailers()
        await context.abort(err.code, err.message,
                            trailing_metadata=((REQUEST_ID_HEADER, request_id), *err.trailing_metadata(),
                                               *quota_trailers))

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext[pb.GenerateRequest, pb.GenerateResponse]
    ) -> pb.GenerateResponse:
        started = time.perf_counter()
        request_id, traceparent, tracestate = _caller(context)
        call = self._observer.start(_GENERATE, request_id, request.model, traceparent, tracestate)
        caller = current_caller()
        call.caller = caller.name
        quota = self._limiter.call(caller, context)
        try:
            provider_request, deadline = self._prepare(request, context, call)
            await quota.admit(provider_request, request.provider, request.model)
            result = await self._router.generate(provider_request, provider=request.provider,
                                                 model=request.model, deadline=deadline, admit=quota.admit_provider)
        except GatewayError as err:
            await self._abort(context, request_id, request, quota.explain(err), started, call, quota)
            raise  # unreachable: abort raises
        except asyncio.CancelledError:
            self._cancelled(call)
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            await self._abort(context, request_id, request, None, started, call, quota)
            raise
        r = result.response
        await quota.settle(result.provider, r.model, r.input_tokens, r.output_tokens)
        trailers = quota.trailers()
        if trailers:
            context.set_trailing_metadata(trailers)
        usage = _usage(r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_creation_tokens)
        total = usage.total_tokens
        call.provider, call.attempts, call.finish_reason = result.provider, result.attempts, r.finish_reason
        usage.cost_usd = self._observer.price(call, r.model, r.input_tokens, r.output_tokens,
                                              cache_read=r.cache_read_tokens, cache_write=r.cache_creation_tokens)
        cost = usage.cost_usd
        if self._observer.record_content:
            call.output_text = r.content
        latency_ms = self._observer.finish(call) * 1000
        if log.isEnabledFor(logging.INFO):
            attempts = result.attempts
            fallback_note = f" (fallback from {attempts[0].provider})" if len(attempts) > 1 else ""
            log.info("Generated response: request_id=%s provider=%s model=%s tokens=%d latency_ms=%.2f "
                     "path=%s cost_usd=%.6f caller=%s%s%s%s", request_id, result.provider, r.model, total,
                     latency_ms, _path(attempts), cost, call.caller, _trace_suffix(call),
                     _metadata_suffix(request.metadata), fallback_note,
                     extra=self._observer.log_fields(call, latency_ms) if structured() else None)
        return pb.GenerateResponse(
            content=r.content, model=r.model, provider=result.provider,
            usage=usage,
            finish_reason=r.finish_reason, latency_ms=latency_ms, request_id=request_id,
            attempts=result.attempts, stop_reason=r.stop_reason,
            blocks=[_block(part) for part in r.parts],
        )

    async def GenerateStream(
        self, request: pb.GenerateRequest,
        context: grpc.aio.ServicerContext[pb.GenerateRequest, pb.GenerateStreamResponse],
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        started = time.perf_counter()
        request_id, traceparent, tracestate = _caller(context)
        call = self._observer.start(_GENERATE_STREAM, request_id, request.model, traceparent, tracestate)
        head: StreamStarted | None = None
        texts: list[str] | None = [] if self._observer.record_content else None
        caller = current_caller()
        call.caller = caller.name
        quota = self._limiter.call(caller, context)
        try:
            provider_request, deadline = self._prepare(request, context, call)
            await quota.admit(provider_request, request.provider, request.model)
            # aclosing: a cancel while suspended at a yield closes the provider's stream right here.
            async with contextlib.aclosing(self._router.stream(
                    provider_request, provider=request.provider, model=request.model, deadline=deadline,
                    admit=quota.admit_provider)) as items:
                async for item in items:
                    if isinstance(item, TextDelta):
                        if texts is not None:
                            texts.append(item.text)
                        yield pb.GenerateStreamResponse(delta=pb.ContentDelta(index=item.index, text=item.text))
                    elif isinstance(item, ToolUseDelta):
                        yield pb.GenerateStreamResponse(delta=pb.ContentDelta(
                            index=item.index, tool_use=_tool_use(item.tool_use)))
                    elif isinstance(item, ThinkingDelta):
                        yield pb.GenerateStreamResponse(delta=pb.ContentDelta(index=item.index, thinking=item.thinking))
                    elif isinstance(item, SignatureDelta):
                        yield pb.GenerateStreamResponse(delta=pb.ContentDelta(index=item.index,
                                                                              signature=item.signature))
                    elif isinstance(item, RedactedThinkingDelta):
                        yield pb.GenerateStreamResponse(delta=pb.ContentDelta(
                            index=item.index, redacted_thinking=pb.RedactedThinkingBlock(data=item.data)))
                    elif isinstance(item, StreamStarted):
                        head = item
                        call.provider, call.attempts = item.provider, item.attempts
                        call.first_token_s = item.first_token_ms / 1000
                        call.head_s = time.perf_counter() - call.start_perf
                        yield pb.GenerateStreamResponse(start=pb.StreamStart(
                            provider=item.provider, model=item.model, request_id=request_id))
                    elif head is not None and isinstance(item, StreamDone):
                        await quota.settle(head.provider, item.model, item.input_tokens, item.output_tokens)
                        context.set_trailing_metadata(quota.trailers())
                        usage = _usage(item.input_tokens, item.output_tokens, item.cache_read_tokens,
                                       item.cache_creation_tokens)
                        total = usage.total_tokens
                        call.finish_reason = item.finish_reason
                        usage.cost_usd = self._observer.price(call, item.model, item.input_tokens,
                                                              item.output_tokens, cache_read=item.cache_read_tokens,
                                                              cache_write=item.cache_creation_tokens)
                        cost = usage.cost_usd
                        if texts is not None:
                            call.output_text = "".join(texts)
                        latency_ms = self._observer.finish(call) * 1000
                        if log.isEnabledFor(logging.INFO):
                            log.info("Streamed response: request_id=%s provider=%s model=%s tokens=%d "
                                     "latency_ms=%.2f first_token_ms=%.2f path=%s cost_usd=%.6f caller=%s%s%s",
                                     request_id, head.provider, item.model, total, latency_ms, head.first_token_ms,
                                     _path(head.attempts), cost, call.caller, _trace_suffix(call),
                                     _metadata_suffix(request.metadata),
                                     extra=self._observer.log_fields(call, latency_ms) if structured() else None)
                        yield pb.GenerateStreamResponse(end=pb.StreamEnd(
                            finish_reason=item.finish_reason, stop_reason=item.stop_reason,
                            usage=usage,
                            attempts=head.attempts, latency_ms=latency_ms, first_token_ms=head.first_token_ms))
        except GatewayError as err:
            if head is not None and not err.attempts:
                err.attempts = head.attempts
            await self._abort(context, request_id, request, quota.explain(err), started, call, quota)
        except asyncio.CancelledError:
            self._cancelled(call)
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            await self._abort(context, request_id, request, None, started, call, quota)

    def _cancelled(self, call: CallRecord) -> None:
        """The caller went away (or the server is stopping): counted as CANCELLED."""
        call.failed("CANCELLED", call.attempts)
        self._observer.finish(call)

    def _log_failure(self, request_id: str, request: _Request, err: GatewayError, started: float,
                     call: CallRecord) -> None:
        path = _path(err.attempts)
        level = logging.WARNING if err.attempts else logging.INFO
        call.failed(err.code.name, err.attempts)
        latency_ms = self._observer.finish(call) * 1000
        fields = self._observer.log_fields(call, latency_ms)
        fields["code"], fields["reason"] = err.code.name, err.reason
        log.log(level, "Request failed: request_id=%s code=%s reason=%s latency_ms=%.2f path=%s caller=%s%s%s: %s",
                request_id, err.code.name, err.reason, latency_ms, path or "-", call.caller, _trace_suffix(call),
                _metadata_suffix(request.metadata), err.message, extra=fields)

    async def CountTokens(
        self, request: pb.CountTokensRequest,
        context: grpc.aio.ServicerContext[pb.CountTokensRequest, pb.CountTokensResponse],
    ) -> pb.CountTokensResponse:
        started = time.perf_counter()
        request_id, traceparent, tracestate = _caller(context)
        call = self._observer.start(_COUNT_TOKENS, request_id, request.model, traceparent, tracestate)
        call.caller = current_caller().name
        # Not a model call, answered or failed: no GenAI metrics or spans (the gRPC interceptor counts it).
        call.finished = True
        try:
            provider_request, deadline = self._prepare_count(request, context)
            result = await self._router.count_tokens(provider_request, provider=request.provider,
                                                     model=request.model, deadline=deadline)
        except GatewayError as err:
            await self._abort(context, request_id, request, err, started, call)
            raise  # unreachable: abort raises
        except asyncio.CancelledError:
            self._cancelled(call)
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            await self._abort(context, request_id, request, None, started, call)
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        log.info("Counted tokens: request_id=%s provider=%s model=%s input_tokens=%d latency_ms=%.2f path=%s "
                 "caller=%s%s", request_id, result.provider, result.attempts[-1].model, result.input_tokens,
                 latency_ms, _path(result.attempts), call.caller, _metadata_suffix(request.metadata))
        return pb.CountTokensResponse(input_tokens=result.input_tokens, provider=result.provider,
                                      model=result.attempts[-1].model, attempts=result.attempts,
                                      request_id=request_id, latency_ms=latency_ms)

    async def Health(
        self, request: pb.HealthRequest, context: grpc.aio.ServicerContext[pb.HealthRequest, pb.HealthResponse]
    ) -> pb.HealthResponse:
        entries = []
        for name, p in self._providers.items():
            state = self._health.states[name]
            ejection = self._health.state(name)
            entry = pb.ProviderHealth(
                name=name, type=p.type, status=self._health.status(name), latency_ms=state.latency_ms,
                default_model=p.default_model, region=p.region, last_error=state.last_error,
                checked_at=_timestamp(state.checked_at), ejection_count=ejection.ejections)
            if ejection.until is not None:
                entry.ejected_until.CopyFrom(_timestamp(self._health.wall_time(ejection.until)))
            entries.append(entry)
        return pb.HealthResponse(status=self._health.overall(), providers=entries, timestamp=_timestamp(time.time()))

    async def ListProviders(
        self, request: pb.ListProvidersRequest,
        context: grpc.aio.ServicerContext[pb.ListProvidersRequest, pb.ListProvidersResponse],
    ) -> pb.ListProvidersResponse:
        infos = []
        for base in self._provider_infos:
            ejection = self._health.state(base.name)
            if ejection.until is None:
                infos.append(base)
                continue
            info = pb.ProviderInfo()
            info.CopyFrom(base)
            info.ejected = True
            info.ejected_until.CopyFrom(_timestamp(self._health.wall_time(ejection.until)))
            infos.append(info)
        return pb.ListProvidersResponse(providers=infos,
                                        default_provider=self._router.default_provider,
                                        fallback_order=list(self._router.fallback_order))

    async def GetStatus(
        self, request: pb.GetStatusRequest,
        context: grpc.aio.ServicerContext[pb.GetStatusRequest, pb.GetStatusResponse],
    ) -> pb.GetStatusResponse:
        return pb.GetStatusResponse(service=SERVICE_NAME, version=__version__,
                                    status="draining" if self.draining else "running",
                                    providers=list(self._providers),
                                    default_provider=self._router.default_provider,
                                    worker_id=self.worker_id, worker_pid=os.getpid())

    async def GetUsage(
        self, request: pb.GetUsageRequest,
        context: grpc.aio.ServicerContext[pb.GetUsageRequest, pb.GetUsageResponse],
    ) -> pb.GetUsageResponse:
        # Admin keys only: checked by auth.AuthInterceptor (ADMIN_METHODS).
        try:
            reports, available = await self._limiter.usage(request.key)
        except GatewayError as err:
            await context.abort(err.code, err.message, trailing_metadata=tuple(err.trailing_metadata()))
            raise  # unreachable: abort raises
        return usage_response(reports, available, self._limiter.backend.name)


def _tool_use(part: ToolUsePart) -> pb.ToolUseBlock:
    block = pb.ToolUseBlock(id=part.id, name=part.name)
    block.input.update(part.input)
    return block


def _block(part: AnswerPart) -> pb.ContentBlock:
    if isinstance(part, TextPart):
        return pb.ContentBlock(text=pb.TextBlock(text=part.text))
    if isinstance(part, ThinkingPart):
        return pb.ContentBlock(thinking=pb.ThinkingBlock(thinking=part.thinking, signature=part.signature))
    if isinstance(part, RedactedThinkingPart):
        return pb.ContentBlock(redacted_thinking=pb.RedactedThinkingBlock(data=part.data))
    return pb.ContentBlock(tool_use=_tool_use(part))


def _usage(input_tokens: int, output_tokens: int, cache_read: int, cache_creation: int) -> pb.Usage:
    return pb.Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                    cache_read_input_tokens=cache_read, cache_creation_input_tokens=cache_creation,
                    total_tokens=input_tokens + cache_read + cache_creation + output_tokens)


def _trace_suffix(call: CallRecord) -> str:
    return f" trace_id={call.trace_id}" if call.trace_id else ""


def _content_of(request: pb.GenerateRequest) -> list[dict[str, str]]:
    """The request's text, for spans when observability.trace_content is on (never otherwise)."""
    out = [{"role": "system", "content": request.system}] if request.system else []
    role = {pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant"}
    for m in request.messages:
        text = "\n".join([m.content, *(b.text.text for b in m.blocks if b.HasField("text"))]).strip("\n")
        out.append({"role": role.get(m.role, "user"), "content": text})
    return out


def _path(attempts: list[pb.Attempt]) -> str:
    """The providers actually called, in order: "anthropic>bedrock"."""
    return ">".join(a.provider for a in attempts if a.outcome != pb.ATTEMPT_OUTCOME_SKIPPED)


def _metadata_suffix(metadata: Mapping[str, str]) -> str:
    identity = CALLER_IDENTITY.get()
    if identity is not None:  # mTLS: the client certificate's subject names the caller
        return " identity=" + json.dumps(identity, ensure_ascii=True) + _metadata_suffix_only(metadata)
    return _metadata_suffix_only(metadata)


def _metadata_suffix_only(metadata: Mapping[str, str]) -> str:
    if not metadata:
        return ""
    # JSON: a caller's newline or quote cannot forge a log line.
    return " metadata=" + json.dumps(dict(sorted(metadata.items())), ensure_ascii=True, separators=(",", ":"))
