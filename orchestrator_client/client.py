"""``GatewayClient``: the typed, retrying, deadline-aware async client of the Model Gateway.

One ``grpc.aio`` channel (and one stub) is built on first use and reused for every call until
:meth:`GatewayClient.close`. The channel balances round_robin over every address the target
resolves to (``dns:///gateways.internal:50051``, ``ipv4:10.0.0.1:50051,10.0.0.2:50051``), sends
keepalive pings, and has gRPC's own retries switched off (``grpc.enable_retries=0``): the
tenacity loop here is the only one.

Retries (see :mod:`orchestrator_client.retry_policy` for the pure rules):

* ``max_retries`` is the total number of attempts; the wait after failed attempt *n* is
  ``retry_delay × 2^(n-1)``, doubled after RESOURCE_EXHAUSTED. When the server sends a pushback
  (``google.rpc.RetryInfo`` or the ``grpc-retry-pushback-ms`` trailer) the client waits exactly
  that instead of its own schedule; a pushback past the call's budget ends the call at once
  ("the server's pushback ... is past the time budget"), and a negative one means do not retry.
* RESOURCE_EXHAUSTED is retried only as a rate limit (the server sent RetryInfo, ErrorInfo or a
  pushback trailer); without them it is gRPC's own message size limit and raises
  :class:`~orchestrator_client.errors.MessageTooLargeError` after one attempt.
* ``timeout`` is the budget of the whole call, waits included; each attempt's gRPC deadline is
  the budget left, or ``attempt_timeout`` when that is smaller. A wait that would end past the
  budget is not slept: the call fails at once with the last error. A ``deadline`` passed by the
  caller (an absolute time on the client's clock, ``time.monotonic()`` by default) caps it too.
* Every attempt of one call carries the same ``x-request-id`` metadata.
* One tenacity ``AsyncRetrying`` loop runs every attempt of a unary call, and one every attempt of
  a stream up to its first event.
* Logged as the seed guide reads: ``WARNING Gateway connection error (attempt 1/3): ...``,
  ``INFO Retrying in 1.0s...``, ``ERROR Gateway request failed after 3 attempts: ...``.

TLS: ``tls=None`` (the default) lets the target's scheme decide (``https://``, ``grpcs://``: TLS;
anything else: plaintext); a target without a port gets 50051, or 443 with TLS.

Statistics (:attr:`GatewayClient.stats`) count the model calls only, ``generate`` and ``stream``;
``health``, ``list_providers`` and ``status`` are retried and logged the same way but not counted.

Streams (:meth:`GatewayClient.stream`) are retried the same way, but only until their first event
has arrived: a stream that has delivered an event is never re-sent (a partial answer is never
replayed); a later failure raises its typed error at once. The gRPC deadline of each stream attempt
is the call's budget left, so the budget bounds the whole stream; ``attempt_timeout`` bounds the
wait for a stream attempt's first event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random as _random
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeAlias

import grpc
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from orchestrator_client.errors import GatewayError, GatewayTimeoutError, ServerError, error_from_rpc
from orchestrator_client.options import GenerateOptions, MessageLike
from orchestrator_client.results import (
    GenerateResult,
    HealthReport,
    ProviderList,
    Status,
    StreamEnd,
    StreamEvent,
    TokenCount,
    event_from_proto,
)
from orchestrator_client.retry_policy import (
    DEFAULT_NON_RETRYABLE_CODES,
    DEFAULT_RETRYABLE_CODES,
    backoff_delay,
    is_retryable,
    parse_codes,
)
from orchestrator_client.settings import GatewaySettings
from orchestrator_client.stats import ClientStats
from orchestrator_client.streaming import EventStream, StreamProgress
from orchestrator_client.targets import DEFAULT_TARGET, check_key_transport, normalize_target
from orchestrator_client.telemetry import trace_metadata
from orchestrator_client.usage import UsageReport

__all__ = ["Clock", "GatewayClient", "GenerateOptions", "MessageLike", "Sleep"]

logger = logging.getLogger("orchestrator_client")

Sleep: TypeAlias = Callable[[float], Awaitable[Any]]
Clock: TypeAlias = Callable[[], float]
USER_AGENT = "orchestrator-client/0.1"
REQUEST_ID_HEADER = "x-request-id"

_LABELS: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "Gateway connection error",
    grpc.StatusCode.DEADLINE_EXCEEDED: "Gateway timeout",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "Gateway rate limited",
}


class _Call:
    """The state of one logical call across its attempts."""

    __slots__ = (
        "attempt",
        "attempt_timeout",
        "budget",
        "budget_end",
        "delay_for",
        "metadata",
        "request",
        "request_id",
        "rpc",
        "stop_note",
        "streaming",
    )

    def __init__(
        self,
        rpc: Any,
        request: Any,
        metadata: tuple[tuple[str, str], ...],
        request_id: str,
        budget: float,
        budget_end: float,
        attempt_timeout: float | None,
        streaming: bool = False,
    ) -> None:
        self.rpc = rpc
        self.streaming = streaming
        self.request = request
        self.metadata = metadata
        self.request_id = request_id
        self.budget = budget
        self.budget_end = budget_end
        self.attempt_timeout = attempt_timeout
        self.attempt = 0
        self.delay_for: tuple[int, float] | None = None
        self.stop_note = ""


class GatewayClient:
    """Async client of the ModelGateway service.

    Use as ``async with GatewayClient("localhost:50051") as client: ...`` or call
    :meth:`close` when done. ``sleep``, ``clock`` and ``random`` are injectable for tests.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        tls_server_name: str | None = None,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        timeout: float = 60.0,
        attempt_timeout: float | None = None,
        jitter: float = 0.0,
        retryable_codes: Iterable[str | grpc.StatusCode] | None = None,
        non_retryable_codes: Iterable[str | grpc.StatusCode] | None = None,
        provider: str | None = None,
        model: str | None = None,
        keepalive_time: float = 60.0,
        keepalive_timeout: float = 20.0,
        load_balancing: str = "round_robin",
        channel_options: Sequence[tuple[str, Any]] = (),
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        random: Callable[[], float] = _random.random,
        stats: ClientStats | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        if max_retries < 1:
            raise ValueError("max_retries is the total number of attempts and must be >= 1")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if retry_delay < 0:
            raise ValueError("retry_delay must be >= 0")
        if attempt_timeout is not None and attempt_timeout <= 0:
            raise ValueError("attempt_timeout must be > 0")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")
        if load_balancing not in ("round_robin", "pick_first"):
            raise ValueError("load_balancing must be 'round_robin' or 'pick_first'")
        self.target, scheme_tls = normalize_target(target, tls)
        self.tls = bool(scheme_tls) if tls is None else tls
        if api_key:
            check_key_transport(self.target, self.tls)
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.jitter = jitter
        self.provider = provider
        self.model = model
        self.retryable_codes = (
            DEFAULT_RETRYABLE_CODES if retryable_codes is None else parse_codes(retryable_codes)
        )
        self.non_retryable_codes = (
            DEFAULT_NON_RETRYABLE_CODES if non_retryable_codes is None else parse_codes(non_retryable_codes)
        )
        self.stats = stats if stats is not None else ClientStats()
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self._log = log or logger
        if (client_certificate is None) != (client_key is None):
            raise ValueError("client_certificate and client_key go together (mTLS)")
        self._root_certificates = root_certificates
        self._client_certificate = client_certificate
        self._client_key = client_key
        self._static_metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        service_config: dict[str, Any] = {"loadBalancingConfig": [{load_balancing: {}}]}
        options: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 0),
            ("grpc.service_config", json.dumps(service_config)),
            ("grpc.service_config_disable_resolution", 1),
            ("grpc.keepalive_time_ms", int(keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 10_000),
            ("grpc.primary_user_agent", USER_AGENT),
            # One channel per client: a process-wide subchannel pool would only share another
            # client's connection failures (a new client to a gateway that just came back would
            # first fail from the cached backoff state).
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        overridden = {name for name, _ in channel_options}
        self._channel_options = [o for o in options if o[0] not in overridden] + list(channel_options)
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._closed = False
        self._retrying = AsyncRetrying(
            sleep=self._sleep,
            retry=retry_if_exception(_is_retryable_error),
            stop=self._should_stop,
            wait=self._wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_settings(cls, settings: GatewaySettings, **overrides: Any) -> GatewayClient:
        """A client configured from the ``orchestrator.gateway`` settings; keyword overrides win.

        A ``target`` override replaces ``url`` whole: its own scheme decides TLS (``https://``,
        ``grpcs://``: TLS; none: plaintext) unless ``tls`` is set explicitly (in the settings or as
        an override).
        """
        root_certificates = (
            settings.root_certificates.read_bytes() if settings.root_certificates is not None else None
        )
        client_certificate = (
            settings.client_certificate.read_bytes() if settings.client_certificate is not None else None
        )
        client_key = settings.client_key.read_bytes() if settings.client_key is not None else None
        kwargs: dict[str, Any] = {
            "api_key": settings.api_key_value(),
            "client_certificate": client_certificate,
            "client_key": client_key,
            # None unless set explicitly: the scheme of whichever address is used decides.
            "tls": settings.tls,
            "root_certificates": root_certificates,
            "tls_server_name": settings.tls_server_name,
            "max_retries": settings.max_retries,
            "retry_delay": settings.retry_delay,
            "timeout": settings.timeout,
            "attempt_timeout": settings.attempt_timeout,
            "jitter": settings.jitter,
            "retryable_codes": settings.retryable_codes,
            "non_retryable_codes": settings.non_retryable_codes,
            "provider": settings.provider,
            "model": settings.model,
            "keepalive_time": settings.keepalive_time,
            "keepalive_timeout": settings.keepalive_timeout,
            "load_balancing": settings.load_balancing,
        }
        kwargs.update(overrides)
        target = kwargs.pop("target", None) or settings.url
        return cls(target, **kwargs)

    def _open(self) -> Any:
        if self._closed:
            raise RuntimeError("GatewayClient is closed")
        if self._channel is None:
            if self.tls:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=self._root_certificates,
                    private_key=self._client_key,
                    certificate_chain=self._client_certificate,
                )
                self._channel = grpc.aio.secure_channel(
                    self.target, credentials, options=self._channel_options
                )
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._channel_options)
            self._stub = pb_grpc.ModelGatewayStub(self._channel)
        return self._stub

    @property
    def channel(self) -> grpc.aio.Channel | None:
        """The channel, once the first call (or ``async with``) has opened it."""
        return self._channel

    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; in-flight calls are cancelled. Idempotent."""
        self._closed = True
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the channel has connected (raises TimeoutError after ``timeout`` seconds)."""
        self._open()
        assert self._channel is not None
        await asyncio.wait_for(self._channel.channel_ready(), timeout)

    # ------------------------------------------------------------------ RPCs

    async def generate(
        self,
        prompt: str | Sequence[MessageLike] | None = None,
        *,
        options: GenerateOptions | None = None,
        **kwargs: Any,
    ) -> GenerateResult:
        """Generate a completion for one prompt string or a list of messages.

        The keyword arguments are the fields of :class:`~orchestrator_client.options.GenerateOptions`
        (``messages``, ``system``, ``provider``, ``model``, ``max_tokens``, ``temperature``,
        ``top_p``, ``stop_sequences``, ``metadata``, ``tools``, ``tool_choice``, ``thinking``,
        ``output_schema``, ``output_schema_name``, ``timeout``, ``deadline``, ``request_id``);
        ``options`` passes them as one object, and keywords given with it replace its fields.
        ``system`` may be a list of text blocks with cache breakpoints (``TextBlock(text,
        cache=True)``); ``thinking`` is a token budget, "adaptive" or "disabled" (the answer's
        ``blocks`` then start with its ThinkingBlock, ``result.thinking`` is its text; send the
        blocks back unchanged with tool calls); ``output_schema`` asks for JSON matching a schema.

        Messages are ``ChatMessage``s, ``(role, content)`` tuples, ``{"role", "content"}``
        mappings or ``pb.Message``s; a content is text or a list of content blocks (text, image,
        tool_use, tool_result: see :mod:`orchestrator_client.content`). ``tools`` are
        ``ToolSpec``s (or ``{"name", "description", "input_schema"}`` dicts); ``tool_choice`` is
        ``"auto"``, ``"any"``, ``"none"``, ``{"tool": name}`` or None. ``provider``/``model``
        default to the client's. The result's ``blocks``/``tool_calls`` hold the answer's tool
        calls (``finish_reason == "tool_use"``). Raises a
        :class:`~orchestrator_client.errors.GatewayError` subclass on failure.
        """
        opts = GenerateOptions.build("generate", options, kwargs)
        request = opts.to_request("generate", prompt, default_provider=self.provider, default_model=self.model)
        started = self._clock()
        response, call = await self._invoke("Generate", request, opts.timeout, opts.deadline, opts.request_id)
        return GenerateResult.from_proto(
            response,
            attempts=call.attempt,
            request_id=call.request_id,
            elapsed_ms=(self._clock() - started) * 1000.0,
        )

    def stream(
        self,
        prompt: str | Sequence[MessageLike] | None = None,
        *,
        options: GenerateOptions | None = None,
        **kwargs: Any,
    ) -> EventStream:
        """Stream a completion: an async iterator of typed events.

        ``StreamStart(provider, model, request_id)``, then ``TextDelta(index, text)``,
        ``ThinkingDelta(index, thinking, signature)``, ``RedactedThinkingBlock(data, index)`` and
        ``ToolCall(id, name, input, index)`` events in order, then ``StreamEnd(finish_reason,
        stop_reason, usage, attempts, latency_ms, first_token_ms, ...)``. Takes the arguments of
        :meth:`generate` (the same :class:`~orchestrator_client.options.GenerateOptions`). The
        call starts on the first iteration. It is retried as :meth:`generate` is (same policy,
        budget, statistics and log lines), but only until the first event has arrived: after that
        a failure raises its typed :class:`~orchestrator_client.errors.GatewayError` at once.
        ``timeout``/``deadline`` bound the whole stream. Closing the stream early (``aclose()``,
        ``async with``, cancelling the task) cancels the gRPC call. Counted once in
        :attr:`stats`: a success when the end event arrives, a failure when it fails,
        ``total_cancelled`` when closed before the end.
        """
        opts = GenerateOptions.build("stream", options, kwargs)
        request = opts.to_request("stream", prompt, default_provider=self.provider, default_model=self.model)
        rid = opts.request_id or uuid.uuid4().hex
        return EventStream(lambda events: self._stream_events(events, request, opts.timeout, opts.deadline), rid)

    async def count_tokens(
        self,
        prompt: str | Sequence[MessageLike] | None = None,
        *,
        options: GenerateOptions | None = None,
        **kwargs: Any,
    ) -> TokenCount:
        """The input tokens of the conversation :meth:`generate` would send with the same arguments
        (messages, system, tools, tool choice, thinking; the other options are ignored), counted by
        the chosen provider's model without generating. The gateway falls back as for Generate;
        retried like :meth:`generate`, but not counted in :attr:`stats`."""
        opts = GenerateOptions.build("count_tokens", options, kwargs)
        request = opts.to_count_request("count_tokens", prompt, default_provider=self.provider,
                                        default_model=self.model)
        response, call = await self._invoke("CountTokens", request, opts.timeout, opts.deadline, opts.request_id,
                                            counted=False)
        return TokenCount.from_proto(response, request_id=call.request_id)

    async def health(self, *, timeout: float | None = None, deadline: float | None = None) -> HealthReport:
        """The gateway's and each provider's health (cached probes; costs no tokens).

        Retried like :meth:`generate`, but not counted in :attr:`stats` (nor are
        :meth:`list_providers` and :meth:`status`): probing health on the reasoner's client leaves
        its success rate alone.
        """
        response, _ = await self._invoke("Health", pb.HealthRequest(), timeout, deadline, None, counted=False)
        return HealthReport.from_proto(response)

    async def list_providers(
        self, *, timeout: float | None = None, deadline: float | None = None
    ) -> ProviderList:
        """The configured providers, the default provider and the fallback order (not in :attr:`stats`)."""
        response, _ = await self._invoke(
            "ListProviders", pb.ListProvidersRequest(), timeout, deadline, None, counted=False
        )
        return ProviderList.from_proto(response)

    async def status(self, *, timeout: float | None = None, deadline: float | None = None) -> Status:
        """Service name, version, status ("running"/"draining") and provider names (not in :attr:`stats`)."""
        response, _ = await self._invoke("GetStatus", pb.GetStatusRequest(), timeout, deadline, None, counted=False)
        return Status.from_proto(response)

    async def usage(
        self, key: str = "", *, timeout: float | None = None, deadline: float | None = None
    ) -> UsageReport:
        """Admin keys only: each API key's (or one key's) requests, tokens, spend, limits and what
        remains of them (not in :attr:`stats`)."""
        response, _ = await self._invoke(
            "GetUsage", pb.GetUsageRequest(key=key), timeout, deadline, None, counted=False
        )
        return UsageReport.from_proto(response)

    # ------------------------------------------------------------------ the retry loop

    def _new_call(
        self,
        rpc: Any,
        request: Any,
        timeout: float | None,
        deadline: float | None,
        request_id: str | None,
        streaming: bool = False,
    ) -> _Call:
        budget = self.timeout if timeout is None else timeout
        if budget <= 0:
            raise ValueError("timeout must be > 0")
        budget_end = self._clock() + budget
        if deadline is not None and deadline < budget_end:
            budget_end = deadline
        rid = request_id or uuid.uuid4().hex
        return _Call(
            rpc,
            request,
            ((REQUEST_ID_HEADER, rid), *self._static_metadata, *trace_metadata()),
            rid,
            budget,
            budget_end,
            self.attempt_timeout,
            streaming,
        )

    async def _execute(self, call: _Call) -> Any:
        """The attempts of one call, every one of them run by one tenacity loop (a fresh copy per
        call: tenacity keeps per-run state on the object); raises the last GatewayError."""
        attempt = self._open_stream_attempt if call.streaming else self._unary_attempt
        return await self._retrying.copy()(attempt, call)

    def _failed(self, method: str, call: _Call, err: GatewayError, *, counted: bool = True) -> None:
        err.attempts = call.attempt
        if counted:
            self.stats.record_failure(call.attempt)
        self._log_failure(method, call, err)

    async def _invoke(
        self,
        method: str,
        request: Any,
        timeout: float | None,
        deadline: float | None,
        request_id: str | None,
        *,
        counted: bool = True,
    ) -> tuple[Any, _Call]:
        """One unary call with its retries; ``counted``: whether :attr:`stats` counts it (only
        Generate does: the statistics measure the answers, not the probes)."""
        stub = self._open()
        call = self._new_call(getattr(stub, method), request, timeout, deadline, request_id)
        try:
            response = await self._execute(call)
        except GatewayError as err:
            self._failed(method, call, err, counted=counted)
            raise
        except asyncio.CancelledError:
            if counted:
                self.stats.record_cancelled(call.attempt)
            raise
        except Exception:
            if counted:
                self.stats.record_failure(call.attempt)
            raise
        if counted:
            self.stats.record_success(call.attempt)
        return response, call

    async def _stream_events(
        self,
        events: StreamProgress,
        request: pb.GenerateRequest,
        timeout: float | None,
        deadline: float | None,
    ) -> AsyncGenerator[StreamEvent, None]:
        stub = self._open()
        call = self._new_call(stub.GenerateStream, request, timeout, deadline, events.request_id, streaming=True)
        started = self._clock()
        grpc_call: Any = None
        counted = False
        delivered = 0
        try:
            grpc_call, message = await self._execute(call)
            events.attempts = call.attempt
            while message is not grpc.aio.EOF:
                event = event_from_proto(
                    message,
                    client_attempts=call.attempt,
                    request_id=call.request_id,
                    elapsed_ms=(self._clock() - started) * 1000.0,
                )
                if isinstance(event, StreamEnd):
                    counted = True
                    self.stats.record_success(call.attempt)
                    yield event
                    await _drain(grpc_call)
                    return
                if event is not None:
                    delivered += 1
                    yield event
                message = await self._read_next(grpc_call, call, delivered)
            call.stop_note = f"the stream ended after {delivered} events without its end event"
            raise ServerError(
                grpc.StatusCode.UNKNOWN,
                "the gateway closed the stream without an end event (an incomplete answer)",
                retryable=False,
                attempts=call.attempt,
                request_id=call.request_id,
            )
        except GatewayError as err:
            events.attempts = call.attempt
            if not counted:
                counted = True
                self._failed("GenerateStream", call, err)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            if not counted:
                counted = True
                self.stats.record_cancelled(call.attempt)
            raise
        except Exception:
            if not counted:
                counted = True
                self.stats.record_failure(call.attempt)
            raise
        finally:
            events.attempts = call.attempt
            if grpc_call is not None and not grpc_call.done():
                grpc_call.cancel()

    async def _open_stream(self, call: _Call, remaining: float, first_event_timeout: float | None) -> Any:
        """One stream attempt: start the call and wait for its first message."""
        stream_call = call.rpc(call.request, timeout=remaining, metadata=call.metadata)
        try:
            if first_event_timeout is None:
                first = await stream_call.read()
            else:
                try:
                    first = await asyncio.wait_for(stream_call.read(), first_event_timeout)
                except TimeoutError:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED
                    raise GatewayTimeoutError(
                        code,
                        f"no stream event within the attempt timeout ({first_event_timeout:g}s)",
                        retryable=is_retryable(
                            code,
                            retryable_codes=self.retryable_codes,
                            non_retryable_codes=self.non_retryable_codes,
                            attempt_limited=True,
                        ),
                        attempts=call.attempt,
                        request_id=call.request_id,
                    ) from None
        except BaseException:
            stream_call.cancel()
            raise
        if first is grpc.aio.EOF:
            stream_call.cancel()
            raise ServerError(
                grpc.StatusCode.UNKNOWN,
                "the gateway closed the stream without any event",
                retryable=False,
                attempts=call.attempt,
                request_id=call.request_id,
            )
        return stream_call, first

    async def _read_next(self, grpc_call: Any, call: _Call, delivered: int) -> Any:
        try:
            return await grpc_call.read()
        except grpc.aio.AioRpcError as err:
            retryable = is_retryable(
                err.code(), retryable_codes=self.retryable_codes, non_retryable_codes=self.non_retryable_codes
            )
            call.stop_note = f"the stream broke after {delivered} events: a started stream is never retried"
            raise error_from_rpc(
                err, retryable=retryable, attempts=call.attempt, request_id=call.request_id
            ) from err

    def _remaining(self, call: _Call) -> float:
        """The call's budget left before its next attempt; the attempt counter moves on."""
        remaining = call.budget_end - self._clock()
        if remaining <= 0:
            raise GatewayTimeoutError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the call's time budget ({call.budget:g}s) ran out before attempt {call.attempt + 1}",
                retryable=False,
                attempts=call.attempt,
                request_id=call.request_id,
            )
        call.attempt += 1
        call.delay_for = None
        return remaining

    def _rpc_error(self, call: _Call, err: grpc.aio.AioRpcError, *, attempt_limited: bool) -> GatewayError:
        retryable = is_retryable(
            err.code(),
            retryable_codes=self.retryable_codes,
            non_retryable_codes=self.non_retryable_codes,
            attempt_limited=attempt_limited,
        )
        return error_from_rpc(err, retryable=retryable, attempts=call.attempt, request_id=call.request_id)

    async def _unary_attempt(self, call: _Call) -> Any:
        """One attempt of a unary call: its gRPC deadline is the budget left, or ``attempt_timeout``
        when that is smaller (DEADLINE_EXCEEDED is then retryable)."""
        remaining = self._remaining(call)
        attempt_timeout = call.attempt_timeout
        limited = attempt_timeout is not None and attempt_timeout < remaining
        try:
            return await call.rpc(
                call.request,
                timeout=attempt_timeout if limited else remaining,
                metadata=call.metadata,
            )
        except grpc.aio.AioRpcError as err:
            raise self._rpc_error(call, err, attempt_limited=limited) from err

    async def _open_stream_attempt(self, call: _Call) -> Any:
        """One attempt of a stream, up to its first event: the gRPC deadline is the budget left (it
        bounds the whole stream); ``attempt_timeout`` bounds the wait for the first event."""
        remaining = self._remaining(call)
        attempt_timeout = call.attempt_timeout
        limited = attempt_timeout is not None and attempt_timeout < remaining
        try:
            return await self._open_stream(call, remaining, attempt_timeout if limited else None)
        except grpc.aio.AioRpcError as err:
            raise self._rpc_error(call, err, attempt_limited=False) from err

    def _delay(self, call: _Call, err: GatewayError) -> float:
        if call.delay_for is None or call.delay_for[0] != call.attempt:
            delay = backoff_delay(
                call.attempt, err.code, self.retry_delay, err.retry_after, self.jitter, self._random
            )
            call.delay_for = (call.attempt, delay)
        return call.delay_for[1]

    def _wait(self, retry_state: RetryCallState) -> float:
        call: _Call = retry_state.args[0]
        err = _outcome_error(retry_state)
        return self._delay(call, err) if err is not None else 0.0

    def _should_stop(self, retry_state: RetryCallState) -> bool:
        call: _Call = retry_state.args[0]
        err = _outcome_error(retry_state)
        if err is None or call.attempt >= self.max_retries:
            return True
        delay = self._delay(call, err)
        left = call.budget_end - self._clock()
        if delay >= left:
            if err.retry_after is not None:
                call.stop_note = (
                    f"the server's pushback ({delay:.1f}s) is past the time budget ({max(left, 0):.2f}s left):"
                    " not retried"
                )
            else:
                call.stop_note = (
                    f"the next wait ({delay:.1f}s) would pass the time budget ({max(left, 0):.2f}s left)"
                )
            return True
        return False

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        call: _Call = retry_state.args[0]
        err = _outcome_error(retry_state)
        if err is None:
            return
        label = _LABELS.get(err.code, "Gateway server error")
        self._log.warning(
            "%s (attempt %d/%d): %s: %s", label, call.attempt, self.max_retries, err.code_name, err.message
        )
        self._log.info("Retrying in %ss...", _seconds(self._delay(call, err)))

    def _log_failure(self, method: str, call: _Call, err: GatewayError) -> None:
        plural = "attempt" if call.attempt == 1 else "attempts"
        why = ""
        if call.stop_note:
            why = f" ({call.stop_note})"
        elif not err.retryable and call.attempt > 0:
            why = " (not retryable)"
        self._log.error(
            "Gateway request failed after %d %s%s: %s: %s [%s request_id=%s]",
            call.attempt,
            plural,
            why,
            err.code_name,
            err.message,
            method,
            call.request_id,
        )

    def __repr__(self) -> str:
        return (
            f"GatewayClient(target={self.target!r}, tls={self.tls}, max_retries={self.max_retries}, "
            f"retry_delay={self.retry_delay}, timeout={self.timeout})"
        )


async def _drain(grpc_call: Any) -> None:
    """Read a finished stream to its end (after the end event); a late failure changes nothing."""
    try:
        while await grpc_call.read() is not grpc.aio.EOF:
            pass
    except grpc.aio.AioRpcError:
        pass


def _seconds(delay: float) -> str:
    """1.0 -> "1.0", 2.5 -> "2.5", 0.05 -> "0.05" (the seed logs "Retrying in 1.0s...")."""
    if abs(delay - round(delay, 1)) < 1e-9:
        return f"{delay:.1f}"
    return f"{delay:.3g}"


def _outcome_error(retry_state: RetryCallState) -> GatewayError | None:
    outcome = retry_state.outcome
    if outcome is None or not outcome.failed:
        return None
    err = outcome.exception()
    return err if isinstance(err, GatewayError) else None


def _is_retryable_error(exc: BaseException) -> bool:
    return isinstance(exc, GatewayError) and exc.retryable
