"""``python -m gateway_server.healthcheck``: the container's HEALTHCHECK (Docker, compose).

Asks grpc.health.v1 on 127.0.0.1:$GATEWAY_PORT (default 50051) whether ``modelgateway.v1.ModelGateway``
is SERVING; exit status 0 if so, 1 otherwise (draining, down, no answer within 3 s). Plaintext only:
a gateway serving TLS (``server.tls``) needs a health check of its own (Kubernetes uses the kubelet's
gRPC probes, not this).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE = "modelgateway.v1.ModelGateway"


def main() -> int:
    port = os.environ.get("GATEWAY_PORT", "50051")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=3)
        except grpc.RpcError as err:
            print(f"healthcheck: {err.code().name}", file=sys.stderr)
            return 1
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    if not serving:
        print(f"healthcheck: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}", file=sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
