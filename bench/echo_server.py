"""The floor: a bare grpc.aio server whose Generate returns one fixed response.

``python -m bench.echo_server`` listens on 127.0.0.1 (a free port) and prints the port on stdout.
Same RPC, same messages as the gateway, no validation, routing, provider or logging: what any
Python grpc.aio service pays per unary call. Its ``GenerateStream`` yields the gateway's stream
(one StreamStart, ``--chunks`` fixed text deltas, one StreamEnd; messages built once): what any
grpc.aio server-streaming hop pays, for bench.streams' TTFT floor.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import grpc

from bench.common import MODEL
from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc

# About the size of a gateway answer (one attempt, a request id).
RESPONSE = pb.GenerateResponse(
    content="100", model=MODEL, provider="echo",
    usage=pb.Usage(input_tokens=5, output_tokens=1, total_tokens=6),
    finish_reason=pb.FINISH_REASON_END_TURN, latency_ms=0.01, request_id="0" * 32,
    attempts=[pb.Attempt(provider="echo", model=MODEL, outcome=pb.ATTEMPT_OUTCOME_OK,
                         latency_ms=0.01)],
    stop_reason="end_turn",
)
STREAM_START = pb.GenerateStreamResponse(start=pb.StreamStart(provider="echo", model=MODEL, request_id="0" * 32))
STREAM_END = pb.GenerateStreamResponse(end=pb.StreamEnd(
    finish_reason=pb.FINISH_REASON_END_TURN, stop_reason="end_turn",
    usage=pb.Usage(input_tokens=5, output_tokens=50, total_tokens=55),
    attempts=[pb.Attempt(provider="echo", model=MODEL, outcome=pb.ATTEMPT_OUTCOME_OK, latency_ms=0.01)],
    latency_ms=0.01, first_token_ms=0.01))


class EchoServicer(pb_grpc.ModelGatewayServicer):
    def __init__(self, chunks: int = 50) -> None:
        self._deltas = [pb.GenerateStreamResponse(delta=pb.ContentDelta(index=0, text=f"tok{i} "))
                        for i in range(chunks)]

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResponse:  # type: ignore[type-arg]
        return RESPONSE

    async def GenerateStream(
        self, request: pb.GenerateRequest,
        context: grpc.aio.ServicerContext[pb.GenerateRequest, pb.GenerateStreamResponse],
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        yield STREAM_START
        for delta in self._deltas:
            yield delta
        yield STREAM_END


async def serve(chunks: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ModelGatewayServicer_to_server(EchoServicer(chunks), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.echo_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", type=int, default=50, help="text deltas per GenerateStream (50)")
    asyncio.run(serve(p.parse_args(argv).chunks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
