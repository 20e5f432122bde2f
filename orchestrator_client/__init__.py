"""The orchestrator's client of the Model Gateway: a typed grpc.aio client with deadline-aware
retries and statistics (:class:`GatewayClient`), the orchestrator-facing adapter
(:class:`GatewayReasoner`), its configuration (:func:`load_config`) and the ``gatewayctl``
command line (:mod:`orchestrator_client.cli`).
"""

from orchestrator_client.client import GatewayClient
from orchestrator_client.content import (
    DocumentBlock,
    ImageBlock,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolCall,
    ToolResultBlock,
    ToolSpec,
)
from orchestrator_client.errors import (
    AuthenticationError,
    ConfigError,
    GatewayError,
    GatewayTimeoutError,
    GatewayUnavailableError,
    InvalidRequestError,
    MessageTooLargeError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    RateLimitedError,
    ServerError,
    ToolRoundsExceededError,
)
from orchestrator_client.options import GenerateOptions
from orchestrator_client.reasoner import GatewayReasoner
from orchestrator_client.results import (
    Attempt,
    ChatMessage,
    GenerateResult,
    HealthReport,
    ProviderHealth,
    ProviderInfo,
    ProviderList,
    Status,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ThinkingDelta,
    TokenCount,
    Usage,
)
from orchestrator_client.settings import GatewaySettings, OrchestratorConfig, load_config
from orchestrator_client.stats import ClientStats, StatsSnapshot
from orchestrator_client.streaming import EventStream

__all__ = [
    "Attempt",
    "AuthenticationError",
    "ChatMessage",
    "ClientStats",
    "ConfigError",
    "DocumentBlock",
    "EventStream",
    "GatewayClient",
    "GatewayError",
    "GatewayReasoner",
    "GatewaySettings",
    "GatewayTimeoutError",
    "GatewayUnavailableError",
    "GenerateOptions",
    "GenerateResult",
    "HealthReport",
    "ImageBlock",
    "InvalidRequestError",
    "MessageTooLargeError",
    "NotFoundError",
    "OrchestratorConfig",
    "PermissionDeniedError",
    "PreconditionError",
    "ProviderHealth",
    "ProviderInfo",
    "ProviderList",
    "RateLimitedError",
    "RedactedThinkingBlock",
    "ServerError",
    "StatsSnapshot",
    "Status",
    "StreamEnd",
    "StreamEvent",
    "StreamStart",
    "TextBlock",
    "TextDelta",
    "ThinkingBlock",
    "ThinkingDelta",
    "TokenCount",
    "ToolCall",
    "ToolResultBlock",
    "ToolRoundsExceededError",
    "ToolSpec",
    "Usage",
    "load_config",
]

__version__ = "0.1.0"
