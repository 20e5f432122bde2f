"""Load shedding: a cap on the calls one process serves at once.

Past ``server.max_concurrent_calls`` a new call ends at once with RESOURCE_EXHAUSTED, a RetryInfo and
a ``grpc-retry-pushback-ms`` hint (``server.shed_retry_after``), instead of queueing on the event
loop, where every call would get slower. grpc.health.v1 and reflection are never shed (a probe must
see an overloaded process as alive). The same interceptor records the caller's mTLS identity for the
call (:data:`gateway_server.tls.CALLER_IDENTITY`).

With metrics on (``register_metrics``): ``gateway_max_concurrent_calls`` (the cap of each process; 0:
none) and ``gateway_calls_shed_total`` (counted only on the shed path: admitted calls cost nothing
more). The calls in flight are ``gateway_server_calls_in_flight`` (gateway_server.metrics).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway_server.errors import GatewayError
from gateway_server.tls import CALLER_IDENTITY, caller_identity

log = logging.getLogger("gateway_server.shedding")

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
_LOG_EVERY = 10.0  # seconds between "shedding" log lines


def shed_error(capacity: int, retry_after: float) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "GATEWAY_OVERLOADED",
        f"gateway overloaded: {capacity} calls already in flight in this process; retry after {retry_after:g}s",
        metadata={"max_concurrent_calls": str(capacity)}, retry_after=retry_after)


class LoadShedder(grpc.aio.ServerInterceptor):
    """Counts the calls in flight; ``capacity`` 0 counts but never sheds."""

    def __init__(self, capacity: int, retry_after: float, *, identity: bool = False) -> None:
        self.capacity = capacity
        self.retry_after = retry_after
        self.identity = identity
        self.in_flight = 0
        self.peak_in_flight = 0
        self.shed_total = 0
        self._last_log = 0.0
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._error = shed_error(capacity, retry_after)
        self._trailers = tuple(self._error.trailing_metadata())  # built once: shedding must be cheap
        self._shed_metric: Counter | None = None

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Export the cap and the shed calls in ``registry`` (with several workers: every worker's sum)."""
        cap = Gauge("gateway_max_concurrent_calls", "Calls one process serves at once before it sheds "
                    "(server.max_concurrent_calls; 0: no cap)", registry=registry, multiprocess_mode="livemax")
        cap.set(self.capacity)
        self._shed_metric = Counter("gateway_calls_shed", "Calls refused with RESOURCE_EXHAUSTED "
                                    "(GATEWAY_OVERLOADED) because max_concurrent_calls were in flight",
                                    registry=registry)

    def _admit(self) -> bool:
        if self.capacity and self.in_flight >= self.capacity:
            self.shed_total += 1
            if self._shed_metric is not None:
                self._shed_metric.inc()
            now = time.monotonic()
            if now - self._last_log >= _LOG_EVERY:
                self._last_log = now
                log.warning("Shedding load: %d calls in flight (max_concurrent_calls); %d shed so far",
                            self.in_flight, self.shed_total)
            return False
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        return True

    async def _refuse(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(self._error.code, self._error.message, trailing_metadata=self._trailers)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cast("grpc.RpcMethodHandler[_Req, _Resp]", cached)
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        wrapped = self._wrap(handler)
        self._wrapped[method] = wrapped
        return cast("grpc.RpcMethodHandler[_Req, _Resp]", wrapped)

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        ser = {"request_deserializer": handler.request_deserializer,
               "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary), **ser)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._stream(cast(Any, handler.unary_stream)), **ser)
        return handler  # client/bidi streaming: this service has none

    def _unary(self, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if not self._admit():
                await self._refuse(context)
            if self.identity:
                CALLER_IDENTITY.set(caller_identity(context))
            try:
                return await inner(request, context)
            finally:
                self.in_flight -= 1
        return behavior

    def _stream(self, inner: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            if not self._admit():
                await self._refuse(context)
            if self.identity:
                CALLER_IDENTITY.set(caller_identity(context))
            try:
                async with contextlib.aclosing(cast(Any, inner(request, context))) as items:
                    async for item in items:
                        yield item
            finally:
                self.in_flight -= 1
        return behavior
