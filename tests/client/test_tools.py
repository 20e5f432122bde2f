"""Content blocks, tools and tool_choice: conversion to and from the protos, what generate sends, and
GatewayReasoner.reason_with_tools' conversation against the fault server."""

from __future__ import annotations

import base64
import json
import pickle
from typing import Any

import pytest
from google.protobuf import struct_pb2

from modelgateway.v1 import model_gateway_pb2 as pb
from orchestrator_client import (
    ChatMessage,
    GatewayReasoner,
    GenerateResult,
    ImageBlock,
    StreamEnd,
    StreamStart,
    TextBlock,
    TextDelta,
    ToolCall,
    ToolResultBlock,
    ToolRoundsExceededError,
    ToolSpec,
)
from orchestrator_client.content import (
    block_from_proto,
    block_to_dict,
    block_to_proto,
    struct_to_dict,
    tool_choice_to_proto,
    tool_to_proto,
)
from orchestrator_client.results import event_from_proto, to_jsonable

from .conftest import ClientFactory
from .fault_server import CallTool, FaultServer, FaultServicer, Reply

CALCULATOR = ToolSpec("calculator", "Evaluates arithmetic.",
                      {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]})


# ---------------------------------------------------------------------- conversions


def test_struct_round_trip_keeps_integers_integers() -> None:
    data = {"n": 3, "x": 2.5, "big": 10**12, "flag": True, "none": None, "list": [1, 2.0, {"deep": 4}], "s": "t"}
    struct = struct_pb2.Struct()
    struct.update(data)
    back = struct_to_dict(struct)
    assert back == {"n": 3, "x": 2.5, "big": 10**12, "flag": True, "none": None, "list": [1, 2, {"deep": 4}],
                    "s": "t"}
    assert type(back["n"]) is int and type(back["x"]) is float and type(back["flag"]) is bool
    assert type(back["list"][1]) is int


@pytest.mark.parametrize(
    "block",
    [
        TextBlock("hello"),
        ImageBlock("image/png", b"\x89PNG\x00"),
        ToolCall("toolu_1", "calculator", {"expression": "25 + 75", "precision": 2}),
        ToolResultBlock("toolu_1", "100"),
        ToolResultBlock("toolu_1", "division by zero", is_error=True),
    ],
    ids=lambda b: type(b).__name__,
)
def test_blocks_round_trip_through_the_proto_and_dicts(block: Any) -> None:
    msg = block_to_proto(block)
    assert block_from_proto(msg) == block
    as_dict = block_to_dict(block)
    json.dumps(as_dict)  # JSON-ready (image data base64)
    assert block_from_proto(block_to_proto(as_dict)) == block


def test_block_shorthands() -> None:
    assert block_to_proto("plain").text.text == "plain"
    image = block_to_proto({"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                                        "data": base64.b64encode(b"jpeg").decode()}})
    assert (image.image.media_type, image.image.data) == ("image/jpeg", b"jpeg")
    use = block_to_proto({"id": "t1", "name": "calc", "input": {"a": 1}})  # the type inferred from the keys
    assert use.tool_use.name == "calc" and use.tool_use.input["a"] == 1
    assert block_to_proto({"tool_use_id": "t1", "content": "ok"}).tool_result.content == "ok"
    with pytest.raises(ValueError, match="unknown content block"):
        block_to_proto({"type": "video"})
    with pytest.raises(ValueError, match="JSON"):
        block_to_proto(ToolCall("t", "calc", {"when": object()}))
    with pytest.raises(TypeError):
        block_to_proto({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "tool_use", "id": "x",
                                                                                "name": "calc"}]})


def test_tools_and_tool_choice_to_the_proto() -> None:
    tool = tool_to_proto(CALCULATOR)
    assert (tool.name, tool.description) == ("calculator", "Evaluates arithmetic.")
    assert struct_to_dict(tool.input_schema) == CALCULATOR.input_schema
    from_dict = tool_to_proto({"name": "calculator", "description": "d", "input_schema": {"type": "object"}})
    assert struct_to_dict(from_dict.input_schema) == {"type": "object"}
    assert struct_to_dict(tool_to_proto(ToolSpec("t")).input_schema) == {"type": "object", "properties": {}}
    assert tool_choice_to_proto(None) is None
    assert tool_choice_to_proto("auto") == pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO)
    assert tool_choice_to_proto("any") == pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_ANY)
    assert tool_choice_to_proto("none") == pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)
    assert tool_choice_to_proto({"tool": "calc"}) == pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name="calc")
    assert tool_choice_to_proto({"type": "tool", "name": "calc"}) == pb.ToolChoice(
        mode=pb.TOOL_CHOICE_MODE_TOOL, name="calc")
    for bad in ("sometimes", {"kind": "x"}):
        with pytest.raises(ValueError, match="tool_choice"):
            tool_choice_to_proto(bad)  # type: ignore[arg-type]


