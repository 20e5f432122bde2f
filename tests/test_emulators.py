"""The provider emulators, driven by the real SDKs (and raw HTTP where the SDKs hide the wire).

These tests also pin down what each fault surfaces as, per SDK and transport, for the gateway's error
classification ("raw": not wrapped in the SDK's own exception types; anthropic/aiohttp is
``http_client=anthropic.DefaultAioHttpClient()``):

fault           anthropic/httpx (default)        anthropic/aiohttp              boto3 bedrock-runtime
--------------  -------------------------------  -----------------------------  -------------------------------------
status(code)    APIStatusError subclass by code  (same)                         ClientError, Code = x-amzn-ErrorType
drop            APIConnectionError, __cause__    APIConnectionError, __cause__  ConnectionClosedError
                httpx2.RemoteProtocolError       httpx2.ConnectError (sic)
truncate        APIConnectionError, __cause__    APIConnectionError, __cause__  NO ERROR: only ResponseMetadata
                httpx2.RemoteProtocolError       httpx2.ReadError               (botocore ignores Content-Length)
malformed       json.JSONDecodeError (raw)       (same)                         NO ERROR: only ResponseMetadata
missing_output  NO ERROR: Message.content None   (same)                         NO ERROR: no "output" key
hang            APITimeoutError                  (same)                         ReadTimeoutError
slow            the answer, late                 (same)                         (same)
while streaming, raised by the iteration:
stream_cut,     httpx2.RemoteProtocolError (raw) httpx2.ReadError (raw)         urllib3 ProtocolError (raw)
truncate
stream_error    APIStatusError (the base class,  (same)                         EventStreamError (a ClientError),
                status_code 200), .type set                                     Code = e.g. modelStreamErrorException
malformed       json.JSONDecodeError (raw)       (same)                         eventstream.ChecksumMismatch (raw)
missing_output  NO ERROR: no content events      (same)                         NO ERROR: no content events

The faults whose exceptions differ between the SDK's transports (drop, truncate, stream_cut) run over
both; the ones marked "(same)" run over aiohttp, the gateway's default transport (the SDK maps them
to its own classes before the transport matters). Timeouts are proven once (hang), not again as
"slow past the timeout" or per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anthropic
import boto3
import botocore.config
import botocore.eventstream
import botocore.exceptions
import httpx2
import pytest
import urllib3.exceptions
from anthropic.types import Message, MessageParam, TextBlock, ToolParam, ToolUseBlock

from tests.emulators import AnthropicEmulator, BedrockEmulator, Fault
from tests.emulators.answers import arithmetic_answer, sign, text_chunks

pytest_plugins = ["tests.emulators.pytest_plugin"]
pytestmark = pytest.mark.timeout(20)

CLAUDE = "claude-sonnet-4-6"
BEDROCK_MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-v1:0"
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ADD_TOOL: ToolParam = {
    "name": "add",
    "description": "Add two numbers",
    "input_schema": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
}


@pytest.fixture(autouse=True)
def no_leftover_servers() -> Iterator[None]:
    """Every emulator thread started by a test is gone after it."""
    yield
    leftovers = [t.name for t in threading.enumerate() if t.name.endswith("Emulator-server")]
    assert not leftovers


# -------------------------------------------------------------------- clients


def claude(
    emu: AnthropicEmulator, *, transport: str = "httpx", timeout: float = 2.0, **kwargs: Any
) -> anthropic.AsyncAnthropic:
    http_client = anthropic.DefaultAioHttpClient() if transport == "aiohttp" else None
    options: dict[str, Any] = {"api_key": "test-key", "base_url": emu.base_url, "max_retries": 0, "timeout": timeout}
    return anthropic.AsyncAnthropic(**{**options, **kwargs}, http_client=http_client)


@pytest.fixture(params=["httpx", "aiohttp"])
async def client(
    request: pytest.FixtureRequest, anthropic_emulator: AnthropicEmulator
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """An AsyncAnthropic on the emulator, over each of the SDK's HTTP transports (for the faults whose
    exceptions differ between them: the transport's own errors)."""
    async with claude(anthropic_emulator, transport=request.param, timeout=0.5) as sdk:
        yield sdk


@pytest.fixture
async def aio_client(anthropic_emulator: AnthropicEmulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """An AsyncAnthropic over aiohttp, the gateway's default transport (for the faults the SDK reports
    the same way over either transport)."""
    async with claude(anthropic_emulator, transport="aiohttp", timeout=0.5) as sdk:
        yield sdk


def bedrock(emu: BedrockEmulator, *, read_timeout: float = 2.0, access_key_id: str = "AKIDTEST") -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=emu.endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key="secret",
        config=botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=read_timeout),
    )


