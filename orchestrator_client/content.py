"""Content blocks and tools: typed dataclasses and their conversion to and from the protobuf messages.

A message's content is a string (the simple case) or a sequence of blocks:

* :class:`TextBlock` ``(text)``;
* :class:`ImageBlock` ``(media_type, data)``: inline image bytes ("image/png", "image/jpeg", ...);
* :class:`ToolCall` ``(id, name, input)``: the model asks for a tool (an assistant's ``tool_use``
  block; echo the answer's calls back as they are);
* :class:`ToolResultBlock` ``(tool_use_id, content, is_error, blocks)``: a tool's result, in a user message
  (``blocks``: more text, image and document blocks);
* :class:`DocumentBlock` ``(media_type, data, title)``: a PDF ("application/pdf") or UTF-8 text ("text/plain");
* :class:`ThinkingBlock` ``(thinking, signature)`` and :class:`RedactedThinkingBlock` ``(data)``: the model's
  reasoning (answers with thinking on); send them back unchanged with the tool calls that follow them.

Prompt caching: ``cache=True`` (or a TTL, ``"5m"``/``"1h"``) on a text, image, document, tool-call or tool-result
block, or on a ToolSpec, sets a cache breakpoint after it (Anthropic-style dicts: ``"cache_control":
{"type": "ephemeral", "ttl": "1h"}``).

Plain strings in a block list are text blocks; Anthropic-style dicts are accepted too
(``{"type": "text", "text": ...}``, ``{"type": "tool_use", "id", "name", "input"}``,
``{"type": "tool_result", "tool_use_id", "content", "is_error"}``, ``{"type": "image",
"media_type", "data"}`` with bytes or base64 data, or the Messages API's ``"source"`` form).

Tools are :class:`ToolSpec` ``(name, description, input_schema)`` or ``{"name", "description",
"input_schema"}`` dicts; ``tool_choice`` is ``"auto"``, ``"any"``, ``"none"``, ``{"tool": name}``
(or ``{"type": "tool", "name": name}``), or None for the provider's default (auto).

Tool inputs and schemas travel as ``google.protobuf.Struct``, whose numbers are doubles: they are
read back with integral values as ``int`` (``{"n": 3.0}`` → ``{"n": 3}``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias

from google.protobuf import json_format, struct_pb2

from modelgateway.v1 import model_gateway_pb2 as pb

__all__ = [
    "AnswerBlock",
    "BlockLike",
    "CacheLike",
    "ContentBlock",
    "DocumentBlock",
    "ImageBlock",
    "RedactedThinkingBlock",
    "TextBlock",
    "ThinkingBlock",
    "ToolCall",
    "ToolChoiceLike",
    "ToolLike",
    "ToolResultBlock",
    "ToolSpec",
    "block_from_proto",
    "block_to_dict",
    "block_to_proto",
    "blocks_to_proto",
    "dict_to_struct",
    "struct_to_dict",
    "tool_call_from_proto",
    "tool_choice_to_proto",
    "tool_to_proto",
]


CacheLike: TypeAlias = bool | str
"""A cache breakpoint: False (none), True (the provider's default TTL) or a TTL ("5m", "1h")."""


@dataclass(frozen=True, slots=True)
class TextBlock:
    """Plain text."""

    type: ClassVar[str] = "text"

    text: str
    cache: CacheLike = False


@dataclass(frozen=True, slots=True)
class ImageBlock:
    """An inline image: ``media_type`` "image/jpeg", "image/png", "image/gif" or "image/webp"."""

    type: ClassVar[str] = "image"

    media_type: str
    data: bytes = field(repr=False)
    cache: CacheLike = False


@dataclass(frozen=True, slots=True)
class DocumentBlock:
    """An inline document: ``media_type`` "application/pdf" or "text/plain" (UTF-8); ``title`` optional."""

    type: ClassVar[str] = "document"

    media_type: str
    data: bytes = field(repr=False)
    title: str = ""
    cache: CacheLike = False


@dataclass(frozen=True, slots=True)
class ThinkingBlock:
    """The model's reasoning (``index``: its position in the answer; not sent back)."""

    type: ClassVar[str] = "thinking"

    thinking: str
    signature: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class RedactedThinkingBlock:
    """Reasoning the provider encrypted: opaque ``data`` to send back as it is."""

    type: ClassVar[str] = "redacted_thinking"

    data: bytes = field(repr=False)
    index: int = 0


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call of the model: the ``tool_use`` block of an answer, and a stream event.

    ``index`` is the block's position in the answer (in ``GenerateResult.blocks`` and in the
    stream); it is not sent back when the call is echoed in an assistant message.
    """

    type: ClassVar[str] = "tool_use"

    id: str
    name: str
    input: dict[str, Any] = field(default_factory=dict, hash=False)
    index: int = 0
    cache: CacheLike = False


@dataclass(frozen=True, slots=True)
class ToolResultBlock:
    """The result of the tool call ``tool_use_id``, as text and/or ``blocks`` (text, image, document);
    ``is_error`` when the tool failed."""

    type: ClassVar[str] = "tool_result"

    tool_use_id: str
    content: str = ""
    is_error: bool = False
    blocks: tuple[TextBlock | ImageBlock | DocumentBlock, ...] = ()
    cache: CacheLike = False


def _default_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call; ``input_schema`` is a JSON schema of an object."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=_default_schema, hash=False)
    cache: CacheLike = False


ContentBlock: TypeAlias = (
    TextBlock | ImageBlock | DocumentBlock | ToolCall | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock
)
AnswerBlock: TypeAlias = TextBlock | ToolCall | ThinkingBlock | RedactedThinkingBlock
BlockLike: TypeAlias = ContentBlock | str | Mapping[str, Any] | pb.ContentBlock
ToolLike: TypeAlias = ToolSpec | Mapping[str, Any] | pb.Tool
ToolChoiceLike: TypeAlias = Literal["auto", "any", "none"] | Mapping[str, str] | pb.ToolChoice | None


# ---------------------------------------------------------------------------- Struct <-> dict


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a plain dict, integral numbers as ``int``."""
    data = _integral(json_format.MessageToDict(struct))
    return data if isinstance(data, dict) else {}


