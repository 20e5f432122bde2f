"""AWS Bedrock Runtime's Converse API through ``aiobotocore`` (botocore on asyncio and aiohttp).

No threads and no pool to wait for: every call is a coroutine on the event loop with a connection
of its own (idle ones are reused), so unary calls, streams and health probes never queue behind
each other, and no time spent waiting for a worker can count as a provider timeout. The gateway's
asyncio deadline bounds each call; cancelling it (deadline, caller gone, fallback) closes the HTTP
connection at once, also in the middle of a stream. botocore's own retries are off
(``total_max_attempts=1``): the gateway owns the one retry loop.

This module is the transport: SDK clients, timeouts, threads, and every botocore failure -> a
classified ``ProviderError``. The Converse translation (request, response, stream events, stop
reasons) is in bedrock_translation.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

import aiobotocore.config
import aiobotocore.session
import aiohttp
import botocore.eventstream
import botocore.exceptions

from gateway_server.errors import ErrorKind, ProviderError, caller_message
from gateway_server.providers.base import Provider, ProviderRequest, ProviderResponse, StreamEvent
from gateway_server.providers.bedrock_translation import (
    ConverseStreamTranslator,
    build_count_params,
    build_params,
    parse_count,
    parse_response,
    unsupported,
)
from gateway_server.settings import BedrockProviderConfig

# The translation's names stay importable from here (tests/test_translation.py).
__all__ = ["BedrockProvider", "ConverseStreamTranslator", "build_params", "classify", "parse_response"]

log = logging.getLogger("gateway_server.providers.bedrock")

_RATE_LIMITED = {"ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException"}
_AUTH = {"AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException",
         "InvalidSignatureException", "IncompleteSignature", "MissingAuthenticationTokenException"}
_OVERLOADED = {"ServiceUnavailableException", "ModelNotReadyException"}
_TIMEOUT = {"ModelTimeoutException"}
_NOT_FOUND = {"ResourceNotFoundException"}
_INVALID = {"ValidationException"}


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify(exc: BaseException) -> ProviderError:
    """Any failure of a boto3 call -> ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        response: Any = exc.response
        error = response.get("Error", {})
        code = str(error.get("Code", ""))
        code = code[:1].upper() + code[1:]  # stream exceptions are lowerCamel: throttlingException
        meta = response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode", 0)) or None
        message = str(error.get("Message") or code or "error")
        retry_after = _retry_after(meta.get("HTTPHeaders", {}))
        if code in _RATE_LIMITED or status == 429:
            kind = ErrorKind.RATE_LIMITED
        elif code in _AUTH or status in (401, 403):
            kind = ErrorKind.AUTH
        elif code in _TIMEOUT or status == 408:
            kind = ErrorKind.TIMEOUT
        elif code in _OVERLOADED or status == 503:
            kind = ErrorKind.OVERLOADED
        elif code in _NOT_FOUND or status == 404:
            kind = ErrorKind.NOT_FOUND
        elif code in _INVALID:
            kind = ErrorKind.INVALID_REQUEST
        elif status is not None and status >= 500:
            kind = ErrorKind.SERVER
        elif status is not None and 400 <= status < 500 and status != 424:
            kind = ErrorKind.INVALID_REQUEST
        else:
            kind = ErrorKind.SERVER
        # The caller gets a summary (kind, HTTP status, error code); AWS's text (account ids, ARNs) goes
        # to the log only.
        return ProviderError(kind, caller_message(kind, message), status=status, retry_after=retry_after,
                             error_type=code or None, detail=message)
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return ProviderError(ErrorKind.TIMEOUT, "request timed out")
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return ProviderError(ErrorKind.AUTH, "no AWS credentials")
    if isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return ProviderError(ErrorKind.CONNECTION, f"connection failed ({type(exc).__name__})")
    if isinstance(exc, botocore.exceptions.IncompleteReadError | botocore.exceptions.ResponseStreamingError
                  | botocore.eventstream.ParserError):
        return ProviderError(ErrorKind.MALFORMED_RESPONSE, f"truncated response ({type(exc).__name__})")
    if isinstance(exc, TimeoutError):  # aiohttp's read timeout between a stream's events
        return ProviderError(ErrorKind.TIMEOUT, "request timed out")
    if isinstance(exc, botocore.exceptions.BotoCoreError | ValueError | KeyError | TypeError):
        return ProviderError(ErrorKind.MALFORMED_RESPONSE, f"unreadable response ({type(exc).__name__})")
    if isinstance(exc, OSError | aiohttp.ClientError):  # e.g. a stream cut short: ClientPayloadError
        return ProviderError(ErrorKind.CONNECTION, f"connection failed ({type(exc).__name__})")
    return ProviderError(ErrorKind.SERVER, f"unexpected provider failure ({type(exc).__name__})")