def ask(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


def converse_ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def transport_of(sdk: anthropic.AsyncAnthropic) -> str:
    return "aiohttp" if isinstance(sdk._client, anthropic.DefaultAioHttpClient) else "httpx"


def text_of(message: Message) -> str:
    """The text of a one-block text answer."""
    (block,) = message.content
    assert isinstance(block, TextBlock)
    return block.text


def tool_use_of(message: Message) -> ToolUseBlock:
    """The tool call of a one-block tool-use answer."""
    (block,) = message.content
    assert isinstance(block, ToolUseBlock)
    return block


async def create(sdk: anthropic.AsyncAnthropic, text: str = "hi", **kwargs: Any) -> Message:
    message: Message = await sdk.messages.create(model=CLAUDE, max_tokens=1000, messages=ask(text), **kwargs)
    return message


@dataclass
class Streamed:
    """The events a stream delivered, and the exception that ended it early, if any."""

    events: list[Any] = field(default_factory=list)
    error: Exception | None = None

    @property
    def kinds(self) -> list[str]:
        return [event.type if hasattr(event, "type") else next(iter(event)) for event in self.events]


async def stream_events(sdk: anthropic.AsyncAnthropic, text: str = "one two three", **kwargs: Any) -> Streamed:
    """Create a raw Messages stream (errors here propagate) and iterate it (errors here are caught)."""
    options: dict[str, Any] = {"model": CLAUDE, "max_tokens": 1000, "messages": ask(text), **kwargs}
    stream = await sdk.messages.create(**options, stream=True)
    streamed = Streamed()
    try:
        async for event in stream:
            streamed.events.append(event)
    except Exception as exc:
        streamed.error = exc
    return streamed


def converse_stream_events(client: Any, text: str = "one two three", **kwargs: Any) -> Streamed:
    """Call ConverseStream (errors here propagate) and iterate its event stream (errors here are caught)."""
    response = client.converse_stream(modelId=BEDROCK_MODEL, messages=converse_ask(text), **kwargs)
    streamed = Streamed()
    try:
        for event in response["stream"]:
            streamed.events.append(event)
    except Exception as exc:
        streamed.error = exc
    finally:
        response["stream"].close()  # botocore leaves the connection open when the iteration raises
    return streamed


# -------------------------------------------------------------------- shared machinery


def test_fault_constructors() -> None:
    assert Fault.status(429, retry_after=1.5) == Fault("status", status_code=429, retry_after=1.5)
    assert Fault.slow(0.2).seconds == 0.2
    assert Fault.stream_error(3).error_type == "overloaded_error"
    assert Fault.stream_cut(2).after_events == 2
    with pytest.raises(ValueError):
        Fault.status(200)
    with pytest.raises(ValueError):
        Fault.slow(-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Fault.hang().kind = "drop"  # type: ignore[misc]


def test_default_answers() -> None:
    assert arithmetic_answer("What is 25 + 75?") == "100"
    assert arithmetic_answer("what is 7 x 6") == "42"
    assert arithmetic_answer("10 / 4") == "2.5"
    assert arithmetic_answer("2 / 3") == "0.6666666667"
    assert arithmetic_answer("1 / 0") is None
    assert arithmetic_answer("no numbers here") is None
    assert text_chunks("  hello big  world ") == ["  hello ", "big  ", "world "]
    assert text_chunks("a b c d e", 2) == ["a b ", "c d ", "e"]


def test_lifecycle_binds_loopback_and_releases_everything() -> None:
    emu = AnthropicEmulator()
    with pytest.raises(RuntimeError):
        emu.base_url  # noqa: B018
    with emu:
        assert emu.running
        assert emu.base_url.startswith("http://127.0.0.1:")
        port = emu.port
        with pytest.raises(RuntimeError):
            emu.start()
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not emu.running
    emu.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with BedrockEmulator() as other:
        assert other.endpoint_url == other.base_url


async def test_faults_apply_fifo_and_times(anthropic_emulator: AnthropicEmulator) -> None:
    emu = anthropic_emulator
    emu.inject(Fault.status(529), times=2)
    emu.inject(Fault.status(429))
    async with claude(emu) as sdk:
        outcomes = []
        for _ in range(4):
            try:
                await create(sdk)
                outcomes.append(200)
            except anthropic.APIStatusError as exc:
                outcomes.append(exc.status_code)
        assert outcomes == [529, 529, 429, 200]

        emu.inject(Fault.status(500), times=None)
        for _ in range(3):
            with pytest.raises(anthropic.InternalServerError):
                await create(sdk)
        emu.clear()
        assert (await create(sdk)).content
    assert emu.model_calls == 8


async def test_server_runs_off_the_test_loop(anthropic_emulator: AnthropicEmulator) -> None:
    """A call left hanging blocks neither the test's event loop nor other calls."""
    anthropic_emulator.inject(Fault.hang())
    async with claude(anthropic_emulator, timeout=10) as sdk:
        hanging = asyncio.create_task(create(sdk, "hanging"))
        assert await anthropic_emulator.await_requests(1)
        assert text_of(await create(sdk, "What is 1 + 2?")) == "3"
        assert not hanging.done()
        hanging.cancel()  # the client gives up: the emulator sees the disconnect
        assert await anthropic_emulator.await_disconnect()
    assert anthropic_emulator.wait_for_requests(2, timeout=0)
    assert not anthropic_emulator.wait_for_requests(3, timeout=0.05)


async def test_stop_cuts_off_hanging_calls_without_counting_a_disconnect() -> None:
    emu = AnthropicEmulator().start()
    try:
        emu.inject(Fault.hang())
        async with claude(emu, timeout=5) as sdk:
            call = asyncio.create_task(create(sdk))
            assert await emu.await_requests(1)
            started = time.monotonic()
            await asyncio.to_thread(emu.stop)
            assert time.monotonic() - started < 5
            with pytest.raises(anthropic.APIConnectionError):
                await call
    finally:
        emu.stop()
    assert emu.disconnects == 0


# -------------------------------------------------------------------- Anthropic: normal paths


async def test_anthropic_message(anthropic_emulator: AnthropicEmulator) -> None:
    async with claude(anthropic_emulator) as sdk:
        message = await sdk.messages.create(
            model=CLAUDE, max_tokens=100, system="be brief", messages=ask("What is 25 + 75?")
        )
        assert message.id.startswith("msg_")
        assert message.model == CLAUDE
        assert message.role == "assistant"
        assert text_of(message) == "100"
        assert message.stop_reason == "end_turn"
        assert message.stop_sequence is None
        assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 1)

        other = await create(sdk, "tell me a story")
        assert text_of(other) == "anthropic emulator reply to: tell me a story"
        anthropic_emulator.reply_text = "fixed answer"
        assert text_of(await create(sdk, "What is 1 + 1?")) == "fixed answer"

    first = anthropic_emulator.requests[0]
    assert (first.method, first.path, first.kind) == ("POST", "/v1/messages", "model")
    assert first.headers["authorization"] == "Bearer test-key"  # the 2.x SDK sends the API key as a bearer token
    assert first.headers["anthropic-version"]
    assert first.json["messages"] == ask("What is 25 + 75?")
    assert [r.time for r in anthropic_emulator.requests] == sorted(r.time for r in anthropic_emulator.requests)
    assert anthropic_emulator.model_calls == 3


async def test_anthropic_max_tokens_and_stop_sequences(anthropic_emulator: AnthropicEmulator) -> None:
    async with claude(anthropic_emulator) as sdk:
        cut = await sdk.messages.create(model=CLAUDE, max_tokens=2, messages=ask("tell me a story"))
        assert text_of(cut) == "anthropic emulator"
        assert (cut.stop_reason, cut.usage.output_tokens) == ("max_tokens", 2)

        stopped = await sdk.messages.create(
            model=CLAUDE, max_tokens=100, messages=ask("tell me a story"), stop_sequences=["zzz", "reply"]
        )
        assert text_of(stopped) == "anthropic emulator "
        assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "reply")