def dict_to_struct(data: Mapping[str, Any], target: struct_pb2.Struct | None = None) -> struct_pb2.Struct:
    """A JSON-like mapping as a Struct (into ``target`` when given). ValueError for other values."""
    struct = struct_pb2.Struct() if target is None else target
    try:
        struct.update(dict(data))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"not JSON-like data: {exc}") from None
    return struct


# ---------------------------------------------------------------------------- blocks


def _image_data(raw: Mapping[str, Any]) -> tuple[str, bytes]:
    source = raw.get("source")
    if isinstance(source, Mapping):  # the Messages API's {"type": "base64", "media_type", "data"}
        raw = source
    media_type = str(raw.get("media_type", ""))
    data = raw.get("data", b"")
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"image data is neither bytes nor base64: {exc}") from None
    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"image data must be bytes or base64 text, not {type(data).__name__}")
    return media_type, bytes(data)


def _cache_from_mapping(raw: Mapping[str, Any]) -> CacheLike:
    control = raw.get("cache_control")
    if isinstance(control, Mapping):
        return str(control.get("ttl") or "") or True
    return bool(control) if not isinstance(control, str) else control


def _cache_to_proto(cache: CacheLike) -> pb.CacheControl | None:
    if cache is False or cache == "":
        return None
    return pb.CacheControl(type=pb.CACHE_TYPE_EPHEMERAL, ttl=cache if isinstance(cache, str) else "")


def _cache_from_proto(msg: pb.ContentBlock | pb.Tool) -> CacheLike:
    if not msg.HasField("cache_control"):
        return False
    return msg.cache_control.ttl or True


def _bytes(value: Any, what: str) -> bytes:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"{what} is neither bytes nor base64: {exc}") from None
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"{what} must be bytes or base64 text, not {type(value).__name__}")
    return bytes(value)


def _block_from_mapping(raw: Mapping[str, Any]) -> ContentBlock:
    block = _plain_block_from_mapping(raw)
    cache = _cache_from_mapping(raw)
    if cache and isinstance(block, TextBlock | ImageBlock | DocumentBlock | ToolCall | ToolResultBlock):
        return dataclasses.replace(block, cache=cache)
    return block


