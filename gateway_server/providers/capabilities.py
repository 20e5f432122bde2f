"""Which models have which request features, from their ids (pure; shared by the providers).

Both providers serve Claude models under ids that contain the same family names (Anthropic
``claude-sonnet-4-5``, Bedrock ``anthropic.claude-sonnet-4-5-20250929-v1:0``); the lists below name
the families that lack a feature, so a new model id has it by default and the provider decides.
"""

from __future__ import annotations

import re

# Claude models before native structured outputs (Sonnet 4.5 / Opus 4.1 introduced them).
_NO_STRUCTURED_OUTPUT = re.compile(r"claude-(instant|v?2|3)|claude-(sonnet|opus)-4-(0|2025)")
# Claude models before extended thinking (Claude 3.7 Sonnet introduced it).
_NO_THINKING = re.compile(r"claude-(instant|v?2|3-(?!7))")


def is_claude(model: str) -> bool:
    return "claude" in model


def has_structured_output(model: str) -> bool:
    return not _NO_STRUCTURED_OUTPUT.search(model)


def has_thinking(model: str) -> bool:
    return is_claude(model) and not _NO_THINKING.search(model)
