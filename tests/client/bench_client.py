"""Client overhead: ``python -m tests.client.bench_client [N]`` (default 2000 sequential calls).

Prints calls/s of the raw generated stub and of ``GatewayClient.generate`` against the fault server
(same channel options, same request), and the client's own cost per call with the network taken
out (a stub that answers at once).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import grpc

from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from orchestrator_client import GatewayClient

from .fault_server import FaultServer

PROMPT = "What is 25 + 75?"


async def main(n: int) -> None:
    server = await FaultServer().start()
    try:
        channel = grpc.aio.insecure_channel(server.address, options=[("grpc.enable_retries", 0)])
        stub = pb_grpc.ModelGatewayStub(channel)
        request = pb.GenerateRequest(messages=[pb.Message(role=pb.ROLE_USER, content=PROMPT)])
        for _ in range(200):
            await stub.Generate(request, timeout=60)
        started = time.perf_counter()
        for _ in range(n):
            await stub.Generate(request, timeout=60)
        raw = time.perf_counter() - started
        await channel.close()

        async with GatewayClient(server.address) as client:
            for _ in range(200):
                await client.generate(PROMPT)
            started = time.perf_counter()
            for _ in range(n):
                await client.generate(PROMPT)
            typed = time.perf_counter() - started
    finally:
        await server.stop()

    response = pb.GenerateResponse(content="100", model="m", provider="p")

    class InstantStub:
        async def Generate(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            return response

    client = GatewayClient("localhost:1")
    client._open()
    client._stub = InstantStub()
    m = n * 10
    started = time.perf_counter()
    for _ in range(m):
        await client.generate(PROMPT)
    own = time.perf_counter() - started
    await client.close()

    print(f"{n} sequential Generate calls against the fault server (loopback):")
    print(f"  raw stub:        {n / raw:8.0f} calls/s  {raw / n * 1e6:7.1f} us/call")
    print(f"  GatewayClient:   {n / typed:8.0f} calls/s  {typed / n * 1e6:7.1f} us/call")
    print(f"client's own cost (no network, {m} calls): {own / m * 1e6:.1f} us/call")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
