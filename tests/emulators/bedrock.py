"""An emulator of AWS Bedrock Runtime's Converse API, for boto3's ``bedrock-runtime`` client at ``endpoint_url``.

Routes: ``POST /model/{modelId}/converse``, ``POST /model/{modelId}/converse-stream`` (AWS event-stream
framing) and ``POST /model/{modelId}/count-tokens``. The two converse routes are generation ("model") calls;
count-tokens is the probe (faults injected with ``on="probe"``). ``modelId`` arrives percent-encoded (ids and
ARNs contain ``:`` and ``/``); recorded paths are decoded.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import re
import struct
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from .answers import (
    Answer,
    Prompt,
    ToolSpec,
    cache_usage,
    compose_answer,
    count_words,
    json_chunks,
    mapping,
    optional_int,
    sign,
)
from .base import (
    EmulatorBase,
    Fault,
    JsonReply,
    RecordedRequest,
    StreamEvent,
    StreamReply,
    retry_after_value,
)

_EXCEPTIONS_BY_STATUS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "Malformed input request, please reformat your input and try again."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "Could not resolve the foundation model from the model identifier."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model returned an error. Try your request again."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error. Try your request again."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}

# In-stream exception (event name), the HTTP status standing in for it on a non-streaming call, default message.
_STREAM_EXCEPTIONS: dict[str, tuple[int, str]] = {
    "modelStreamErrorException": (424, "The model returned an error while streaming."),
    "throttlingException": (429, _EXCEPTIONS_BY_STATUS[429][1]),
    "internalServerException": (500, _EXCEPTIONS_BY_STATUS[500][1]),
    "validationException": (400, _EXCEPTIONS_BY_STATUS[400][1]),
    "serviceUnavailableException": (503, _EXCEPTIONS_BY_STATUS[503][1]),
}
# Anthropic error types understood by Fault.stream_error, so one fault can be aimed at either provider.
_STREAM_EXCEPTION_FOR_ANTHROPIC_TYPE = {
    "overloaded_error": "modelStreamErrorException",
    "rate_limit_error": "throttlingException",
    "api_error": "internalServerException",
    "invalid_request_error": "validationException",
}
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
# AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/bedrock/aws4_request, SignedHeaders=a;b, Signature=hex
_SIGV4 = re.compile(r"Credential=[^/]+/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*SignedHeaders=([^,\s]+),"
                    r"\s*Signature=([0-9a-f]{64})")
_MODEL = r"/model/{model_id:.+}"


def _exception_for_status(status: int) -> tuple[str, str]:
    if status in _EXCEPTIONS_BY_STATUS:
        return _EXCEPTIONS_BY_STATUS[status]
    return _EXCEPTIONS_BY_STATUS[500] if status >= 500 else _EXCEPTIONS_BY_STATUS[400]


def _stream_exception_name(error_type: str | None) -> str:
    """The event-stream exception name for a ``Fault.stream_error`` error type."""
    if not error_type:
        return "modelStreamErrorException"
    name = _STREAM_EXCEPTION_FOR_ANTHROPIC_TYPE.get(error_type, error_type)
    return name[0].lower() + name[1:]


class BedrockEmulator(EmulatorBase):
    """Bedrock Runtime Converse on ``endpoint_url`` (= ``base_url``).

    Credentials: the SigV4 ``Authorization`` header's ``Credential=<AKID>/...`` must name ``access_key_id``,
    else 403 ``UnrecognizedClientException``; given ``secret_access_key``, the signature is checked too
    (recomputed with botocore's own SigV4 signer over the signed headers, path and body as received), else
    403 ``InvalidSignatureException``. A body without a non-empty
    ``messages`` list gets a 400 ``ValidationException``.

    Faults: ``status`` is ``{"message": ...}`` with ``x-amzn-ErrorType: <Exception>`` and ``x-amzn-RequestId``
    (exception from the status: 400 ValidationException, 403 AccessDeniedException, 404
    ResourceNotFoundException, 408 ModelTimeoutException, 424 ModelErrorException, 429 ThrottlingException, 500
    InternalServerException, 503 ServiceUnavailableException; other 4xx/5xx as 400/500; ``error_type``
    overrides the name). ``stream_error`` is an event-stream exception frame (``:message-type: exception``)
    named by ``error_type``: a stream exception name (``throttlingException``, ``internalServerException``,
    ``modelStreamErrorException``, ``validationException``, ``serviceUnavailableException``) or an Anthropic
    error type (overloaded_error -> modelStreamErrorException with originalStatusCode 529, rate_limit_error ->
    throttlingException, api_error -> internalServerException, invalid_request_error -> validationException);
    on a non-streaming call, the matching HTTP error (modelStreamErrorException: 424 ModelErrorException).
    ``malformed`` on a stream is a frame with a bad CRC. ``missing_output`` drops ``output`` (count-tokens:
    ``inputTokens``).

    Stream events, in order: messageStart, contentBlockStart (tool use only), contentBlockDelta (one per word,
    or per repetition with ``stream_repeat`` > 1; tool input as ~3 partial JSON strings), contentBlockStop,
    messageStop, metadata. ``after_events`` counts from messageStart. With thinking on, a reasoning block (index 0:
    its text in one ``reasoningContent.text`` delta, then a ``reasoningContent.signature`` delta; or one
    ``redactedContent`` delta with ``redact_thinking``) comes before the answer's block (index 1).

    Agent features: ``cachePoint`` blocks after tools, system blocks and message blocks drive
    ``cacheWriteInputTokens`` / ``cacheReadInputTokens`` (see answers.py); ``additionalModelRequestFields.thinking``
    (enabled or adaptive) adds a ``reasoningContent`` block whose signature is checked when it is sent back (a
    changed block is a 400 ValidationException); ``outputConfig.textFormat`` (json_schema; the schema a JSON
    string) makes the answer JSON of the schema; txt documents count as input. ``stop_reason`` overrides the
    answer's stopReason. count-tokens counts ``input.converse`` as a generation call would.
    """

    provider = "bedrock"

    def __init__(self, access_key_id: str = "AKIDTEST", secret_access_key: str | None = None) -> None:
        super().__init__()
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key

    @property
    def endpoint_url(self) -> str:
        """Same as ``base_url``: boto3's ``endpoint_url``."""
        return self.base_url

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post(f"{_MODEL}/converse", self._converse),
            web.post(f"{_MODEL}/converse-stream", self._converse_stream),
            web.post(f"{_MODEL}/count-tokens", self._count_tokens),
        ]

    # ---------------------------------------------------------------- handlers

    async def _converse(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, stream=False)

    async def _converse_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, stream=True)

    async def _generate(self, request: web.Request, *, stream: bool) -> web.StreamResponse:
        started = time.monotonic()
        record = await self._receive(request, "model")
        rejection = self._authenticate(record, request) or self._validate(record.json)
        if rejection is not None:
            return rejection
        if (bad := _bad_reasoning_block(record.json)) is not None:
            return self._error_response(Fault.status(400, message=bad))
        fault = self._take_fault("model")
        answer = compose_answer(
            _prompt(record.json),
            provider=self.provider,
            reply_text=self.reply_text,
            repeat=self.stream_repeat if stream else 1,
            tool_id_prefix="tooluse_",
        )
        with self._lock:
            usage = cache_usage(_cache_segments(record.json), self.prompt_cache)
        if usage is not None:
            answer = dataclasses.replace(answer, input_tokens=usage[0], cache_read=usage[1], cache_creation=usage[2])
        if self.stop_reason is not None:
            answer = dataclasses.replace(answer, stop_reason=self.stop_reason)
        latency_ms = max(1, round((time.monotonic() - started) * 1000))
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        if stream:
            events = _stream_events(answer, self._text_deltas(answer.text), latency_ms, redact=self.redact_thinking)
            return await self._serve(request, fault, StreamReply(events, "application/vnd.amazon.eventstream", headers))
        reply = JsonReply(_converse_response(answer, latency_ms, redact=self.redact_thinking), "output", headers)
        return await self._serve(request, fault, reply)

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        record = await self._receive(request, "probe")
        if (rejection := self._authenticate(record, request)) is not None:
            return rejection
        body = record.json
        if not isinstance(body, Mapping) or not isinstance(body.get("input"), Mapping):
            return self._error_response(Fault.status(400, message="input: Field required"))
        source = body["input"]
        if isinstance(source.get("converse"), Mapping):
            text = _prompt(source["converse"]).input_text
        elif isinstance(source.get("invokeModel"), Mapping):
            try:
                text = base64.b64decode(str(source["invokeModel"].get("body", "")), validate=True).decode(
                    errors="replace"
                )
            except ValueError:
                return self._error_response(Fault.status(400, message="input.invokeModel.body: not base64"))
        else:
            return self._error_response(Fault.status(400, message="input: converse or invokeModel is required"))
        reply = JsonReply({"inputTokens": count_words(text)}, "inputTokens", {"x-amzn-RequestId": str(uuid.uuid4())})
        return await self._serve(request, self._take_fault("probe"), reply)

    # ---------------------------------------------------------------- checks and errors

    def _authenticate(self, record: RecordedRequest, request: web.Request) -> web.Response | None:
        match = _CREDENTIAL.search(record.headers.get("authorization", ""))
        if match is not None and match[1] == self.access_key_id:
            if self.secret_access_key is None or self._signature_matches(record, request):
                return None
            return self._error_response(Fault.status(
                403, error_type="InvalidSignatureException",
                message="The request signature we calculated does not match the signature you provided."))
        return self._error_response(
            Fault.status(
                403,
                error_type="UnrecognizedClientException",
                message="The security token included in the request is invalid.",
            )
        )

    def _signature_matches(self, record: RecordedRequest, request: web.Request) -> bool:
        """Recompute the request's SigV4 signature as AWS does, with botocore's signer (the client's own)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        secret = self.secret_access_key
        assert secret is not None
        parsed = _SIGV4.search(record.headers.get("authorization", ""))
        amz_date = record.headers.get("x-amz-date", "")
        if parsed is None or not amz_date.startswith(parsed[1]):
            return False
        _, region, service, signed, sent = parsed.groups()
        headers = {name: record.headers.get(name, "") for name in signed.split(";")}
        aws = AWSRequest(method=request.method, url=f"http://{request.host}{request.raw_path}", data=record.body,
                         headers=headers)
        aws.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(self.access_key_id, secret,
                                       record.headers.get("x-amz-security-token")), service, region)
        canonical = signer.canonical_request(aws)
        return hmac.compare_digest(signer.signature(signer.string_to_sign(aws, canonical), aws), sent)

    def _validate(self, body: Any) -> web.Response | None:
        if not isinstance(body, Mapping):
            return self._error_response(Fault.status(400, message="The request body is not valid JSON."))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error_response(
                Fault.status(400, message="The messages field is required and must contain at least one message.")
            )
        return None

    def _error_response(self, fault: Fault) -> web.Response:
        status = fault.status_code or 500
        default_name, default_message = _exception_for_status(status)
        headers = {"x-amzn-ErrorType": fault.error_type or default_name, "x-amzn-RequestId": str(uuid.uuid4())}
        if fault.retry_after is not None:
            headers["retry-after"] = retry_after_value(fault.retry_after)
        return web.json_response({"message": fault.message or default_message}, status=status, headers=headers)

    def _stream_error_status(self, fault: Fault) -> Fault:
        name = _stream_exception_name(fault.error_type)
        status, _ = _STREAM_EXCEPTIONS.get(name, (500, ""))
        error_type = "ModelErrorException" if name == "modelStreamErrorException" else name[0].upper() + name[1:]
        return Fault.status(status, message=fault.message, error_type=error_type)

    def _stream_error_event(self, fault: Fault) -> bytes:
        name = _stream_exception_name(fault.error_type)
        _, default_message = _STREAM_EXCEPTIONS.get(name, (500, _EXCEPTIONS_BY_STATUS[500][1]))
        payload: dict[str, Any] = {"message": fault.message or default_message}
        if name == "modelStreamErrorException":
            payload |= {
                "originalStatusCode": 529 if fault.error_type == "overloaded_error" else 500,
                "originalMessage": "Overloaded" if fault.error_type == "overloaded_error" else "Error",
            }
        return encode_frame(
            {":exception-type": name, ":content-type": "application/json", ":message-type": "exception"},
            json.dumps(payload).encode(),
        )

    def _malformed_stream_event(self) -> bytes:
        frame = bytearray(_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "garbled"}}))
        frame[-1] ^= 0xFF  # a wrong message CRC
        return bytes(frame)

    def _not_found(self, request: web.Request) -> web.Response:
        return self._error_response(
            Fault.status(404, error_type="UnknownOperationException", message=f"Unknown operation: {request.path}")
        )


# -------------------------------------------------------------------- event-stream framing


def encode_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total length, headers length, CRC32), string headers, payload,
    message CRC32."""
    encoded_headers = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded_headers += bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value
    total_length = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack(">II", total_length, len(encoded_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _event(event_type: str, payload: Mapping[str, Any]) -> bytes:
    return encode_frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(payload).encode(),
    )


# -------------------------------------------------------------------- request and response shapes


def _document_text(document: Mapping[str, Any]) -> str:
    if document.get("format") not in ("txt", "md", "csv", "html"):
        return ""
    try:
        return base64.b64decode(str(mapping(document.get("source")).get("bytes", ""))).decode(errors="replace")
    except ValueError:
        return ""


def _block_texts(block: Any) -> list[str]:
    """Input texts of a Converse content block (text, a text document, or a tool result's text/json)."""
    if not isinstance(block, Mapping):
        return []
    if isinstance(block.get("text"), str):
        return [block["text"]]
    if isinstance(block.get("document"), Mapping):
        return [_document_text(block["document"])]
    if isinstance(block.get("toolResult"), Mapping):
        return [_tool_result_text(block["toolResult"])]
    return []


def _bad_reasoning_block(body: Mapping[str, Any]) -> str | None:
    """Why a reasoning block sent back is not as the emulator returned it, or None."""
    for i, message in enumerate(body.get("messages") or []):
        for j, block in enumerate(mapping(message).get("content") or []):
            text = mapping(mapping(mapping(block).get("reasoningContent")).get("reasoningText"))
            if text and text.get("signature") != sign(str(text.get("text", ""))):
                return f"messages.{i}.content.{j}: the reasoning block's signature does not match its text"
    return None


def _cache_segments(body: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """The prompt in cache order (tools, system, messages) as (text, a cachePoint follows) segments."""
    segments: list[tuple[str, bool]] = []

    def add(blocks: Any, text_of: Any) -> None:
        for block in blocks if isinstance(blocks, list) else []:
            if isinstance(block, Mapping) and "cachePoint" in block:
                if segments:
                    segments[-1] = (segments[-1][0], True)
            else:
                segments.append((text_of(block), False))

    add(mapping(body.get("toolConfig")).get("tools"), lambda tool: json.dumps(tool, sort_keys=True))
    add(body.get("system"), lambda block: " ".join(_block_texts(block)))
    for message in body.get("messages") or []:
        add(mapping(message).get("content"), lambda block: " ".join(_block_texts(block)))
    return segments


def _tool_result_text(result: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for item in result.get("content") or []:
        if isinstance(item, Mapping) and isinstance(item.get("text"), str):
            parts.append(item["text"])
        elif isinstance(item, Mapping) and "json" in item:
            parts.append(json.dumps(item["json"]))
    return "\n".join(parts)


def _prompt(body: Mapping[str, Any]) -> Prompt:
    """The provider-neutral view of a Converse request body."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, Mapping)]
    inputs = [text for block in body.get("system") or [] for text in _block_texts(block)]
    for message in messages:
        inputs += [text for block in message.get("content") or [] for text in _block_texts(block)]

    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    blocks: Sequence[Any] = (last_user.get("content") or []) if last_user is not None else []
    texts = [b["text"] for b in blocks if isinstance(b, Mapping) and isinstance(b.get("text"), str)]
    tool_results = tuple(
        _tool_result_text(b["toolResult"]) for b in blocks if isinstance(b, Mapping) and "toolResult" in b
    )

    tool_config = mapping(body.get("toolConfig"))
    thinking = mapping(mapping(body.get("additionalModelRequestFields")).get("thinking"))
    text_format = mapping(mapping(body.get("outputConfig")).get("textFormat"))
    schema_text = mapping(mapping(text_format.get("structure")).get("jsonSchema")).get("schema")
    tools = tuple(
        ToolSpec(str(spec["name"]), mapping(mapping(spec.get("inputSchema")).get("json")))
        for tool in tool_config.get("tools") or []
        if isinstance(tool, Mapping) and isinstance(spec := tool.get("toolSpec"), Mapping) and "name" in spec
    )
    choice = mapping(tool_config.get("toolChoice"))
    forced = mapping(choice.get("tool"))
    inference = mapping(body.get("inferenceConfig"))
    return Prompt(
        thinking=thinking.get("type") in ("enabled", "adaptive"),
        output_schema=json.loads(schema_text) if isinstance(schema_text, str) else None,
        last_user_text="\n".join(texts),
        tool_results=tool_results,
        input_text=" ".join(inputs),
        tools=tools,
        tool_required="any" in choice or "tool" in choice,
        forced_tool=str(forced["name"]) if "name" in forced else None,
        max_tokens=optional_int(inference.get("maxTokens")),
        stop_sequences=tuple(str(s) for s in inference.get("stopSequences") or []),
    )


def _usage(answer: Answer) -> dict[str, int]:
    usage = {
        "inputTokens": answer.input_tokens,
        "outputTokens": answer.output_tokens,
        "totalTokens": answer.input_tokens + answer.cache_read + answer.cache_creation + answer.output_tokens,
    }
    if answer.cache_read or answer.cache_creation:
        usage |= {"cacheReadInputTokens": answer.cache_read, "cacheWriteInputTokens": answer.cache_creation}
    return usage


def _redacted(answer: Answer) -> str:
    """Base64 (a JSON blob) of the opaque redacted reasoning."""
    return base64.b64encode(("redacted:" + answer.signature).encode()).decode()


def _converse_response(answer: Answer, latency_ms: int, *, redact: bool = False) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    if answer.thinking is not None:
        reasoning = ({"redactedContent": _redacted(answer)} if redact
                     else {"reasoningText": {"text": answer.thinking, "signature": answer.signature}})
        blocks.append({"reasoningContent": reasoning})
    if answer.tool_call is not None:
        call = answer.tool_call
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.input}})
    else:
        blocks.append({"text": answer.text})
    return {
        "output": {"message": {"role": "assistant", "content": blocks}},
        "stopReason": answer.stop_reason,
        "usage": _usage(answer),
        "metrics": {"latencyMs": latency_ms},
    }


def _stream_events(
    answer: Answer, text_deltas: Sequence[str], latency_ms: int, *, redact: bool = False
) -> list[StreamEvent]:
    events = [StreamEvent(_event("messageStart", {"role": "assistant"}))]
    index = 0
    if answer.thinking is not None:
        reasoning: list[dict[str, Any]] = (
            [{"redactedContent": _redacted(answer)}] if redact
            else [{"text": answer.thinking}, {"signature": answer.signature}]
        )
        events += [
            StreamEvent(_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": r}}),
                        "delta")
            for r in reasoning
        ]
        events.append(StreamEvent(_event("contentBlockStop", {"contentBlockIndex": 0}), "block"))
        index = 1
    deltas: list[dict[str, Any]]
    if answer.tool_call is not None:
        call = answer.tool_call
        start = {"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": call.id, "name": call.name}}}
        events.append(StreamEvent(_event("contentBlockStart", start), "block"))
        deltas = [{"toolUse": {"input": part}} for part in json_chunks(call.input)]
    else:
        deltas = [{"text": chunk} for chunk in text_deltas]
    events += [
        StreamEvent(_event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}), "delta")
        for delta in deltas
    ]
    events.append(StreamEvent(_event("contentBlockStop", {"contentBlockIndex": index}), "block"))
    events.append(StreamEvent(_event("messageStop", {"stopReason": answer.stop_reason})))
    events.append(StreamEvent(_event("metadata", {"usage": _usage(answer), "metrics": {"latencyMs": latency_ms}})))
    return events