async def test_anthropic_tool_use_and_tool_result(anthropic_emulator: AnthropicEmulator) -> None:
    async with claude(anthropic_emulator) as sdk:
        asked = await sdk.messages.create(
            model=CLAUDE,
            max_tokens=100,
            tools=[WEATHER_TOOL],
            messages=ask("Use the tool for Paris"),
        )
        assert asked.stop_reason == "tool_use"
        call = tool_use_of(asked)
        assert call.id.startswith("toolu_")
        assert (call.name, call.input) == ("get_weather", {"city": "Use the tool for Paris"})

        forced = await sdk.messages.create(
            model=CLAUDE,
            max_tokens=100,
            tools=[WEATHER_TOOL, ADD_TOOL],
            tool_choice={"type": "tool", "name": "add"},
            messages=ask("what is 2 + 3"),
        )
        assert (tool_use_of(forced).name, tool_use_of(forced).input) == ("add", {"a": 2, "b": 3})

        not_asked = await sdk.messages.create(
            model=CLAUDE,
            max_tokens=100,
            tools=[WEATHER_TOOL],
            messages=ask("What is 2 + 3?"),
        )
        assert text_of(not_asked) == "5"

        answered = await sdk.messages.create(
            model=CLAUDE,
            max_tokens=100,
            tools=[WEATHER_TOOL],
            messages=[
                {"role": "user", "content": "Use the tool for Paris"},
                asked.to_param(),
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}]},
            ],
        )
        assert text_of(answered) == "The tool returned: sunny, 21C"
        assert answered.stop_reason == "end_turn"


async def test_anthropic_stream(anthropic_emulator: AnthropicEmulator) -> None:
    async with claude(anthropic_emulator) as sdk:
        streamed = await stream_events(sdk, "hello there")
        assert streamed.error is None
        events = streamed.events
        assert streamed.kinds == [
            "message_start",
            "content_block_start",
            *["content_block_delta"] * 6,
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
        assert deltas == ["anthropic ", "emulator ", "reply ", "to: ", "hello ", "there"]
        assert events[0].message.model == CLAUDE
        assert events[-2].delta.stop_reason == "end_turn" and events[-2].usage.output_tokens == 6

        async with sdk.messages.stream(model=CLAUDE, max_tokens=100, messages=ask("What is 6 x 7?")) as stream:
            assert [text async for text in stream.text_stream] == ["42"]
            final = await stream.get_final_message()
        assert (text_of(final), final.stop_reason, final.usage.input_tokens) == ("42", "end_turn", 5)

        async with sdk.messages.stream(
            model=CLAUDE,
            max_tokens=100,
            tools=[ADD_TOOL],
            messages=ask("use the tool: 20 + 22"),
        ) as stream:
            kinds = [e.delta.type async for e in stream if e.type == "content_block_delta"]
            final = await stream.get_final_message()
        assert kinds == ["input_json_delta"] * 3
        assert final.stop_reason == "tool_use"
        assert (tool_use_of(final).name, tool_use_of(final).input) == ("add", {"a": 20, "b": 22})


async def test_anthropic_long_stream_and_chunk_delay(anthropic_emulator: AnthropicEmulator) -> None:
    anthropic_emulator.reply_text = "lorem ipsum dolor sit amet " * 40  # 1 KiB
    anthropic_emulator.stream_repeat = 200
    async with claude(anthropic_emulator, timeout=30) as sdk:
        streamed = await stream_events(sdk, max_tokens=10**6)
        text = "".join(e.delta.text for e in streamed.events if e.type == "content_block_delta")
        assert len(text) > 200_000
        assert len(streamed.events) == 200 + 5

        anthropic_emulator.reply_text = "a b c"
        anthropic_emulator.stream_repeat = 1
        anthropic_emulator.stream_chunk_delay = 0.03
        started = time.monotonic()
        streamed = await stream_events(sdk)
        assert streamed.error is None
        assert time.monotonic() - started >= 0.03 * (len(streamed.events) - 1)


async def test_anthropic_probes(anthropic_emulator: AnthropicEmulator) -> None:
    async with claude(anthropic_emulator) as sdk:
        page = await sdk.models.list(limit=2)
        assert [m.id for m in page.data] == anthropic_emulator.models[:2]
        assert page.has_more and page.first_id == anthropic_emulator.models[0]
        assert page.data[0].type == "model" and page.data[0].display_name == "Claude Sonnet 4.6"
        assert [m.id async for m in sdk.models.list(limit=1)] == anthropic_emulator.models
        assert (await sdk.models.retrieve(CLAUDE)).id == CLAUDE
        with pytest.raises(anthropic.NotFoundError):
            await sdk.models.retrieve("claude-unknown")
        counted = await sdk.messages.count_tokens(model=CLAUDE, messages=ask("three words here"))
        assert counted.input_tokens == 3

        # Faults aim at generation calls unless injected on="probe".
        anthropic_emulator.inject(Fault.status(529), on="probe")
        await create(sdk)
        with pytest.raises(anthropic.OverloadedError):
            await sdk.models.list()
        anthropic_emulator.inject(Fault.missing_output(), on="probe")
        assert (await sdk.messages.count_tokens(model=CLAUDE, messages=ask("x"))).input_tokens is None
    assert anthropic_emulator.model_calls == 1
    assert anthropic_emulator.probe_calls == 9  # the auto-paginated list made 3 calls
    assert {r.kind for r in anthropic_emulator.requests} == {"model", "probe"}


async def test_anthropic_credentials(anthropic_emulator: AnthropicEmulator) -> None:
    async with claude(anthropic_emulator, api_key="wrong-key") as sdk:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await create(sdk)
    assert caught.value.type == "authentication_error"
    assert caught.value.api_message == "invalid x-api-key"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{anthropic_emulator.base_url}/v1/messages",
            headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01"},
            json={"model": CLAUDE, "max_tokens": 10, "messages": ask("hi")},
        ) as response:
            assert response.status == 200


