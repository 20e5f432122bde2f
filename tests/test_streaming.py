"""GenerateStream and tool use through the real SDKs against the emulators (and the mock)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from tests.conftest import mock_config
from tests.emulators import AnthropicEmulator, BedrockEmulator, Fault
from tests.helpers import ask, error_details, gateway_process
from tests.test_fallback import AWS_KEY_ID, AWS_SECRET, BEDROCK_CLAUDE, CLAUDE, config

pytestmark = pytest.mark.usefixtures("aws_credentials")

OTHER = {"anthropic": "bedrock", "bedrock": "anthropic"}


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)


@pytest.fixture
def emus() -> Iterator[dict[str, AnthropicEmulator | BedrockEmulator]]:
    from tests.test_fallback import ANTHROPIC_KEY

    with AnthropicEmulator(api_key=ANTHROPIC_KEY) as a, \
            BedrockEmulator(access_key_id=AWS_KEY_ID, secret_access_key=AWS_SECRET) as b:
        yield {"anthropic": a, "bedrock": b}


def stream_config(emus: dict[str, Any], first: str, **provider_overrides: Any) -> dict[str, Any]:
    overrides = {first: provider_overrides}
    return config(emus["anthropic"], emus["bedrock"], first=first, anthropic=overrides.get("anthropic"),
                  bedrock=overrides.get("bedrock"))


async def collect(call: Any) -> tuple[list[pb.GenerateStreamResponse], grpc.aio.AioRpcError | None]:
    events: list[pb.GenerateStreamResponse] = []
    try:
        async for event in call:
            events.append(event)
    except grpc.aio.AioRpcError as err:
        return events, err
    return events, None


def kinds(events: list[pb.GenerateStreamResponse]) -> list[str]:
    return [e.WhichOneof("event") or "" for e in events]


def text_of(events: list[pb.GenerateStreamResponse]) -> str:
    return "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")


@pytest.mark.parametrize("first", ["anthropic", "bedrock"])
async def test_text_streams_event_by_event(gateway_factory, stub_for, emus, first: str) -> None:
    stub = await stub_for(await gateway_factory(stream_config(emus, first)))
    events, err = await collect(stub.GenerateStream(ask("tell me about gateways please"), timeout=10))
    assert err is None
    assert kinds(events)[0] == "start" and kinds(events)[-1] == "end"
    assert set(kinds(events)[1:-1]) == {"delta"} and len(events) > 4  # one delta per word
    assert events[0].start.provider == first
    assert events[0].start.model == (CLAUDE if first == "anthropic" else BEDROCK_CLAUDE)
    assert len(events[0].start.request_id) == 32
    assert text_of(events) == f"{first} emulator reply to: tell me about gateways please"
    end = events[-1].end
    assert end.finish_reason == pb.FINISH_REASON_END_TURN and end.stop_reason == "end_turn"
    assert end.usage.output_tokens == len(text_of(events).split())
    assert end.usage.total_tokens == end.usage.input_tokens + end.usage.output_tokens
    assert [(a.provider, a.outcome) for a in end.attempts] == [(first, pb.ATTEMPT_OUTCOME_OK)]
    assert end.first_token_ms > 0 and end.latency_ms >= end.first_token_ms
    assert emus[OTHER[first]].model_calls == 0


async def test_mock_streams_with_its_chunk_delay(gateway_factory, stub_for) -> None:
    stub = await stub_for(await gateway_factory(mock_config(
        providers={"mock": {"type": "mock", "stream_chunk_delay_ms": 20}})))
    started = time.monotonic()
    events, err = await collect(stub.GenerateStream(ask("one two three four five"), timeout=10))
    assert err is None and time.monotonic() - started >= 0.1
    assert text_of(events) == "Mock response to: one two three four five"
    assert kinds(events).count("delta") == 8


CALCULATOR = pb.Tool(name="calculator", description="Evaluates arithmetic.",
                     input_schema=struct_pb2.Struct(fields={
                         "type": struct_pb2.Value(string_value="object"),
                         "properties": struct_pb2.Value(struct_value=struct_pb2.Struct(fields={
                             "expression": struct_pb2.Value(struct_value=struct_pb2.Struct(fields={
                                 "type": struct_pb2.Value(string_value="string")}))})),
                         "required": struct_pb2.Value(list_value=struct_pb2.ListValue(
                             values=[struct_pb2.Value(string_value="expression")]))}))


def tool_request(provider: str) -> pb.GenerateRequest:
    return pb.GenerateRequest(provider=provider, tools=[CALCULATOR], messages=[
        pb.Message(role=pb.ROLE_USER, content="Please use the tool to compute 25 + 75")])


def follow_up(provider: str, tool_use: pb.ToolUseBlock, result: str) -> pb.GenerateRequest:
    request = tool_request(provider)
    request.messages.append(pb.Message(role=pb.ROLE_ASSISTANT, blocks=[pb.ContentBlock(tool_use=tool_use)]))
    request.messages.append(pb.Message(role=pb.ROLE_USER, blocks=[pb.ContentBlock(
        tool_result=pb.ToolResultBlock(tool_use_id=tool_use.id, content=result))]))
    return request


@pytest.mark.parametrize("provider", ["anthropic", "bedrock", "mock"])
async def test_tool_use_round_trip(gateway_factory, stub_for, emus, provider: str) -> None:
    cfg = stream_config(emus, "anthropic")
    cfg["providers"]["mock"] = {"type": "mock"}
    stub = await stub_for(await gateway_factory(cfg))
    first = await stub.Generate(tool_request(provider), timeout=10)
    assert first.finish_reason == pb.FINISH_REASON_TOOL_USE
    (block,) = first.blocks
    assert block.tool_use.name == "calculator" and block.tool_use.id
    assert "25 + 75" in block.tool_use.input["expression"]
    if provider != "mock":
        sent = emus[provider].requests[-1].json
        assert "tools" in sent or "toolConfig" in sent
    final = await stub.Generate(follow_up(provider, block.tool_use, "100"), timeout=10)
    assert final.finish_reason == pb.FINISH_REASON_END_TURN
    assert final.content == "The tool returned: 100"
    assert final.blocks[0].text.text == final.content


@pytest.mark.parametrize("provider", ["anthropic", "bedrock", "mock"])
async def test_tool_use_streams_as_a_whole_block(gateway_factory, stub_for, emus, provider: str) -> None:
    cfg = stream_config(emus, "anthropic")
    cfg["providers"]["mock"] = {"type": "mock"}
    stub = await stub_for(await gateway_factory(cfg))
    events, err = await collect(stub.GenerateStream(tool_request(provider), timeout=10))
    assert err is None
    uses = [e.delta.tool_use for e in events if e.WhichOneof("event") == "delta" and e.delta.HasField("tool_use")]
    assert len(uses) == 1 and uses[0].name == "calculator"
    assert "25 + 75" in uses[0].input["expression"]  # assembled from the partial JSON deltas
    assert events[-1].end.finish_reason == pb.FINISH_REASON_TOOL_USE
    events, err = await collect(stub.GenerateStream(follow_up(provider, uses[0], "100"), timeout=10))
    assert err is None and text_of(events) == "The tool returned: 100"


async def test_a_combination_a_provider_cannot_take_is_invalid_argument(gateway_factory, stub_for, emus) -> None:
    stub = await stub_for(await gateway_factory(stream_config(emus, "bedrock")))
    request = tool_request("bedrock")
    request.tool_choice.mode = pb.TOOL_CHOICE_MODE_NONE
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(request, timeout=10)
    details = error_details(info.value)
    assert (details.code, details.metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "tool_choice.mode")
    assert emus["bedrock"].model_calls == 0


@pytest.mark.parametrize(
    ("request_change", "field"),
    [
        (lambda r: r.tool_choice.CopyFrom(pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name="nope")),
         "tool_choice.name"),
        (lambda r: r.tools.add(name="bad name!"), "tools[1].name"),
        (lambda r: r.messages[0].blocks.add(image=pb.ImageBlock(media_type="image/tiff", data=b"x")),
         "messages[0].blocks[0].image.media_type"),
        (lambda r: r.messages[0].blocks.add(tool_use=pb.ToolUseBlock(id="t", name="calculator")),
         "messages[0].blocks[0].tool_use"),
        (lambda r: r.messages[0].blocks.add(), "messages[0].blocks[0]"),
    ],
)
async def test_bad_agent_requests_name_the_field(gateway_factory, stub_for, request_change, field) -> None:
    app = await gateway_factory(mock_config())
    stub = await stub_for(app)
    request = tool_request("mock")
    request_change(request)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(request, timeout=5)
    details = error_details(info.value)
    assert (details.code, details.metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    assert app.providers["mock"].calls == 0


async def test_images_reach_both_providers(gateway_factory, stub_for, emus) -> None:
    stub = await stub_for(await gateway_factory(stream_config(emus, "anthropic")))
    image = pb.ContentBlock(image=pb.ImageBlock(media_type="image/png", data=b"\x89PNG-not-really"))
    for provider in ("anthropic", "bedrock"):
        request = ask("what is in this picture?", provider=provider)
        request.messages[0].blocks.append(image)
        response = await stub.Generate(request, timeout=10)
        assert response.provider == provider
    sent_a = emus["anthropic"].requests[-1].json["messages"][0]["content"]
    assert sent_a[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                     "data": "iVBORy1ub3QtcmVhbGx5"}}
    sent_b = emus["bedrock"].requests[-1].json["messages"][0]["content"]
    assert sent_b[1]["image"]["format"] == "png"


async def warm_up(stub: pb_grpc.ModelGatewayStub) -> None:
    """One stream from each provider, untimed: no timing bound below may depend on a cold process's
    first call (SDK imports, connection set-up, credential resolution)."""
    for provider in ("anthropic", "bedrock"):
        _, err = await collect(stub.GenerateStream(ask("warm up", provider=provider), timeout=30))
        assert err is None, err


# faults that end a stream before its first content event -> the attempt's reason
BEFORE_FIRST_TOKEN = [
    pytest.param(Fault.status(500), "PROVIDER_ERROR", id="error-at-call-time"),
    pytest.param(Fault.status(429), "PROVIDER_RATE_LIMITED", id="429-at-call-time"),
    pytest.param(Fault.stream_error(1, "api_error"), "PROVIDER_ERROR", id="error-on-first-read"),
    pytest.param(Fault.stream_error(1, "rate_limit_error"), "PROVIDER_RATE_LIMITED", id="429-on-first-read"),
    pytest.param(Fault.first_token_delay(3), "PROVIDER_TIMEOUT", id="first-token-timeout"),
    pytest.param(Fault.stream_cut(1), "CUT", id="cut-before-content"),
    pytest.param(Fault.malformed(), "PROVIDER_BAD_RESPONSE", id="undecodable-event"),
]


@pytest.mark.parametrize("first", ["anthropic", "bedrock"])
@pytest.mark.parametrize(("fault", "reason"), BEFORE_FIRST_TOKEN)
async def test_stream_falls_back_before_the_first_token(gateway_factory, stub_for, emus, first: str,
                                                        fault: Fault, reason: str) -> None:
    stub = await stub_for(await gateway_factory(stream_config(emus, first, first_token_timeout=0.4)))
    await warm_up(stub)  # the 0.4 s first-token bound is about the fault, not a cold SDK's first call
    emus[first].inject(fault, times=None)
    events, err = await collect(stub.GenerateStream(ask("What is 25 + 75?"), timeout=10))
    assert err is None, err
    assert events[0].start.provider == OTHER[first]  # no start event was sent for the failed provider
    assert text_of(events) == "100"
    attempts = events[-1].end.attempts
    assert [a.provider for a in attempts] == [first, OTHER[first]]
    if reason == "CUT":
        assert attempts[0].reason in {"PROVIDER_UNREACHABLE", "PROVIDER_BAD_RESPONSE"}
    else:
        assert attempts[0].reason == reason


@pytest.mark.parametrize("first", ["anthropic", "bedrock"])
@pytest.mark.parametrize("fault", [Fault.stream_cut(6), Fault.stream_error(6, "api_error")], ids=["cut", "error"])
async def test_a_mid_stream_failure_ends_in_unavailable_after_the_delivered_part(
        gateway_factory, stub_for, emus, first: str, fault: Fault) -> None:
    stub = await stub_for(await gateway_factory(stream_config(emus, first)))
    emus[first].inject(fault, times=None)
    events, err = await collect(stub.GenerateStream(ask("one two three four five six seven eight nine ten"),
                                                    timeout=10))
    assert err is not None
    details = error_details(err)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "STREAM_INTERRUPTED")
    delivered = kinds(events).count("delta")
    assert delivered >= 1 and "end" not in kinds(events)
    assert details.metadata["delivered_events"] == str(delivered)
    assert details.metadata["delivered_chars"] == str(len(text_of(events)))
    assert details.metadata["provider"] == first
    assert emus[OTHER[first]].model_calls == 0  # never a splice of two providers' output


@pytest.mark.parametrize("first", ["anthropic", "bedrock"])
async def test_client_cancel_closes_the_upstream_stream(gateway_factory, stub_for, emus, first: str) -> None:
    stub = await stub_for(await gateway_factory(stream_config(emus, first)))
    emus[first].stream_chunk_delay = 0.3
    call = stub.GenerateStream(ask("one two three four five six seven eight nine ten"), timeout=30)
    seen = []
    async for event in call:
        seen.append(event.WhichOneof("event"))
        if seen.count("delta") == 2:
            break
    call.cancel()
    assert await emus[first].await_disconnect()


@pytest.mark.parametrize("first", ["anthropic", "bedrock"])
async def test_a_deadline_mid_stream_ends_the_call_and_the_upstream(gateway_factory, stub_for, emus,
                                                                    first: str) -> None:
    stub = await stub_for(await gateway_factory(stream_config(emus, first)))
    await warm_up(stub)
    emus[first].stream_chunk_delay = 0.25
    started = time.monotonic()
    # 2 s: the first token (after ~3 chunk delays) must come within the first provider's share of the
    # deadline (half of it while the other provider remains), the rest of the stream cannot.
    events, err = await collect(stub.GenerateStream(
        ask("one two three four five six seven eight nine ten"), timeout=2.0))
    elapsed = time.monotonic() - started
    assert err is not None and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert kinds(events)[0] == "start" and kinds(events).count("delta") >= 1
    assert elapsed < 2.0 + 0.1
    assert await emus[first].await_disconnect()


async def test_a_total_stream_timeout_ends_a_slow_stream(gateway_factory, stub_for, emus) -> None:
    stub = await stub_for(await gateway_factory(stream_config(emus, "anthropic", stream_timeout=0.6)))
    emus["anthropic"].stream_chunk_delay = 0.2
    events, err = await collect(stub.GenerateStream(ask("a b c d e f g h i j k l"), timeout=10))
    assert err is not None
    details = error_details(err)
    assert (details.code, details.reason, details.metadata["cause"]) == (
        grpc.StatusCode.UNAVAILABLE, "STREAM_INTERRUPTED", "PROVIDER_TIMEOUT")
    assert kinds(events).count("delta") >= 1


def _peak_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match
    return int(match.group(1))


PROVIDER_YAML = {
    "anthropic": "    type: anthropic\n    base_url: {url}\n    api_key: {key}\n    default_model: " + CLAUDE + "\n",
    "bedrock": "    type: bedrock\n    endpoint_url: {url}\n    region: us-east-1\n"
               "    model_id: " + BEDROCK_CLAUDE + "\n",
}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the gateway's memory")
@pytest.mark.parametrize("provider", ["anthropic", "bedrock"])
async def test_a_long_stream_keeps_gateway_memory_flat_even_for_a_slow_reader(
        emus, tmp_path: Path, provider: str) -> None:
    emu = emus[provider]
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(
        f"host: 127.0.0.1\nport: 0\nlog_level: INFO\ndefault_provider: {provider}\nproviders:\n  {provider}:\n"
        + PROVIDER_YAML[provider].format(url=emu.base_url, key=getattr(emu, "api_key", ""))
        + "health_check:\n  enabled: false\n")
    async with gateway_process(config_file) as gateway:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.ModelGatewayStub(channel)

            async def stream_megabytes(megabytes: int, pause: float = 0.0) -> int:
                emu.reply_text = "lorem-ipsum-" * 100  # 1.2 KB, one "word": max_tokens counts words
                emu.stream_repeat = megabytes * 1000
                received = 0
                async for event in stub.GenerateStream(ask("long please", max_tokens=100_000), timeout=60):
                    if pause and event.WhichOneof("event") == "start":
                        await asyncio.sleep(pause)  # a slow reader: the provider keeps sending meanwhile
                    received += len(event.delta.text)
                return received

            assert await stream_megabytes(1) >= 1200 * 1000  # warm-up: pools, buffers, code paths
            baseline = _peak_rss_kb(gateway.proc.pid)
            assert await stream_megabytes(8, pause=2.0) >= 1200 * 8000
            growth_kb = _peak_rss_kb(gateway.proc.pid) - baseline
    assert growth_kb < 4 * 1024, f"peak RSS grew by {growth_kb} kB for an 8 MB stream"
