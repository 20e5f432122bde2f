"""``make demo`` / ``python -m gateway_server.demo``: the fallback demonstration.

Starts a gateway (config/demo.gateway.yaml) whose first provider fails on purpose, sends one
Generate call, and shows the gateway's fallback log lines and the attempts in the response.
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from gateway_server.app import GatewayApp
from gateway_server.logging_setup import configure_logging
from gateway_server.settings import ConfigError, load_settings
from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc

DEMO_CONFIG = "config/demo.gateway.yaml"


async def run(config: str) -> int:
    app = await GatewayApp(load_settings(config)).start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.ModelGatewayStub(channel)
            request = pb.GenerateRequest(messages=[pb.Message(role=pb.ROLE_USER, content="What is 25 + 75?")])
            print("\n>>> Generate: 'What is 25 + 75?' (provider 'primary' is failing on purpose)\n", flush=True)
            response = await stub.Generate(request, timeout=10)
    finally:
        await app.stop(grace=1)
    print(f"\n<<< answer: {response.content!r} from provider '{response.provider}' "
          f"(model {response.model}), {response.latency_ms:.1f} ms")
    for n, attempt in enumerate(response.attempts, 1):
        outcome = pb.AttemptOutcome.Name(attempt.outcome).removeprefix("ATTEMPT_OUTCOME_")
        extra = f" {attempt.code}/{attempt.reason}: {attempt.message}" if attempt.code else ""
        print(f"    attempt {n}: {attempt.provider:<10} {outcome}{extra} "
              f"(retries {attempt.retries}, {attempt.latency_ms:.1f} ms)")
    return 0


def main(argv: list[str] | None = None) -> int:
    config = (argv if argv is not None else sys.argv[1:])[:1] or [DEMO_CONFIG]
    configure_logging("INFO")
    try:
        return asyncio.run(run(config[0]))
    except ConfigError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
