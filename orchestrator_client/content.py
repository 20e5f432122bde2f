"""Content blocks and tools: typed dataclasses and their conversion to and from the protobuf messages.

A message's content is a string (the simple case) or a sequence of blocks:

* :class:`TextBlock` ``(text)``;
* :class:`ImageBlock` ``(media_type, data)``: inline image bytes ("image/png", "image/jpeg", ...);
* :class:`ToolCall` ``(id, name, input)``: the model asks for a tool (an assistant's ``tool_use``
  block; echo the answer's calls back as they are);
* :class:`ToolResultBlock` ``(tool_use_id, content, is_error)``: a tool's result, in a user message.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias

from google.protobuf import json_format, struct_pb2

from modelgateway.v1 import model_gateway_pb2 as pb

__all__ = [
    "AnswerBlock",
    "BlockLike",
    "ContentBlock",
    "ImageBlock",
    "TextBlock",
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


@dataclass(frozen=True, slots=True)
class TextBlock:
    """Plain text."""

    type: ClassVar[str] = "text"

    text: str


@dataclass(frozen=True, slots=True)
class ImageBlock:
    """An inline image: ``media_type`` "image/jpeg", "image/png", "image/gif" or "image/webp"."""

    type: ClassVar[str] = "image"

    media_type: str
    data: bytes = field(repr=False)


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


@dataclass(frozen=True, slots=True)
class ToolResultBlock:
    """The result of the tool call ``tool_use_id``, as text; ``is_error`` when the tool failed."""

    type: ClassVar[str] = "tool_result"

    tool_use_id: str
    content: str
    is_error: bool = False


def _default_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call; ``input_schema`` is a JSON schema of an object."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=_default_schema, hash=False)


ContentBlock: TypeAlias = TextBlock | ImageBlock | ToolCall | ToolResultBlock
AnswerBlock: TypeAlias = TextBlock | ToolCall
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


def _block_from_mapping(raw: Mapping[str, Any]) -> ContentBlock:
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
        if not isinstance(content, str):
            raise TypeError("a tool_result block's content must be text")
        return ToolResultBlock(str(raw.get("tool_use_id", "")), content, bool(raw.get("is_error", False)))
    raise ValueError(f"unknown content block {dict(raw)!r} (type text, image, tool_use or tool_result)")


def block_to_proto(block: BlockLike) -> pb.ContentBlock:
    """One block (dataclass, string, Anthropic-style dict or proto) as a ``pb.ContentBlock``."""
    if isinstance(block, pb.ContentBlock):
        return block
    if isinstance(block, str):
        block = TextBlock(block)
    elif isinstance(block, Mapping):
        block = _block_from_mapping(block)
    if isinstance(block, TextBlock):
        return pb.ContentBlock(text=pb.TextBlock(text=block.text))
    if isinstance(block, ImageBlock):
        return pb.ContentBlock(image=pb.ImageBlock(media_type=block.media_type, data=block.data))
    if isinstance(block, ToolCall):
        use = pb.ToolUseBlock(id=block.id, name=block.name)
        dict_to_struct(block.input, use.input)
        return pb.ContentBlock(tool_use=use)
    if isinstance(block, ToolResultBlock):
        return pb.ContentBlock(tool_result=pb.ToolResultBlock(
            tool_use_id=block.tool_use_id, content=block.content, is_error=block.is_error))
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
    if kind == "text":
        return TextBlock(msg.text.text)
    if kind == "tool_use":
        return tool_call_from_proto(msg.tool_use, index)
    if kind == "image":
        return ImageBlock(msg.image.media_type, msg.image.data)
    if kind == "tool_result":
        r = msg.tool_result
        return ToolResultBlock(r.tool_use_id, r.content, r.is_error)
    return None


def block_to_dict(block: ContentBlock) -> dict[str, Any]:
    """A block as an Anthropic-style, JSON-ready dict (image data base64), accepted back as input."""
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ImageBlock):
        return {"type": "image", "media_type": block.media_type, "data": base64.b64encode(block.data).decode()}
    if isinstance(block, ToolCall):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input, "index": block.index}
    return {"type": "tool_result", "tool_use_id": block.tool_use_id, "content": block.content,
            "is_error": block.is_error}


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
        )
    if not isinstance(tool, ToolSpec):
        raise TypeError(f"not a tool: {tool!r} (use ToolSpec or a dict with name, description, input_schema)")
    msg = pb.Tool(name=tool.name, description=tool.description)
    dict_to_struct(tool.input_schema, msg.input_schema)
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
