"""API keys' and providers' limits and budgets, in memory or shared through Redis (limiter.py)."""

from gateway_server.limits.backends import BackendError, MemoryBackend, RedisBackend
from gateway_server.limits.limiter import (
    REMAINING_REQUESTS,
    REMAINING_TOKENS,
    CallQuota,
    Limiter,
    Pricer,
    estimate_input_tokens,
    table_pricer,
)

__all__ = [
    "REMAINING_REQUESTS",
    "REMAINING_TOKENS",
    "BackendError",
    "CallQuota",
    "Limiter",
    "MemoryBackend",
    "Pricer",
    "RedisBackend",
    "estimate_input_tokens",
    "table_pricer",
]
