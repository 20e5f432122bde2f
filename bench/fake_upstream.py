"""A fake Anthropic API, as small and fast as possible: ``python -m bench.fake_upstream``.

Listens on 127.0.0.1 (a free port), prints the port on stdout, then answers
``POST /v1/messages`` with one fixed, valid Message and ``GET /v1/models`` with one model; anything
else is a 404 in the API's error format. aiohttp's low-level server: no router, no middlewares,
no access log; the bodies are encoded once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys

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


async def handle(request: web.BaseRequest) -> web.Response:
    path, method = request.path, request.method
    if path == "/v1/messages" and method == "POST":
        await request.read()
        return web.Response(body=MESSAGE, content_type="application/json")
    if path == "/v1/models" and method == "GET":
        return web.Response(body=MODELS, content_type="application/json")
    return web.Response(status=404, body=NOT_FOUND, content_type="application/json")


async def serve() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    runner = web.ServerRunner(web.Server(handle), access_log=None, handle_signals=False)
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
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
