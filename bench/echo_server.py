"""The floor: a bare grpc.aio server whose Generate returns one fixed response.

``python -m bench.echo_server`` listens on 127.0.0.1 (a free port) and prints the port on stdout.
Same RPC, same messages as the gateway, no validation, routing, provider or logging: what any
Python grpc.aio service pays per unary call.
"""

from __future__ import annotations

import asyncio
import signal
import sys

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


class EchoServicer(pb_grpc.ModelGatewayServicer):
    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResponse:  # type: ignore[type-arg]
        return RESPONSE


async def serve() -> None:
    server = grpc.aio.server()
    pb_grpc.add_ModelGatewayServicer_to_server(EchoServicer(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> int:
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
