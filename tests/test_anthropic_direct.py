"""The Anthropic provider's direct transport (``http_transport: direct``) against the SDK's own (``aiohttp``):
the same requests on the wire, the same error classification, the SDK internals it relies on still there."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from pydantic import SecretStr

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers.anthropic import AnthropicProvider
from gateway_server.providers.anthropic_direct import sse_events
from gateway_server.providers.base import ChatMessage, ProviderRequest, StreamDone, TextDelta
from gateway_server.settings import AnthropicProviderConfig
from tests.emulators import AnthropicEmulator, Fault

MODEL = "claude-sonnet-5-5"
KEY = "test-key"  # the anthropic_emulator fixture's
REQUEST = ProviderRequest(messages=(ChatMessage("user", "What is 25 + 75?"),), system="be brief", max_tokens=64,
                          temperature=0.5, top_p=None, stop_sequences=())


async def _provider(base_url: str, transport: str) -> AnthropicProvider:
    cfg = AnthropicProviderConfig(type="anthropic", base_url=base_url, default_model=MODEL, http_transport=transport)
    provider = AnthropicProvider("anthropic", cfg, SecretStr(KEY))
    await provider.start()
    assert provider.direct is (transport == "direct")
    return provider


async def _stream(provider: AnthropicProvider, timeout: float = 5.0) -> list[Any]:
    return [event async for event in provider.stream(REQUEST, MODEL, timeout)]


async def test_direct_is_the_default_and_answers() -> None:
    assert AnthropicProviderConfig(type="anthropic", default_model=MODEL).http_transport == "direct"


async def test_direct_sends_what_the_sdk_sends(anthropic_emulator: AnthropicEmulator) -> None:
    """Headers and body of one call and one stream, direct and through the SDK: identical. The SDK's
    per-call headers (x-stainless-timeout/-read-timeout/-retry-count) depend only on the timeout (its
    retries are off), so the direct transport sends them too; only ``host`` could differ (it does not)."""
    seen: dict[str, list[tuple[dict[str, str], bytes]]] = {}
    for transport in ("direct", "aiohttp"):
        provider = await _provider(anthropic_emulator.base_url, transport)
        try:
            assert (await provider.generate(REQUEST, MODEL, 5.0)).content
            events = await _stream(provider)
            assert isinstance(events[-1], StreamDone) and any(isinstance(e, TextDelta) for e in events)
        finally:
            await provider.close()
        calls = anthropic_emulator.requests[-2:]
        assert [c.path for c in calls] == ["/v1/messages", "/v1/messages"]
        seen[transport] = [(c.headers, c.body) for c in calls]
    for (direct_headers, direct_body), (sdk_headers, sdk_body) in zip(seen["direct"], seen["aiohttp"], strict=True):
        assert direct_headers == sdk_headers
        assert direct_body == sdk_body
    headers = seen["direct"][0][0]
    assert headers["authorization"] == f"Bearer {KEY}" and headers["anthropic-version"]
    assert headers["x-stainless-timeout"] == "5.0" and headers["user-agent"].startswith("AsyncAnthropic/Python")


@pytest.fixture
def anthropic_emulator() -> Iterator[AnthropicEmulator]:
    with AnthropicEmulator(api_key=KEY) as emulator:
        yield emulator


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _facts(error: ProviderError, *, with_message: bool) -> tuple[Any, ...]:
    facts = (error.kind, error.status, error.retry_after, error.error_type, error.detail)
    return (*facts, error.message) if with_message else facts


CASES = [
    pytest.param(Fault.status(429, retry_after=7), False, ErrorKind.RATE_LIMITED, id="429-retry-after"),
    pytest.param(Fault.status(401), False, ErrorKind.AUTH, id="401"),
    pytest.param(Fault.status(529), False, ErrorKind.OVERLOADED, id="529"),
    pytest.param(Fault.status(500), False, ErrorKind.SERVER, id="500"),
    pytest.param(Fault.status(400, message="max_tokens: too large"), False, ErrorKind.INVALID_REQUEST, id="400"),
    pytest.param(Fault.hang(), False, ErrorKind.TIMEOUT, id="hang"),
    pytest.param(Fault.malformed(), False, ErrorKind.MALFORMED_RESPONSE, id="malformed"),
    pytest.param(Fault.missing_output(), False, ErrorKind.MALFORMED_RESPONSE, id="missing-output"),
    pytest.param(Fault.status(529), True, ErrorKind.OVERLOADED, id="stream-529"),
    pytest.param(Fault.status(429, retry_after=3), True, ErrorKind.RATE_LIMITED, id="stream-429"),
    pytest.param(Fault.stream_error(2, "overloaded_error"), True, ErrorKind.OVERLOADED, id="stream-error-event"),
    pytest.param(Fault.stream_error(3, "api_error", message="boom"), True, ErrorKind.SERVER, id="stream-api-error"),
    pytest.param(Fault.hang(), True, ErrorKind.TIMEOUT, id="stream-hang"),
    pytest.param(Fault.malformed(), True, ErrorKind.MALFORMED_RESPONSE, id="stream-malformed"),
    # Cut connections: the message names the cause's type (aiohttp's ClientPayloadError or
    # ServerDisconnectedError, httpx's ReadError or ConnectError), so only the facts besides it are compared.
    pytest.param(Fault.stream_cut(3), True, ErrorKind.CONNECTION, id="stream-cut"),
    pytest.param(Fault.truncate(), False, ErrorKind.CONNECTION, id="truncate"),
    pytest.param(Fault.truncate(), True, ErrorKind.CONNECTION, id="stream-truncate"),
    pytest.param(Fault.drop(), False, ErrorKind.CONNECTION, id="drop"),
    pytest.param(Fault.drop(), True, ErrorKind.CONNECTION, id="stream-drop"),
]


async def _failure(provider: AnthropicProvider, stream: bool, timeout: float) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        if stream:
            await _stream(provider, timeout)
        else:
            await provider.generate(REQUEST, MODEL, timeout)
    return caught.value


@pytest.mark.parametrize(("fault", "stream", "kind"), CASES)
async def test_errors_classify_as_on_the_sdk_transport(anthropic_emulator: AnthropicEmulator, fault: Fault,
                                                      stream: bool, kind: ErrorKind) -> None:
    errors: dict[str, ProviderError] = {}
    for transport in ("direct", "aiohttp"):
        provider = await _provider(anthropic_emulator.base_url, transport)
        try:
            anthropic_emulator.inject(fault)
            errors[transport] = await _failure(provider, stream, 0.3 if fault.kind == "hang" else 5.0)
        finally:
            await provider.close()
    direct, sdk = errors["direct"], errors["aiohttp"]
    assert direct.kind is kind and sdk.kind is kind
    exact = kind is not ErrorKind.CONNECTION
    assert _facts(direct, with_message=exact) == _facts(sdk, with_message=exact)
    if fault.retry_after is not None:
        assert direct.retry_after == fault.retry_after


async def test_connection_refused_classifies_as_on_the_sdk_transport() -> None:
    base_url = f"http://127.0.0.1:{_closed_port()}"
    for stream in (False, True):
        errors = []
        for transport in ("direct", "aiohttp"):
            provider = await _provider(base_url, transport)
            try:
                errors.append(await _failure(provider, stream, 5.0))
            finally:
                await provider.close()
        # The message names the cause's type (aiohttp's ClientConnectorError, httpx's ConnectError): not compared.
        assert [e.kind for e in errors] == [ErrorKind.CONNECTION, ErrorKind.CONNECTION]
        assert _facts(errors[0], with_message=False) == _facts(errors[1], with_message=False)


def test_the_sdk_status_error_factory_the_direct_transport_uses() -> None:
    """Pins the SDK internal the direct transport builds its errors with (an SDK upgrade that changes it
    must fail here): ``_make_status_error_from_response`` of an httpx2.Response -> the status's class,
    with the decoded body and the response's headers."""
    client = anthropic.AsyncAnthropic(api_key="k", max_retries=0)
    response = httpx2.Response(429, headers=[("retry-after", "3")],
                               content=b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}',
                               request=httpx2.Request("POST", "http://127.0.0.1/v1/messages"))
    error = client._make_status_error_from_response(response)
    assert type(error) is anthropic.RateLimitError
    assert error.status_code == 429 and error.response.headers["retry-after"] == "3"
    assert error.body == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}
    assert client.custom_auth is None and isinstance(client.default_headers, dict)


