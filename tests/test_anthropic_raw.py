"""The Anthropic provider's raw path (orjson into our types, no SDK models) agrees with the SDK-model path."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import Message

from gateway_server.errors import ErrorKind, ProviderError
from gateway_server.providers.anthropic import classify
from gateway_server.providers.anthropic_translation import build_body, build_params, parse_message, parse_message_json
from gateway_server.providers.base import ChatMessage, ProviderRequest

MODEL = "claude-sonnet-5-5"

MESSAGE: dict[str, Any] = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5-20260101",
    "content": [
        {"type": "thinking", "thinking": "add them", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "10"},
        {"type": "text", "text": "0"},
        {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"a": 25, "b": [75, "x"]}},
    ],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 3,
              "cache_creation_input_tokens": 2},
}


def test_raw_parse_equals_the_sdk_model_parse() -> None:
    raw = parse_message_json(orjson.loads(orjson.dumps(MESSAGE)), MODEL)
    assert raw == parse_message(Message.model_validate(MESSAGE), MODEL)
    assert raw.content == "100" and raw.cache_read_tokens == 3 and raw.model == MESSAGE["model"]


def test_raw_parse_defaults_like_the_sdk_path() -> None:
    minimal = {"content": [{"type": "text", "text": "hi"}], "stop_reason": None}
    raw = parse_message_json(minimal, MODEL)
    assert raw.model == MODEL and raw.input_tokens == 0 and raw.stop_reason == "" and raw.content == "hi"


@pytest.mark.parametrize("body", [[], "x", {"content": None}, {"content": "text"}])
def test_raw_parse_without_content_is_malformed(body: Any) -> None:
    with pytest.raises(ProviderError) as err:
        parse_message_json(body, MODEL)
    assert err.value.kind is ErrorKind.MALFORMED_RESPONSE


@pytest.mark.parametrize("block", [{"type": "text"}, {"type": "text", "text": 5}, {"type": "tool_use", "id": "t"},
                                   {"type": "tool_use", "id": "t", "name": "n", "input": [1]}])
def test_raw_parse_of_a_broken_block_classifies_as_malformed(block: dict[str, Any]) -> None:
    with pytest.raises(Exception) as err:
        parse_message_json({"content": [block]}, MODEL)
    assert classify(err.value).kind is ErrorKind.MALFORMED_RESPONSE


def test_undecodable_body_classifies_as_malformed() -> None:
    with pytest.raises(Exception) as err:
        orjson.loads(b"<html>")
    assert classify(err.value).kind is ErrorKind.MALFORMED_RESPONSE


def test_body_is_the_sdk_arguments_with_the_sampling_merged_in() -> None:
    request = ProviderRequest(messages=(ChatMessage("user", "hi"),), system="be brief", max_tokens=9,
                              temperature=0.5, top_p=0.9, stop_sequences=("END",))
    body = build_body(request, MODEL)
    params = build_params(request, MODEL)
    extra = params.pop("extra_body")
    assert body == {**params, **extra}
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9 and "extra_body" not in body
    plain = ProviderRequest(messages=(ChatMessage("user", "hi"),), system="", max_tokens=9, temperature=None,
                            top_p=None, stop_sequences=())
    assert build_body(plain, MODEL) == build_params(plain, MODEL)


STREAM: list[dict[str, Any]] = [
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                          "model": "claude-x", "content": [], "stop_reason": None,
                                          "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "opaque"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "Hel"}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "lo"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "calc",
                                                                 "input": {}}},
    {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": '{"a": '}},
    {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "25}"}},
    {"type": "content_block_stop", "index": 3},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 12, "cache_read_input_tokens": 4}},
    {"type": "message_stop"},
]


def test_raw_stream_translation_equals_the_sdk_event_translation() -> None:
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    from gateway_server.providers.anthropic_translation import RawStreamTranslator, StreamTranslator
    from gateway_server.providers.base import StreamDone, TextDelta, ToolUseDelta

    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    sdk, raw = StreamTranslator(MODEL), RawStreamTranslator(MODEL)
    from_sdk = [out for event in STREAM for out in sdk.feed(adapter.validate_python(event))]
    from_raw = [out for event in STREAM for out in raw.feed_json(orjson.loads(orjson.dumps(event)))]
    assert from_raw == from_sdk
    assert raw.done and sdk.done
    assert [e.text for e in from_raw if isinstance(e, TextDelta)] == ["Hel", "lo"]
    assert any(isinstance(e, ToolUseDelta) and e.tool_use.input == {"a": 25} for e in from_raw)
    done = from_raw[-1]
    assert isinstance(done, StreamDone) and done.model == "claude-x" and done.output_tokens == 12 \
        and done.cache_read_tokens == 4 and done.input_tokens == 9 and done.stop_reason == "tool_use"


def test_raw_stream_without_message_stop_is_not_done() -> None:
    from gateway_server.providers.anthropic_translation import RawStreamTranslator

    raw = RawStreamTranslator(MODEL)
    for event in STREAM[:-1]:
        raw.feed_json(event)
    assert not raw.done