def _plain_block_from_mapping(raw: Mapping[str, Any]) -> ContentBlock:
    kind = raw.get("type")
    if kind is None:  # infer from the keys
        if "tool_use_id" in raw:
            kind = "tool_result"
        elif "text" in raw:
            kind = "text"
        elif "name" in raw and "id" in raw:
            kind = "tool_use"
        elif "media_type" in raw or "source" in raw:
            kind = "image"
    if kind == "text":
        return TextBlock(str(raw.get("text", "")))
    if kind == "image":
        media_type, data = _image_data(raw)
        return ImageBlock(media_type, data)
    if kind == "tool_use":
        tool_input = raw.get("input") or {}
        if not isinstance(tool_input, Mapping):
            raise TypeError("a tool_use block's input must be a mapping")
        return ToolCall(str(raw.get("id", "")), str(raw.get("name", "")), dict(tool_input))
    if kind == "tool_result":
        content = raw.get("content", "")
        blocks: tuple[TextBlock | ImageBlock | DocumentBlock, ...] = ()
        if not isinstance(content, str):  # the Messages API's list of blocks
            if not isinstance(content, Sequence):
                raise TypeError("a tool_result block's content must be text or a list of blocks")
            parsed = tuple(_block_from_mapping(b) if isinstance(b, Mapping) else TextBlock(str(b)) for b in content)
            if not all(isinstance(b, TextBlock | ImageBlock | DocumentBlock) for b in parsed):
                raise TypeError("a tool_result block holds text, image and document blocks only")
            blocks, content = parsed, ""  # type: ignore[assignment]
        return ToolResultBlock(str(raw.get("tool_use_id", "")), content, bool(raw.get("is_error", False)), blocks)
    if kind == "document":
        source = raw.get("source")
        src: Mapping[str, Any] = source if isinstance(source, Mapping) else raw
        data = src.get("data", b"")
        media_type = str(src.get("media_type", ""))
        raw_data = data.encode() if isinstance(data, str) and media_type == "text/plain" else _bytes(data, "data")
        return DocumentBlock(media_type, raw_data, str(raw.get("title", "") or ""))
    if kind == "thinking":
        return ThinkingBlock(str(raw.get("thinking", "")), str(raw.get("signature", "")))
    if kind == "redacted_thinking":
        data = raw.get("data", b"")
        return RedactedThinkingBlock(data.encode() if isinstance(data, str) else _bytes(data, "data"))
    raise ValueError(f"unknown content block {dict(raw)!r} (type text, image, document, tool_use, tool_result, "
                     "thinking or redacted_thinking)")


def block_to_proto(block: BlockLike) -> pb.ContentBlock:
    """One block (dataclass, string, Anthropic-style dict or proto) as a ``pb.ContentBlock``."""
    if isinstance(block, pb.ContentBlock):
        return block
    if isinstance(block, str):
        block = TextBlock(block)
    elif isinstance(block, Mapping):
        block = _block_from_mapping(block)
    msg = _plain_block_to_proto(block)
    cache = _cache_to_proto(getattr(block, "cache", False))
    if cache is not None:
        msg.cache_control.CopyFrom(cache)
    return msg


def _plain_block_to_proto(block: ContentBlock) -> pb.ContentBlock:
    if isinstance(block, TextBlock):
        return pb.ContentBlock(text=pb.TextBlock(text=block.text))
    if isinstance(block, ImageBlock):
        return pb.ContentBlock(image=pb.ImageBlock(media_type=block.media_type, data=block.data))
    if isinstance(block, DocumentBlock):
        return pb.ContentBlock(document=pb.DocumentBlock(media_type=block.media_type, data=block.data,
                                                         title=block.title))
    if isinstance(block, ToolCall):
        use = pb.ToolUseBlock(id=block.id, name=block.name)
        dict_to_struct(block.input, use.input)
        return pb.ContentBlock(tool_use=use)
    if isinstance(block, ToolResultBlock):
        return pb.ContentBlock(tool_result=pb.ToolResultBlock(
            tool_use_id=block.tool_use_id, content=block.content, is_error=block.is_error,
            blocks=[block_to_proto(b) for b in block.blocks]))
    if isinstance(block, ThinkingBlock):
        return pb.ContentBlock(thinking=pb.ThinkingBlock(thinking=block.thinking, signature=block.signature))
    if isinstance(block, RedactedThinkingBlock):
        return pb.ContentBlock(redacted_thinking=pb.RedactedThinkingBlock(data=block.data))
    raise TypeError(f"not a content block: {block!r}")


def blocks_to_proto(blocks: Sequence[BlockLike]) -> list[pb.ContentBlock]:
    if isinstance(blocks, str | bytes):
        raise TypeError("blocks must be a sequence of blocks, not a string")
    return [block_to_proto(b) for b in blocks]


def tool_call_from_proto(msg: pb.ToolUseBlock, index: int = 0) -> ToolCall:
    return ToolCall(id=msg.id, name=msg.name, input=struct_to_dict(msg.input), index=index)


