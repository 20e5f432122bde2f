#!/usr/bin/env bash
# `make image`: lint the Dockerfile (hadolint), then, where a Docker daemon answers, build the image
# and smoke-test it: a read-only root filesystem with a tmpfs /tmp, 2 workers, GetStatus from
# gatewayctl, and `docker stop` (SIGTERM) ending in a clean drain (exit status 0). Without a
# daemon it says so and stops after the lint (exit 0).
#   IMAGE=model-gateway:dev   the tag to build
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-model-gateway:dev}
BIN=.venv/bin

"$BIN/hadolint" Dockerfile
echo "image: hadolint: Dockerfile OK"

if ! command -v docker >/dev/null 2>&1; then
    echo "image: skipped the build and smoke test: no docker CLI here (hadolint passed)"
    exit 0
fi
if ! docker info >/dev/null 2>&1; then
    echo "image: skipped the build and smoke test: no Docker daemon answers (docker info failed; hadolint passed)"
    exit 0
fi

docker build -t "$IMAGE" .
name="model-gateway-smoke-$$"
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
docker run -d --name "$name" --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    -e GATEWAY_WORKERS=2 -e GATEWAY_DEFAULT_PROVIDER=mock -p 127.0.0.1::50051 "$IMAGE" >/dev/null
port=$(docker port "$name" 50051/tcp | head -n1 | sed 's/.*://')
for _ in $(seq 1 60); do
    if "$BIN/gatewayctl" --target "127.0.0.1:$port" --max-retries 1 --timeout 2 status >/dev/null 2>&1; then
        break
    fi
    sleep 1
done
"$BIN/gatewayctl" --target "127.0.0.1:$port" --max-retries 1 --timeout 5 status
"$BIN/gatewayctl" --target "127.0.0.1:$port" --max-retries 1 --timeout 10 generate "What is 25 + 75?"
[[ "$(docker exec "$name" id -u)" != 0 ]] || { echo "image: FAILED: the container runs as root"; exit 1; }
docker stop -t 40 "$name" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
[[ "$code" == 0 ]] || { echo "image: FAILED: exit status $code after docker stop"; docker logs "$name" | tail -20; exit 1; }
echo "image: $IMAGE built and smoke-tested (read-only rootfs, non-root, 2 workers, drained on SIGTERM)"
