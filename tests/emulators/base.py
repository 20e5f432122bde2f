"""Shared machinery of the provider emulators: server thread, fault queue, request recording, fault replay.

An emulator is an aiohttp application served on 127.0.0.1 (random port) by a background thread running its own
event loop, so sync tests, async tests (whose loop it never blocks) and boto3 in a thread pool can all use it.
``start()`` / ``stop()`` are synchronous; the public state (faults, recorded requests, counters) is guarded by
one lock and may be read and changed from any thread.

Faults are queued per target (``"model"``: generation calls; ``"probe"``: token-free calls such as model lists
and token counts) and consumed FIFO by the authenticated, well-formed calls of that target. Client disconnects
are seen through aiohttp's handler cancellation: when a client goes away before the emulator has finished its
response, the handler is cancelled (or its write fails) and ``disconnects`` is incremented.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Literal, Self, TypeVar

from aiohttp import web

from .answers import count_words, text_chunks

FaultKind = Literal[
    "status",
    "slow",
    "hang",
    "drop",
    "truncate",
    "malformed",
    "missing_output",
    "stream_cut",
    "stream_error",
    "first_token_delay",
]
FaultTarget = Literal["model", "probe"]
CallKind = Literal["model", "probe", "other"]

_STOP_TIMEOUT = 10.0
_SHUTDOWN_TIMEOUT = 1.0
_FLUSH_BYTES = 64 * 1024

# Per-request state: the emulator closed the connection itself / wrote the whole response.
_CLOSED_BY_EMULATOR = web.RequestKey("emulator.closed_by_emulator", bool)
_FINISHED = web.RequestKey("emulator.finished", bool)


@dataclass(frozen=True)
class Fault:
    """A failure to replay on the next call(s); build one with the constructors, e.g. ``Fault.status(529)``.

    How each provider renders a fault is documented on its emulator class. On a streaming call, the non-stream
    faults act before the stream starts (``status``: an HTTP error; ``slow``: delayed headers; ``hang``,
    ``drop``) or on the stream itself (``truncate``: cut in the middle of the event halfway through the stream;
    ``malformed``: an undecodable event after the first one; ``missing_output``: a well-formed stream without
    content blocks). On a non-streaming call, the stream faults act as their closest equivalent: ``stream_cut``
    as ``truncate``, ``first_token_delay`` as ``slow`` and ``stream_error`` as the HTTP error of its type.
    """

    kind: FaultKind
    status_code: int | None = None
    retry_after: float | None = None
    message: str | None = None
    error_type: str | None = None
    seconds: float = 0.0
    after_events: int = 0

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        error_type: str | None = None,
    ) -> Fault:
        """An error response in the provider's format; ``error_type`` defaults to the status code's."""
        if not 400 <= code <= 599:
            raise ValueError(f"an error status is 4xx or 5xx, not {code}")
        return cls("status", status_code=code, retry_after=retry_after, message=message, error_type=error_type)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Answer normally after ``seconds`` (a client that gives up first counts as a disconnect)."""
        return cls("slow", seconds=_non_negative(seconds))

    @classmethod
    def hang(cls) -> Fault:
        """Never answer: wait until the client disconnects (counted) or the emulator stops."""
        return cls("hang")

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without sending any response."""
        return cls("drop")

    @classmethod
    def truncate(cls) -> Fault:
        """Status 200 with a Content-Length larger than the body sent (half of it), then close the connection."""
        return cls("truncate")

    @classmethod
    def malformed(cls) -> Fault:
        """Status 200 with a body that is not valid JSON (the first half of the answer) and a correct length."""
        return cls("malformed")

    @classmethod
    def missing_output(cls) -> Fault:
        """Status 200 with valid JSON lacking the answer (Anthropic ``content``, Bedrock ``output``)."""
        return cls("missing_output")

    @classmethod
    def stream_cut(cls, after_events: int) -> Fault:
        """Close the connection after sending ``after_events`` stream events."""
        return cls("stream_cut", after_events=_non_negative(after_events))

    @classmethod
    def stream_error(
        cls, after_events: int, error_type: str = "overloaded_error", *, message: str | None = None
    ) -> Fault:
        """Send an in-stream error after ``after_events`` events, then end the stream."""
        return cls("stream_error", after_events=_non_negative(after_events), error_type=error_type, message=message)

    @classmethod
    def first_token_delay(cls, seconds: float) -> Fault:
        """Delay the first content delta of a stream by ``seconds``."""
        return cls("first_token_delay", seconds=_non_negative(seconds))


_N = TypeVar("_N", int, float)


def _non_negative(value: _N) -> _N:
    if value < 0:
        raise ValueError(f"expected a non-negative value, got {value}")
    return value


@dataclass(frozen=True)
class RecordedRequest:
    """A request the emulator received."""

    method: str
    path: str
    """The URL path, percent-decoded, without the query string."""
    headers: dict[str, str]
    """Lower-case names; repeated headers joined by ", "."""
    json: Any
    """The parsed JSON body; None if the body is empty or not JSON."""
    time: float
    """``time.monotonic()`` when the request arrived."""
    kind: CallKind
    """``"model"`` for generation calls, ``"probe"`` for token-free calls, ``"other"`` for unknown routes."""
    query: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class JsonReply:
    """A normal JSON answer, which the JSON faults (truncate, malformed, missing_output) alter."""

    payload: Mapping[str, Any]
    essential_key: str
    """The field ``Fault.missing_output()`` leaves out."""
    headers: Mapping[str, str] = field(default_factory=dict)


StreamEventRole = Literal["meta", "block", "delta"]


@dataclass(frozen=True)
class StreamEvent:
    """One encoded stream event. ``role``: ``"delta"`` for content deltas (``first_token_delay`` holds back the
    first one), ``"block"`` for content block start/stop, ``"meta"`` for the rest (``missing_output`` keeps
    only these)."""

    data: bytes
    role: StreamEventRole = "meta"


@dataclass(frozen=True)
class StreamReply:
    """A normal streamed answer, which the stream faults alter."""

    events: Sequence[StreamEvent]
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


Reply = JsonReply | StreamReply


@dataclass
class _QueuedFault:
    fault: Fault
    remaining: int | None


@dataclass(frozen=True)
class _LoopState:
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    stopping: asyncio.Event
    runner: web.AppRunner
    port: int


class EmulatorBase(ABC):
    """Server lifecycle, fault queue, request recording and fault replay shared by the provider emulators.

    Subclasses declare their routes and how errors are rendered; their handlers call :meth:`_receive` first and
    answer through :meth:`_serve`, which applies the call's fault to the normal reply.
    """

    provider: ClassVar[str]

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._faults: dict[FaultTarget, deque[_QueuedFault]] = {"model": deque(), "probe": deque()}
        self._requests: list[RecordedRequest] = []
        self._model_calls = 0
        self._probe_calls = 0
        self._disconnects = 0
        self._state: _LoopState | None = None
        self.requested_port = 0
        """The loopback port to listen on (set before ``start()``); 0: a random free port."""
        self.reply_text: str | None = None
        """Answer text for every generation call (tool calls aside); None: the default answer."""
        self.stream_chunk_delay: float = 0.0
        """Seconds between consecutive stream events."""
        self.stream_repeat: int = 1
        """Streams repeat the answer text this many times (space-separated), one delta per repetition."""
        self.stop_reason: str | None = None
        """Stop reason of every generation answer (e.g. "pause_turn", "refusal"); None: the natural one."""
        self.redact_thinking: bool = False
        """With thinking on, answer with a redacted thinking block (opaque data) instead of a readable one."""
        self.prompt_cache: set[str] = set()
        """Hashes of the prompt prefixes cached so far (see answers.cache_usage); clear it to empty the cache."""

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Start serving on a random loopback port; returns once the port accepts connections."""
        if self._state is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        started: list[_LoopState] = []
        failures: list[BaseException] = []
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                started.append(loop.run_until_complete(self._astart(loop, threading.current_thread())))
            except BaseException as exc:
                failures.append(exc)
                loop.close()
                return
            finally:
                ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=serve, name=f"{type(self).__name__}-server", daemon=True)
        thread.start()
        ready.wait()
        if failures:
            thread.join()
            raise RuntimeError(f"{type(self).__name__} failed to start") from failures[0]
        self._state = started[0]
        return self

    def stop(self) -> None:
        """Stop serving: hanging and delayed calls are cut off, connections closed, the thread joined."""
        state = self._state
        if state is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._astop(state), state.loop).result(_STOP_TIMEOUT)
        finally:
            state.loop.call_soon_threadsafe(state.loop.stop)
            state.thread.join(_STOP_TIMEOUT)
            self._state = None
        if state.thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} server thread did not stop")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._state is not None

    @property
    def port(self) -> int:
        if self._state is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._state.port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    async def _astart(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> _LoopState:
        app = web.Application(middlewares=[self._disconnect_middleware], client_max_size=64 * 1024 * 1024)
        app.add_routes(self._routes())
        app.router.add_route("*", "/{tail:.*}", self._unknown_route)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_TIMEOUT, access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", self.requested_port))
            sock.listen(128)
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        return _LoopState(loop=loop, thread=thread, stopping=asyncio.Event(), runner=runner, port=sock.getsockname()[1])

    async def _astop(self, state: _LoopState) -> None:
        state.stopping.set()
        # Let connections accepted just now finish their setup: closing the listening socket under an
        # accept in progress leaks the accepted socket (asyncio asserts in Server._attach).
        for _ in range(3):
            await asyncio.sleep(0)
        await state.runner.cleanup()
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks() if task is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    # ---------------------------------------------------------------- faults and observations

    def inject(self, fault: Fault, times: int | None = 1, *, on: FaultTarget = "model") -> None:
        """Queue ``fault`` for the next ``times`` calls of target ``on`` (None: every call until ``clear()``).

        Faults apply FIFO: a queued fault takes effect once those before it are used up.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 or None, not {times}")
        if on not in self._faults:
            raise ValueError(f"on must be 'model' or 'probe', not {on!r}")
        with self._lock:
            self._faults[on].append(_QueuedFault(fault, times))

    def clear(self) -> None:
        """Drop every queued fault (of both targets)."""
        with self._lock:
            for queue in self._faults.values():
                queue.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def model_calls(self) -> int:
        """Generation calls received, faulted and rejected ones included."""
        with self._lock:
            return self._model_calls

    @property
    def probe_calls(self) -> int:
        """Token-free calls received (model list/retrieve, token counts), faulted and rejected ones included."""
        with self._lock:
            return self._probe_calls

    @property
    def disconnects(self) -> int:
        """Times a client went away before the emulator had finished its response."""
        with self._lock:
            return self._disconnects

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` generation calls have arrived; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._model_calls >= n, timeout)

    def wait_for_disconnect(self, timeout: float = 5.0, *, count: int = 1) -> bool:
        """Block until at least ``count`` client disconnects have been seen; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._disconnects >= count, timeout)

    # In async tests, use these: the blocking waits above stall the test's event loop, and an asyncio client
    # only closes its socket (what the emulator sees as a disconnect) once that loop runs again.

    async def await_requests(self, n: int, timeout: float = 5.0) -> bool:
        """``wait_for_requests`` without blocking the running event loop."""
        return await asyncio.to_thread(self.wait_for_requests, n, timeout)

    async def await_disconnect(self, timeout: float = 5.0, *, count: int = 1) -> bool:
        """``wait_for_disconnect`` without blocking the running event loop."""
        return await asyncio.to_thread(self.wait_for_disconnect, timeout, count=count)

    # ---------------------------------------------------------------- provider hooks

    @abstractmethod
    def _routes(self) -> list[web.RouteDef]:
        """The provider's routes (unknown paths are answered by :meth:`_not_found`)."""

    @abstractmethod
    def _error_response(self, fault: Fault) -> web.Response:
        """The provider's error response for a ``Fault.status(...)``."""

    @abstractmethod
    def _stream_error_status(self, fault: Fault) -> Fault:
        """The ``Fault.status(...)`` standing in for ``fault`` (a stream_error) on a non-streaming call."""

    @abstractmethod
    def _stream_error_event(self, fault: Fault) -> bytes:
        """The encoded in-stream error event for a ``Fault.stream_error(...)``."""

    @abstractmethod
    def _malformed_stream_event(self) -> bytes:
        """An encoded stream event that the client cannot decode."""

    @abstractmethod
    def _not_found(self, request: web.Request) -> web.Response:
        """The provider's answer to an unknown route."""

    # ---------------------------------------------------------------- handler helpers

    async def _receive(self, request: web.Request, kind: CallKind) -> RecordedRequest:
        """Read and record the request, counting it as a call of ``kind``."""
        body = await request.read()
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={name.lower(): ", ".join(request.headers.getall(name)) for name in request.headers},
            json=parsed,
            time=time.monotonic(),
            kind=kind,
            query=dict(request.query),
            body=body,
        )
        with self._changed:
            self._requests.append(record)
            if kind == "model":
                self._model_calls += 1
            elif kind == "probe":
                self._probe_calls += 1
            self._changed.notify_all()
        return record

    def _take_fault(self, target: FaultTarget) -> Fault | None:
        """The fault for the current call of ``target``, if one is queued (consuming one use of it)."""
        with self._lock:
            queue = self._faults[target]
            if not queue:
                return None
            head = queue[0]
            if head.remaining is not None:
                head.remaining -= 1
                if head.remaining == 0:
                    queue.popleft()
            return head.fault

    async def _unknown_route(self, request: web.Request) -> web.Response:
        await self._receive(request, "other")
        return self._not_found(request)

    async def _serve(self, request: web.Request, fault: Fault | None, reply: Reply) -> web.StreamResponse:
        """Answer with ``reply``, altered by ``fault``."""
        if fault is None:
            return await self._send(request, reply, None)
        match fault.kind:
            case "status":
                return self._error_response(fault)
            case "drop":
                return self._close_connection(request)
            case "hang":
                await self._pause(None)  # returns only when the emulator stops
                return self._close_connection(request)
            case "slow":
                if not await self._pause(fault.seconds):
                    return self._close_connection(request)
                return await self._send(request, reply, None)
        return await self._send(request, reply, fault)

    async def _send(self, request: web.Request, reply: Reply, fault: Fault | None) -> web.StreamResponse:
        if isinstance(reply, StreamReply):
            return await self._send_stream(request, reply, fault)
        return await self._send_json(request, reply, fault)

    async def _send_json(self, request: web.Request, reply: JsonReply, fault: Fault | None) -> web.StreamResponse:
        kind = fault.kind if fault is not None else None
        if fault is not None and kind == "stream_error":
            return self._error_response(self._stream_error_status(fault))
        if fault is not None and kind == "first_token_delay" and not await self._pause(fault.seconds):
            return self._close_connection(request)
        payload = dict(reply.payload)
        if kind == "missing_output":
            payload.pop(reply.essential_key, None)
        body = json.dumps(payload).encode()
        headers = {**reply.headers, "Content-Type": "application/json"}
        if kind == "malformed":
            return web.Response(body=body[: len(body) // 2], headers=headers)
        if kind in ("truncate", "stream_cut"):
            response = web.StreamResponse(status=200, headers=headers)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            return self._close_connection(request, response)
        return web.Response(body=body, headers=headers)

    async def _send_stream(self, request: web.Request, reply: StreamReply, fault: Fault | None) -> web.StreamResponse:
        events = list(reply.events)
        kind = fault.kind if fault is not None else None
        if kind == "missing_output":
            events = [event for event in events if event.role == "meta"]
        cut_at = fault.after_events if fault is not None and kind == "stream_cut" else None
        error_at = fault.after_events if fault is not None and kind == "stream_error" else None
        split_at = len(events) // 2 if kind == "truncate" else None
        malformed_at = 1 if kind == "malformed" else None
        first_delta_delay = fault.seconds if fault is not None and kind == "first_token_delay" else None

        response = web.StreamResponse(status=200, headers={**reply.headers, "Content-Type": reply.content_type})
        await response.prepare(request)
        pending = bytearray()

        async def flush() -> None:
            if pending:
                data = bytes(pending)
                pending.clear()
                await response.write(data)

        for index, event in enumerate(events):
            if index == cut_at:
                await flush()
                return self._close_connection(request, response)
            if index == error_at:
                assert fault is not None
                pending += self._stream_error_event(fault)
                break
            if index == malformed_at:
                pending += self._malformed_stream_event()
                break
            if index == split_at:
                pending += event.data[: len(event.data) // 2]
                await flush()
                return self._close_connection(request, response)
            if index > 0 and self.stream_chunk_delay > 0:
                await flush()
                if not await self._pause(self.stream_chunk_delay):
                    return self._close_connection(request, response)
            if event.role == "delta" and first_delta_delay is not None:
                await flush()
                if not await self._pause(first_delta_delay):
                    return self._close_connection(request, response)
                first_delta_delay = None
            pending += event.data
            if len(pending) >= _FLUSH_BYTES:
                await flush()
        else:
            if cut_at is not None:  # cut after the last event: the stream just never ends properly
                await flush()
                return self._close_connection(request, response)
            if error_at is not None:
                assert fault is not None
                pending += self._stream_error_event(fault)
        await flush()
        request[_FINISHED] = True
        await response.write_eof()
        return response

    async def _pause(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: forever). True if the time ran out, False if the emulator is stopping.

        A client disconnect meanwhile cancels the handler (aiohttp handler cancellation) and is counted.
        """
        stopping = self._loop_state().stopping
        try:
            await asyncio.wait_for(stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def _close_connection(self, request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
        """Close the connection (after flushing what was written) and return a response aiohttp cannot send."""
        request[_CLOSED_BY_EMULATOR] = True
        if request.transport is not None:
            request.transport.close()
        return response if response is not None else web.Response()

    def _text_deltas(self, text: str) -> list[str]:
        """``text`` as stream deltas: one per word, or one per repetition when ``stream_repeat`` > 1."""
        repeat = max(1, self.stream_repeat)
        return text_chunks(text, 1 if repeat == 1 else max(1, count_words(text) // repeat))

    def _loop_state(self) -> _LoopState:
        state = self._state
        if state is None:
            raise RuntimeError("emulator is not running")
        return state

    @web.middleware
    async def _disconnect_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except (asyncio.CancelledError, ConnectionResetError):
            state = self._state
            stopping = state is not None and state.stopping.is_set()
            if not (stopping or request.get(_CLOSED_BY_EMULATOR) or request.get(_FINISHED)):
                with self._changed:
                    self._disconnects += 1
                    self._changed.notify_all()
            raise


def retry_after_value(seconds: float) -> str:
    """A ``retry-after`` header value: whole seconds without a fraction, else the float."""
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)
