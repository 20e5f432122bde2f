"""The retry policy's codes as the seed guide specifies them, written once for every test that needs
them (kept apart from orchestrator_client.retry_policy on purpose: the tests check the code
against this list, not against itself). Each code maps to the error class the client raises."""

from __future__ import annotations

import grpc

from orchestrator_client import (
    AuthenticationError,
    GatewayError,
    GatewayUnavailableError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    RateLimitedError,
    ServerError,
)

C = grpc.StatusCode

# Retried by default (DEADLINE_EXCEEDED too, but only under a per-attempt limit: tested apart).
RETRIED: dict[grpc.StatusCode, type[GatewayError]] = {
    C.UNAVAILABLE: GatewayUnavailableError,
    C.RESOURCE_EXHAUSTED: RateLimitedError,
    C.ABORTED: ServerError,
    C.INTERNAL: ServerError,
}

# Never retried by default.
NEVER: dict[grpc.StatusCode, type[GatewayError]] = {
    C.INVALID_ARGUMENT: InvalidRequestError,
    C.UNAUTHENTICATED: AuthenticationError,
    C.PERMISSION_DENIED: PermissionDeniedError,
    C.NOT_FOUND: NotFoundError,
    C.FAILED_PRECONDITION: PreconditionError,
    C.UNIMPLEMENTED: NotFoundError,
    C.OUT_OF_RANGE: InvalidRequestError,
    C.CANCELLED: ServerError,
}