class _Reader:
    """What sse_events reads of an aiohttp.StreamReader: iter_any(), the chunks as they arrived."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


async def _sse(chunks: list[bytes]) -> list[tuple[bytes | None, bytes]]:
    reader: Any = _Reader(chunks)
    return [event async for event in sse_events(reader)]


@pytest.mark.parametrize("chunks", [
    [b"event: a\ndata: {\"x\":1}\n\n: comment\nevent: ping\ndata: {}\n\ndata: one\ndata: two\n\nevent: b\ndata:\n\n"],
    [b"event: a\r\ndata: {\"x\":1}\r", b"\n\r\n: comment\r\nevent: ping\r\ndata: {}\r\n\r\n",
     b"data: one\ndata: two\n\nevent: b\ndata:\n", b"\n"],
    [bytes([b]) for b in b"event: a\ndata:{\"x\":1}\n\n: c\nevent:ping\ndata: {}\n\n"
                         b"data: one\ndata: two\n\nevent:b\n\n"],
])
async def test_sse_events_decode_as_the_sdk_does(chunks: list[bytes]) -> None:
    events = await _sse(chunks)
    sdk = [(e.event.encode() if e.event is not None else None, e.data.encode())
           async for e in anthropic.AsyncStream.raw_events(httpx2.Response(200, stream=_Stream(chunks)))]
    assert events == sdk
    assert events == [(b"a", b'{"x":1}'), (b"ping", b"{}"), (None, b"one\ntwo"), (b"b", b"")]


class _Stream(httpx2.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
