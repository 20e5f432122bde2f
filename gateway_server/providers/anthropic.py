"""Anthropic Messages API through the official ``anthropic`` SDK (async client).

The transport is kept here: the SDK client and its calls, and every SDK failure -> a classified
``ProviderError``; the translation (request dict, response parsing, stream events) is in
anthropic_translation.py. The SDK's own retries are off (``max_retries=0``): the gateway owns the
one retry loop.

``http_transport: direct`` (the default) sends Messages calls (unary and streams) with one aiohttp
session of the provider's own, with the headers the SDK client would send and the SDK's status errors
(anthropic_direct.py); ``aiohttp`` and ``httpx`` send them through the SDK client on that transport.
Token counts and health probes always go through the SDK client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator

import aiohttp
import anthropic
import httpx2
import orjson
from anthropic import RequestOptions
from multidict import CIMultiDict
from pydantic import SecretStr

from gateway_server.errors import ErrorKind, ProviderError, caller_message
from gateway_server.providers import capabilities
from gateway_server.providers.anthropic_direct import (
    UnsupportedClient,
    error_event,
    sdk_headers,
    sse_events,
    ssl_context,
    status_error,
    stream_error,
    timeout_headers,
)
from gateway_server.providers.anthropic_translation import (
    FINISH_REASONS,
    RawStreamTranslator,
    StreamTranslator,
    build_body,
    build_count_params,
    build_params,
    parse_message,
    parse_message_json,
)
from gateway_server.providers.base import Provider, ProviderRequest, ProviderResponse, StreamEvent
from gateway_server.settings import AnthropicProviderConfig

log = logging.getLogger(__name__)

__all__ = ["FINISH_REASONS", "AnthropicProvider", "StreamTranslator", "build_count_params", "build_params", "classify",
           "parse_message"]


def _retry_after(headers: httpx2.Headers | None) -> float | None:
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    try:
        if ms is not None:
            return float(ms) / 1000
        seconds = headers.get("retry-after")
        return float(seconds) if seconds is not None else None
    except ValueError:
        return None


def _api_error(exc: anthropic.APIStatusError) -> tuple[str, str]:
    """(error type, message) from the API's error body."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("type") or ""), str(error.get("message") or f"HTTP {exc.status_code}")
    return "", f"HTTP {exc.status_code}"


# Error types of an `event: error` inside a 200 stream, where the status code says nothing.
_STREAM_ERROR_KINDS = {
    "overloaded_error": ErrorKind.OVERLOADED,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "api_error": ErrorKind.SERVER,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "not_found_error": ErrorKind.NOT_FOUND,
    "invalid_request_error": ErrorKind.INVALID_REQUEST,
    "request_too_large": ErrorKind.INVALID_REQUEST,
    "timeout_error": ErrorKind.TIMEOUT,
}


def classify(exc: BaseException) -> ProviderError:
    """Any failure of an SDK call -> ProviderError (never leaks the key: messages come from the API)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(ErrorKind.TIMEOUT, "request timed out")
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = type(cause).__name__ if cause is not None else "connection error"
        return ProviderError(ErrorKind.CONNECTION, f"connection failed ({detail})")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        error_type, message = _api_error(exc)
        retry_after = _retry_after(exc.response.headers if exc.response is not None else None)
        if status < 400:
            kind = _STREAM_ERROR_KINDS.get(error_type, ErrorKind.SERVER)
        elif status == 429:
            kind = ErrorKind.RATE_LIMITED
        elif status in (401, 402, 403):
            kind = ErrorKind.AUTH
        elif status == 404:
            kind = ErrorKind.NOT_FOUND
        elif status == 408:
            kind = ErrorKind.TIMEOUT
        elif status in (503, 529):
            kind = ErrorKind.OVERLOADED
        elif status >= 500:
            kind = ErrorKind.SERVER
        else:
            kind = ErrorKind.INVALID_REQUEST
        # The caller gets a summary (kind, HTTP status, error type); the API's text goes to the log only.
        return ProviderError(kind, caller_message(kind, message), status=status, retry_after=retry_after,
                             error_type=error_type or None, detail=message)
    if isinstance(exc, anthropic.APIResponseValidationError | json.JSONDecodeError | ValueError | TypeError
                  | AttributeError | KeyError):
        return ProviderError(ErrorKind.MALFORMED_RESPONSE, f"unreadable response ({type(exc).__name__})")
    # The direct transport's (aiohttp) failures, as the SDK maps them to APITimeoutError/APIConnectionError.
    # TimeoutError (asyncio's too) before OSError: it is one; aiohttp's read timeouts are both.
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return ProviderError(ErrorKind.TIMEOUT, "request timed out")
    if isinstance(exc, httpx2.TransportError | OSError | aiohttp.ClientError):
        return ProviderError(ErrorKind.CONNECTION, f"connection failed ({type(exc).__name__})")
    return ProviderError(ErrorKind.SERVER, f"unexpected provider failure ({type(exc).__name__})")


# How long a stream's end (after message_stop) may take to arrive before its connection is dropped instead.
_DRAIN_S = 1.0


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read what is left of a finished stream's body (normally just the chunked encoding's end), so that
    the connection can be reused; an upstream that keeps it open longer loses it (closed in finally)."""
    if response.content.at_eof():
        return
    try:
        async with asyncio.timeout(_DRAIN_S):
            await response.content.read()
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass


