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
