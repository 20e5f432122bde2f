"""Who is calling: API keys, their scopes, and the one server interceptor that checks every RPC.

Every RPC of the gateway goes through :class:`AuthInterceptor` (grpc.health.v1 and reflection
excepted), so a new RPC cannot forget the check. A caller sends ``authorization: Bearer <secret>``;
the interceptor compares the secret's SHA-256 with every configured digest in constant time and
then runs the call with the key's :class:`Caller` in a context variable (``current_caller()``) for
the servicer, the limiter and metrics. No key or an unknown one: UNAUTHENTICATED. A request whose
``provider`` or ``model`` is outside the key's scope: PERMISSION_DENIED naming the field. An admin
RPC called with a key not marked admin: PERMISSION_DENIED.

Keys come from the ``keys`` section (a name, the secret's SHA-256 or an environment variable
holding it, scopes, limits, a budget) and from ``GATEWAY_API_KEYS`` (keys without scopes or
limits of their own: each is the anonymous caller) and ``named_api_keys`` (keys without scopes or
limits, named). With no key configured at all the gateway is open and every call runs as the
anonymous caller.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc

from gateway_server.errors import GatewayError
from gateway_server.ids import new_id
from gateway_server.settings import BudgetSettings, GatewaySettings, LimitSettings
from gateway_server.tls import caller_identity

log = logging.getLogger("gateway_server.auth")

# Open to everyone: load balancers probe health, tools list the API.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# RPCs only a key marked admin may call.
ADMIN_METHODS = frozenset({"/modelgateway.v1.ModelGateway/GetUsage"})
REQUEST_ID_HEADER = "x-request-id"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of one RPC."""

    name: str
    team: str = ""
    admin: bool = False
    # None: every provider / model. Models include the aliases of the allowed ones and their ids.
    providers: frozenset[str] | None = None
    models: frozenset[str] | None = None
    limits: LimitSettings | None = None
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    anonymous: bool = False


ANONYMOUS = Caller(name="anonymous", anonymous=True)

