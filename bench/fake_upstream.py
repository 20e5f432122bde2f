"""A fake Anthropic API and a fake Bedrock Runtime, as small and fast as possible: ``python -m bench.fake_upstream``.

Listens on 127.0.0.1 (a free port), prints the port on stdout, then answers
``POST /v1/messages`` with one fixed, valid Message (with ``"stream": true``: Server-Sent Events with
``STREAM_DELTAS`` text deltas, one write per event) and ``GET /v1/models`` with one model (Anthropic);
``POST /model/{id}/converse`` with one fixed Converse answer, ``POST /model/{id}/converse-stream``
with one fixed event stream of ``STREAM_DELTAS`` text deltas (one write per event, as Bedrock sends
them) and ``POST /model/{id}/count-tokens`` (Bedrock; no signature check); anything else is a 404
in the API's error format. aiohttp's low-level server: no router, no middlewares, no access log;
the bodies are encoded once.

``--latency S`` (default 0) makes it answer like a model: a non-streaming answer after S seconds, a
stream's events spread over S seconds (the first at once). ``PUT /bench/latency`` with a number of
seconds as the body changes it while running (bench/peers.py's latency phase).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import struct
import sys
import zlib
from typing import Any

from aiohttp import web

from bench.common import MODEL


def _body(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


MESSAGE = _body({
    "id": "msg_bench0000000000000000", "type": "message", "role": "assistant", "model": MODEL,
    "content": [{"type": "text", "text": "100"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 1},
})
MODELS = _body({
    "data": [{"type": "model", "id": MODEL, "display_name": "Claude Sonnet 5.5",
              "created_at": "2025-09-29T00:00:00Z"}],
    "has_more": False, "first_id": MODEL, "last_id": MODEL,
})
NOT_FOUND = _body({"type": "error", "error": {"type": "not_found_error", "message": "not found"}})

STREAM_DELTAS = 20


def _sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


SSE_EVENTS = [
    _sse("message_start", {"type": "message_start", "message": {
        "id": "msg_bench0000000000000000", "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
    _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
    *(_sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": f"w{i} "}}) for i in range(STREAM_DELTAS)),
    _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": STREAM_DELTAS}}),
    _sse("message_stop", {"type": "message_stop"}),
]


LATENCY = 0.0  # seconds: --latency


async def _write_all(request: web.BaseRequest, content_type: str, chunks: list[bytes],
                     headers: dict[str, str] | None = None) -> web.StreamResponse:
    response = web.StreamResponse(headers={**(headers or {}), "Content-Type": content_type})
    await response.prepare(request)
    pause = LATENCY / max(1, len(chunks) - 1)
    for i, chunk in enumerate(chunks):
        if i and pause:
            await asyncio.sleep(pause)
        await response.write(chunk)
    await response.write_eof()
    return response


# ---- Bedrock Runtime (Converse)

CONVERSE = _body({
    "output": {"message": {"role": "assistant", "content": [{"text": "100"}]}},
    "stopReason": "end_turn", "usage": {"inputTokens": 5, "outputTokens": 1, "totalTokens": 6},
    "metrics": {"latencyMs": 1},
})
COUNT_TOKENS = _body({"inputTokens": 5})
BEDROCK_HEADERS = {"x-amzn-RequestId": "00000000-0000-0000-0000-000000000000"}


def _frame(event_type: str, payload: object) -> bytes:
    """One AWS event-stream message (prelude, string headers, JSON payload, CRC32s)."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"),
                        (":message-type", "event")):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    body = _body(payload)
    prelude = struct.pack(">II", 12 + len(headers) + len(body) + 4, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


STREAM_FRAMES = [
    _frame("messageStart", {"role": "assistant"}),
    *(_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": f"w{i} "}})
      for i in range(STREAM_DELTAS)),
    _frame("contentBlockStop", {"contentBlockIndex": 0}),
    _frame("messageStop", {"stopReason": "end_turn"}),
    _frame("metadata", {"usage": {"inputTokens": 5, "outputTokens": STREAM_DELTAS,
                                  "totalTokens": 5 + STREAM_DELTAS}, "metrics": {"latencyMs": 1}}),
]




async def handle(request: web.BaseRequest) -> web.StreamResponse:
    global LATENCY
    path, method = request.path, request.method
    if path == "/bench/latency" and method == "PUT":  # bench.peers switches regimes without a restart
        LATENCY = float(await request.read())
        return web.Response(body=str(LATENCY).encode(), content_type="text/plain")
    if path == "/v1/messages" and method == "POST":
        if b'"stream":true' in (await request.read()).replace(b" ", b""):
            return await _write_all(request, "text/event-stream", SSE_EVENTS)
        if LATENCY:
            await asyncio.sleep(LATENCY)
        return web.Response(body=MESSAGE, content_type="application/json")
    if path == "/v1/models" and method == "GET":
        return web.Response(body=MODELS, content_type="application/json")
    if path.startswith("/model/") and method == "POST":
        await request.read()
        if path.endswith("/converse"):
            if LATENCY:
                await asyncio.sleep(LATENCY)
            return web.Response(body=CONVERSE, content_type="application/json", headers=BEDROCK_HEADERS)
        if path.endswith("/converse-stream"):
            return await _write_all(request, "application/vnd.amazon.eventstream", STREAM_FRAMES, BEDROCK_HEADERS)
        if path.endswith("/count-tokens"):
            return web.Response(body=COUNT_TOKENS, content_type="application/json", headers=BEDROCK_HEADERS)
    return web.Response(status=404, body=NOT_FOUND, content_type="application/json")


async def serve(handler: Any = None) -> None:
    """Serve ``handler`` (default: this module's ``handle``) on a free loopback port, print the port,
    run until SIGTERM/SIGINT. bench/streams.py serves its own SSE handler through this too."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    runner = web.ServerRunner(web.Server(handler or handle), access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=1024).start()
    print(sock.getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    global LATENCY
    parser = argparse.ArgumentParser(prog="python -m bench.fake_upstream")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each answer takes (0)")
    LATENCY = parser.parse_args().latency
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