def test_generate_result_blocks_from_the_proto() -> None:
    response = pb.GenerateResponse(content="Let me compute.", finish_reason=pb.FINISH_REASON_TOOL_USE)
    response.blocks.add(text=pb.TextBlock(text="Let me compute."))
    use = response.blocks.add().tool_use
    use.id, use.name = "toolu_9", "calculator"
    use.input.update({"expression": "25 + 75"})
    result = GenerateResult.from_proto(response, attempts=1, request_id="r", elapsed_ms=1.0)
    call = ToolCall("toolu_9", "calculator", {"expression": "25 + 75"}, index=1)
    assert result.blocks == (TextBlock("Let me compute."), call) and result.tool_calls == (call,)
    data = to_jsonable(result)
    assert data["blocks"] == [{"type": "text", "text": "Let me compute."},
                              {"type": "tool_use", "id": "toolu_9", "name": "calculator",
                               "input": {"expression": "25 + 75"}, "index": 1}]
    # a gateway that sends no blocks: its text as one block
    old = GenerateResult.from_proto(pb.GenerateResponse(content="100"), attempts=1, request_id="r", elapsed_ms=0)
    assert old.blocks == (TextBlock("100"),) and old.tool_calls == ()


def test_stream_events_from_the_proto_and_as_json() -> None:
    start = event_from_proto(pb.GenerateStreamResponse(start=pb.StreamStart(provider="p", model="m")),
                             request_id="rid")
    assert start == StreamStart("p", "m", "rid")
    delta = event_from_proto(pb.GenerateStreamResponse(delta=pb.ContentDelta(index=2, text="hi")))
    assert delta == TextDelta(2, "hi")
    msg = pb.GenerateStreamResponse()
    msg.delta.index = 1
    msg.delta.tool_use.id, msg.delta.tool_use.name = "t", "calc"
    msg.delta.tool_use.input.update({"n": 3})
    assert event_from_proto(msg) == ToolCall("t", "calc", {"n": 3}, index=1)
    end = event_from_proto(pb.GenerateStreamResponse(end=pb.StreamEnd(
        finish_reason=pb.FINISH_REASON_MAX_TOKENS, usage=pb.Usage(input_tokens=1, output_tokens=2, total_tokens=3))),
        client_attempts=2)
    assert isinstance(end, StreamEnd) and end.finish_reason == "max_tokens" and end.retries == 1
    assert event_from_proto(pb.GenerateStreamResponse()) is None
    assert event_from_proto(pb.GenerateStreamResponse(delta=pb.ContentDelta(index=0))) is None
    assert [to_jsonable(e)["type"] for e in (start, delta, event_from_proto(msg), end)] == [
        "start", "text", "tool_use", "end"]
    assert to_jsonable(end)["usage"] == {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3,
                                         "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
                                         "cost_usd": 0.0}


# ---------------------------------------------------------------------- what generate sends


async def test_generate_sends_tools_choice_and_blocks(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    client = make_client(fault_server.address)
    call = ToolCall("toolu_1", "calculator", {"expression": "25 + 75"}, index=3)
    await client.generate(
        messages=[
            ChatMessage("user", ["What is in this picture?", ImageBlock("image/png", b"png")]),
            ("assistant", [TextBlock("Computing."), call]),
            {"role": "user", "content": [ToolResultBlock("toolu_1", "100", is_error=False)]},
            ("user", "plain text"),
        ],
        tools=[CALCULATOR, {"name": "search", "description": "Searches.", "input_schema": {"type": "object"}}],
        tool_choice="any",
    )
    request = fault.calls[0].request
    assert [t.name for t in request.tools] == ["calculator", "search"]
    assert struct_to_dict(request.tools[0].input_schema) == CALCULATOR.input_schema
    assert request.tool_choice == pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_ANY)
    first, second, third, fourth = request.messages
    assert first.role == pb.ROLE_USER and first.content == ""
    assert [b.WhichOneof("block") for b in first.blocks] == ["text", "image"]
    assert first.blocks[1].image.data == b"png"
    assert second.role == pb.ROLE_ASSISTANT and second.blocks[1].tool_use.id == "toolu_1"
    assert struct_to_dict(second.blocks[1].tool_use.input) == {"expression": "25 + 75"}
    assert third.blocks[0].tool_result == pb.ToolResultBlock(tool_use_id="toolu_1", content="100")
    assert (fourth.content, len(fourth.blocks)) == ("plain text", 0)


