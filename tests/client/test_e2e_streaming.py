"""Streaming and tool use end to end through the real gateway (in-process) on its mock provider.

The mock streams one word per delta (``stream_chunk_delay_ms`` apart), answers "What is 25 + 75?"
with "100", calls the first tool when tools are given and the prompt says "tool" (input
{"expression": "25 + 75"}), and answers a tool_result with "The tool returned: <content>".
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator_client import (
    ChatMessage,
    GatewayError,
    GatewayReasoner,
    GatewayTimeoutError,
    GatewayUnavailableError,
    StreamEnd,
    StreamStart,
    TextBlock,
    TextDelta,
    ToolCall,
    ToolResultBlock,
    ToolSpec,
    cli,
)
from tests.conftest import mock_config

from .conftest import ClientFactory, FakeTime

CALCULATOR = ToolSpec(
    name="calculator",
    description="Evaluates arithmetic.",
    input_schema={"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
)
TOOL_PROMPT = "Please use the tool to compute 25 + 75"


def slow_mock(chunk_delay_ms: float = 20, **mock: Any) -> dict[str, Any]:
    return mock_config(providers={"mock": {"type": "mock", "stream_chunk_delay_ms": chunk_delay_ms,
                                           "max_retries": 0, **mock}})


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll a condition of the in-process gateway (it has no event to wait on) within a generous bound."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - the mock provider's counter has no event to wait on
            await asyncio.sleep(0.01)


async def test_stream_pieces_arrive_in_order_and_join_to_the_answer(
    gateway_factory: Any, make_client: ClientFactory
) -> None:
    app = await gateway_factory(slow_mock(20))
    client = make_client(f"127.0.0.1:{app.port}")
    arrivals: list[tuple[float, Any]] = []
    async with client.stream("one two three four five") as stream:
        async for event in stream:
            arrivals.append((time.monotonic(), event))
    events = [e for _, e in arrivals]
    assert isinstance(events[0], StreamStart) and events[0].provider == "mock"
    assert events[0].request_id == stream.request_id
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert [d.text for d in deltas] == ["Mock", " response", " to:", " one", " two", " three", " four", " five"]
    assert "".join(d.text for d in deltas) == stream.text == "Mock response to: one two three four five"
    assert {d.index for d in deltas} == {0}
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "end_turn"
    assert end.usage.output_tokens == len(deltas) == 8
    assert end.usage.total_tokens == end.usage.input_tokens + 8
    assert [(a.provider, a.outcome) for a in end.attempts] == [("mock", "ok")]
    assert end.first_token_ms > 0 and end.latency_ms >= end.first_token_ms and end.client_attempts == 1
    # pieces arrive as they are made (20 ms apart at the gateway), not all at once at the end
    times = [t for t, e in arrivals if isinstance(e, TextDelta)]
    assert times == sorted(times) and times[-1] - times[0] >= 0.1
    assert (client.stats.total_requests, client.stats.total_failures) == (1, 0)


async def test_stream_answers_100(gateway_address: str, make_client: ClientFactory) -> None:
    client = make_client(gateway_address)
    async with client.stream("What is 25 + 75?") as stream:
        events = [e async for e in stream]
    assert stream.text.strip() == "100" and isinstance(events[-1], StreamEnd)


async def test_stream_yields_a_tool_call(gateway_address: str, make_client: ClientFactory) -> None:
    client = make_client(gateway_address)
    async with client.stream(TOOL_PROMPT, tools=[CALCULATOR]) as stream:
        events = [e async for e in stream]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1 and stream.tool_calls == tuple(calls)
    call = calls[0]
    assert call.name == "calculator" and call.input == {"expression": "25 + 75"} and call.id
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "tool_use"
    # the tool result goes back as blocks; the stream then answers with text
    messages = [ChatMessage("user", TOOL_PROMPT), ChatMessage("assistant", [call]),
                ChatMessage("user", [ToolResultBlock(call.id, "100")])]
    async with client.stream(messages=messages, tools=[CALCULATOR]) as stream:
        [e async for e in stream]
    assert stream.text == "The tool returned: 100" and stream.end and stream.end.finish_reason == "end_turn"


async def test_generate_returns_blocks_and_tool_calls(gateway_address: str, make_client: ClientFactory) -> None:
    client = make_client(gateway_address)
    first = await client.generate(TOOL_PROMPT, tools=[CALCULATOR], tool_choice="auto")
    assert first.finish_reason == "tool_use" and first.content == ""
    (call,) = first.tool_calls
    assert first.blocks == (call,)
    assert (call.name, call.input, call.index) == ("calculator", {"expression": "25 + 75"}, 0)
    follow_up = [
        {"role": "user", "content": TOOL_PROMPT},
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name,
                                            "input": call.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "100"}]},
    ]
    final = await client.generate(messages=follow_up, tools=[{"name": "calculator", "description": "Adds.",
                                                                "input_schema": CALCULATOR.input_schema}])
    assert final.content == "The tool returned: 100" and final.finish_reason == "end_turn"
    assert final.blocks == (TextBlock("The tool returned: 100"),) and final.tool_calls == ()
    # tool_choice "none" (the mock honours it): text, no call
    plain = await client.generate(TOOL_PROMPT, tools=[CALCULATOR], tool_choice="none")
    assert plain.tool_calls == () and plain.finish_reason == "end_turn"
    forced = await client.generate("What is 25 + 75?", tools=[CALCULATOR], tool_choice={"tool": "calculator"})
    assert [c.name for c in forced.tool_calls] == ["calculator"]


async def test_reason_with_tools_round_trip(gateway_address: str, make_client: ClientFactory) -> None:
    client = make_client(gateway_address)
    reasoner = GatewayReasoner(client=client)
    seen: list[tuple[str, dict[str, Any]]] = []

    async def run_tool(name: str, tool_input: dict[str, Any]) -> str:
        seen.append((name, tool_input))
        left, right = tool_input["expression"].split("+")
        return str(int(left) + int(right))

    answer = await reasoner.reason_with_tools(TOOL_PROMPT, {"calculator": CALCULATOR}, run_tool)
    assert answer == "The tool returned: 100"
    assert seen == [("calculator", {"expression": "25 + 75"})]
    assert (reasoner.total_requests, reasoner.total_failures) == (2, 0)
    # a plain function works as well; without "tool" in the prompt the mock answers directly
    assert await reasoner.reason_with_tools("What is 25 + 75?", [CALCULATOR], lambda n, i: "unused") == "100"


async def test_a_failing_tool_is_reported_to_the_model(gateway_address: str, make_client: ClientFactory) -> None:
    reasoner = GatewayReasoner(client=make_client(gateway_address))

    def run_tool(name: str, tool_input: dict[str, Any]) -> str:
        raise ZeroDivisionError("calculator is broken")

    answer = await reasoner.reason_with_tools(TOOL_PROMPT, [CALCULATOR], run_tool)
    assert answer == "The tool returned: calculator is broken"


# ---------------------------------------------------------------------- retries and failures through the gateway


async def test_stream_retried_before_the_first_event_through_the_gateway(
    gateway_factory: Any, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    app = await gateway_factory(slow_mock(0, fail_with="unavailable", fail_times=2))
    client = make_client(f"127.0.0.1:{app.port}", sleep=fake_time.sleep)
    async with client.stream("What is 25 + 75?") as stream:
        events = [e async for e in stream]
    assert stream.text == "100" and stream.attempts == 3
    assert fake_time.sleeps == [1.0, 2.0]  # the waits generate makes (tests/client/test_e2e_gateway.py)
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.client_attempts == 3
    assert app.providers["mock"].calls == 3


async def test_a_mid_stream_failure_is_not_retried_through_the_gateway(
    gateway_factory: Any, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    app = await gateway_factory(slow_mock(0, fail_after_chunks=2))
    client = make_client(f"127.0.0.1:{app.port}", sleep=fake_time.sleep)
    stream = client.stream("one two three four five")
    with pytest.raises(GatewayUnavailableError) as caught:
        async for _ in stream:
            pass
    err = caught.value
    assert err.reason == "STREAM_INTERRUPTED" and err.attempts == 1 and err.domain == "modelgateway"
    assert err.metadata["delivered_events"] == "2" and stream.text == "Mock response"
    assert app.providers["mock"].calls == 1 and fake_time.sleeps == []
    assert (client.stats.total_requests, client.stats.total_failures, client.stats.total_retries) == (1, 1, 0)


async def test_closing_early_closes_the_gateways_upstream(gateway_factory: Any, make_client: ClientFactory) -> None:
    app = await gateway_factory(slow_mock(200))
    mock = app.providers["mock"]
    client = make_client(f"127.0.0.1:{app.port}")
    stream = client.stream("one two three four five six seven eight nine ten")
    async for event in stream:
        if isinstance(event, TextDelta):
            break
    assert mock.open_streams == 1
    await stream.aclose()
    await until(lambda: mock.open_streams == 0)
    assert client.stats.total_cancelled == 1


async def test_the_budget_bounds_a_slow_gateway_stream(gateway_factory: Any, make_client: ClientFactory) -> None:
    app = await gateway_factory(slow_mock(300))
    client = make_client(f"127.0.0.1:{app.port}", timeout=0.7)
    started = time.monotonic()
    stream = client.stream("one two three four five six seven eight nine ten")
    with pytest.raises(GatewayTimeoutError) as caught:
        async for _ in stream:
            pass
    assert time.monotonic() - started <= 0.7 + 0.8  # slack for a loaded machine; the whole stream takes 3 s
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED and caught.value.attempts == 1
    assert stream.text.startswith("Mock")  # some pieces arrived before the budget ran out
    await until(lambda: app.providers["mock"].open_streams == 0)


async def test_an_invalid_tool_is_an_invalid_request(gateway_address: str, make_client: ClientFactory) -> None:
    client = make_client(gateway_address)
    with pytest.raises(GatewayError) as caught:
        async with client.stream(TOOL_PROMPT, tools=[ToolSpec("bad name!")]) as stream:
            [e async for e in stream]
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.metadata.get("field") == "tools[0].name" and caught.value.attempts == 1


# ---------------------------------------------------------------------- gatewayctl generate --stream


async def test_cli_stream_in_process_against_the_gateway(gateway_address: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, ["--target", gateway_address, "generate", "--stream",
                                              "What is 25 + 75?"], stdout=out, stderr=err)
    assert code == 0 and out.getvalue() == "100\n", err.getvalue()
    assert "-- provider=mock model=mock-1 finish=end_turn" in err.getvalue()


async def test_gatewayctl_stream_process_prints_pieces_as_they_arrive(gateway_factory: Any) -> None:
    """As a real process: the first piece is on the pipe long before the process ends (flushed per delta)."""
    app = await gateway_factory(slow_mock(100))
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("gatewayctl")), "--target", f"127.0.0.1:{app.port}", "generate",
        "--stream", "one two three four five six", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    async with asyncio.timeout(60):
        first = await process.stdout.read(1)
        first_at = time.monotonic()
        rest = await process.stdout.read()
        err = await process.stderr.read()
        await process.wait()
    ended_at = time.monotonic()
    assert process.returncode == 0, err.decode()
    assert (first + rest).decode() == "Mock response to: one two three four five six\n"
    # 9 pieces 100 ms apart at the gateway: at least 8 × 100 ms remained after the first one
    assert ended_at - first_at >= 0.5
    assert b"finish=end_turn" in err

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator_client", "--target", f"127.0.0.1:{app.port}", "--json", "generate",
        "--stream", TOOL_PROMPT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [line["type"] for line in lines] == ["start", "text", "end"]
    assert lines[1]["text"] == "100" and lines[2]["finish_reason"] == "end_turn"
