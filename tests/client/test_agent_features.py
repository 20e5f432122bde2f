"""The client's agent features end to end through the real gateway (issue 10): cache breakpoints,
thinking (GatewayReasoner too), token counting, structured output, documents, tool results as blocks,
and ``gatewayctl count`` / ``generate --thinking/--schema/--document/--cache-system``."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator_client import (
    DocumentBlock,
    GatewayClient,
    GatewayReasoner,
    GatewaySettings,
    ImageBlock,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ThinkingDelta,
    ToolCall,
    ToolResultBlock,
    ToolSpec,
    cli,
)
from orchestrator_client.content import block_from_proto, block_to_proto
from tests.emulators import AnthropicEmulator
from tests.emulators.answers import sign

ANTHROPIC_KEY = "sk-ant-client-agent"
CLAUDE = "claude-sonnet-5-5"
SYSTEM = "You are a careful agent. " * 20
ADD = ToolSpec("add", "Add two numbers", {"type": "object", "properties": {"a": {"type": "integer"},
                                                                            "b": {"type": "integer"}},
                                          "required": ["a", "b"]}, cache=True)


@pytest.fixture
def emu() -> Iterator[AnthropicEmulator]:
    with AnthropicEmulator(api_key=ANTHROPIC_KEY) as emulator:
        yield emulator


@pytest.fixture
async def address(gateway_factory, emu: AnthropicEmulator) -> str:
    app = await gateway_factory({
        "default_provider": "anthropic",
        "providers": {"anthropic": {"type": "anthropic", "base_url": emu.base_url, "api_key": ANTHROPIC_KEY,
                                    "default_model": CLAUDE, "max_retries": 0}},
        "fallback": {"enabled": False}, "health_check": {"enabled": False},
    })
    return f"127.0.0.1:{app.port}"


def client_for(address: str) -> GatewayClient:
    return GatewayClient(address, max_retries=1, timeout=15)


def last_body(emu: AnthropicEmulator) -> dict[str, Any]:
    body: dict[str, Any] = next(r for r in reversed(emu.requests) if r.kind == "model").json
    return body


async def test_cached_system_and_tools_read_from_the_cache_the_second_time(address: str, emu) -> None:
    async with client_for(address) as client:
        system = [TextBlock(SYSTEM, cache="1h")]
        first = await client.generate("What is 1 + 1?", system=system, tools=[ADD])
        second = await client.generate("What is 1 + 1?", system=system, tools=[ADD])
    assert first.usage.cache_creation_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    body = last_body(emu)
    assert body["system"] == [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}


async def test_thinking_with_tools_sends_the_thinking_back(address: str, emu) -> None:
    async with GatewayReasoner(GatewaySettings(url=address), thinking=2048) as reasoner:
        answer = await reasoner.reason_with_tools("Please use the tool: 3 + 4", [ADD],
                                                  lambda name, args: args["a"] + args["b"])
    assert answer == "The tool returned: 7"
    assistant = last_body(emu)["messages"][1]["content"]
    assert assistant[0]["type"] == "thinking"
    assert assistant[0]["signature"] == sign(assistant[0]["thinking"])
    assert last_body(emu)["thinking"] == {"type": "enabled", "budget_tokens": 2048}


async def test_reasoner_returns_the_thinking_beside_the_answer(address: str, emu) -> None:
    async with GatewayReasoner(GatewaySettings(url=address)) as reasoner:
        reasoned = await reasoner.reason_with_thinking("What is 6 * 7?")
        plain = await reasoner.reason_with_result("What is 6 * 7?")
    assert (reasoned.answer, reasoned.thinking) == ("42", "Thinking about: What is 6 * 7?")
    assert plain.thinking == "" and "thinking" not in last_body(emu)


async def test_streamed_thinking_deltas(address: str) -> None:
    async with client_for(address) as client:
        events = [e async for e in client.stream("What is 2 + 3?", thinking="adaptive")]
    thinking = [e for e in events if isinstance(e, ThinkingDelta)]
    assert [(e.index, bool(e.thinking), bool(e.signature)) for e in thinking] == [(0, True, False), (0, False, True)]
    assert thinking[1].signature == sign(thinking[0].thinking)


async def test_count_tokens(address: str, emu) -> None:
    async with client_for(address) as client:
        counted = await client.count_tokens("one two three", system="four five")
    assert (counted.input_tokens, counted.provider, counted.model) == (5, "anthropic", CLAUDE)
    assert emu.requests[-1].path == "/v1/messages/count_tokens"


async def test_structured_output_and_documents(address: str, emu) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    async with client_for(address) as client:
        result = await client.generate(
            messages=[("user", [DocumentBlock("text/plain", b"numbers", title="notes"), "give me 42"])],
            output_schema=schema)
    assert json.loads(result.content) == {"n": 42}
    body = last_body(emu)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert body["messages"][0]["content"][0] == {"type": "document", "title": "notes", "source": {
        "type": "text", "media_type": "text/plain", "data": "numbers"}}


def test_blocks_round_trip_through_the_proto() -> None:
    blocks = [
        TextBlock("hi", cache=True), DocumentBlock("application/pdf", b"%PDF", "r", cache="5m"),
        ToolResultBlock("t1", "3", blocks=(TextBlock("x"), ImageBlock("image/png", b"png")), cache=True),
        ThinkingBlock("hmm", "sig"), RedactedThinkingBlock(b"opaque"), ToolCall("t1", "add", {"a": 1}),
    ]
    assert [block_from_proto(block_to_proto(b)) for b in blocks] == blocks
    from_dict = block_to_proto({"type": "tool_result", "tool_use_id": "t", "cache_control": {"type": "ephemeral"},
                                "content": [{"type": "text", "text": "a"}]})
    assert from_dict.cache_control.type and from_dict.tool_result.blocks[0].text.text == "a"


async def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_gatewayctl_count_and_agent_options(address: str, emu, tmp_path: Path) -> None:
    code, out, err = await run("--target", address, "count", "--system", "a b", "one two three")
    assert (code, out) == (0, "5\n") and "provider=anthropic" in err
    code, out, _ = await run("--target", address, "--json", "count", "one two")
    assert code == 0 and json.loads(out)["input_tokens"] == 2

    notes = tmp_path / "notes.txt"
    notes.write_text("remember the milk")
    code, out, err = await run("--target", address, "generate", "--thinking", "1024", "--max-tokens", "2048",
                               "--document", str(notes), "--system", SYSTEM, "--cache-system",
                               "--schema", '{"type": "object", "properties": {"n": {"type": "integer"}}}',
                               "give me 7")
    assert code == 0 and json.loads(out) == {"n": 7}
    assert "[thinking] Thinking about: remember the milk\ngive me 7" in err and "cache_write=" in err
    body = last_body(emu)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][0]["content"][0]["title"] == "notes.txt"

    code, out, err = await run("--target", address, "generate", "--stream", "--thinking", "adaptive", "What is 2 + 2?")
    assert (code, out) == (0, "4\n") and "[thinking] Thinking about: What is 2 + 2?\n" in err