def block_from_proto(msg: pb.ContentBlock, index: int = 0) -> ContentBlock | None:
    """A ``pb.ContentBlock`` as a dataclass (None for an empty block)."""
    kind = msg.WhichOneof("block")
    cache = _cache_from_proto(msg)
    if kind == "text":
        return TextBlock(msg.text.text, cache)
    if kind == "tool_use":
        return dataclasses.replace(tool_call_from_proto(msg.tool_use, index), cache=cache)
    if kind == "image":
        return ImageBlock(msg.image.media_type, msg.image.data, cache)
    if kind == "document":
        d = msg.document
        return DocumentBlock(d.media_type, d.data, d.title, cache)
    if kind == "tool_result":
        r = msg.tool_result
        blocks = tuple(b for b in (block_from_proto(x) for x in r.blocks)
                       if isinstance(b, TextBlock | ImageBlock | DocumentBlock))
        return ToolResultBlock(r.tool_use_id, r.content, r.is_error, blocks, cache)
    if kind == "thinking":
        return ThinkingBlock(msg.thinking.thinking, msg.thinking.signature, index)
    if kind == "redacted_thinking":
        return RedactedThinkingBlock(msg.redacted_thinking.data, index)
    return None


def block_to_dict(block: ContentBlock) -> dict[str, Any]:
    """A block as an Anthropic-style, JSON-ready dict (image data base64), accepted back as input."""
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ImageBlock):
        return {"type": "image", "media_type": block.media_type, "data": base64.b64encode(block.data).decode()}
    if isinstance(block, ToolCall):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input, "index": block.index}
    if isinstance(block, DocumentBlock):
        return {"type": "document", "media_type": block.media_type, "data": base64.b64encode(block.data).decode(),
                "title": block.title}
    if isinstance(block, ThinkingBlock):
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature, "index": block.index}
    if isinstance(block, RedactedThinkingBlock):
        return {"type": "redacted_thinking", "data": base64.b64encode(block.data).decode(), "index": block.index}
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": block.tool_use_id, "content": block.content,
                              "is_error": block.is_error}
    if block.blocks:
        result["blocks"] = [block_to_dict(b) for b in block.blocks]
    return result


# ---------------------------------------------------------------------------- tools


def tool_to_proto(tool: ToolLike) -> pb.Tool:
    """A ToolSpec (or ``{"name", "description", "input_schema"}`` dict, or proto) as a ``pb.Tool``."""
    if isinstance(tool, pb.Tool):
        return tool
    if isinstance(tool, Mapping):
        schema = tool.get("input_schema")
        tool = ToolSpec(
            name=str(tool.get("name", "")),
            description=str(tool.get("description", "") or ""),
            input_schema=dict(schema) if isinstance(schema, Mapping) else _default_schema(),
            cache=_cache_from_mapping(tool),
        )
    if not isinstance(tool, ToolSpec):
        raise TypeError(f"not a tool: {tool!r} (use ToolSpec or a dict with name, description, input_schema)")
    msg = pb.Tool(name=tool.name, description=tool.description)
    dict_to_struct(tool.input_schema, msg.input_schema)
    cache = _cache_to_proto(tool.cache)
    if cache is not None:
        msg.cache_control.CopyFrom(cache)
    return msg


_MODES: dict[str, pb.ToolChoiceMode.ValueType] = {
    "auto": pb.TOOL_CHOICE_MODE_AUTO,
    "any": pb.TOOL_CHOICE_MODE_ANY,
    "none": pb.TOOL_CHOICE_MODE_NONE,
}


def tool_choice_to_proto(choice: ToolChoiceLike) -> pb.ToolChoice | None:
    """``"auto" | "any" | "none" | {"tool": name} | {"type": ..., "name": ...}`` as a ``pb.ToolChoice``."""
    if choice is None or isinstance(choice, pb.ToolChoice):
        return choice
    if isinstance(choice, str):
        mode = _MODES.get(choice.lower())
        if mode is None:
            raise ValueError(f"unknown tool_choice {choice!r} (use 'auto', 'any', 'none' or {{'tool': name}})")
        return pb.ToolChoice(mode=mode)
    if isinstance(choice, Mapping):
        if "tool" in choice:
            return pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name=str(choice["tool"]))
        kind = str(choice.get("type", "")).lower()
        if kind == "tool":
            return pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name=str(choice.get("name", "")))
        if kind in _MODES:
            return pb.ToolChoice(mode=_MODES[kind])
    raise ValueError(f"unknown tool_choice {choice!r} (use 'auto', 'any', 'none' or {{'tool': name}})")
