"""The ModelGateway gRPC servicer: validation in, router, response out, one log line per request."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from gateway_server import __version__
from gateway_server.errors import GatewayError
from gateway_server.health import HealthMonitor
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


def _caller(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, str]:
    """(request id, the bearer token sent or "") from the call's metadata, in one pass."""
    request_id = token = ""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= _MAX_REQUEST_ID \
                and value.isprintable():
            request_id = value
        elif key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            token = value[7:].strip()
    return request_id or uuid.uuid4().hex, token


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


class ModelGatewayServicer(pb_grpc.ModelGatewayServicer):
    def __init__(self, settings: GatewaySettings, providers: Mapping[str, Provider], router: Router,
                 health: HealthMonitor) -> None:
        self._settings = settings
        self._providers = providers
        self._router = router
        self._health = health
        self._limits = settings.limits
        self._max_request_bytes = settings.server.max_request_bytes
        self.draining = False
        self.worker_id = 0  # this process's index under the supervisor (gateway_server.workers)
        self._api_keys = tuple(k.get_secret_value().encode() for k in settings.api_keys)
        self._provider_infos = [
            pb.ProviderInfo(name=name, type=p.type, models=list(p.models), default_model=p.default_model,
                            region=p.region, enabled=p.enabled, configured=p.configured)
            for name, p in providers.items()
        ]

    def _authorize(self, token: str) -> None:
        if not self._api_keys:
            return
        sent = token.encode()
        if not any(hmac.compare_digest(sent, key) for key in self._api_keys):
            raise GatewayError(grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY",
                               "missing or unknown API key: send 'authorization: Bearer <key>'")

    async def _check_caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """The request id; aborts UNAUTHENTICATED when API keys are required and none matches."""
        request_id, token = _caller(context)
        try:
            self._authorize(token)
        except GatewayError as err:
            log.warning("Rejected call: request_id=%s peer=%s code=UNAUTHENTICATED", request_id, context.peer())
            await context.abort(err.code, err.message,
                                trailing_metadata=((REQUEST_ID_HEADER, request_id), *err.trailing_metadata()))
        return request_id

    def _prepare(self, request: pb.GenerateRequest, token: str,
                 context: grpc.aio.ServicerContext[Any, Any]) -> tuple[ProviderRequest, float | None]:
        """Authorize, validate and resolve the deadline (an event-loop time), or raise GatewayError."""
        self._authorize(token)
        provider_request = validate_generate(request, self._limits, self._max_request_bytes)
        self._router.check_target(request.provider, request.model)
        remaining = context.time_remaining()
        return provider_request, None if remaining is None else asyncio.get_running_loop().time() + remaining

    def _prepare_count(self, request: pb.CountTokensRequest, token: str,
                       context: grpc.aio.ServicerContext[Any, Any]) -> tuple[ProviderRequest, float | None]:
        self._authorize(token)
        provider_request = validate_count(request, self._limits, self._max_request_bytes)
        self._router.check_target(request.provider, request.model)
        remaining = context.time_remaining()
        return provider_request, None if remaining is None else asyncio.get_running_loop().time() + remaining

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], request_id: str, request: _Request,
                     err: GatewayError | None, started: float) -> None:
        """End the call with the error's status and details; None: a gateway bug (INTERNAL, no traceback)."""
        if err is None:
            log.exception("request_id=%s outcome=bug: unexpected failure", request_id)
            err = GatewayError(grpc.StatusCode.INTERNAL, "INTERNAL",
                               f"internal gateway error (request_id {request_id})")
        else:
            self._log_failure(request_id, request, err, started)
        await context.abort(err.code, err.message,
                            trailing_metadata=((REQUEST_ID_HEADER, request_id), *err.trailing_metadata()))

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext[pb.GenerateRequest, pb.GenerateResponse]
    ) -> pb.GenerateResponse:
        started = time.perf_counter()
        request_id, token = _caller(context)
        try:
            provider_request, deadline = self._prepare(request, token, context)
            result = await self._router.generate(provider_request, provider=request.provider,
                                                 model=request.model, deadline=deadline)
        except GatewayError as err:
            await self._abort(context, request_id, request, err, started)
            raise  # unreachable: abort raises
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            await self._abort(context, request_id, request, None, started)
            raise
        r = result.response
        latency_ms = (time.perf_counter() - started) * 1000
        usage = _usage(r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_creation_tokens)
        total = usage.total_tokens
        fallback_note = f" (fallback from {result.attempts[0].provider})" if len(result.attempts) > 1 else ""
        log.info("Generated response: request_id=%s provider=%s model=%s tokens=%d latency_ms=%.2f "
                 "path=%s%s%s", request_id, result.provider, r.model, total, latency_ms, _path(result.attempts),
                 _metadata_suffix(request.metadata), fallback_note)
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
        request_id, token = _caller(context)
        head: StreamStarted | None = None
        try:
            provider_request, deadline = self._prepare(request, token, context)
            # aclosing: a cancel while suspended at a yield closes the provider's stream right here.
            async with contextlib.aclosing(self._router.stream(
                    provider_request, provider=request.provider, model=request.model, deadline=deadline)) as items:
                async for item in items:
                    if isinstance(item, TextDelta):
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
                        yield pb.GenerateStreamResponse(start=pb.StreamStart(
                            provider=item.provider, model=item.model, request_id=request_id))
                    elif head is not None and isinstance(item, StreamDone):
                        usage = _usage(item.input_tokens, item.output_tokens, item.cache_read_tokens,
                                       item.cache_creation_tokens)
                        total = usage.total_tokens
                        latency_ms = (time.perf_counter() - started) * 1000
                        log.info("Streamed response: request_id=%s provider=%s model=%s tokens=%d latency_ms=%.2f "
                                 "first_token_ms=%.2f path=%s%s", request_id, head.provider, item.model, total,
                                 latency_ms, head.first_token_ms, _path(head.attempts),
                                 _metadata_suffix(request.metadata))
                        yield pb.GenerateStreamResponse(end=pb.StreamEnd(
                            finish_reason=item.finish_reason, stop_reason=item.stop_reason,
                            usage=usage,
                            attempts=head.attempts, latency_ms=latency_ms, first_token_ms=head.first_token_ms))
        except GatewayError as err:
            if head is not None and not err.attempts:
                err.attempts = head.attempts
            await self._abort(context, request_id, request, err, started)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            await self._abort(context, request_id, request, None, started)

    def _log_failure(self, request_id: str, request: _Request, err: GatewayError, started: float) -> None:
        path = _path(err.attempts)
        level = logging.WARNING if err.attempts else logging.INFO
        log.log(level, "Request failed: request_id=%s code=%s reason=%s latency_ms=%.2f path=%s%s: %s",
                request_id, err.code.name, err.reason, (time.perf_counter() - started) * 1000, path or "-",
                _metadata_suffix(request.metadata), err.message)

    async def CountTokens(
        self, request: pb.CountTokensRequest,
        context: grpc.aio.ServicerContext[pb.CountTokensRequest, pb.CountTokensResponse],
    ) -> pb.CountTokensResponse:
        started = time.perf_counter()
        request_id, token = _caller(context)
        try:
            provider_request, deadline = self._prepare_count(request, token, context)
            result = await self._router.count_tokens(provider_request, provider=request.provider,
                                                     model=request.model, deadline=deadline)
        except GatewayError as err:
            await self._abort(context, request_id, request, err, started)
            raise  # unreachable: abort raises
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            await self._abort(context, request_id, request, None, started)
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        log.info("Counted tokens: request_id=%s provider=%s model=%s input_tokens=%d latency_ms=%.2f path=%s%s",
                 request_id, result.provider, result.attempts[-1].model, result.input_tokens, latency_ms,
                 _path(result.attempts), _metadata_suffix(request.metadata))
        return pb.CountTokensResponse(input_tokens=result.input_tokens, provider=result.provider,
                                      model=result.attempts[-1].model, attempts=result.attempts,
                                      request_id=request_id, latency_ms=latency_ms)

    async def Health(
        self, request: pb.HealthRequest, context: grpc.aio.ServicerContext[pb.HealthRequest, pb.HealthResponse]
    ) -> pb.HealthResponse:
        if self._api_keys:
            await self._check_caller(context)
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
        if self._api_keys:
            await self._check_caller(context)
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
        if self._api_keys:
            await self._check_caller(context)
        return pb.GetStatusResponse(service=SERVICE_NAME, version=__version__,
                                    status="draining" if self.draining else "running",
                                    providers=list(self._providers),
                                    default_provider=self._router.default_provider,
                                    worker_id=self.worker_id, worker_pid=os.getpid())


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