_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("gateway_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the RPC being served (the anonymous caller outside an RPC or on an open gateway)."""
    return _current.get()


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def expand_models(models: Iterable[str], aliases: Mapping[str, Mapping[str, str]]) -> frozenset[str]:
    """The allowed models with aliases counted: an allowed alias allows its ids, an allowed id its alias
    and the alias's other ids (the same model on another provider)."""
    allowed = set(models)
    for alias, mapping in aliases.items():
        if alias in allowed or allowed.intersection(mapping.values()):
            allowed.add(alias)
            allowed.update(mapping.values())
    return frozenset(allowed)


class KeyRing:
    """The configured keys: SHA-256 digest -> Caller."""

    def __init__(self, entries: Iterable[tuple[bytes, Caller]], subjects: Mapping[str, Caller] | None = None) -> None:
        self._entries = tuple(entries)
        # mTLS: a verified client certificate's subject -> the key it is (``keys[].client_subject``).
        self.subjects = dict(subjects or {})
        # The named keys (GetUsage reports these), once each.
        self.callers = tuple({c.name: c for c in (*(c for _, c in self._entries), *self.subjects.values())
                              if not c.anonymous}.values())

    @property
    def enabled(self) -> bool:
        return bool(self._entries) or bool(self.subjects)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> KeyRing:
        entries: list[tuple[bytes, Caller]] = []
        subjects: dict[str, Caller] = {}
        for cfg in settings.keys:
            caller = Caller(
                name=cfg.name, team=cfg.team, admin=cfg.admin,
                providers=frozenset(cfg.providers) if cfg.providers else None,
                models=expand_models(cfg.models, settings.model_aliases) if cfg.models else None,
                limits=cfg.limits, budget=cfg.budget)
            if cfg.sha256 is not None:
                entries.append((bytes.fromhex(cfg.sha256), caller))
            elif cfg.secret_env is not None:
                entries.append((digest(os.environ.get(cfg.secret_env, "")), caller))
            if cfg.client_subject is not None:
                subjects[cfg.client_subject] = caller
        for name, secret in settings.named_api_keys.items():
            entries.append((digest(secret.get_secret_value()), Caller(name=name)))
        # GATEWAY_API_KEYS: unnamed keys, each one the anonymous caller (no scope, no limits of its own).
        for secret in settings.api_keys:
            entries.append((digest(secret.get_secret_value()), ANONYMOUS))
        return cls(entries, subjects)

    def lookup(self, token: str) -> Caller | None:
        """The key whose digest matches, comparing with every key in constant time."""
        sent = digest(token)
        found: Caller | None = None
        for key_digest, caller in self._entries:
            if hmac.compare_digest(sent, key_digest) and found is None:
                found = caller
        return found

    def get(self, name: str) -> Caller | None:
        return next((c for c in self.callers if c.name == name), None)


class Scope:
    """Which provider and model a request reaches first, and whether a caller may use them."""

    def __init__(self, default_provider: str, default_models: Mapping[str, str]) -> None:
        self.default_provider = default_provider
        self._default_models = dict(default_models)

    def denial(self, caller: Caller, provider: str, model: str) -> GatewayError | None:
        """PERMISSION_DENIED naming the field when the request's provider or model is out of scope."""
        if caller.providers is not None:
            first = provider or self.default_provider
            if first not in caller.providers:
                what = f"'{provider}'" if provider else f"the default provider '{first}'"
                return _denied("provider", f"provider: {what} is not allowed for API key '{caller.name}' "
                                           f"(allowed: {', '.join(sorted(caller.providers))})", caller)
        if caller.models is not None:
            effective = model or self._default_models.get(provider or self.default_provider, "")
            if effective not in caller.models:
                what = f"'{model}'" if model else f"the default model '{effective}'"
                return _denied("model", f"model: {what} is not allowed for API key '{caller.name}' "
                                        f"(allowed: {', '.join(sorted(caller.models))})", caller)
        return None

    @staticmethod
    def skip(caller: Caller, provider: str, model: str) -> tuple[str, str] | None:
        """For a fallback provider and the model it would get: (reason, message) when out of scope."""
        if caller.providers is not None and provider not in caller.providers:
            return "NOT_IN_KEY_SCOPE", f"provider '{provider}' is not allowed for API key '{caller.name}'"
        if caller.models is not None and model not in caller.models:
            return "NOT_IN_KEY_SCOPE", f"model '{model}' is not allowed for API key '{caller.name}'"
        return None


def _denied(field_name: str, message: str, caller: Caller) -> GatewayError:
    return GatewayError(grpc.StatusCode.PERMISSION_DENIED, "NOT_IN_KEY_SCOPE", message, field=field_name,
                        metadata={"key": caller.name})


def _metadata(metadata: Iterable[tuple[str, Any]] | None) -> tuple[str, str]:
    """(bearer token or "", request id) from the call's metadata: the caller's x-request-id (at most
    128 printable characters, as the servicer takes it), else a new one, for the error's trailer."""
    token = request_id = ""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            token = value[7:].strip()
        elif key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
            request_id = value
    return token, request_id or new_id()


def _abort_trailers(err: GatewayError, request_id: str) -> tuple[tuple[str, str | bytes], ...]:
    return ((REQUEST_ID_HEADER, request_id), *err.trailing_metadata())


Behavior = Callable[..., Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every RPC but health and reflection; see the module's docstring."""

    def __init__(self, keys: KeyRing, scope: Scope) -> None:
        self._keys = keys
        self._scope = scope
        # (method, caller) -> the handler wrapped for that caller: built once, not per call.
        self._wrapped: dict[tuple[str, str], Handler] = {}
        # method -> the handler that finds the caller by its client certificate (mTLS keys only).
        self._by_certificate: dict[str, Handler] = {}

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if not self._keys.enabled:
            return handler  # an open gateway: every call is the anonymous caller, the default
        token, request_id = _metadata(handler_call_details.invocation_metadata)
        if not token and self._keys.subjects:
            # No secret sent: the caller may be a key by its mTLS certificate, known only inside the call.
            by_certificate = self._by_certificate.get(method)
            if by_certificate is None:
                by_certificate = self._by_certificate[method] = self._certified(handler, method)
            return by_certificate
        caller = self._keys.lookup(token) if token else None
        if caller is None:
            log.warning("Rejected call: method=%s request_id=%s code=UNAUTHENTICATED (%s API key)", method,
                        request_id, "unknown" if token else "no")
            return _refuse(handler, GatewayError(
                grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY",
                "missing or unknown API key: send 'authorization: Bearer <key>'"), request_id)
        if method in ADMIN_METHODS and not caller.admin:
            return _refuse(handler, _admin_only(method, caller), request_id)
        return self._for_caller(handler, method, caller)

    def _for_caller(self, handler: Handler, method: str, caller: Caller) -> Handler:
        wrapped = self._wrapped.get((method, caller.name))
        if wrapped is None:
            wrapped = self._wrapped[(method, caller.name)] = _with_caller(handler, caller, self._scope)
        return wrapped

    def _certified(self, handler: Handler, method: str) -> Handler:
        """The handler for calls without a secret: the key whose ``client_subject`` is the subject of the
        call's verified client certificate, else UNAUTHENTICATED."""
        subjects = self._keys.subjects

        async def resolve(context: grpc.aio.ServicerContext[Any, Any]) -> Handler:
            subject = caller_identity(context)
            caller = subjects.get(subject) if subject is not None else None
            err: GatewayError | None = None
            if caller is None:
                _, request_id = _metadata(context.invocation_metadata())
                log.warning("Rejected call: method=%s request_id=%s code=UNAUTHENTICATED (no API key, %s)", method,
                            request_id, "no client certificate" if subject is None else
                            f"certificate subject {subject!r} is no key's client_subject")
                err = GatewayError(grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY",
                                   "missing or unknown API key: send 'authorization: Bearer <key>'")
            elif method in ADMIN_METHODS and not caller.admin:
                err = _admin_only(method, caller)
            if err is not None:
                _, request_id = _metadata(context.invocation_metadata())
                await context.abort(err.code, err.message, trailing_metadata=_abort_trailers(err, request_id))
            assert caller is not None
            return self._for_caller(handler, method, caller)

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            inner = (await resolve(context)).unary_unary
            return await inner(request, context)  # type: ignore[misc, arg-type]

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            inner: Callable[..., AsyncGenerator[Any, None]] = (await resolve(context)).unary_stream  # type: ignore[assignment]
            async with contextlib.aclosing(inner(request, context)) as items:
                async for item in items:
                    yield item

        return _rebuild(handler, unary, stream)


def _admin_only(method: str, caller: Caller) -> GatewayError:
    return GatewayError(grpc.StatusCode.PERMISSION_DENIED, "ADMIN_ONLY",
                        f"{method.rsplit('/', 1)[-1]} needs an API key marked admin; '{caller.name}' is not",
                        metadata={"key": caller.name})


def _rebuild(handler: Handler, unary: Behavior, stream: Behavior
             ) -> Handler:
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    return grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


def _refuse(handler: Handler, err: GatewayError, request_id: str) -> Handler:
    if handler.unary_unary is None and handler.unary_stream is None:
        raise TypeError("the gateway serves unary and server-streaming RPCs only")

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(err.code, err.message, trailing_metadata=_abort_trailers(err, request_id))

    return _rebuild(handler, refuse, refuse)


def _with_caller(handler: Handler, caller: Caller, scope: Scope) -> Handler:
    """The handler, run with ``caller`` as the current caller, after the request's scope check."""
    inner_unary, inner_stream = handler.unary_unary, handler.unary_stream
    servicer_stream: Callable[..., AsyncGenerator[Any, None]] = inner_stream  # type: ignore[assignment]
    if inner_unary is None and inner_stream is None:
        raise TypeError("the gateway serves unary and server-streaming RPCs only")

    async def check(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        _current.set(caller)
        provider, model = getattr(request, "provider", None), getattr(request, "model", None)
        if isinstance(provider, str) and isinstance(model, str):
            err = scope.denial(caller, provider, model)
            if err is not None:
                _, request_id = _metadata(context.invocation_metadata())
                log.info("Refused call: request_id=%s key=%s code=PERMISSION_DENIED: %s", request_id, caller.name,
                         err.message)
                await context.abort(err.code, err.message, trailing_metadata=_abort_trailers(err, request_id))

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await check(request, context)
        return await inner_unary(request, context)  # type: ignore[misc, arg-type]

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await check(request, context)
        # aclosing: when this stream is closed (a cancel), the servicer's is closed right away too.
        async with contextlib.aclosing(servicer_stream(request, context)) as items:
            async for item in items:
                yield item

    return _rebuild(handler, unary, stream)