class BedrockProvider(Provider):
    type = "bedrock"

    def __init__(self, name: str, cfg: BedrockProviderConfig, region: str | None) -> None:
        super().__init__(name, cfg, region=region or "")
        self._cfg = cfg
        if cfg.executor_workers is not None:
            log.warning("Provider '%s': executor_workers is obsolete and ignored (Bedrock calls use no threads "
                        "since the switch to aiobotocore); remove it from the config", name)
        self._session: aiobotocore.session.AioSession | None = None
        if region:
            try:
                self._session = aiobotocore.session.get_session()
                self._session.set_config_variable("region", region)
            except botocore.exceptions.BotoCoreError as exc:
                log.warning("Provider '%s' is unconfigured: %s", name, exc)
                self._session = None
        self._has_credentials = False
        self._exit = contextlib.AsyncExitStack()
        self._client: Any = None  # one client, one aiohttp pool without a limit: calls, streams, probes

    @property
    def configured(self) -> bool:
        return self._session is not None and self._has_credentials

    async def start(self) -> None:
        if not self.enabled or self._session is None:
            return
        # The standard AWS chain (env, profile, SSO, container/instance roles), asynchronously.
        try:
            credentials = await self._session.get_credentials()
        except botocore.exceptions.BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
            log.warning("Provider '%s' is unconfigured: %s", self.name, exc)
            credentials = None
        self._has_credentials = credentials is not None
        if not self._has_credentials:
            return
        # read_timeout is aiohttp's limit per socket read, a backstop: the caller's deadline is the
        # asyncio timeout around each call.
        config = aiobotocore.config.AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=min(self._cfg.connect_timeout, self.timeout),
            read_timeout=self.timeout,
            max_pool_connections=0,  # aiohttp: no limit, so no call ever waits for a connection
        )
        client = await self._exit.enter_async_context(
            self._session.create_client("bedrock-runtime", endpoint_url=self._cfg.endpoint_url, config=config))
        # A stream's read timeout is first_token_timeout: also the longest pause between two events.
        client.meta.events.register("before-call.bedrock-runtime.ConverseStream", self._stream_read_timeout)
        await _warm_up(client, self.name)
        self._client = client

    def _stream_read_timeout(self, context: dict[str, Any], **_: Any) -> None:
        context["read_timeout"] = self.first_token_timeout  # aiobotocore: a per-request sock_read

    async def close(self) -> None:
        self._client = None
        await self._exit.aclose()

    def _usable_client(self) -> Any:
        if self._client is None:
            raise ProviderError(ErrorKind.AUTH, "provider has no credentials")
        return self._client

    async def _run(self, method: str, kwargs: dict[str, Any], timeout: float) -> Any:
        fn = getattr(self._usable_client(), method)
        try:
            async with asyncio.timeout(timeout):  # cancels the call: aiohttp closes its connection
                return await fn(**kwargs)
        except TimeoutError:
            raise ProviderError(ErrorKind.TIMEOUT, f"no answer within {timeout:.3f}s") from None
        except Exception as exc:
            raise classify(exc) from exc

    async def generate(self, request: ProviderRequest, model: str, timeout: float) -> ProviderResponse:
        body = await self._run("converse", build_params(request, model), timeout)
        try:
            return parse_response(body, model)
        except Exception as exc:
            raise classify(exc) from exc

    def unsupported(self, request: ProviderRequest, model: str = "") -> tuple[str, str] | None:
        return unsupported(request, model)

    async def count_tokens(self, request: ProviderRequest, model: str, timeout: float) -> int:
        body = await self._run("count_tokens", build_count_params(request, model), timeout)
        try:
            return parse_count(body)
        except Exception as exc:
            raise classify(exc) from exc

    async def stream(self, request: ProviderRequest, model: str, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        """converse_stream, events translated as they arrive; closing this iterator (or cancelling
        the task reading it) before the end closes the HTTP connection.

        ``timeout`` (the first-token budget) is the router's to enforce; the stream's read timeout
        (``first_token_timeout``) also ends a stream that pauses longer between events."""
        client = self._usable_client()
        params = build_params(request, model)
        upstream: Any = None
        translator = ConverseStreamTranslator(model)
        try:
            try:
                upstream = (await client.converse_stream(**params))["stream"]
            except Exception as exc:
                raise classify(exc) from exc
            events = aiter(upstream)
            while True:
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise classify(exc) from exc
                try:
                    out = translator.feed(event)
                except Exception as exc:
                    raise classify(exc) from exc
                for item in out:
                    yield item
            try:
                done = translator.finish()
            except Exception as exc:
                raise classify(exc) from exc
            if done is not None:
                yield done
        finally:
            if upstream is not None:
                upstream.close()  # not read to its end: the connection is closed, not reused

    async def probe(self, timeout: float) -> None:
        # CountTokens spends no tokens; like every call, it never waits for a connection.
        params = {"modelId": self.default_model,
                  "input": {"converse": {"messages": [{"role": "user", "content": [{"text": "ping"}]}]}}}
        await self._run("count_tokens", params, timeout)


async def _warm_up(client: Any, name: str) -> None:
    """Build the client's HTTP session now (aiobotocore does it on the first call, with the TLS
    context and its CA bundle: a first call ~0.2-0.5 s slower). Best effort: private API."""
    try:
        http_session = client._endpoint.http_session
        await http_session._get_session(http_session._proxy_config.proxy_url_for(client.meta.endpoint_url))
    except Exception:  # an aiobotocore without these internals: the first call pays instead
        log.debug("Provider '%s': no HTTP session warm-up", name, exc_info=True)