@pytest.mark.parametrize("missing", ["model", "max_tokens", "messages"])
async def test_anthropic_validation(anthropic_emulator: AnthropicEmulator, missing: str) -> None:
    body = {"model": CLAUDE, "max_tokens": 10, "messages": ask("hi")}
    del body[missing]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{anthropic_emulator.base_url}/v1/messages", headers={"x-api-key": "test-key"}, json=body
        ) as response:
            assert response.status == 400
            error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert missing in error["message"]


# -------------------------------------------------------------------- Anthropic: faults


@pytest.mark.parametrize(
    ("code", "error_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.ContentTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (503, anthropic.ServiceUnavailableError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_anthropic_status_faults(
    anthropic_emulator: AnthropicEmulator, code: int, error_class: type[anthropic.APIStatusError], error_type: str
) -> None:
    anthropic_emulator.inject(Fault.status(code, retry_after=2))
    async with claude(anthropic_emulator) as sdk:
        with pytest.raises(error_class) as caught:
            await create(sdk)
    error = caught.value
    assert (error.status_code, error.type) == (code, error_type)
    assert error.request_id and error.request_id.startswith("req_")
    assert error.response.headers["retry-after"] == "2"


async def test_anthropic_status_fault_overrides(anthropic_emulator: AnthropicEmulator) -> None:
    anthropic_emulator.inject(Fault.status(429, message="slow down", error_type="overloaded_error", retry_after=0.5))
    async with claude(anthropic_emulator) as sdk:
        with pytest.raises(anthropic.RateLimitError) as caught:
            await create(sdk)
    assert (caught.value.type, caught.value.api_message) == ("overloaded_error", "slow down")
    assert caught.value.response.headers["retry-after"] == "0.5"


async def test_anthropic_drop(anthropic_emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    anthropic_emulator.inject(Fault.drop())
    with pytest.raises(anthropic.APIConnectionError) as caught:
        await create(client)
    assert type(caught.value) is anthropic.APIConnectionError
    expected = httpx2.ConnectError if transport_of(client) == "aiohttp" else httpx2.RemoteProtocolError
    assert isinstance(caught.value.__cause__, expected)
    assert (await create(client)).content  # the next call is fine


async def test_anthropic_truncate(anthropic_emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    anthropic_emulator.inject(Fault.truncate())
    with pytest.raises(anthropic.APIConnectionError) as caught:
        await create(client)
    expected = httpx2.ReadError if transport_of(client) == "aiohttp" else httpx2.RemoteProtocolError
    assert isinstance(caught.value.__cause__, expected)


async def test_anthropic_malformed(anthropic_emulator: AnthropicEmulator, aio_client: anthropic.AsyncAnthropic) -> None:
    client = aio_client
    anthropic_emulator.inject(Fault.malformed())
    with pytest.raises(json.JSONDecodeError):  # raised as is, not as an anthropic error
        await create(client)


async def test_anthropic_missing_output(
    anthropic_emulator: AnthropicEmulator, aio_client: anthropic.AsyncAnthropic
) -> None:
    client = aio_client
    anthropic_emulator.inject(Fault.missing_output())
    message = await create(client)
    assert message.content is None  # no error: the SDK does not validate responses by default
    assert message.usage.output_tokens > 0


async def test_anthropic_hang_ends_with_the_client_timeout(
    anthropic_emulator: AnthropicEmulator, aio_client: anthropic.AsyncAnthropic
) -> None:
    client = aio_client
    anthropic_emulator.inject(Fault.hang())
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        await create(client)
    assert time.monotonic() - started < 2
    assert await anthropic_emulator.await_disconnect()
    assert anthropic_emulator.disconnects == 1


async def test_anthropic_slow(anthropic_emulator: AnthropicEmulator, aio_client: anthropic.AsyncAnthropic) -> None:
    client = aio_client
    anthropic_emulator.inject(Fault.slow(0.2))
    started = time.monotonic()
    assert (await create(client)).content
    assert time.monotonic() - started >= 0.2
    assert anthropic_emulator.disconnects == 0


async def test_anthropic_stream_cut(anthropic_emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    anthropic_emulator.inject(Fault.stream_cut(after_events=3))
    expected = httpx2.ReadError if transport_of(client) == "aiohttp" else httpx2.RemoteProtocolError
    streamed = await stream_events(client)
    assert type(streamed.error) is expected  # raised by the iteration, not wrapped by the SDK
    assert streamed.kinds == ["message_start", "content_block_start", "content_block_delta"]

    anthropic_emulator.inject(Fault.truncate())  # cut in the middle of an event, halfway through the stream
    streamed = await stream_events(client)
    assert type(streamed.error) is expected
    assert streamed.kinds[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert "content_block_stop" not in streamed.kinds


async def test_anthropic_stream_error(
    anthropic_emulator: AnthropicEmulator, aio_client: anthropic.AsyncAnthropic
) -> None:
    client = aio_client
    anthropic_emulator.inject(Fault.stream_error(after_events=2))
    streamed = await stream_events(client)
    assert type(streamed.error) is anthropic.APIStatusError  # the base class: the HTTP status was 200
    assert (streamed.error.status_code, streamed.error.type) == (200, "overloaded_error")
    assert streamed.kinds == ["message_start", "content_block_start"]

    anthropic_emulator.inject(Fault.stream_error(after_events=4, error_type="api_error", message="boom"))
    streamed = await stream_events(client)
    assert isinstance(streamed.error, anthropic.APIStatusError)
    assert (streamed.error.type, streamed.error.api_message) == ("api_error", "boom")
    assert len(streamed.events) == 4

    anthropic_emulator.inject(Fault.stream_error(after_events=0))  # on a non-streaming call: the HTTP error
    with pytest.raises(anthropic.OverloadedError):
        await create(client)


async def test_anthropic_first_token_delay(anthropic_emulator: AnthropicEmulator) -> None:
    anthropic_emulator.inject(Fault.first_token_delay(0.3))
    async with claude(anthropic_emulator) as sdk:
        stream = await sdk.messages.create(model=CLAUDE, max_tokens=100, messages=ask("hi"), stream=True)
        arrivals: list[tuple[str, float]] = []
        async for event in stream:
            arrivals.append((event.type, time.monotonic()))
    first_delta = next(t for kind, t in arrivals if kind == "content_block_delta")
    assert first_delta - arrivals[0][1] >= 0.25  # only the first delta waits
    assert arrivals[-1][1] - first_delta < first_delta - arrivals[0][1]


async def test_anthropic_stream_with_other_faults(
    anthropic_emulator: AnthropicEmulator, aio_client: anthropic.AsyncAnthropic
) -> None:
    client = aio_client
    anthropic_emulator.inject(Fault.malformed())
    streamed = await stream_events(client)
    assert isinstance(streamed.error, json.JSONDecodeError)
    assert streamed.kinds == ["message_start"]

    anthropic_emulator.inject(Fault.missing_output())
    assert (await stream_events(client)).kinds == ["message_start", "message_delta", "message_stop"]

    anthropic_emulator.inject(Fault.status(529))
    with pytest.raises(anthropic.OverloadedError):
        await stream_events(client)

    anthropic_emulator.inject(Fault.drop())
    with pytest.raises(anthropic.APIConnectionError):
        await stream_events(client)


async def test_anthropic_client_abandoning_a_stream_counts_as_disconnect(anthropic_emulator: AnthropicEmulator) -> None:
    anthropic_emulator.stream_chunk_delay = 0.05
    async with claude(anthropic_emulator) as sdk:
        stream = await sdk.messages.create(model=CLAUDE, max_tokens=100, messages=ask("a b c d e f"), stream=True)
        async for event in stream:
            if event.type == "content_block_delta":
                break
        await stream.close()
    assert await anthropic_emulator.await_disconnect()


async def test_anthropic_faults_on_the_wire(anthropic_emulator: AnthropicEmulator) -> None:
    """What the SDK hides: truncate announces more bytes than it sends, malformed has a correct length, drop sends
    nothing at all."""
    url = f"{anthropic_emulator.base_url}/v1/messages"
    body = {"model": CLAUDE, "max_tokens": 10, "messages": ask("hi")}
    headers = {"x-api-key": "test-key"}
    async with aiohttp.ClientSession() as session:
        anthropic_emulator.inject(Fault.truncate())
        async with session.post(url, json=body, headers=headers) as response:
            assert response.status == 200
            assert response.content_length is not None and response.content_length > 0
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()

        anthropic_emulator.inject(Fault.malformed())
        async with session.post(url, json=body, headers=headers) as response:
            raw = await response.read()
            assert response.status == 200 and response.content_length == len(raw)
            assert raw.startswith(b'{"id": "msg_')
            with pytest.raises(ValueError):
                json.loads(raw)

    anthropic_emulator.inject(Fault.drop())
    reader, writer = await asyncio.open_connection("127.0.0.1", anthropic_emulator.port)
    payload = json.dumps(body).encode()
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: test-key\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), timeout=2) == b""
    writer.close()


# -------------------------------------------------------------------- Bedrock: normal paths


def test_bedrock_converse(bedrock_emulator: BedrockEmulator) -> None:
    client = bedrock(bedrock_emulator)
    response = client.converse(
        modelId=BEDROCK_MODEL, system=[{"text": "be brief"}], messages=converse_ask("What is 25 + 75?")
    )
    assert response["output"] == {"message": {"role": "assistant", "content": [{"text": "100"}]}}
    assert response["stopReason"] == "end_turn"
    assert response["usage"] == {"inputTokens": 7, "outputTokens": 1, "totalTokens": 8}
    assert response["metrics"]["latencyMs"] >= 1
    assert response["ResponseMetadata"]["RequestId"]

    other = client.converse(modelId=PROFILE_ARN, messages=converse_ask("tell me a story"))
    assert other["output"]["message"]["content"] == [{"text": "bedrock emulator reply to: tell me a story"}]
    bedrock_emulator.reply_text = "fixed"
    assert client.converse(modelId=BEDROCK_MODEL, messages=converse_ask("hi"))["output"]["message"]["content"] == [
        {"text": "fixed"}
    ]

    first, second, _ = bedrock_emulator.requests
    assert first.path == f"/model/{BEDROCK_MODEL}/converse"  # botocore sends it percent-encoded
    assert second.path == f"/model/{PROFILE_ARN}/converse"
    assert first.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert first.json["messages"] == converse_ask("What is 25 + 75?")
    assert bedrock_emulator.model_calls == 3


def test_bedrock_max_tokens_stop_sequences_and_tools(bedrock_emulator: BedrockEmulator) -> None:
    client = bedrock(bedrock_emulator)
    cut = client.converse(
        modelId=BEDROCK_MODEL, messages=converse_ask("tell me a story"), inferenceConfig={"maxTokens": 2}
    )
    assert (cut["output"]["message"]["content"], cut["stopReason"]) == ([{"text": "bedrock emulator"}], "max_tokens")
    stopped = client.converse(
        modelId=BEDROCK_MODEL, messages=converse_ask("tell me a story"), inferenceConfig={"stopSequences": ["reply"]}
    )
    assert (stopped["output"]["message"]["content"], stopped["stopReason"]) == (
        [{"text": "bedrock emulator "}],
        "stop_sequence",
    )

    tool_config = {"tools": [{"toolSpec": {"name": "add", "inputSchema": {"json": ADD_TOOL["input_schema"]}}}]}
    asked = client.converse(
        modelId=BEDROCK_MODEL, messages=converse_ask("use the tool to add 4 + 5"), toolConfig=tool_config
    )
    assert asked["stopReason"] == "tool_use"
    (block,) = asked["output"]["message"]["content"]
    call = block["toolUse"]
    assert call["toolUseId"].startswith("tooluse_")
    assert (call["name"], call["input"]) == ("add", {"a": 4, "b": 5})

    forced = client.converse(
        modelId=BEDROCK_MODEL,
        messages=converse_ask("what now"),
        toolConfig={**tool_config, "toolChoice": {"any": {}}},
    )
    assert forced["stopReason"] == "tool_use"

    answered = client.converse(
        modelId=BEDROCK_MODEL,
        toolConfig=tool_config,
        messages=[
            *converse_ask("use the tool to add 4 + 5"),
            asked["output"]["message"],
            {
                "role": "user",
                "content": [{"toolResult": {"toolUseId": call["toolUseId"], "content": [{"json": {"sum": 9}}]}}],
            },
        ],
    )
    assert answered["output"]["message"]["content"] == [{"text": 'The tool returned: {"sum": 9}'}]


def test_bedrock_converse_stream(bedrock_emulator: BedrockEmulator) -> None:
    client = bedrock(bedrock_emulator)
    streamed = converse_stream_events(client, "hello there")
    assert streamed.error is None
    events = streamed.events
    assert streamed.kinds == [
        "messageStart",
        *["contentBlockDelta"] * 6,
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "bedrock emulator reply to: hello there"
    assert events[-2] == {"messageStop": {"stopReason": "end_turn"}}
    assert events[-1]["metadata"]["usage"] == {"inputTokens": 2, "outputTokens": 6, "totalTokens": 8}

    tool_config = {"tools": [{"toolSpec": {"name": "add", "inputSchema": {"json": ADD_TOOL["input_schema"]}}}]}
    events = converse_stream_events(client, "use the tool: 1 + 2", toolConfig=tool_config).events
    start = events[1]["contentBlockStart"]["start"]["toolUse"]
    assert start["name"] == "add" and start["toolUseId"].startswith("tooluse_")
    partial = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e)
    assert json.loads(partial) == {"a": 1, "b": 2}
    assert events[-2] == {"messageStop": {"stopReason": "tool_use"}}


def test_bedrock_long_stream(bedrock_emulator: BedrockEmulator) -> None:
    bedrock_emulator.reply_text = "lorem ipsum dolor sit amet " * 40
    bedrock_emulator.stream_repeat = 200
    streamed = converse_stream_events(bedrock(bedrock_emulator, read_timeout=30))
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in streamed.events if "contentBlockDelta" in e)
    assert len(text) > 200_000
    assert len(streamed.events) == 200 + 4


def test_bedrock_count_tokens_probe(bedrock_emulator: BedrockEmulator) -> None:
    client = bedrock(bedrock_emulator)
    counted = client.count_tokens(modelId=BEDROCK_MODEL, input={"converse": {"messages": converse_ask("a b c d")}})
    assert counted["inputTokens"] == 4
    raw = client.count_tokens(modelId=BEDROCK_MODEL, input={"invokeModel": {"body": b'{"prompt": "x y"}'}})
    assert raw["inputTokens"] == 3

    bedrock_emulator.inject(Fault.status(503), on="probe")
    client.converse(modelId=BEDROCK_MODEL, messages=converse_ask("hi"))  # model calls are unaffected
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.count_tokens(modelId=BEDROCK_MODEL, input={"converse": {"messages": converse_ask("x")}})
    assert caught.value.response["Error"]["Code"] == "ServiceUnavailableException"
    assert (bedrock_emulator.model_calls, bedrock_emulator.probe_calls) == (1, 3)
    assert bedrock_emulator.requests[-1].path == f"/model/{BEDROCK_MODEL}/count-tokens"


def test_bedrock_credentials_and_validation(bedrock_emulator: BedrockEmulator) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bedrock(bedrock_emulator, access_key_id="AKIDOTHER").converse(
            modelId=BEDROCK_MODEL, messages=converse_ask("hi")
        )
    assert caught.value.response["Error"] == {
        "Code": "UnrecognizedClientException",
        "Message": "The security token included in the request is invalid.",
    }
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bedrock(bedrock_emulator).converse(modelId=BEDROCK_MODEL)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "messages" in caught.value.response["Error"]["Message"]


async def test_bedrock_from_a_thread_pool(bedrock_emulator: BedrockEmulator) -> None:
    client = bedrock(bedrock_emulator)
    bedrock_emulator.inject(Fault.slow(0.3))
    calls = [
        asyncio.to_thread(client.converse, modelId=BEDROCK_MODEL, messages=converse_ask(f"What is {i} + 1?"))
        for i in range(4)
    ]
    results = await asyncio.gather(*calls)
    assert sorted(r["output"]["message"]["content"][0]["text"] for r in results) == ["1", "2", "3", "4"]
    assert bedrock_emulator.wait_for_requests(4, timeout=0)


# -------------------------------------------------------------------- Bedrock: faults


@pytest.mark.parametrize(
    ("code", "exception"),
    [
        (400, "ValidationException"),
        (403, "AccessDeniedException"),
        (404, "ResourceNotFoundException"),
        (408, "ModelTimeoutException"),
        (424, "ModelErrorException"),
        (429, "ThrottlingException"),
        (500, "InternalServerException"),
        (503, "ServiceUnavailableException"),
    ],
)
def test_bedrock_status_faults(bedrock_emulator: BedrockEmulator, code: int, exception: str) -> None:
    bedrock_emulator.inject(Fault.status(code, retry_after=3))
    client = bedrock(bedrock_emulator)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.converse(modelId=BEDROCK_MODEL, messages=converse_ask("hi"))
    response = caught.value.response
    assert type(caught.value).__name__ == exception  # botocore's modeled exception class
    assert response["Error"]["Code"] == exception
    assert response["ResponseMetadata"]["HTTPStatusCode"] == code
    assert response["ResponseMetadata"]["RequestId"]
    assert response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "3"


def test_bedrock_status_fault_overrides(bedrock_emulator: BedrockEmulator) -> None:
    bedrock_emulator.inject(Fault.status(429, error_type="ModelNotReadyException", message="warming up"))
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        converse_stream_events(bedrock(bedrock_emulator))
    assert caught.value.response["Error"] == {"Code": "ModelNotReadyException", "Message": "warming up"}


def test_bedrock_transport_faults(bedrock_emulator: BedrockEmulator) -> None:
    client = bedrock(bedrock_emulator)

    def converse() -> dict[str, Any]:
        result: dict[str, Any] = client.converse(modelId=BEDROCK_MODEL, messages=converse_ask("hi"))
        return result

    bedrock_emulator.inject(Fault.drop())
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        converse()

    # botocore reads bodies with enforce_content_length=False and parses bad JSON as {"message": body}:
    # a truncated or malformed answer is a "success" holding nothing but ResponseMetadata.
    for fault in (Fault.truncate(), Fault.malformed()):
        bedrock_emulator.inject(fault)
        assert set(converse()) == {"ResponseMetadata"}

    bedrock_emulator.inject(Fault.missing_output())
    assert set(converse()) == {"ResponseMetadata", "stopReason", "usage", "metrics"}

    bedrock_emulator.inject(Fault.slow(0.2))
    started = time.monotonic()
    assert converse()["output"]
    assert time.monotonic() - started >= 0.2

    bedrock_emulator.inject(Fault.stream_error(0, "rate_limit_error"))  # on Converse: the HTTP error
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        converse()
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert bedrock_emulator.disconnects == 0


def test_bedrock_hang_ends_with_the_read_timeout(bedrock_emulator: BedrockEmulator) -> None:
    client = bedrock(bedrock_emulator, read_timeout=0.3)
    bedrock_emulator.inject(Fault.hang(), times=2)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        client.converse(modelId=BEDROCK_MODEL, messages=converse_ask("hi"))
    assert bedrock_emulator.wait_for_disconnect()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        client.converse_stream(modelId=BEDROCK_MODEL, messages=converse_ask("hi"))
    assert bedrock_emulator.wait_for_disconnect(count=2)


def test_bedrock_stream_cut(bedrock_emulator: BedrockEmulator) -> None:
    client = bedrock(bedrock_emulator)
    for fault in (Fault.stream_cut(after_events=2), Fault.truncate()):
        bedrock_emulator.inject(fault)
        streamed = converse_stream_events(client, "a b c d e f")
        assert type(streamed.error) is urllib3.exceptions.ProtocolError  # raised by the iteration, not wrapped
        assert streamed.kinds[:2] == ["messageStart", "contentBlockDelta"]


@pytest.mark.parametrize(
    ("error_type", "code"),
    [
        ("overloaded_error", "modelStreamErrorException"),
        ("modelStreamErrorException", "modelStreamErrorException"),
        ("throttlingException", "throttlingException"),
        ("ThrottlingException", "throttlingException"),
        ("internalServerException", "internalServerException"),
        ("serviceUnavailableException", "serviceUnavailableException"),
        ("validationException", "validationException"),
    ],
)
def test_bedrock_stream_error(bedrock_emulator: BedrockEmulator, error_type: str, code: str) -> None:
    bedrock_emulator.inject(Fault.stream_error(after_events=3, error_type=error_type))
    streamed = converse_stream_events(bedrock(bedrock_emulator))
    assert isinstance(streamed.error, botocore.exceptions.EventStreamError)  # a ClientError
    assert streamed.error.response["Error"]["Code"] == code
    assert streamed.error.response["Error"]["Message"]
    assert len(streamed.events) == 3


def test_bedrock_first_token_delay(bedrock_emulator: BedrockEmulator) -> None:
    bedrock_emulator.inject(Fault.first_token_delay(0.3))
    stream = bedrock(bedrock_emulator).converse_stream(modelId=BEDROCK_MODEL, messages=converse_ask("hi"))["stream"]
    with contextlib.closing(stream):
        arrivals = [(next(iter(event)), time.monotonic()) for event in stream]
    first_delta = next(t for kind, t in arrivals if kind == "contentBlockDelta")
    assert first_delta - arrivals[0][1] >= 0.25  # only the first delta waits
    assert arrivals[-1][1] - first_delta < first_delta - arrivals[0][1]


def test_bedrock_stream_with_other_faults(bedrock_emulator: BedrockEmulator) -> None:
    client = bedrock(bedrock_emulator)
    bedrock_emulator.inject(Fault.malformed())
    streamed = converse_stream_events(client)
    assert isinstance(streamed.error, botocore.eventstream.ChecksumMismatch)
    assert streamed.kinds == ["messageStart"]

    bedrock_emulator.inject(Fault.missing_output())
    assert converse_stream_events(client).kinds == ["messageStart", "messageStop", "metadata"]

    bedrock_emulator.inject(Fault.status(429))
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.converse_stream(modelId=BEDROCK_MODEL, messages=converse_ask("hi"))
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"

    bedrock_emulator.inject(Fault.drop())
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        client.converse_stream(modelId=BEDROCK_MODEL, messages=converse_ask("hi"))


def test_bedrock_client_abandoning_a_stream_counts_as_disconnect(bedrock_emulator: BedrockEmulator) -> None:
    bedrock_emulator.stream_chunk_delay = 0.05
    stream = bedrock(bedrock_emulator).converse_stream(modelId=BEDROCK_MODEL, messages=converse_ask("a b c d"))[
        "stream"
    ]
    for event in stream:
        if "contentBlockDelta" in event:
            break
    stream.close()
    assert bedrock_emulator.wait_for_disconnect()


async def test_bedrock_frames_on_the_wire(bedrock_emulator: BedrockEmulator) -> None:
    """The raw event stream decodes with botocore's own parser, exception frames included."""
    bedrock_emulator.inject(Fault.stream_error(after_events=1, error_type="throttlingException"))
    credential = "AWS4-HMAC-SHA256 Credential=AKIDTEST/20250101/us-east-1/bedrock/aws4_request, Signature=x"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{bedrock_emulator.base_url}/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse-stream",
            headers={"Authorization": credential},
            json={"messages": converse_ask("hi")},
        ) as response:
            assert response.headers["Content-Type"] == "application/vnd.amazon.eventstream"
            assert response.headers["x-amzn-RequestId"]
            raw = await response.read()
    buffer = botocore.eventstream.EventStreamBuffer()
    buffer.add_data(raw)
    messages: list[Any] = list(buffer)
    assert [m.headers[":message-type"] for m in messages] == ["event", "exception"]
    assert messages[0].headers[":event-type"] == "messageStart"
    assert json.loads(messages[0].payload) == {"role": "assistant"}
    assert messages[1].headers[":exception-type"] == "throttlingException"
    assert messages[1].headers[":content-type"] == "application/json"


# -------------------------------------------------------------------- agent features (the SDKs, directly)


async def test_anthropic_thinking_cache_schema_and_count(anthropic_emulator: AnthropicEmulator) -> None:
    system: Any = [{"type": "text", "text": "a b c d e f", "cache_control": {"type": "ephemeral"}}]
    async with claude(anthropic_emulator) as sdk:
        first = await create(sdk, "What is 2 + 2?", system=system, thinking={"type": "enabled", "budget_tokens": 1024})
        second = await create(sdk, "What is 2 + 2?", system=system)
        thinking, answer = first.content
        assert thinking.type == "thinking" and thinking.thinking == "Thinking about: What is 2 + 2?"
        assert thinking.signature == sign(thinking.thinking) and answer.type == "text" and answer.text == "4"
        assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (6, 0)
        assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (0, 6)
        assert second.usage.input_tokens == 5  # what follows the breakpoint: "What is 2 + 2?"

        with pytest.raises(anthropic.BadRequestError, match="signature"):
            await sdk.messages.create(model=CLAUDE, max_tokens=100, messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "changed",
                                                   "signature": thinking.signature}]},
                {"role": "user", "content": "again"}])

        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        shaped = await create(sdk, "give me 5", output_config={"format": {"type": "json_schema", "schema": schema}})
        assert json.loads(text_of(shaped)) == {"n": 5}
        anthropic_emulator.stop_reason = "pause_turn"
        assert (await create(sdk)).stop_reason == "pause_turn"
        counted = await sdk.messages.count_tokens(model=CLAUDE, system="one two", messages=ask("three"))
        assert counted.input_tokens == 3

        anthropic_emulator.stop_reason = None
        streamed = await stream_events(sdk, "What is 1 + 1?", thinking={"type": "adaptive"})
    deltas = [(e.index, e.delta.type) for e in streamed.events if e.type == "content_block_delta"]
    assert deltas == [(0, "thinking_delta"), (0, "signature_delta"), (1, "text_delta")]


