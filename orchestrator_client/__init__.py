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
    GatewayClientError,
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
    ClientTextDelta,
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
from orchestrator_client.settings import GatewayClientSettings, GatewaySettings, OrchestratorConfig, load_config
from orchestrator_client.stats import ClientStats, StatsSnapshot

# GatewayError, GatewaySettings and TextDelta are the earlier names of GatewayClientError,
# GatewayClientSettings and ClientTextDelta (the same classes), kept for compatibility: the new
# names say they are the client's, apart from the server's GatewayError/GatewaySettings/TextDelta.
from orchestrator_client.streaming import EventStream

__all__ = [
    "Attempt",
    "AuthenticationError",
    "ChatMessage",
    "ClientStats",
    "ClientTextDelta",
    "ConfigError",
    "DocumentBlock",
    "EventStream",
    "GatewayClient",
    "GatewayClientError",
    "GatewayClientSettings",
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
