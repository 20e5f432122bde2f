"""The client's result dataclasses cannot drift from the contract: every field of every response
message (every RPC's response, and every message inside it, walked through the proto descriptor)
must change the typed result when it is set, or be listed in NOT_MAPPED with the reason.

A new RPC needs its converter in CONVERTERS; a new response field needs its place in a result
dataclass (orchestrator_client/results.py). Each field is checked by building a response with
every field set (one variant per oneof member), clearing that one field, and comparing the two
typed results: a field the conversion ignores leaves them equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from modelgateway.v1 import model_gateway_pb2 as pb
from orchestrator_client.results import (
    GenerateResult,
    HealthReport,
    ProviderList,
    Status,
    TokenCount,
    event_from_proto,
)
from orchestrator_client.usage import UsageReport

CONVERTERS: dict[str, Callable[[Any], object]] = {
    "modelgateway.v1.GenerateResponse": lambda m: GenerateResult.from_proto(
        m, attempts=1, request_id="", elapsed_ms=0.0),
    "modelgateway.v1.GenerateStreamResponse": lambda m: event_from_proto(m),
    "modelgateway.v1.HealthResponse": HealthReport.from_proto,
    "modelgateway.v1.ListProvidersResponse": ProviderList.from_proto,
    "modelgateway.v1.GetStatusResponse": Status.from_proto,
    "modelgateway.v1.CountTokensResponse": lambda m: TokenCount.from_proto(m, request_id=""),
    "modelgateway.v1.GetUsageResponse": UsageReport.from_proto,
}

# Field paths (the response's name, then field names; a oneof member is a field) the typed result
# deliberately leaves out, with the reason.
NOT_MAPPED: dict[str, str] = {
    "GenerateResponse.blocks.image": "an answer carries text and tool_use blocks only (images are input)",
    "GenerateResponse.blocks.tool_result": "an answer carries text and tool_use blocks only (results are input)",
    "GenerateResponse.blocks.document": "an answer carries no documents (they are input)",
    "GenerateResponse.blocks.cache_control": "a cache breakpoint is request-only: answers carry none",
}

MAX_DEPTH = 8


def _repeated(f: FieldDescriptor) -> bool:
    flag = getattr(f, "is_repeated", None)  # protobuf >= 6; `label` before
    return bool(flag) if flag is not None else f.label == FieldDescriptor.LABEL_REPEATED


def _response_types() -> list[Descriptor]:
    service = pb.DESCRIPTOR.services_by_name["ModelGateway"]
    return sorted({m.output_type for m in service.methods}, key=lambda d: d.full_name)


def _oneofs(desc: Descriptor, path: str, depth: int = 0) -> Iterator[tuple[str, list[str]]]:
    """Every oneof reachable from ``desc``: (its path, its members' names)."""
    assert depth < MAX_DEPTH, f"{path}: nesting too deep (a recursive message?)"
    for oneof in desc.oneofs:
        yield f"{path}.{oneof.name}", [f.name for f in oneof.fields]
    for f in desc.fields:
        child = f"{path}.{f.name}"
        # A field the client deliberately leaves out needs no variants (and may recurse: a tool
        # result holds blocks).
        if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.file is desc.file and child not in NOT_MAPPED:
            yield from _oneofs(f.message_type, child, depth + 1)


def _scalar(f: FieldDescriptor) -> Any:
    if f.type == FieldDescriptor.TYPE_STRING:
        return f"{f.name}-value"
    if f.type == FieldDescriptor.TYPE_BYTES:
        return b"\x01bytes"
    if f.type == FieldDescriptor.TYPE_BOOL:
        return True
    if f.type == FieldDescriptor.TYPE_ENUM:
        return f.enum_type.values[-1].number
    if f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 1.5
    return 7


def _fill(msg: Message, path: str, choices: dict[str, str], depth: int = 0) -> None:
    """Set every field of ``msg`` (one member per oneof: ``choices``, else the first)."""
    desc = msg.DESCRIPTOR
    if desc.full_name == "google.protobuf.Timestamp":
        msg.seconds = 1_700_000_000  # type: ignore[attr-defined]
        return
    if desc.full_name == "google.protobuf.Struct":
        msg.update({"key": "value"})  # type: ignore[attr-defined]
        return
    assert desc.file is pb.DESCRIPTOR, f"{path}: add a sentinel value for {desc.full_name}"
    for f in desc.fields:
        if f.containing_oneof is not None:
            oneof = f"{path}.{f.containing_oneof.name}"
            if choices.get(oneof, f.containing_oneof.fields[0].name) != f.name:
                continue
        child = f"{path}.{f.name}"
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            target = getattr(msg, f.name).add() if _repeated(f) else getattr(msg, f.name)
            _fill(target, child, choices, depth + 1)
        elif _repeated(f):
            getattr(msg, f.name).append(_scalar(f))
        else:
            setattr(msg, f.name, _scalar(f))


def _set_paths(msg: Message, path: str) -> Iterator[str]:
    """The path of every field set in ``msg`` (into the first element of a repeated message field)."""
    for f, value in msg.ListFields():
        child = f"{path}.{f.name}"
        yield child
        if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.file is pb.DESCRIPTOR:
            yield from _set_paths(value[0] if _repeated(f) else value, child)


def _cleared(msg: Message, path: str) -> Message:
    copy = type(msg)()
    copy.CopyFrom(msg)
    *parents, last = path.split(".")[1:]
    target: Any = copy
    for name in parents:
        target = getattr(target, name)
        if hasattr(target, "add"):  # a repeated message field
            target = target[0]
    target.ClearField(last)
    return copy


def _variants() -> Iterator[tuple[Descriptor, dict[str, str]]]:
    for desc in _response_types():
        choices_seen: list[dict[str, str]] = [{}]
        for oneof, members in _oneofs(desc, desc.name):
            choices_seen.extend({oneof: member} for member in members[1:])
        for choices in choices_seen:
            yield desc, choices


VARIANTS = list(_variants())


def test_every_rpc_response_has_a_converter() -> None:
    missing = [d.full_name for d in _response_types() if d.full_name not in CONVERTERS]
    assert not missing, f"add the typed result of {missing} to CONVERTERS (and results.py)"


@pytest.mark.parametrize(("desc", "choices"), VARIANTS,
                         ids=[f"{d.name}{''.join('-' + m for m in c.values())}" for d, c in VARIANTS])
def test_every_response_field_reaches_the_typed_result(desc: Descriptor, choices: dict[str, str]) -> None:
    convert = CONVERTERS[desc.full_name]
    full = getattr(pb, desc.name)()
    _fill(full, desc.name, choices)
    typed = convert(full)
    assert typed is not None
    unmapped, stale = [], []
    for path in _set_paths(full, desc.name):
        changed = convert(_cleared(full, path)) != typed
        if path in NOT_MAPPED:
            if changed:
                stale.append(path)
        elif not changed and not any(path.startswith(p + ".") for p in NOT_MAPPED):
            unmapped.append(path)
    assert not unmapped, f"response fields the client's typed result ignores (map them in results.py): {unmapped}"
    assert not stale, f"NOT_MAPPED lists fields that are mapped now (remove them): {stale}"
