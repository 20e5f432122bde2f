"""The Bedrock transport the gateway replaced: boto3 in a thread pool, kept only for
``python -m bench.bedrock_transports`` to measure against the shipped aiobotocore transport.

This is gateway_server/providers/bedrock.py as of the commit "Bedrock: split translation from
transport" (boto3, ``executor_workers`` threads, read-timeout tiers, a reader thread per stream
with a bounded buffer), with ``executor_workers`` made a constructor argument. The translation
and the error classification are the gateway's own, imported, so only the transport differs.
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
import botocore.exceptions

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers.base import Provider, ProviderRequest, ProviderResponse, StreamEvent
from gateway_server.providers.bedrock import classify
from gateway_server.providers.bedrock_translation import ConverseStreamTranslator, build_params, parse_response
from gateway_server.settings import BedrockProviderConfig

log = logging.getLogger("bench.bedrock_threads")

# botocore's read_timeout is per client: one client per tier, and each call uses the smallest tier
# that covers its budget, so a thread blocked on a hung Bedrock is freed soon after the caller gave
# up (not a whole provider timeout later).
READ_TIMEOUT_TIERS = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0)
# Events a stream's reader thread may hold ahead of a slow caller before it stops reading (and TCP
# flow control slows Bedrock down): memory per stream stays flat.
STREAM_BUFFER = 64


def read_timeout_tiers(provider_timeout: float) -> tuple[float, ...]:
    return (*(t for t in READ_TIMEOUT_TIERS if t < provider_timeout), provider_timeout)


class ThreadedBedrockProvider(Provider):
    type = "bedrock"

    def __init__(self, name: str, cfg: BedrockProviderConfig, region: str | None, executor_workers: int = 16) -> None:
        super().__init__(name, cfg, region=region or "")
        self._cfg = cfg
        self._workers = executor_workers
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
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix=f"bedrock-{self.name}")
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
                                      max_pool_connections=self._workers,
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
