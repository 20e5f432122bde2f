# syntax=docker/dockerfile:1
# Model Gateway image: `make image` (docker build -t model-gateway .). Multi-stage: the build stage
# generates the gRPC stubs from protos/ and builds the wheel; the runtime stage holds only a venv
# with the gateway and its dependencies, runs as an unprivileged user and works with a read-only
# root filesystem (give it a writable /tmp: --tmpfs /tmp, or an emptyDir in Kubernetes). No secret
# is baked in: keys come from the environment (GATEWAY_ANTHROPIC_API_KEY, AWS_*, GATEWAY_API_KEYS)
# or mounted files at run time.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Code generators and build backend in their own venv (not shipped).
RUN python -m venv /opt/tools \
 && /opt/tools/bin/pip install --no-cache-dir grpcio-tools==1.85.1 mypy-protobuf==5.1.0 setuptools==80.9.0 wheel==0.45.1
COPY pyproject.toml setup.py README.md ./
COPY protos/ protos/
COPY gateway_server/ gateway_server/
COPY orchestrator_client/ orchestrator_client/
# Stubs generated here, from the .proto files: never copied from a developer's tree (.dockerignore).
RUN PATH="/opt/tools/bin:$PATH" python -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. \
        --mypy_out=. --mypy_grpc_out=. protos/modelgateway/v1/model_gateway.proto \
 && touch modelgateway/__init__.py modelgateway/v1/__init__.py modelgateway/py.typed \
 && /opt/tools/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir /wheels/*.whl

FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="model-gateway" \
      org.opencontainers.image.description="gRPC gateway in front of Anthropic and AWS Bedrock"
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
COPY config/gateway.yaml /etc/model-gateway/gateway.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_CONFIG=/etc/model-gateway/gateway.yaml \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=50051 \
    GATEWAY_LOG_FORMAT=json \
    GRPC_VERBOSITY=ERROR
# GRPC_VERBOSITY=ERROR: gRPC's C core would print every refused TLS handshake (a port scan, a
# plaintext client) at INFO on stderr in its own format, between the JSON log lines.
# An empty working directory: no .env is read from it.
WORKDIR /srv
USER 10001:10001
EXPOSE 50051
# grpc.health.v1 on the local port (plaintext; Kubernetes uses its own gRPC probes instead).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "gateway_server.healthcheck"]
# The gateway drains on SIGTERM (server.grace_period); with --workers the supervisor forwards it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["model-gateway"]
