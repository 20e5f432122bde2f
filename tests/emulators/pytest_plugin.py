"""Pytest fixtures: a started emulator per test, stopped after it.

Loaded by the project's conftest with ``pytest_plugins = ["tests.emulators.pytest_plugin"]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .anthropic import AnthropicEmulator
from .bedrock import BedrockEmulator


@pytest.fixture
def anthropic_emulator() -> Iterator[AnthropicEmulator]:
    """An Anthropic Messages API emulator accepting the API key ``"test-key"``."""
    with AnthropicEmulator(api_key="test-key") as emulator:
        yield emulator


@pytest.fixture
def bedrock_emulator() -> Iterator[BedrockEmulator]:
    """A Bedrock Runtime emulator accepting the access key id ``"AKIDTEST"``."""
    with BedrockEmulator(access_key_id="AKIDTEST") as emulator:
        yield emulator
