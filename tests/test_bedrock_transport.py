"""The Bedrock transport (aiobotocore) against the Bedrock emulator: no starvation, deadlines that close
sockets, and each fault's classification.

What aiobotocore surfaces per fault (the boto3 column is in test_emulators.py), and what the provider
makes of it:

fault            aiobotocore, unary                  aiobotocore, while streaming            ErrorKind
---------------  ----------------------------------  --------------------------------------  ------------------
status(code)     ClientError, Code = x-amzn-ErrorType (same, raised by converse_stream)      by code / status
drop             ConnectionClosedError               ConnectionClosedError                   CONNECTION
truncate         ConnectionClosedError (aiohttp       aiohttp.ClientPayloadError (raw)        CONNECTION
                 enforces Content-Length; boto3
                 returned an empty "success")
stream_cut       -                                   aiohttp.ClientPayloadError (raw)        CONNECTION
malformed        NO ERROR: no "output" key           eventstream.ChecksumMismatch (raw)      MALFORMED_RESPONSE
missing_output   NO ERROR: no "output" key           NO ERROR: no content events             MALFORMED_RESPONSE / -
stream_error     the HTTP error                      EventStreamError (a ClientError)        by code
hang             (cancelled at the caller's deadline: the connection is closed)              TIMEOUT
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiobotocore.config
import aiobotocore.session
import aiohttp
import botocore.eventstream
import botocore.exceptions
import grpc
import pytest

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers.base import ChatMessage, ProviderRequest, StreamDone, TextDelta
from gateway_server.providers.bedrock import BedrockProvider
from gateway_server.settings import BedrockProviderConfig, settings_from_mapping
from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from tests.emulators import BedrockEmulator, Fault
from tests.helpers import ask

AWS_KEY_ID = "AKIDTESTTRANSPORT"
AWS_SECRET = "aws-secret-transport"
MODEL = "global.anthropic.claude-sonnet-5-5"
STREAMS = 64
# Long enough that 64 streams are still open while the other calls run; then the delay is dropped.
HOLD_TEXT = " ".join(f"w{i}" for i in range(40))

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)


@pytest.fixture
def emu() -> Iterator[BedrockEmulator]:
    with BedrockEmulator(access_key_id=AWS_KEY_ID, secret_access_key=AWS_SECRET) as emulator:
        yield emulator


@pytest.fixture
async def provider(emu: BedrockEmulator) -> AsyncIterator[BedrockProvider]:
    cfg = BedrockProviderConfig(type="bedrock", endpoint_url=emu.endpoint_url, model_id=MODEL, timeout=20)
    p = BedrockProvider("bedrock", cfg, "us-east-1")
    await p.start()
    assert p.usable
    yield p
    await p.close()


def request(text: str = "What is 25 + 75?") -> ProviderRequest:
    return ProviderRequest(messages=(ChatMessage("user", text),), system="", max_tokens=256, temperature=None,
                           top_p=None, stop_sequences=())


async def read_all(p: BedrockProvider, text: str = "a b c", timeout: float = 10) -> list[Any]:
    return [event async for event in p.stream(request(text), MODEL, timeout)]


# ------------------------------------------------------------------ no starvation


async def test_64_streams_unary_calls_and_a_probe_all_proceed(provider: BedrockProvider, emu: BedrockEmulator) -> None:
    emu.stream_chunk_delay = 0.5  # every stream stays open until the delay is dropped below
    first_events: list[asyncio.Event] = [asyncio.Event() for _ in range(STREAMS)]
    finished = 0

    async def one_stream(i: int) -> list[Any]:
        nonlocal finished
        events = []
        async for event in provider.stream(request(HOLD_TEXT), MODEL, 20):
            events.append(event)
            first_events[i].set()
        finished += 1
        return events

    streams = [asyncio.create_task(one_stream(i)) for i in range(STREAMS)]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(e.wait() for e in first_events))  # all 64 open, each mid-answer
        started = time.monotonic()
        answers = await asyncio.gather(*(provider.generate(request(), MODEL, 10) for _ in range(8)),
                                       provider.probe(10))
        took = time.monotonic() - started
        assert finished == 0  # the unary calls and the probe ran while every stream was still open
        assert [a.content for a in answers[:8]] == ["100"] * 8
        assert took < 10  # generous: they never waited for a stream to end (each stream holds >= 19 s)
        assert emu.probe_calls == 1
    finally:
        emu.stream_chunk_delay = 0.0
    results = await asyncio.gather(*streams)
    for events in results:
        assert isinstance(events[-1], StreamDone)
        assert "".join(e.text for e in events if isinstance(e, TextDelta)).endswith("w39")


async def test_a_probe_and_a_call_proceed_while_64_streams_wait_for_their_first_token(
        provider: BedrockProvider, emu: BedrockEmulator) -> None:
    emu.inject(Fault.first_token_delay(30), times=STREAMS)
    streams = [asyncio.create_task(read_all(provider, timeout=30)) for _ in range(STREAMS)]
    try:
        assert await emu.await_requests(STREAMS, timeout=20)
        async with asyncio.timeout(10):  # far less than the streams' 30 s: nothing queued behind them
            response = await provider.generate(request(), MODEL, 10)
            await provider.probe(10)
        assert response.content == "100"
    finally:
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    # Cancelling the readers closed every upstream connection.
    assert await emu.await_disconnect(count=STREAMS, timeout=20)


# ------------------------------------------------------------------ deadlines and cancellation


async def test_a_hung_call_is_abandoned_at_the_deadline_and_its_socket_closed(
        provider: BedrockProvider, emu: BedrockEmulator) -> None:
    emu.inject(Fault.hang(), times=1)
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await provider.generate(request(), MODEL, 0.5)
    assert info.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 5  # the caller's 0.5 s, not the provider's 20 s timeout
    assert await emu.await_disconnect()
    assert (await provider.generate(request(), MODEL, 10)).content == "100"


async def test_a_hung_probe_is_abandoned_at_its_timeout(provider: BedrockProvider, emu: BedrockEmulator) -> None:
    emu.inject(Fault.hang(), times=1, on="probe")
    with pytest.raises(ProviderError) as info:
        await provider.probe(0.3)
    assert info.value.kind is ErrorKind.TIMEOUT
    assert await emu.await_disconnect()


async def test_closing_a_stream_closes_the_upstream_connection(provider: BedrockProvider,
                                                               emu: BedrockEmulator) -> None:
    emu.stream_chunk_delay = 0.2
    stream = provider.stream(request("one two three four five six seven"), MODEL, 10)
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()
    assert await emu.await_disconnect()


async def test_cancelling_a_stream_reader_closes_the_upstream_connection(provider: BedrockProvider,
                                                                         emu: BedrockEmulator) -> None:
    emu.inject(Fault.first_token_delay(30))
    task = asyncio.create_task(read_all(provider, timeout=30))
    assert await emu.await_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await emu.await_disconnect()


async def test_a_pause_between_stream_events_longer_than_the_read_timeout_ends_the_stream(
        emu: BedrockEmulator) -> None:
    cfg = BedrockProviderConfig(type="bedrock", endpoint_url=emu.endpoint_url, model_id=MODEL, timeout=20,
                                first_token_timeout=0.5)
    p = BedrockProvider("bedrock", cfg, "us-east-1")
    await p.start()
    try:
        emu.stream_chunk_delay = 3
        with pytest.raises(ProviderError) as info:
            await read_all(p, "one two three", timeout=20)
        assert info.value.kind is ErrorKind.TIMEOUT
        assert await emu.await_disconnect()
    finally:
        await p.close()


# ------------------------------------------------------------------ classification


@pytest.mark.parametrize(
    ("fault", "unary", "streaming"),
    [
        (Fault.status(400), ErrorKind.INVALID_REQUEST, ErrorKind.INVALID_REQUEST),
        (Fault.status(403), ErrorKind.AUTH, ErrorKind.AUTH),
        (Fault.status(404), ErrorKind.NOT_FOUND, ErrorKind.NOT_FOUND),
        (Fault.status(408), ErrorKind.TIMEOUT, ErrorKind.TIMEOUT),
        (Fault.status(424), ErrorKind.SERVER, ErrorKind.SERVER),
        (Fault.status(429), ErrorKind.RATE_LIMITED, ErrorKind.RATE_LIMITED),
        (Fault.status(500), ErrorKind.SERVER, ErrorKind.SERVER),
        (Fault.status(503), ErrorKind.OVERLOADED, ErrorKind.OVERLOADED),
        (Fault.drop(), ErrorKind.CONNECTION, ErrorKind.CONNECTION),
        (Fault.truncate(), ErrorKind.CONNECTION, ErrorKind.CONNECTION),
        (Fault.stream_cut(after_events=2), ErrorKind.CONNECTION, ErrorKind.CONNECTION),
        (Fault.malformed(), ErrorKind.MALFORMED_RESPONSE, ErrorKind.MALFORMED_RESPONSE),
        (Fault.missing_output(), ErrorKind.MALFORMED_RESPONSE, None),
        (Fault.stream_error(after_events=3, error_type="throttlingException"), ErrorKind.RATE_LIMITED,
         ErrorKind.RATE_LIMITED),
        (Fault.stream_error(after_events=3, error_type="modelStreamErrorException"), ErrorKind.SERVER,
         ErrorKind.SERVER),
        (Fault.stream_error(after_events=3, error_type="serviceUnavailableException"), ErrorKind.OVERLOADED,
         ErrorKind.OVERLOADED),
    ],
    ids=lambda v: getattr(v, "value", None) or getattr(v, "kind", None) or str(v),
)
async def test_each_fault_is_classified(provider: BedrockProvider, emu: BedrockEmulator, fault: Fault,
                                        unary: ErrorKind, streaming: ErrorKind | None) -> None:
    emu.inject(fault)
    with pytest.raises(ProviderError) as info:
        await provider.generate(request("a b c d e f"), MODEL, 10)
    assert info.value.kind is unary
    emu.inject(fault)
    if streaming is None:  # an answer with no content: the stream still ends in order
        events = await read_all(provider, "a b c d e f")
        assert [type(e) for e in events] == [StreamDone]
        return
    with pytest.raises(ProviderError) as info:
        await read_all(provider, "a b c d e f")
    assert info.value.kind is streaming


async def test_a_429_keeps_its_retry_after(provider: BedrockProvider, emu: BedrockEmulator) -> None:
    emu.inject(Fault.status(429, retry_after=3))
    with pytest.raises(ProviderError) as info:
        await provider.generate(request(), MODEL, 10)
    assert (info.value.kind, info.value.retry_after, info.value.status) == (ErrorKind.RATE_LIMITED, 3.0, 429)


async def test_what_aiobotocore_raises_on_the_wire(emu: BedrockEmulator) -> None:
    """The raw exceptions classify() relies on (the table above)."""
    session = aiobotocore.session.get_session()
    config = aiobotocore.config.AioConfig(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=0.3)
    ask_ = {"modelId": MODEL, "messages": [{"role": "user", "content": [{"text": "a b c d e f"}]}]}
    async with session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=emu.endpoint_url,
                                     config=config) as client:
        emu.inject(Fault.drop())
        with pytest.raises(botocore.exceptions.ConnectionClosedError):
            await client.converse(**ask_)
        emu.inject(Fault.truncate())
        with pytest.raises(botocore.exceptions.ConnectionClosedError):
            await client.converse(**ask_)
        emu.inject(Fault.hang())
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            await client.converse(**ask_)

        async def stream_error() -> BaseException | None:
            stream = (await client.converse_stream(**ask_))["stream"]
            try:
                async for _ in stream:
                    pass
            except Exception as exc:
                return exc
            finally:
                stream.close()
            return None

        emu.inject(Fault.stream_cut(after_events=2))
        assert type(await stream_error()) is aiohttp.ClientPayloadError
        emu.inject(Fault.malformed())
        assert isinstance(await stream_error(), botocore.eventstream.ChecksumMismatch)
        emu.inject(Fault.stream_error(after_events=3, error_type="throttlingException"))
        error = await stream_error()
        assert isinstance(error, botocore.exceptions.EventStreamError)
        assert error.response["Error"]["Code"] == "throttlingException"


# ------------------------------------------------------------------ through the gateway


def gateway_config(emu: BedrockEmulator, **bedrock: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1", "port": 0,
        "default_provider": "bedrock",
        "providers": {"bedrock": {"type": "bedrock", "endpoint_url": emu.endpoint_url, "region": "us-east-1",
                                  "model_id": MODEL, "timeout": 20, "max_retries": 0, **bedrock}},
        "fallback": {"enabled": False},
        "health_check": {"enabled": True, "interval": 3600, "timeout": 10},
    }


async def test_through_the_gateway_64_streams_do_not_starve_calls_or_the_health_probe(
        gateway_factory, emu: BedrockEmulator, caplog: pytest.LogCaptureFixture) -> None:
    # The obsolete knob of the thread pool is accepted (with a warning) and no longer limits anything.
    with caplog.at_level(logging.WARNING, logger="gateway_server.providers.bedrock"):
        app = await gateway_factory(gateway_config(emu, executor_workers=1))
    assert "executor_workers is obsolete" in caplog.text
    emu.stream_chunk_delay = 0.5
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ModelGatewayStub(channel)
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        calls = [stub.GenerateStream(ask(HOLD_TEXT), timeout=60) for _ in range(STREAMS)]
        try:
            async with asyncio.timeout(40):  # every stream has started and delivered content
                for call in calls:
                    while (await call.read()).WhichOneof("event") != "delta":
                        pass
            response = await stub.Generate(ask(), timeout=10)
            await app.health.probe_all()
            health = await stub.Health(pb.HealthRequest(), timeout=10)
        finally:
            emu.stream_chunk_delay = 0.0
        assert response.content == "100" and response.provider == "bedrock"
        (bedrock,) = health.providers
        assert (bedrock.status, bedrock.last_error) == (pb.PROVIDER_STATUS_HEALTHY, "")
        assert emu.probe_calls >= 2  # the one at start-up and ours
        for call in calls:
            last = None
            while (event := await call.read()) is not grpc.aio.EOF:
                last = event
            assert last is not None and last.WhichOneof("event") == "end"


def test_executor_workers_is_still_accepted_and_defaults_to_unset() -> None:
    def bedrock_cfg(**extra: Any) -> Any:
        settings = settings_from_mapping({"default_provider": "bedrock", "providers": {
            "bedrock": {"type": "bedrock", "model_id": MODEL, **extra}}}, env_file=None)
        return settings.providers["bedrock"]

    assert bedrock_cfg().executor_workers is None
    assert bedrock_cfg(executor_workers=16).executor_workers == 16


# ------------------------------------------------------------------ SigV4, checked


async def test_requests_are_signed_with_the_secret_and_a_wrong_one_is_refused(
    provider: BedrockProvider, emu: BedrockEmulator
) -> None:
    """The emulator recomputes every request's SigV4 signature: a call, a stream and a probe pass with an
    ARN-like model id (percent-encoded ':' and '/' in the signed path); a signer with the wrong secret is
    refused as AWS refuses it, classified AUTH."""
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.anthropic.claude-sonnet-5-5:0"
    assert (await provider.generate(request(), arn, 10)).content
    assert await read_all(provider)
    await provider.probe(10)
    assert all(r.headers["authorization"].startswith("AWS4-HMAC-SHA256 ") for r in emu.requests)
    emu.secret_access_key = "not-the-secret"
    with pytest.raises(ProviderError) as refused:
        await provider.generate(request(), MODEL, 10)
    assert refused.value.kind == ErrorKind.AUTH and refused.value.status == 403
    assert refused.value.error_type == "InvalidSignatureException"