def test_bedrock_reasoning_cache_points_schema_and_count(bedrock_emulator: BedrockEmulator) -> None:
    client = bedrock(bedrock_emulator)
    system = [{"text": "a b c d e f"}, {"cachePoint": {"type": "default"}}]
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    first = client.converse(modelId=BEDROCK_MODEL, system=system, messages=converse_ask("What is 2 + 2?"),
                            additionalModelRequestFields=thinking)
    second = client.converse(modelId=BEDROCK_MODEL, system=system, messages=converse_ask("What is 2 + 2?"))
    reasoning, answer = first["output"]["message"]["content"]
    text = reasoning["reasoningContent"]["reasoningText"]
    assert text == {"text": "Thinking about: What is 2 + 2?", "signature": sign("Thinking about: What is 2 + 2?")}
    assert answer == {"text": "4"}
    assert (first["usage"]["cacheWriteInputTokens"], first["usage"]["cacheReadInputTokens"]) == (6, 0)
    assert (second["usage"]["cacheWriteInputTokens"], second["usage"]["cacheReadInputTokens"]) == (0, 6)

    with pytest.raises(botocore.exceptions.ClientError, match="signature"):
        client.converse(modelId=BEDROCK_MODEL, messages=[
            *converse_ask("hi"),
            {"role": "assistant", "content": [{"reasoningContent": {"reasoningText": {"text": "changed",
                                                                                      "signature": "sig_x"}}}]},
            *converse_ask("again")])

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    shaped = client.converse(modelId=BEDROCK_MODEL, messages=converse_ask("give me 5"), outputConfig={
        "textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": json.dumps(schema),
                                                                             "name": "n"}}}})
    assert json.loads(shaped["output"]["message"]["content"][0]["text"]) == {"n": 5}
    bedrock_emulator.stop_reason = "guardrail_intervened"
    assert client.converse(modelId=BEDROCK_MODEL, messages=converse_ask("hi"))["stopReason"] == "guardrail_intervened"
    counted = client.count_tokens(modelId=BEDROCK_MODEL, input={"converse": {
        "system": [{"text": "one two"}], "messages": converse_ask("three")}})
    assert counted["inputTokens"] == 3

    bedrock_emulator.stop_reason = None
    bedrock_emulator.redact_thinking = True
    streamed = converse_stream_events(client, "What is 1 + 1?", additionalModelRequestFields=thinking)
    deltas = [e["contentBlockDelta"] for e in streamed.events if "contentBlockDelta" in e]
    assert [(d["contentBlockIndex"], next(iter(d["delta"]))) for d in deltas] == [(0, "reasoningContent"),
                                                                                 (1, "text")]
    assert deltas[0]["delta"]["reasoningContent"]["redactedContent"].startswith(b"redacted:")


def test_standalone_help_says_what_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from tests.emulators.__main__ import main

    argv = sys.argv
    sys.argv = ["emulators", "--help"]
    try:
        with pytest.raises(SystemExit):
            main()
    finally:
        sys.argv = argv
    assert "for trying the gateway by hand" in " ".join(capsys.readouterr().out.split())
