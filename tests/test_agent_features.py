"""What agents send (issue 10) through the real SDKs against the emulators, both providers, unary and
streams: prompt caching, extended thinking, documents, tool results as blocks, structured output, token
counting and every stop reason. Each test asserts the exact provider JSON the emulator received."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from gateway_server.providers import capabilities
from gateway_server.providers.base import finish_reason
from modelgateway.v1 import model_gateway_pb2 as pb
from tests.conftest import mock_config
from tests.emulators import AnthropicEmulator, BedrockEmulator, Fault
from tests.emulators.answers import sign
from tests.helpers import ask, error_details
from tests.test_fallback import ANTHROPIC_KEY, AWS_KEY_ID, AWS_SECRET, BEDROCK_CLAUDE, CLAUDE, config

pytestmark = [pytest.mark.usefixtures("aws_credentials"), pytest.mark.timeout(60)]

PROVIDERS = ["anthropic", "bedrock"]
MODELS = {"anthropic": CLAUDE, "bedrock": BEDROCK_CLAUDE}
LONG_PROMPT = "You are a careful agent. " * 40
CACHE = pb.CacheControl(type=pb.CACHE_TYPE_EPHEMERAL)
PDF = b"%PDF-1.4 fake pdf bytes"


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)


@pytest.fixture
def emus() -> Iterator[dict[str, Any]]:
    with AnthropicEmulator(api_key=ANTHROPIC_KEY) as a, BedrockEmulator(access_key_id=AWS_KEY_ID) as b:
        yield {"anthropic": a, "bedrock": b}


@pytest.fixture
async def stub(gateway_factory, stub_for, emus) -> Any:
    return await stub_for(await gateway_factory(config(emus["anthropic"], emus["bedrock"])))


def calc_tool(cache: pb.CacheControl | None = None) -> pb.Tool:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]})
    tool = pb.Tool(name="add", description="Add two numbers", input_schema=schema)
    if cache is not None:
        tool.cache_control.CopyFrom(cache)
    return tool


def text(value: str, cache: pb.CacheControl | None = None) -> pb.ContentBlock:
    block = pb.ContentBlock(text=pb.TextBlock(text=value))
    if cache is not None:
        block.cache_control.CopyFrom(cache)
    return block


def user(*blocks: pb.ContentBlock, content: str = "") -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=content, blocks=blocks)


def sent(emu: Any) -> dict[str, Any]:
    """The JSON body of the last generation call the emulator received."""
    body: dict[str, Any] = next(r for r in reversed(emu.requests) if r.kind == "model").json
    return body


async def stream(stub: Any, request: pb.GenerateRequest) -> list[pb.GenerateStreamResponse]:
    return [event async for event in stub.GenerateStream(request, timeout=15)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -------------------------------------------------------------------- prompt caching


def cached_request(provider: str) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        provider=provider, system_blocks=[text(LONG_PROMPT, pb.CacheControl(ttl="1h"))],
        tools=[calc_tool(CACHE)], messages=[user(text("What is 2 + 2?", CACHE))])


async def test_anthropic_cache_breakpoints_are_cache_control(stub, emus) -> None:
    await stub.Generate(cached_request("anthropic"), timeout=15)
    body = sent(emus["anthropic"])
    assert body["system"] == [{"type": "text", "text": LONG_PROMPT, "cache_control": {"type": "ephemeral",
                                                                                       "ttl": "1h"}}]
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is 2 + 2?", "cache_control": {"type": "ephemeral"}}]}]


async def test_bedrock_cache_breakpoints_are_cache_points(stub, emus) -> None:
    await stub.Generate(cached_request("bedrock"), timeout=15)
    body = sent(emus["bedrock"])
    assert body["system"] == [{"text": LONG_PROMPT}, {"cachePoint": {"type": "default", "ttl": "1h"}}]
    assert body["toolConfig"]["tools"][1:] == [{"cachePoint": {"type": "default"}}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "What is 2 + 2?"},
                                                             {"cachePoint": {"type": "default"}}]}]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_a_cached_prompt_is_read_from_the_cache_the_second_time(stub, emus, provider: str,
                                                                      streamed: bool) -> None:
    request = pb.GenerateRequest(provider=provider, system_blocks=[text(LONG_PROMPT, CACHE)],
                                 messages=[user(content="What is 2 + 2?")])

    async def usage() -> pb.Usage:
        if streamed:
            events = await stream(stub, request)
            return events[-1].end.usage
        return (await stub.Generate(request, timeout=15)).usage

    first, second = await usage(), await usage()
    prompt_tokens = len(LONG_PROMPT.split())
    assert (first.cache_creation_input_tokens, first.cache_read_input_tokens) == (prompt_tokens, 0)
    assert (second.cache_creation_input_tokens, second.cache_read_input_tokens) == (0, prompt_tokens)
    assert second.input_tokens == len("What is 2 + 2?".split())
    assert second.total_tokens == second.input_tokens + prompt_tokens + second.output_tokens


# -------------------------------------------------------------------- extended thinking


def thinking_request(provider: str, **kwargs: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        provider=provider, max_tokens=4096, tools=[calc_tool()],
        thinking=pb.ThinkingConfig(mode=pb.THINKING_MODE_ENABLED, budget_tokens=2048),
        messages=[user(content="Please use the tool: 3 + 4")], **kwargs)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_thinking_blocks_survive_a_two_turn_tool_use_conversation(stub, emus, provider: str) -> None:
    first = await stub.Generate(thinking_request(provider), timeout=15)
    kinds = [b.WhichOneof("block") for b in first.blocks]
    assert kinds == ["thinking", "tool_use"] and first.finish_reason == pb.FINISH_REASON_TOOL_USE
    thinking = first.blocks[0].thinking
    assert thinking.thinking == "Thinking about: Please use the tool: 3 + 4"
    assert thinking.signature == sign(thinking.thinking)
    body = sent(emus[provider])
    if provider == "anthropic":
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    else:
        assert body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 2048}}

    call = first.blocks[1].tool_use
    request = thinking_request(provider)
    request.messages.append(pb.Message(role=pb.ROLE_ASSISTANT, blocks=first.blocks))
    request.messages.append(user(pb.ContentBlock(tool_result=pb.ToolResultBlock(tool_use_id=call.id,
                                                                                 content="7"))))
    second = await stub.Generate(request, timeout=15)
    assert second.content == "The tool returned: 7"
    assistant = sent(emus[provider])["messages"][1]["content"]
    if provider == "anthropic":
        assert assistant[0] == {"type": "thinking", "thinking": thinking.thinking, "signature": thinking.signature}
    else:
        assert assistant[0] == {"reasoningContent": {"reasoningText": {"text": thinking.thinking,
                                                                        "signature": thinking.signature}}}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_changed_thinking_block_is_rejected_by_the_provider(stub, emus, provider: str) -> None:
    request = ask(provider=provider)
    request.messages.append(pb.Message(role=pb.ROLE_ASSISTANT, blocks=[
        pb.ContentBlock(thinking=pb.ThinkingBlock(thinking="edited", signature=sign("original"))),
        text("ok")]))
    request.messages.append(user(content="And 1 + 1?"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(request, timeout=15)
    details = error_details(info.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PROVIDER_REJECTED_REQUEST")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_thinking_streams_as_its_own_deltas(stub, emus, provider: str) -> None:
    request = pb.GenerateRequest(provider=provider, messages=[user(content="What is 6 * 7?")],
                                 thinking=pb.ThinkingConfig(mode=pb.THINKING_MODE_ADAPTIVE))
    events = await stream(stub, request)
    deltas = [e.delta for e in events if e.WhichOneof("event") == "delta"]
    assert [(d.index, d.WhichOneof("delta")) for d in deltas] == [(0, "thinking"), (0, "signature"), (1, "text")]
    assert deltas[0].thinking == "Thinking about: What is 6 * 7?"
    assert deltas[1].signature == sign(deltas[0].thinking)
    assert deltas[2].text == "42"
    body = sent(emus[provider])
    if provider == "anthropic":
        assert body["thinking"] == {"type": "adaptive"}
    else:
        assert body["additionalModelRequestFields"] == {"thinking": {"type": "adaptive"}}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_redacted_thinking_comes_back_whole_and_goes_back_unchanged(stub, emus, provider: str,
                                                                          streamed: bool) -> None:
    emus[provider].redact_thinking = True
    request = pb.GenerateRequest(provider=provider, messages=[user(content="What is 1 + 1?")],
                                 thinking=pb.ThinkingConfig(mode=pb.THINKING_MODE_ADAPTIVE))
    if streamed:
        deltas = [e.delta for e in await stream(stub, request) if e.WhichOneof("event") == "delta"]
        assert deltas[0].WhichOneof("delta") == "redacted_thinking"
        data = deltas[0].redacted_thinking.data
    else:
        response = await stub.Generate(request, timeout=15)
        assert response.blocks[0].WhichOneof("block") == "redacted_thinking"
        data = response.blocks[0].redacted_thinking.data
    assert data.startswith(b"redacted")
    request.messages.append(pb.Message(role=pb.ROLE_ASSISTANT, blocks=[
        pb.ContentBlock(redacted_thinking=pb.RedactedThinkingBlock(data=data)), text("2")]))
    request.messages.append(user(content="And 2 + 2?"))
    assert (await stub.Generate(request, timeout=15)).content == "4"
    echoed = sent(emus[provider])["messages"][1]["content"][0]
    if provider == "anthropic":
        assert echoed == {"type": "redacted_thinking", "data": data.decode()}
    else:
        assert echoed == {"reasoningContent": {"redactedContent": b64(data)}}


# -------------------------------------------------------------------- documents and tool-result blocks


def documents_request(provider: str) -> pb.GenerateRequest:
    return pb.GenerateRequest(provider=provider, messages=[user(
        pb.ContentBlock(document=pb.DocumentBlock(media_type="application/pdf", data=PDF, title="Q3 report")),
        pb.ContentBlock(document=pb.DocumentBlock(media_type="text/plain", data=b"notes: revenue up"),
                        cache_control=CACHE),
        text("Summarise"))])


async def test_anthropic_documents(stub, emus) -> None:
    await stub.Generate(documents_request("anthropic"), timeout=15)
    assert sent(emus["anthropic"])["messages"][0]["content"][:2] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PDF)},
         "title": "Q3 report"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes: revenue up"},
         "cache_control": {"type": "ephemeral"}},
    ]


async def test_bedrock_documents(stub, emus) -> None:
    await stub.Generate(documents_request("bedrock"), timeout=15)
    assert sent(emus["bedrock"])["messages"][0]["content"][:3] == [
        {"document": {"format": "pdf", "name": "Q3 report", "source": {"bytes": b64(PDF)}}},
        {"document": {"format": "txt", "name": "document-2", "source": {"bytes": b64(b"notes: revenue up")}}},
        {"cachePoint": {"type": "default"}},
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_results_as_blocks(stub, emus, provider: str) -> None:
    png = b"\x89PNG fake"
    request = pb.GenerateRequest(provider=provider, tools=[calc_tool()], messages=[
        user(content="Use the tool: 1 + 2"),
        pb.Message(role=pb.ROLE_ASSISTANT, blocks=[pb.ContentBlock(tool_use=pb.ToolUseBlock(id="t1", name="add"))]),
        user(pb.ContentBlock(tool_result=pb.ToolResultBlock(
            tool_use_id="t1", content="3", is_error=True, blocks=[
                text("see chart"), pb.ContentBlock(image=pb.ImageBlock(media_type="image/png", data=png))]))),
    ])
    response = await stub.Generate(request, timeout=15)
    assert response.content == "The tool returned: 3\nsee chart"
    result = sent(emus[provider])["messages"][2]["content"][0]
    if provider == "anthropic":
        assert result == {"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": [
            {"type": "text", "text": "3"}, {"type": "text", "text": "see chart"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(png)}}]}
    else:
        assert result == {"toolResult": {"toolUseId": "t1", "status": "error", "content": [
            {"text": "3"}, {"text": "see chart"}, {"image": {"format": "png", "source": {"bytes": b64(png)}}}]}}


# -------------------------------------------------------------------- structured output

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}


def schema_request(provider: str, model: str = "") -> pb.GenerateRequest:
    request = pb.GenerateRequest(provider=provider, model=model,
                                 messages=[user(content="Paris has 2100000 people")])
    request.output_format.json_schema.update(SCHEMA)
    request.output_format.name = "city"
    return request


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_structured_output_is_native(stub, emus, provider: str, streamed: bool) -> None:
    if streamed:
        events = await stream(stub, schema_request(provider))
        answer = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
    else:
        answer = (await stub.Generate(schema_request(provider), timeout=15)).content
    assert json.loads(answer) == {"city": "Paris has 2100000 people", "population": 2100000}
    body = sent(emus[provider])
    if provider == "anthropic":
        assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    else:
        schema = body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
        assert json.loads(schema.pop("schema")) == SCHEMA  # a JSON string, as Converse takes it
        assert body["outputConfig"] == {"textFormat": {"type": "json_schema", "structure": {
            "jsonSchema": {"name": "city"}}}}


@pytest.mark.parametrize(("provider", "model"), [("anthropic", "claude-3-5-haiku-20241022"),
                                                 ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0")])
async def test_structured_output_on_a_model_without_it_names_the_field(stub, emus, provider: str,
                                                                       model: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(schema_request(provider, model), timeout=15)
    details = error_details(info.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_BY_PROVIDER")
    assert details.metadata["field"] == "output_format" and details.metadata["provider"] == provider
    assert emus["anthropic"].model_calls == emus["bedrock"].model_calls == 0


async def test_structured_output_skips_a_fallback_model_without_it(gateway_factory, stub_for, emus) -> None:
    cfg = config(emus["anthropic"], emus["bedrock"], bedrock={"model_id": "anthropic.claude-3-haiku-20240307-v1:0"})
    cfg["providers"]["mock"] = {"type": "mock"}
    cfg["fallback"] = {"enabled": True, "fallback_order": ["anthropic", "bedrock", "mock"], "max_fallback_attempts": 3}
    stub = await stub_for(await gateway_factory(cfg))
    emus["anthropic"].inject(Fault.status(500), times=None)
    response = await stub.Generate(schema_request("anthropic"), timeout=15)
    assert [(a.provider, a.outcome, a.reason) for a in response.attempts] == [
        ("anthropic", pb.ATTEMPT_OUTCOME_ERROR, "PROVIDER_ERROR"),
        ("bedrock", pb.ATTEMPT_OUTCOME_SKIPPED, "UNSUPPORTED_BY_PROVIDER"),
        ("mock", pb.ATTEMPT_OUTCOME_OK, "")]
    assert "output_format" in response.attempts[1].message
    assert json.loads(response.content) == {"city": "Paris has 2100000 people", "population": 2100000}
    assert emus["bedrock"].model_calls == 0


# -------------------------------------------------------------------- token counting


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_count_tokens(stub, emus, provider: str) -> None:
    request = pb.CountTokensRequest(provider=provider, system="Be terse.", tools=[calc_tool()],
                                    messages=[user(content="one two three")])
    response = await stub.CountTokens(request, timeout=15)
    assert response.input_tokens == 5
    assert (response.provider, response.model) == (provider, MODELS[provider])
    assert [a.outcome for a in response.attempts] == [pb.ATTEMPT_OUTCOME_OK]
    counted = emus[provider].requests[-1]
    assert emus[provider].model_calls == 0
    if provider == "anthropic":
        assert counted.path == "/v1/messages/count_tokens"
        assert counted.json["system"] == "Be terse." and counted.json["model"] == CLAUDE
        assert counted.json["tools"][0]["name"] == "add" and "max_tokens" not in counted.json
    else:
        assert counted.path == f"/model/{BEDROCK_CLAUDE}/count-tokens"
        assert counted.json["input"]["converse"]["system"] == [{"text": "Be terse."}]
        assert counted.json["input"]["converse"]["messages"] == [{"role": "user",
                                                                   "content": [{"text": "one two three"}]}]


@pytest.mark.parametrize("first", PROVIDERS)
async def test_count_tokens_falls_back_like_generate(gateway_factory, stub_for, emus, first: str) -> None:
    stub = await stub_for(await gateway_factory(config(emus["anthropic"], emus["bedrock"], first=first)))
    emus[first].inject(Fault.status(503), times=None, on="probe")
    response = await stub.CountTokens(pb.CountTokensRequest(messages=[user(content="one two")]), timeout=15)
    other = "bedrock" if first == "anthropic" else "anthropic"
    assert response.provider == other and response.input_tokens == 2
    assert [(a.provider, a.outcome, a.reason) for a in response.attempts] == [
        (first, pb.ATTEMPT_OUTCOME_ERROR, "PROVIDER_OVERLOADED"), (other, pb.ATTEMPT_OUTCOME_OK, "")]


async def test_count_tokens_validates_like_generate(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CountTokens(pb.CountTokensRequest(), timeout=15)
    details = error_details(info.value)
    assert (details.code, details.metadata.get("field")) == (grpc.StatusCode.INVALID_ARGUMENT, "messages")


# -------------------------------------------------------------------- stop reasons

STOP_REASONS = {
    "anthropic": {
        "end_turn": pb.FINISH_REASON_END_TURN, "max_tokens": pb.FINISH_REASON_MAX_TOKENS,
        "stop_sequence": pb.FINISH_REASON_STOP_SEQUENCE, "tool_use": pb.FINISH_REASON_TOOL_USE,
        "pause_turn": pb.FINISH_REASON_PAUSE_TURN, "refusal": pb.FINISH_REASON_REFUSAL,
        "model_context_window_exceeded": pb.FINISH_REASON_CONTEXT_WINDOW_EXCEEDED,
        "a_future_reason": pb.FINISH_REASON_OTHER,
    },
    "bedrock": {
        "end_turn": pb.FINISH_REASON_END_TURN, "max_tokens": pb.FINISH_REASON_MAX_TOKENS,
        "stop_sequence": pb.FINISH_REASON_STOP_SEQUENCE, "tool_use": pb.FINISH_REASON_TOOL_USE,
        "guardrail_intervened": pb.FINISH_REASON_GUARDRAIL_INTERVENED,
        "content_filtered": pb.FINISH_REASON_CONTENT_FILTERED,
        "malformed_model_output": pb.FINISH_REASON_MALFORMED_OUTPUT,
        "malformed_tool_use": pb.FINISH_REASON_MALFORMED_TOOL_USE,
        "model_context_window_exceeded": pb.FINISH_REASON_CONTEXT_WINDOW_EXCEEDED,
        "a_future_reason": pb.FINISH_REASON_OTHER,
    },
}


@pytest.mark.parametrize(("provider", "stop_reason"), [(p, r) for p in PROVIDERS for r in STOP_REASONS[p]])
async def test_every_stop_reason_is_mapped(stub, emus, provider: str, stop_reason: str) -> None:
    emus[provider].stop_reason = stop_reason
    response = await stub.Generate(ask(provider=provider), timeout=15)
    end = (await stream(stub, ask(provider=provider)))[-1].end
    for got in (response, end):
        assert (got.stop_reason, got.finish_reason) == (stop_reason, STOP_REASONS[provider][stop_reason])


# -------------------------------------------------------------------- validation


@pytest.mark.parametrize(("request_", "field"), [
    (pb.GenerateRequest(messages=[user(content="hi")],
                        thinking=pb.ThinkingConfig(mode=pb.THINKING_MODE_ENABLED, budget_tokens=100)),
     "thinking.budget_tokens"),
    (pb.GenerateRequest(messages=[user(content="hi")], max_tokens=2000,
                        thinking=pb.ThinkingConfig(mode=pb.THINKING_MODE_ENABLED, budget_tokens=2000)),
     "thinking.budget_tokens"),
    (pb.GenerateRequest(messages=[user(text("hi", pb.CacheControl(ttl="2h")))]),
     "messages[0].blocks[0].cache_control.ttl"),
    (pb.GenerateRequest(messages=[user(content="hi")], system_blocks=[
        pb.ContentBlock(image=pb.ImageBlock(media_type="image/png", data=b"x"))]), "system_blocks[0]"),
    (pb.GenerateRequest(messages=[user(pb.ContentBlock(document=pb.DocumentBlock(media_type="text/html",
                                                                                 data=b"<p>")))]),
     "messages[0].blocks[0].document.media_type"),
    (pb.GenerateRequest(messages=[user(pb.ContentBlock(document=pb.DocumentBlock(media_type="text/plain",
                                                                                 data=b"\xff\xfe")))]),
     "messages[0].blocks[0].document.data"),
    (pb.GenerateRequest(messages=[user(content="hi"), pb.Message(role=pb.ROLE_ASSISTANT, blocks=[
        pb.ContentBlock(thinking=pb.ThinkingBlock(thinking="x"))])]), "messages[1].blocks[0].thinking.signature"),
    (pb.GenerateRequest(messages=[user(pb.ContentBlock(tool_result=pb.ToolResultBlock(
        tool_use_id="t", blocks=[pb.ContentBlock(tool_use=pb.ToolUseBlock(id="a", name="b"))])))]),
     "messages[0].blocks[0].tool_result.blocks[0]"),
    (pb.GenerateRequest(messages=[user(content="hi")], output_format=pb.OutputFormat()),
     "output_format.json_schema"),
])
async def test_bad_agent_input_names_the_field(stub, emus, request_: pb.GenerateRequest, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(request_, timeout=15)
    details = error_details(info.value)
    assert (details.code, details.metadata.get("field")) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    assert emus["anthropic"].model_calls == emus["bedrock"].model_calls == 0


# -------------------------------------------------------------------- the mock provider and pure policy


async def test_the_mock_caches_thinks_counts_and_shapes_answers(gateway_factory, stub_for) -> None:
    stub = await stub_for(await gateway_factory(mock_config()))
    request = pb.GenerateRequest(system_blocks=[text(LONG_PROMPT, CACHE)], messages=[user(content="What is 2 + 2?")],
                                 thinking=pb.ThinkingConfig(mode=pb.THINKING_MODE_ENABLED, budget_tokens=1024))
    first = await stub.Generate(request, timeout=15)
    second = await stub.Generate(request, timeout=15)
    assert first.usage.cache_creation_input_tokens == second.usage.cache_read_input_tokens == len(LONG_PROMPT.split())
    assert [b.WhichOneof("block") for b in second.blocks] == ["thinking", "text"] and second.content == "4"
    deltas = [e.delta.WhichOneof("delta") for e in await stream(stub, request) if e.WhichOneof("event") == "delta"]
    assert deltas == ["thinking", "signature", "text"]
    counted = await stub.CountTokens(pb.CountTokensRequest(system="a b", messages=[user(content="c d e")]),
                                     timeout=15)
    assert (counted.input_tokens, counted.provider) == (5, "mock")
    shaped = await stub.Generate(schema_request(""), timeout=15)
    assert json.loads(shaped.content)["population"] == 2100000


@pytest.mark.parametrize(("model", "structured", "thinking"), [
    ("claude-sonnet-4-5", True, True), ("claude-opus-4-1-20250805", True, True),
    ("claude-sonnet-4-20250514", False, True), ("claude-3-7-sonnet-20250219", False, True),
    ("claude-3-5-haiku-20241022", False, False), ("anthropic.claude-3-haiku-20240307-v1:0", False, False),
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", True, True), ("meta.llama3-70b-instruct-v1:0", True, False),
])
def test_model_capabilities(model: str, structured: bool, thinking: bool) -> None:
    assert capabilities.has_structured_output(model) is structured
    assert capabilities.has_thinking(model) is thinking


def test_unknown_stop_reasons_are_other_never_end_turn() -> None:
    assert finish_reason("something_new", {"end_turn": pb.FINISH_REASON_END_TURN}) == pb.FINISH_REASON_OTHER
    assert finish_reason("", {"end_turn": pb.FINISH_REASON_END_TURN}) == pb.FINISH_REASON_UNSPECIFIED


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_streams_send_the_same_provider_json_as_unary_calls(stub, emus, provider: str) -> None:
    request = documents_request(provider)
    request.system_blocks.append(text(LONG_PROMPT, CACHE))
    request.tools.append(calc_tool(CACHE))
    request.thinking.CopyFrom(pb.ThinkingConfig(mode=pb.THINKING_MODE_ADAPTIVE))
    request.output_format.json_schema.update(SCHEMA)
    await stub.Generate(request, timeout=15)
    unary = sent(emus[provider])
    await stream(stub, request)
    streamed = sent(emus[provider])
    streamed.pop("stream", None)  # Anthropic's only difference; Bedrock's is the path
    assert streamed == unary
    paths = [r.path for r in emus[provider].requests if r.kind == "model"]
    if provider == "bedrock":
        assert paths == [f"/model/{BEDROCK_CLAUDE}/converse", f"/model/{BEDROCK_CLAUDE}/converse-stream"]
