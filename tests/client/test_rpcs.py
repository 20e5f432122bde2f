"""Typed requests and results of every RPC, against the fault server answering normally."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from modelgateway.v1 import model_gateway_pb2 as pb
from orchestrator_client import ChatMessage, GenerateOptions, GenerateResult, HealthReport, ProviderList, Status
from orchestrator_client.results import to_jsonable

from .conftest import ClientFactory
from .fault_server import FaultServer, FaultServicer


async def test_generate_returns_a_typed_result(fault_server: FaultServer, make_client: ClientFactory) -> None:
    result = await make_client(fault_server.address).generate("What is 25 + 75?")
    assert isinstance(result, GenerateResult)
    assert result.content == "100"
    assert (result.provider, result.model) == ("fault", "fault-model-1")
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.total_tokens) == (7, 1, 8)
    assert result.finish_reason == "end_turn" and result.stop_reason == "end_turn"
    assert result.latency_ms == 0.5 and result.elapsed_ms > 0
    assert result.attempts == 1
    assert [(a.provider, a.outcome) for a in result.provider_attempts] == [("fault", "ok")]
    data = to_jsonable(result)
    assert json.loads(json.dumps(data))["usage"]["total_tokens"] == 8
    assert data["retries"] == 0


async def test_generate_sends_every_field(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    client = make_client(fault_server.address)
    await client.generate(
        "hello",
        system="Be terse.",
        provider="anthropic",
        model="sonnet",
        max_tokens=64,
        temperature=0.0,
        top_p=0.5,
        stop_sequences=["END"],
        metadata={"agent": "planner"},
    )
    request = fault.calls[-1].request
    assert [(m.role, m.content) for m in request.messages] == [(pb.ROLE_USER, "hello")]
    assert (request.system, request.provider, request.model, request.max_tokens) == (
        "Be terse.", "anthropic", "sonnet", 64)
    assert request.HasField("temperature") and request.temperature == 0.0
    assert request.top_p == pytest.approx(0.5)
    assert list(request.stop_sequences) == ["END"] and dict(request.metadata) == {"agent": "planner"}


async def test_generate_and_stream_take_one_options_object(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    client = make_client(fault_server.address)
    options = GenerateOptions(system="Be terse.", model="sonnet", max_tokens=64, request_id="rid-1")
    await client.generate("hello", options=options)
    first = fault.calls[-1]
    events = client.stream("hello", options=options, max_tokens=8)  # a keyword replaces the object's field
    assert events.request_id == "rid-1"
    async for _ in events:
        pass
    second = fault.calls[-1]
    assert (first.request.system, first.request.model, first.request.max_tokens) == ("Be terse.", "sonnet", 64)
    assert (second.request.system, second.request.model, second.request.max_tokens) == ("Be terse.", "sonnet", 8)
    assert options.max_tokens == 64  # frozen: the call did not change it
    with pytest.raises(TypeError, match="generate\\(\\) got an unexpected keyword argument 'max_token'"):
        await client.generate("hello", max_token=5)
    with pytest.raises(TypeError, match="stream\\(\\) got an unexpected keyword argument 'max_token'"):
        client.stream("hello", max_token=5)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        client.stream("hello", timeout=0)


async def test_generate_leaves_optional_fields_unset(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    await make_client(fault_server.address).generate("hello")
    request = fault.calls[-1].request
    assert not request.HasField("temperature") and not request.HasField("top_p")
    assert (request.system, request.provider, request.model, request.max_tokens) == ("", "", "", 0)


async def test_client_default_provider_and_model(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    client = make_client(fault_server.address, provider="bedrock", model="claude")
    await client.generate("hello")
    await client.generate("hello", provider="mock", model="mock-1")
    first, second = (c.request for c in fault.calls)
    assert (first.provider, first.model) == ("bedrock", "claude")
    assert (second.provider, second.model) == ("mock", "mock-1")


async def test_messages_in_every_accepted_form(
    fault: FaultServicer, fault_server: FaultServer, make_client: ClientFactory
) -> None:
    client = make_client(fault_server.address)
    await client.generate(messages=[
        ChatMessage("user", "What is 2 + 2?"),
        ("assistant", "4"),
        {"role": "user", "content": "And 25 + 75?"},
        pb.Message(role=pb.ROLE_ASSISTANT, content="100"),
    ])
    request = fault.calls[-1].request
    assert [(m.role, m.content) for m in request.messages] == [
        (pb.ROLE_USER, "What is 2 + 2?"), (pb.ROLE_ASSISTANT, "4"), (pb.ROLE_USER, "And 25 + 75?"),
        (pb.ROLE_ASSISTANT, "100")]
    await client.generate([("user", "positional list")])
    assert fault.calls[-1].request.messages[0].content == "positional list"


async def test_generate_argument_errors(make_client: ClientFactory) -> None:
    client = make_client("localhost:1")
    with pytest.raises(TypeError):
        await client.generate()
    with pytest.raises(TypeError):
        await client.generate("a", messages=[("user", "b")])
    with pytest.raises(ValueError, match="role"):
        await client.generate(messages=[("system", "x")])


async def test_health(fault_server: FaultServer, make_client: ClientFactory) -> None:
    report = await make_client(fault_server.address).health()
    assert isinstance(report, HealthReport)
    assert report.status == "degraded" and report.healthy
    assert isinstance(report.timestamp, dt.datetime) and report.timestamp.tzinfo is not None
    mock, bedrock = report.providers
    assert (mock.name, mock.status, mock.type, mock.default_model) == ("mock", "healthy", "mock", "mock-1")
    assert mock.checked_at is not None
    assert (bedrock.status, bedrock.region, bedrock.last_error, bedrock.checked_at) == (
        "unconfigured", "us-east-1", "no credentials", None)
    assert json.dumps(to_jsonable(report))


async def test_list_providers(fault_server: FaultServer, make_client: ClientFactory) -> None:
    listing = await make_client(fault_server.address).list_providers()
    assert isinstance(listing, ProviderList)
    assert listing.names == ("mock", "bedrock")
    assert listing.default_provider == "mock" and listing.fallback_order == ("mock", "bedrock")
    mock, bedrock = listing.providers
    assert mock.models == ("mock-1", "mock-2") and mock.enabled and mock.configured
    assert bedrock.region == "us-east-1" and not bedrock.configured


async def test_status(fault_server: FaultServer, make_client: ClientFactory) -> None:
    status = await make_client(fault_server.address).status()
    assert status == Status(service="Model Gateway", version="0.1.0-fault", status="running",
                            providers=("mock", "bedrock"), default_provider="mock")


def test_unknown_enum_values_do_not_break_results() -> None:
    from orchestrator_client.results import GenerateResult as R

    result = R.from_proto(pb.GenerateResponse(content="x", finish_reason=42), attempts=1, request_id="r",
                          elapsed_ms=1.0)
    assert result.finish_reason == "unknown_42" and result.request_id == "r"


def test_the_earlier_names_are_the_clients_classes() -> None:
    """The client's classes say they are the client's (apart from the server's GatewayError,
    GatewaySettings, TextDelta); the earlier names stay importable as the same classes."""
    import orchestrator_client as oc
    from orchestrator_client import errors, results, settings

    assert oc.GatewayError is errors.GatewayError is oc.GatewayClientError
    assert oc.GatewaySettings is settings.GatewaySettings is oc.GatewayClientSettings
    assert oc.TextDelta is results.TextDelta is oc.ClientTextDelta
    assert (oc.GatewayClientError.__name__, oc.GatewayClientSettings.__name__, oc.ClientTextDelta.__name__) == (
        "GatewayClientError", "GatewayClientSettings", "ClientTextDelta")
