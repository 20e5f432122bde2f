"""The Anthropic provider's direct transport (``http_transport: direct``, the default).

The official SDK stays the source of truth for everything but the sending: the client built at start
gives, once, the headers it would send (authentication, ``anthropic-version``, its ``User-Agent`` and
``X-Stainless-*`` headers, content type, accept) and the base URL; the SDK's status errors are built
from a failed response by the client's own ``_make_status_error_from_response`` (error path only), so
``classify()`` sees exactly the exceptions the SDK path raises. The sending is one long-lived
``aiohttp.ClientSession``: body ``orjson.dumps``, answer bytes ``orjson.loads``. That skips the SDK's
per-call request pipeline (options models and copies, header merging and validation, URL and
``httpx.Request`` construction, httpx over its aiohttp transport): about 1 ms of CPU per call.

Streams read the Server-Sent Events straight from the aiohttp response, one ``orjson.loads`` per
event's data, no ``str`` decoding of lines; ``ping`` is skipped and ``event: error`` raises the
SDK's ``APIStatusError`` as ``AsyncStream`` does.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import anthropic
import httpx2
import orjson


class UnsupportedClient(Exception):
    """The SDK client is set up in a way the direct transport does not reproduce (the SDK path is used)."""


def sdk_headers(client: anthropic.AsyncAnthropic, http_client: httpx2.AsyncClient) -> dict[str, str]:
    """The headers the SDK sends on every call, names lower-cased: its HTTP client's own (``accept-encoding``,
    ``connection``), overridden by the SDK client's public ``default_headers`` (which include
    ``auth_headers``), as httpx merges them; values the SDK omits (``Omit``) are left out."""
    if client.custom_auth is not None:  # credentials that sign each request (token providers): SDK path only
        raise UnsupportedClient("the client authenticates per request (custom_auth)")
    if client.default_query:
        raise UnsupportedClient("the client adds query parameters")
    headers = {name.lower(): value for name, value in http_client.headers.items()}
    for name, value in client.default_headers.items():
        if isinstance(value, str):
            headers[name.lower()] = value
        else:  # Omit: the SDK leaves the header out
            headers.pop(name.lower(), None)
    if not headers.get("authorization") and not headers.get("x-api-key"):
        raise UnsupportedClient("no credentials in the client's headers")
    return headers


def timeout_headers(timeout: float) -> dict[str, str]:
    """The per-call headers the SDK adds to its ``default_headers`` (``BaseClient._build_headers``) for a
    first attempt (``retries_taken=0``) with a float timeout: with its retries off (``max_retries=0``)
    they depend only on the timeout."""
    return {"x-stainless-timeout": str(timeout), "x-stainless-retry-count": "0",
            "x-stainless-read-timeout": str(timeout)}


def ssl_context() -> ssl.SSLContext:
    """The SSL context the SDK's own aiohttp transport uses (httpx's: certifi/truststore, SSL_CERT_FILE)."""
    context: ssl.SSLContext = httpx2.create_ssl_context()
    return context


def _response(status: int, headers: Mapping[str, str] | Any, url: str, content: bytes = b"") -> httpx2.Response:
    """An ``httpx2.Response`` of what aiohttp received, for the SDK's error types (error path only).

    aiohttp has already decoded the body, so the content coding and length headers are dropped (else
    httpx would decode it again)."""
    kept = [(k, v) for k, v in headers.items() if k.lower() not in ("content-encoding", "content-length",
                                                                       "transfer-encoding")]
    return httpx2.Response(status, headers=kept, content=content, request=httpx2.Request("POST", url))


def status_error(client: anthropic.AsyncAnthropic, status: int, headers: Mapping[str, str] | Any, url: str,
                 body: bytes) -> anthropic.APIStatusError:
    """The SDK's status error of a non-2xx answer, built as the SDK builds it (same class, message, body)."""
    return client._make_status_error_from_response(_response(status, headers, url, body))


def error_event(data: bytes | str, status: int) -> tuple[str, object]:
    """(message, body) of an ``event: error``'s data inside a 2xx stream, as ``AsyncStream`` builds its
    ``APIStatusError``: the JSON body, else the text; both transports raise with these."""
    text = data if isinstance(data, str) else data.decode("utf-8", errors="replace")
    try:
        body: object = orjson.loads(data)
    except orjson.JSONDecodeError:
        return text or f"Error code: {status}", text
    return f"{body}", body


def stream_error(status: int, headers: Mapping[str, str] | Any, url: str, data: bytes) -> anthropic.APIStatusError:
    """An ``event: error`` inside a 2xx stream, as ``AsyncStream`` raises it."""
    message, body = error_event(data, status)
    return anthropic.APIStatusError(message, response=_response(status, headers, url), body=body)


async def sse_events(content: aiohttp.StreamReader) -> AsyncIterator[tuple[bytes | None, bytes]]:
    """(event name, data) of each Server-Sent Event, as the SDK's ``SSEDecoder`` yields them, on bytes.

    Blocks end at a blank line; ``\\r\\n`` and ``\\r`` line ends are normalised; comments, ``id`` and
    ``retry`` are ignored (the Messages API sends neither); several ``data`` lines join with ``\\n``.
    An event without a name is yielded with ``None``. A trailing block without its blank line is
    dropped, as the SDK drops it.
    """
    buffer = b""
    async for chunk in content.iter_any():
        buffer = buffer + chunk if buffer else chunk
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # may be the first half of a \r\n split between two reads
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = 0
        while (end := buffer.find(b"\n\n", start)) != -1:
            block = buffer[start:end]
            start = end + 2
            name: bytes | None = None
            data: list[bytes] = []
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    value = line[5:]
                    data.append(value[1:] if value.startswith(b" ") else value)
                elif line.startswith(b"event:"):
                    value = line[6:]
                    name = value[1:] if value.startswith(b" ") else value
            if name is not None or data:
                yield name, data[0] if len(data) == 1 else b"\n".join(data)
        buffer = buffer[start:] + held
