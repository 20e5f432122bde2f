"""Providers, one module each; ``build_providers`` makes them from the configuration."""

from __future__ import annotations

from gateway_server.providers.base import ChatMessage, Provider, ProviderRequest, ProviderResponse
from gateway_server.settings import (
    AnthropicProviderConfig,
    BedrockProviderConfig,
    GatewaySettings,
    MockProviderConfig,
)

__all__ = ["ChatMessage", "Provider", "ProviderRequest", "ProviderResponse", "build_providers"]


def build_providers(settings: GatewaySettings) -> dict[str, Provider]:
    """One Provider per configured name, in configuration order. SDK clients are built in start()."""
    providers: dict[str, Provider] = {}
    for name, cfg in settings.providers.items():
        if isinstance(cfg, AnthropicProviderConfig):
            from gateway_server.providers.anthropic import AnthropicProvider

            providers[name] = AnthropicProvider(name, cfg, settings.anthropic_key(cfg))
        elif isinstance(cfg, BedrockProviderConfig):
            from gateway_server.providers.bedrock import BedrockProvider

            providers[name] = BedrockProvider(name, cfg, settings.bedrock_region(cfg))
        elif isinstance(cfg, MockProviderConfig):
            from gateway_server.providers.mock import MockProvider

            providers[name] = MockProvider(name, cfg)
    return providers
