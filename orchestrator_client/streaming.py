"""``EventStream``: what :meth:`GatewayClient.stream` returns.

An async iterator of typed events (:data:`~orchestrator_client.results.StreamEvent`) that is also
an async context manager. The call starts on the first ``__anext__``; closing the stream early
(``aclose()``, leaving ``async with``, cancelling the consuming task, or dropping the iterator
after a ``break``) cancels the gRPC call, so the gateway closes its upstream stream too::

    async with client.stream("What is 25 + 75?") as events:
        async for event in events:
            if isinstance(event, TextDelta):
                print(event.text, end="", flush=True)
    print(events.text, events.end.usage if events.end else None)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import Self

from orchestrator_client.content import ToolCall
from orchestrator_client.results import StreamEnd, StreamEvent, StreamStart, TextDelta

__all__ = ["EventStream", "StreamProgress"]


class StreamProgress:
    """What the event generator tells its :class:`EventStream` (kept apart from it, so the generator
    holds no reference to the stream: dropping the stream after a ``break`` finalizes the generator,
    which cancels the gRPC call, at once)."""

    __slots__ = ("attempts", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.attempts = 0


class EventStream:
    """The events of one streamed completion, plus what has arrived so far.

    ``request_id`` is known before the call starts (every attempt sends it); ``start``/``end``
    are the start and end events once they have arrived; ``text`` is the text received so far
    and ``tool_calls`` the tool calls; ``attempts`` is how many times the client has sent the
    request so far.
    """

    def __init__(
        self, events: Callable[[StreamProgress], AsyncGenerator[StreamEvent, None]], request_id: str
    ) -> None:
        self._progress = StreamProgress(request_id)
        self.start: StreamStart | None = None
        self.end: StreamEnd | None = None
        self._text: list[str] = []
        self._tool_calls: list[ToolCall] = []
        self._events = events(self._progress)

    @property
    def request_id(self) -> str:
        """The ``x-request-id`` every attempt of this stream sends."""
        return self._progress.request_id

    @property
    def attempts(self) -> int:
        """How many times the client has sent the request so far (1 = no retry)."""
        return self._progress.attempts

    @property
    def text(self) -> str:
        """The text deltas received so far, joined."""
        return "".join(self._text)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(self._tool_calls)

    @property
    def complete(self) -> bool:
        """True once the end event has arrived."""
        return self.end is not None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StreamEvent:
        event = await self._events.__anext__()
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ToolCall):
            self._tool_calls.append(event)
        elif isinstance(event, StreamStart):
            self.start = event
        elif isinstance(event, StreamEnd):
            self.end = event
        return event

    async def aclose(self) -> None:
        """Stop reading: cancels the gRPC call if it is still running. Idempotent."""
        await self._events.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "complete" if self.end else ("started" if self.start else "pending")
        return f"EventStream(request_id={self.request_id!r}, {state}, attempts={self.attempts})"
