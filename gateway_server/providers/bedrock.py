"""AWS Bedrock through ``boto3`` bedrock-runtime, Converse API.

boto3 blocks, so every call runs in this provider's own bounded thread pool (``executor_workers``
threads, the same number of pooled connections), never on the event loop; botocore's connect/read
timeouts bound each thread, and the gateway's asyncio timeout bounds the caller. botocore's own
retries are off (``total_max_attempts=1``): the gateway owns the one retry loop.

This module is the transport: SDK clients, timeouts, threads, and every botocore failure -> a
classified ``ProviderError``. The Converse translation (request, response, stream events, stop
reasons) is in bedrock_translation.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import threading
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import botocore.config
import botocore.eventstream
import botocore.exceptions
import urllib3.exceptions

from gateway_server.errors import ErrorKind, ProviderError
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
        return ProviderError(kind, f"{code}: {message}" if code else message, status=status,
                             retry_after=retry_after)
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return ProviderError(ErrorKind.TIMEOUT, "request timed out")
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return ProviderError(ErrorKind.AUTH, "no AWS credentials")
    if isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return ProviderError(ErrorKind.CONNECTION, f"connection failed ({type(exc).__name__})")
    if isinstance(exc, botocore.exceptions.IncompleteReadError | botocore.exceptions.ResponseStreamingError
                  | botocore.eventstream.ParserError):
        return ProviderError(ErrorKind.MALFORMED_RESPONSE, f"truncated response ({type(exc).__name__})")
    if isinstance(exc, botocore.exceptions.BotoCoreError | ValueError | KeyError | TypeError):
        return ProviderError(ErrorKind.MALFORMED_RESPONSE, f"unreadable response ({type(exc).__name__})")
    if isinstance(exc, OSError | urllib3.exceptions.HTTPError):
        return ProviderError(ErrorKind.CONNECTION, f"connection failed ({type(exc).__name__})")
    return ProviderError(ErrorKind.SERVER, f"unexpected provider failure ({type(exc).__name__})")


# botocore's read_timeout is per client: one client per tier, and each call uses the smallest tier
# that covers its budget, so a thread blocked on a hung Bedrock is freed soon after the caller gave
# up (not a whole provider timeout later).
READ_TIMEOUT_TIERS = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0)
# Events a stream's reader thread may hold ahead of a slow caller before it stops reading (and TCP
# flow control slows Bedrock down): memory per stream stays flat.
STREAM_BUFFER = 64


def read_timeout_tiers(provider_timeout: float) -> tuple[float, ...]:
    return (*(t for t in READ_TIMEOUT_TIERS if t < provider_timeout), provider_timeout)


class BedrockProvider(Provider):
    type = "bedrock"

    def __init__(self, name: str, cfg: BedrockProviderConfig, region: str | None) -> None:
        super().__init__(name, cfg, region=region or "")
        self._cfg = cfg
        self._session: boto3.session.Session | None = None
        if region:
            try:
                self._session = boto3.session.Session(region_name=region)
            except botocore.exceptions.BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
                log.warning("Provider '%s' is unconfigured: %s", name, exc)
        self._has_credentials = False
        self._clients: tuple[tuple[float, Any], ...] = ()
        self._executor: ThreadPoolExecutor | None = None
        self._open_streams: set[_StreamState] = set()

    @property
    def configured(self) -> bool:
        return self._session is not None and self._has_credentials

    async def start(self) -> None:
        if not self.enabled or self._session is None:
            return
        session = self._session
        self._executor = ThreadPoolExecutor(self._cfg.executor_workers, thread_name_prefix=f"bedrock-{self.name}")
        # The standard AWS chain (env, profile, SSO, container/instance roles) may do I/O: off the loop.
        try:
            credentials = await asyncio.get_running_loop().run_in_executor(self._executor, session.get_credentials)
        except botocore.exceptions.BotoCoreError as exc:
            log.warning("Provider '%s' is unconfigured: %s", self.name, exc)
            credentials = None
        self._has_credentials = credentials is not None
        if not self._has_credentials:
            return
        self._clients = tuple(
            (tier, session.client("bedrock-runtime", endpoint_url=self._cfg.endpoint_url,
                                  config=botocore.config.Config(
                                      retries={"total_max_attempts": 1, "mode": "standard"},
                                      connect_timeout=min(self._cfg.connect_timeout, tier),
                                      read_timeout=tier,
                                      max_pool_connections=self._cfg.executor_workers,
                                      tcp_keepalive=True)))
            for tier in read_timeout_tiers(self.timeout))

    async def close(self) -> None:
        for state in list(self._open_streams):
            state.stop()  # shuts the sockets down: the reader threads end now
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        for _, client in self._clients:
            client.close()
        self._clients = ()

    def _client_for(self, budget: float) -> Any:
        if not self._clients or self._executor is None:
            raise ProviderError(ErrorKind.AUTH, "provider has no credentials")
        for tier, client in self._clients:
            if tier >= budget:
                return client
        return self._clients[-1][1]

    async def _run(self, method: str, kwargs: dict[str, Any], timeout: float) -> Any:
        fn = getattr(self._client_for(timeout), method)
        assert self._executor is not None
        call = asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, **kwargs))
        try:
            async with asyncio.timeout(timeout):
                return await call
        except TimeoutError:
            call.cancel()  # still queued: never sent
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
        """converse_stream runs in one executor thread that hands events to the loop through a
        bounded buffer; closing this iterator stops the thread and shuts the HTTP connection down.

        The client is the read-timeout tier covering ``timeout`` (the first-token budget), so a
        pause between later events longer than that tier also ends the stream."""
        method = self._client_for(timeout).converse_stream
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        state = _StreamState()
        params = build_params(request, model)

        def put(kind: str, item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, item))

        def worker() -> None:
            try:
                if state.stopped.is_set():
                    return
                state.upstream = method(**params)["stream"]
                for event in state.upstream:
                    while not state.room.acquire(timeout=0.5):
                        if state.stopped.is_set():
                            return
                    if state.stopped.is_set():
                        return
                    put("event", event)
                put("end", None)
            except BaseException as exc:  # handed to the loop, classified there
                if not state.stopped.is_set():
                    put("error", exc)
            finally:
                state.close_upstream()

        self._open_streams.add(state)
        future = loop.run_in_executor(self._executor, worker)
        translator = ConverseStreamTranslator(model)
        try:
            while True:
                kind, item = await queue.get()
                if kind == "error":
                    raise classify(item) from item
                try:
                    if kind == "end":
                        done = translator.finish()
                        if done is not None:
                            yield done
                        return
                    state.room.release()
                    events = translator.feed(item)
                except Exception as exc:
                    raise classify(exc) from exc
                for out in events:
                    yield out
        finally:
            future.cancel()  # still queued: never sent
            state.stop()
            self._open_streams.discard(state)

    async def probe(self, timeout: float) -> None:
        # CountTokens spends no tokens.
        params = {"modelId": self.default_model,
                  "input": {"converse": {"messages": [{"role": "user", "content": [{"text": "ping"}]}]}}}
        await self._run("count_tokens", params, timeout)


class _StreamState:
    """What a stream's reader thread and its consumer share."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.room = threading.Semaphore(STREAM_BUFFER)
        self.upstream: Any = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.stopped.set()
        self.close_upstream()

    def close_upstream(self) -> None:
        with self._lock:
            upstream, self.upstream = self.upstream, None
        if upstream is None:
            return
        try:
            raw = getattr(upstream, "_raw_stream", None)
            connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
            sock = getattr(connection, "sock", None)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in the reader thread
        except OSError:
            pass
        try:
            upstream.close()
        except Exception:  # best effort: the socket is shut down already
            log.debug("closing a Bedrock event stream failed", exc_info=True)