async def test_no_tools_sends_no_tool_fields(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    await make_client(fault_server.address).generate("x")
    request = fault.calls[0].request
    assert len(request.tools) == 0 and not request.HasField("tool_choice")


# ---------------------------------------------------------------------- reason_with_tools' conversation


async def test_reason_with_tools_conversation(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.then(
        CallTool("calculator", {"expression": "25 + 75"}, id="toolu_a", text="Let me compute."),
        CallTool("calculator", {"expression": "1 / 0"}, id="toolu_b"),
        Reply("It is 100."),
    )
    reasoner = GatewayReasoner(client=make_client(fault_server.address), system_prompt="Be brief.")
    calls: list[tuple[str, dict[str, Any]]] = []

    async def run_tool(name: str, tool_input: dict[str, Any]) -> Any:
        calls.append((name, tool_input))
        if tool_input["expression"] == "1 / 0":
            raise ZeroDivisionError("division by zero")
        return 100  # not text: sent as JSON

    answer = await reasoner.reason_with_tools("What is 25 + 75? Use the tool.", {"calculator": CALCULATOR},
                                              run_tool, tool_choice="any", context={"task": 7})
    assert answer == "It is 100."
    assert calls == [("calculator", {"expression": "25 + 75"}), ("calculator", {"expression": "1 / 0"})]
    first, second, third = (c.request for c in fault.calls)
    assert first.system == second.system == 'Be brief.\n\nContext:\n{"task": 7}'
    assert [t.name for t in first.tools] == [t.name for t in third.tools] == ["calculator"]
    assert first.tool_choice.mode == pb.TOOL_CHOICE_MODE_ANY
    assert not second.HasField("tool_choice")  # only the first call is forced: a forced choice cannot loop
    # round 1: the assistant's text and tool_use echoed back, then the tool's result
    assert [m.role for m in second.messages] == [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_USER]
    assistant = second.messages[1]
    assert assistant.blocks[0].text.text == "Let me compute."
    assert assistant.blocks[1].tool_use.id == "toolu_a"
    assert second.messages[2].blocks[0].tool_result == pb.ToolResultBlock(tool_use_id="toolu_a", content="100")
    # round 2: the tool raised: is_error with the exception's text
    assert len(third.messages) == 5
    assert third.messages[4].blocks[0].tool_result == pb.ToolResultBlock(
        tool_use_id="toolu_b", content="division by zero", is_error=True)


async def test_an_unknown_tool_is_an_error_result_without_running_anything(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.then(CallTool("rm_rf", {"path": "/"}, id="toolu_x"), Reply("ok"))
    reasoner = GatewayReasoner(client=make_client(fault_server.address))
    ran: list[str] = []
    answer = await reasoner.reason_with_tools("x", [CALCULATOR], lambda name, _: ran.append(name) or "")
    assert answer == "ok" and ran == []
    result = fault.calls[1].request.messages[2].blocks[0].tool_result
    assert result.is_error and "unknown tool 'rm_rf'" in result.content


async def test_max_rounds_bounds_the_tool_loop(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    fault.then(CallTool(times=5))
    reasoner = GatewayReasoner(client=make_client(fault_server.address))
    runs: list[str] = []
    with pytest.raises(ToolRoundsExceededError) as caught:
        await reasoner.reason_with_tools("x", [CALCULATOR], lambda name, _: runs.append(name) or "1",
                                         max_rounds=2)
    err = caught.value
    assert fault.count == 3 and len(runs) == 2  # 2 tool rounds, 3 model calls, the last calls not run
    assert err.max_rounds == 2 and "after 2 tool rounds" in str(err) and "calculator" in str(err)
    assert err.result.finish_reason == "tool_use" and len(err.messages) == 5
    assert pickle.loads(pickle.dumps(err)).max_rounds == 2
    with pytest.raises(ValueError):
        await reasoner.reason_with_tools("x", [CALCULATOR], lambda n, i: "", max_rounds=-1)
    with pytest.raises(ValueError, match="registered under another name"):
        await reasoner.reason_with_tools("x", {"calc": CALCULATOR}, lambda n, i: "")