class AnthropicProvider(Provider):
    type = "anthropic"

    def __init__(self, name: str, cfg: AnthropicProviderConfig, api_key: SecretStr | None) -> None:
        super().__init__(name, cfg)
        self._cfg = cfg
        self._api_key = api_key
        self._client: anthropic.AsyncAnthropic | None = None
        # Per-call request options by timeout: built once, not per call (the router's timeout rarely varies).
        self._options: dict[float, RequestOptions] = {}
        # The direct transport (None: the SDK sends): its session, the SDK's headers, the messages URL,
        # and per timeout the headers and aiohttp timeouts of a call (built once, like _options).
        self._session: aiohttp.ClientSession | None = None
        self._headers: dict[str, str] = {}
        self._url = ""
        self._direct: dict[float, tuple[CIMultiDict[str], aiohttp.ClientTimeout, aiohttp.ClientTimeout]] = {}

    @property
    def configured(self) -> bool:
        return self._api_key is not None and bool(self._api_key.get_secret_value())

    @property
    def direct(self) -> bool:
        """Whether Messages calls go through the direct transport."""
        return self._session is not None

    async def start(self) -> None:
        if not self.usable:
            return
        limits = httpx2.Limits(max_connections=self._cfg.max_connections,
                               max_keepalive_connections=self._cfg.max_connections)
        http_client: httpx2.AsyncClient = (
            anthropic.DefaultAsyncHttpxClient(limits=limits)
            if self._cfg.http_transport == "httpx"
            else anthropic.DefaultAioHttpClient(limits=limits)
        )
        assert self._api_key is not None
        self._client = anthropic.AsyncAnthropic(
            api_key=self._api_key.get_secret_value(),
            base_url=self._cfg.base_url,
            max_retries=0,
            timeout=self.timeout,
            http_client=http_client,
            # No tracer is set up here; the SDK's per-call span work costs ~4% of a call (make bench).
            open_telemetry=False,
        )
        if self._cfg.http_transport == "direct":
            try:
                self._headers = sdk_headers(self._client, http_client)
            except UnsupportedClient as exc:
                log.warning("Provider '%s': the direct transport cannot send as this client does (%s); "
                            "using the SDK's aiohttp transport", self.name, exc)
                return
            self._url = str(self._client.base_url).rstrip("/") + "/v1/messages"
            # As the SDK's aiohttp transport sets up its session: pool size, keep-alive, httpx's SSL context.
            connector = aiohttp.TCPConnector(limit=self._cfg.max_connections, keepalive_timeout=limits.keepalive_expiry,
                                             ssl=ssl_context())
            # The SDK's fixed headers as the session's defaults (copied per request in C); a call adds the
            # three that depend on its timeout, as a CIMultiDict (aiohttp would convert a dict on every call).
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _require_client(self) -> anthropic.AsyncAnthropic:
        if self._client is None:
            raise ProviderError(ErrorKind.AUTH, "provider has no credentials")
        return self._client

    def _request_options(self, timeout: float) -> RequestOptions:
        options = self._options.get(timeout)
        if options is None:
            if len(self._options) > 64:  # a deadline-derived timeout varies: keep the cache bounded
                self._options.clear()
            options = self._options[timeout] = {"timeout": timeout}
        return options

    def _direct_call(self, timeout: float) -> tuple[CIMultiDict[str], aiohttp.ClientTimeout, aiohttp.ClientTimeout]:
        """(headers, unary timeout, stream timeout) of a direct call with ``timeout``, cached.

        Unary: the whole call within ``timeout``. Streams: as the SDK bounds them (httpx's per-phase
        timeouts on its aiohttp transport): connecting and each read within ``timeout``; the router
        bounds the whole stream."""
        call = self._direct.get(timeout)
        if call is None:
            if len(self._direct) > 64:
                self._direct.clear()
            call = self._direct[timeout] = (
                CIMultiDict(timeout_headers(timeout)),
                aiohttp.ClientTimeout(total=timeout),
                aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout, sock_read=timeout),
            )
        return call

    async def generate(self, request: ProviderRequest, model: str, timeout: float) -> ProviderResponse:
        """The direct transport (or the SDK's client on its raw path): the body is encoded with orjson and
        the answer's bytes decoded with orjson straight into our response, no SDK models."""
        if self._session is not None:
            headers, unary_timeout, _ = self._direct_call(timeout)
            try:
                async with self._session.post(self._url, data=orjson.dumps(build_body(request, model)),
                                              headers=headers, timeout=unary_timeout) as response:
                    content = await response.read()
                    if not 200 <= response.status < 300:
                        raise status_error(self._require_client(), response.status, response.headers, self._url,
                                           content)
                return parse_message_json(orjson.loads(content), model)
            except Exception as exc:  # every failure is classified; nothing escapes raw
                raise classify(exc) from exc
        client = self._require_client()
        try:
            sdk_response = await client.post("/v1/messages", content=orjson.dumps(build_body(request, model)),
                                             cast_to=httpx2.Response, options=self._request_options(timeout))
            return parse_message_json(orjson.loads(sdk_response.content), model)
        except Exception as exc:  # every SDK failure is classified; nothing escapes raw
            raise classify(exc) from exc

    def stream(self, request: ProviderRequest, model: str, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        if self._session is not None:
            return self._stream_direct(self._session, request, model, timeout)
        return self._stream_sdk(request, model, timeout)

    async def _stream_direct(self, session: aiohttp.ClientSession, request: ProviderRequest, model: str,
                             timeout: float) -> AsyncGenerator[StreamEvent, None]:
        """The stream on the direct transport: SSE parsed from the aiohttp response's bytes, one orjson decode
        per event; the response is closed (the connection dropped, unless the body was read to its end)
        however the stream ends: finished, failed, cancelled or closed by the caller."""
        headers, _, stream_timeout = self._direct_call(timeout)
        try:
            response = await session.post(self._url, data=orjson.dumps({**build_body(request, model), "stream": True}),
                                          headers=headers, timeout=stream_timeout)
        except Exception as exc:
            raise classify(exc) from exc
        try:
            if not 200 <= response.status < 300:
                raise status_error(self._require_client(), response.status, response.headers, self._url,
                                   await response.read())
            translator = RawStreamTranslator(model)
            feed = translator.feed_json
            loads = orjson.loads
            async for name, data in sse_events(response.content):
                if name is None or name == b"ping":
                    continue
                if name == b"error":  # as the SDK's AsyncStream raises it: a status error of the 200 response
                    raise stream_error(response.status, response.headers, self._url, data)
                if not data:
                    continue
                events = feed(loads(data))
                if translator.done:  # message_stop: read the body's end first, to keep the connection
                    await _drain(response)
                for out in events:
                    yield out
            if not translator.done:
                raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "stream ended before message_stop")
        except Exception as exc:
            raise classify(exc) from exc
        finally:
            if response.content.at_eof():
                response.release()  # read to its end: the connection goes back to the pool
            else:
                response.close()  # no orphaned upstream reads: the upstream sees the disconnect

    async def _stream_sdk(self, request: ProviderRequest, model: str,
                          timeout: float) -> AsyncGenerator[StreamEvent, None]:
        """The raw path again: the SDK sends the request and raises its status errors; the SSE events are
        decoded with orjson into plain dicts, not one SDK model per event."""
        client = self._require_client()
        try:
            response = await client.post("/v1/messages", content=orjson.dumps({**build_body(request, model),
                                                                               "stream": True}),
                                         cast_to=httpx2.Response, stream=True,
                                         options=self._request_options(timeout))
        except Exception as exc:
            raise classify(exc) from exc
        try:
            translator = RawStreamTranslator(model)
            async for sse in anthropic.AsyncStream.raw_events(response):
                name = sse.event
                if name is None or name == "ping":
                    continue
                if name == "error":  # as the SDK's AsyncStream raises it: a status error of the 200 response
                    message, body = error_event(sse.data, response.status_code)
                    raise anthropic.APIStatusError(message, response=response, body=body)
                if not sse.data:
                    continue
                for out in translator.feed_json(orjson.loads(sse.data)):
                    yield out
            if not translator.done:
                raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "stream ended before message_stop")
        except Exception as exc:
            raise classify(exc) from exc
        finally:
            await response.aclose()  # closes the HTTP response: no orphaned upstream reads

    async def count_tokens(self, request: ProviderRequest, model: str, timeout: float) -> int:
        client = self._require_client()
        try:
            counted = await client.messages.count_tokens(**build_count_params(request, model), timeout=timeout)
            value = counted.input_tokens
        except Exception as exc:
            raise classify(exc) from exc
        if not isinstance(value, int) or value < 0:
            raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "token count has no input_tokens")
        return value

    def unsupported(self, request: ProviderRequest, model: str = "") -> tuple[str, str] | None:
        if request.output is not None and model and not capabilities.has_structured_output(model):
            return "output_format", f"model '{model}' has no native structured output"
        if request.thinking is not None and request.thinking.mode != "disabled" and model \
                and not capabilities.has_thinking(model):
            return "thinking", f"model '{model}' has no extended thinking"
        return None

    async def probe(self, timeout: float) -> None:
        client = self._require_client()
        try:
            await client.models.list(limit=1, timeout=timeout)
        except Exception as exc:
            raise classify(exc) from exc
