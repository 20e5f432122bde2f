"""Per-provider translation of answers, directly: malformed answers are the provider's failure."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers import anthropic as anthropic_provider
from gateway_server.providers import bedrock as bedrock_provider
from gateway_server.providers.base import ToolInputBuffer, tool_use_part
from modelgateway.v1 import model_gateway_pb2 as pb


def _converse(content: list[dict[str, object]]) -> dict[str, object]:
    return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": "tool_use",
            "usage": {"inputTokens": 3, "outputTokens": 4}}


def test_bedrock_tool_use_is_parsed() -> None:
    body = _converse([{"text": "Let me compute."},
                      {"toolUse": {"toolUseId": "t1", "name": "calc", "input": {"expression": "1+1", "n": 2}}}])
    response = bedrock_provider.parse_response(body, "m")
    assert response.content == "Let me compute."
    assert response.finish_reason == pb.FINISH_REASON_TOOL_USE
    assert response.parts[1] == tool_use_part("t1", "calc", {"expression": "1+1", "n": 2})
    assert (response.input_tokens, response.output_tokens) == (3, 4)


@pytest.mark.parametrize("body", [
    {"ResponseMetadata": {}},  # a truncated or unparseable body: botocore hands back only metadata
    _converse([{"toolUse": {"toolUseId": "t1", "name": "calc", "input": ["not", "an", "object"]}}]),
    _converse([{"toolUse": {"name": "calc", "input": {}}}]),
    _converse([{"toolUse": {"toolUseId": "t1", "name": "calc", "input": {"n": 10**400}}}]),
])
def test_bedrock_malformed_answers_are_bad_responses(body: dict[str, object]) -> None:
    with pytest.raises(ProviderError) as info:
        bedrock_provider.parse_response(body, "m")
    assert info.value.kind is ErrorKind.MALFORMED_RESPONSE


def test_bedrock_stream_translator_rejects_a_tool_block_without_an_id() -> None:
    translator = bedrock_provider.ConverseStreamTranslator("m")
    with pytest.raises(KeyError) as info:
        translator.feed({"contentBlockStart": {"contentBlockIndex": 0, "start": {"toolUse": {"name": "calc"}}}})
    assert bedrock_provider.classify(info.value).kind is ErrorKind.MALFORMED_RESPONSE


def test_bedrock_stream_cut_before_message_stop_is_an_error() -> None:
    translator = bedrock_provider.ConverseStreamTranslator("m")
    assert translator.feed({"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Hel"}}})
    with pytest.raises(ProviderError) as info:
        translator.finish()
    assert info.value.kind is ErrorKind.MALFORMED_RESPONSE


@pytest.mark.parametrize(("chunks", "ok"), [(['{"a": ', '1}'], True), ([], True), (['{"a": '], False),
                                            (['[1, 2]'], False), (['{"n": 10', "0" * 400, "}"], False)])
def test_tool_input_assembled_from_partial_json(chunks: list[str], ok: bool) -> None:
    buffer = ToolInputBuffer("t1", "calc", list(chunks))
    if ok:
        assert isinstance(buffer.finish().input, dict)
    else:
        with pytest.raises(ProviderError) as info:
            buffer.finish()
        assert info.value.kind is ErrorKind.MALFORMED_RESPONSE


def test_anthropic_message_without_content_is_a_bad_response() -> None:
    with pytest.raises(ProviderError) as info:
        anthropic_provider.parse_message(SimpleNamespace(content=None), "m")
    assert info.value.kind is ErrorKind.MALFORMED_RESPONSE
    block = SimpleNamespace(type="tool_use", id="t", name="calc", input={"n": 10**400})
    with pytest.raises(ProviderError):
        anthropic_provider.parse_message(SimpleNamespace(content=[block], usage=None, stop_reason="tool_use"), "m")


@pytest.mark.parametrize(("error_type", "kind"), [("overloaded_error", ErrorKind.OVERLOADED),
                                                  ("rate_limit_error", ErrorKind.RATE_LIMITED),
                                                  ("api_error", ErrorKind.SERVER),
                                                  ("something_new", ErrorKind.SERVER)])
def test_anthropic_in_stream_errors_are_classified_by_type(error_type: str, kind: ErrorKind) -> None:
    import anthropic
    import httpx2

    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    response = httpx2.Response(200, request=request)
    exc = anthropic.APIStatusError("stream error", response=response,
                                   body={"type": "error", "error": {"type": error_type, "message": "m"}})
    assert anthropic_provider.classify(exc).kind is kind
