"""The emulated "model": what it answers, how it stops, and how many tokens that costs.

Both emulators translate their provider's request into a provider-neutral :class:`Prompt` and render the
:class:`Answer` that :func:`compose_answer` makes of it in their provider's wire format.

Rules:

* The answer to the last user message is the result of simple arithmetic in it ("What is 25 + 75?" -> "100"),
  else ``"<provider> emulator reply to: <last user text>"``; an emulator's ``reply_text`` overrides both.
* A last user message holding tool results is answered ``"The tool returned: <result>"`` (results joined by
  ``"; "``).
* With tools offered, a last user message containing "use the tool" (or a tool choice that forces a tool) is
  answered with a call of the forced tool, else the first one, whose input is derived from the tool's JSON schema
  (strings get the user text, numbers the numbers found in it in order, booleans ``true``, arrays ``[]``, objects
  ``{}``).
* Tokens are whitespace-separated words: input = words of all input text (system, messages, tool results),
  output = words of the answer (a tool call: of its input's JSON); each at least 1.
* A stop sequence found in the answer cuts it there (stop reason ``stop_sequence``); more words than
  ``max_tokens`` cut it to ``max_tokens`` words (stop reason ``max_tokens``), whichever comes first.
* With structured output asked for, the answer text is the JSON of a value derived from the schema as tool
  inputs are.
* With thinking on, the answer starts with a thinking block ``"Thinking about: <last user text>"`` (or about the
  tool results) and its signature (:func:`sign`); a thinking block sent back with another signature is rejected.
* Prompt caching (:func:`cache_usage`): every prefix of the prompt (tools, system, messages) that ends at a cache
  breakpoint is remembered by the emulator; the longest remembered one is read from the cache, the rest up to the
  last breakpoint written to it, and only what follows the last breakpoint counts as (uncached) input tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

StopReason = str  # "end_turn", "max_tokens", "stop_sequence", "tool_use", or any the test sets

_NUMBER = r"-?\d+(?:\.\d+)?"
_ARITHMETIC = re.compile(rf"({_NUMBER})\s*([-+*/x×])\s*({_NUMBER})")
_USE_THE_TOOL = re.compile(r"\buse\s+the\s+tool\b", re.IGNORECASE)


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its name and the JSON schema of its input."""

    name: str
    input_schema: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prompt:
    """A provider-neutral view of a generation request."""

    last_user_text: str
    """The text blocks of the last user message, joined by newlines."""
    tool_results: tuple[str, ...] = ()
    """The contents of the tool-result blocks of the last user message."""
    input_text: str = ""
    """All input text (system prompt, every message, tool results): what input tokens are counted on."""
    tools: tuple[ToolSpec, ...] = ()
    tool_required: bool = False
    """The request's tool choice forces a tool call (Anthropic ``any``/``tool``, Bedrock ``any``/``tool``)."""
    forced_tool: str | None = None
    """The name of the tool the tool choice forces, if it names one."""
    max_tokens: int | None = None
    stop_sequences: tuple[str, ...] = ()
    thinking: bool = False
    """Thinking is on (Anthropic ``thinking.type`` enabled/adaptive; Bedrock the same in
    additionalModelRequestFields)."""
    output_schema: Mapping[str, Any] | None = None
    """The JSON schema of a structured-output request."""


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    text: str
    """The answer text; empty for a tool call."""
    tool_call: ToolCall | None
    stop_reason: StopReason
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int
    thinking: str | None = None
    """The thinking text (thinking on), None without."""
    signature: str = ""
    cache_read: int = 0
    cache_creation: int = 0


_SIGNING_KEY = b"emulator-thinking-key"


def sign(thinking: str) -> str:
    """The signature the emulators give a thinking text (and check when it comes back)."""
    return "sig_" + hashlib.sha256(_SIGNING_KEY + thinking.encode()).hexdigest()[:40]


def cache_usage(segments: Sequence[tuple[str, bool]], cache: set[str]) -> tuple[int, int, int] | None:
    """(uncached input, cache read, cache write) tokens of a prompt given as (text, a breakpoint follows)
    segments in cache order, remembering its breakpoint prefixes in ``cache``; None without breakpoints."""
    if not any(breakpoint for _, breakpoint in segments):
        return None
    prefix = hashlib.sha256()
    total = up_to_breakpoint = read = 0
    for text, breakpoint in segments:
        prefix.update(text.encode() + b"\0")
        total += len(text.split())
        if breakpoint:
            key = prefix.hexdigest()
            if key in cache:
                read = total
            cache.add(key)
            up_to_breakpoint = total
    return total - up_to_breakpoint, read, up_to_breakpoint - read


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one (for leniently reading request bodies)."""
    return value if isinstance(value, Mapping) else {}


def optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def count_words(text: str) -> int:
    """Tokens of ``text`` as the emulators count them: whitespace-separated words, at least 1."""
    return max(1, len(text.split()))


def arithmetic_answer(text: str) -> str | None:
    """The result of the first ``<number> <op> <number>`` in ``text`` (op: + - * / x ×), or None."""
    match = _ARITHMETIC.search(text)
    if match is None:
        return None
    left, op, right = float(match[1]), match[2], float(match[3])
    if op == "+":
        result = left + right
    elif op == "-":
        result = left - right
    elif op in ("*", "x", "×"):
        result = left * right
    elif right == 0:
        return None
    else:
        result = left / right
    return format_number(result)


def format_number(value: float) -> str:
    """``100.0`` -> ``"100"``, ``0.5`` -> ``"0.5"``, ``2/3`` -> ``"0.6666666667"``."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(round(value, 10))


def compose_answer(
    prompt: Prompt,
    *,
    provider: str,
    reply_text: str | None,
    repeat: int = 1,
    tool_id_prefix: str = "toolu_",
) -> Answer:
    """The answer of the emulated model to ``prompt`` (see the module docstring for the rules).

    ``repeat`` > 1 repeats the answer text, space-separated, before it is cut by stop sequences or max_tokens
    (streams use it to produce long answers).
    """
    answer = _compose(prompt, provider=provider, reply_text=reply_text, repeat=repeat, tool_id_prefix=tool_id_prefix)
    if prompt.thinking:
        about = "; ".join(prompt.tool_results) if prompt.tool_results else prompt.last_user_text
        thinking = f"Thinking about: {about}"
        answer = dataclasses.replace(answer, thinking=thinking, signature=sign(thinking),
                                     output_tokens=answer.output_tokens + count_words(thinking))
    return answer


def _compose(prompt: Prompt, *, provider: str, reply_text: str | None, repeat: int, tool_id_prefix: str) -> Answer:
    input_tokens = count_words(prompt.input_text)
    if (
        prompt.tools
        and not prompt.tool_results
        and (prompt.tool_required or _USE_THE_TOOL.search(prompt.last_user_text))
    ):
        tool = _pick_tool(prompt)
        call = ToolCall(
            id=f"{tool_id_prefix}{uuid.uuid4().hex[:24]}",
            name=tool.name,
            input=derive_tool_input(tool.input_schema, prompt.last_user_text),
        )
        return Answer(
            text="",
            tool_call=call,
            stop_reason="tool_use",
            stop_sequence=None,
            input_tokens=input_tokens,
            output_tokens=count_words(json.dumps(call.input)),
        )

    if prompt.output_schema is not None:
        text = json.dumps(derive_tool_input(prompt.output_schema, prompt.last_user_text))
    elif reply_text is not None:
        text = reply_text
    elif prompt.tool_results:
        text = "The tool returned: " + "; ".join(prompt.tool_results)
    else:
        text = arithmetic_answer(prompt.last_user_text) or f"{provider} emulator reply to: {prompt.last_user_text}"
    if repeat > 1:
        text = " ".join([text] * repeat)

    stop_reason: StopReason = "end_turn"
    stop_sequence: str | None = None
    word_cut = _cut_after_words(text, prompt.max_tokens) if prompt.max_tokens is not None else None
    found = _first_stop_sequence(text, prompt.stop_sequences)
    if found is not None and (word_cut is None or found[0] < len(word_cut)):
        text, stop_reason, stop_sequence = text[: found[0]], "stop_sequence", found[1]
    elif word_cut is not None:
        text, stop_reason = word_cut, "max_tokens"
    return Answer(
        text=text,
        tool_call=None,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        input_tokens=input_tokens,
        output_tokens=count_words(text),
    )


def derive_tool_input(schema: Mapping[str, Any], text: str) -> dict[str, Any]:
    """An input for a tool with JSON schema ``schema``, made up from the user's ``text``."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    names: Sequence[str] = schema.get("required") or list(properties)
    numbers = iter(re.findall(_NUMBER, text))
    result: dict[str, Any] = {}
    for name in names:
        kind = (properties.get(name) or {}).get("type")
        if kind in ("number", "integer"):
            number = next(numbers, "0")
            result[name] = int(number) if kind == "integer" or "." not in number else float(number)
        elif kind == "boolean":
            result[name] = True
        elif kind == "array":
            result[name] = []
        elif kind == "object":
            result[name] = {}
        else:
            result[name] = text
    return result


def text_chunks(text: str, words_per_chunk: int = 1) -> list[str]:
    """``text`` split into stream deltas of ``words_per_chunk`` words, each with its trailing whitespace.

    ``"".join(text_chunks(text, n)) == text`` for any text and n.
    """
    pieces = re.findall(r"\S+\s*", text)
    if not pieces:
        return [text] if text else []
    lead = text[: len(text) - len(text.lstrip())]
    pieces[0] = lead + pieces[0]
    size = max(1, words_per_chunk)
    return ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]


def json_chunks(value: Any, parts: int = 3) -> list[str]:
    """The JSON of ``value`` split into up to ``parts`` partial strings (as streamed tool inputs are)."""
    encoded = json.dumps(value)
    size = max(1, math.ceil(len(encoded) / parts))
    return [encoded[i : i + size] for i in range(0, len(encoded), size)]


def _pick_tool(prompt: Prompt) -> ToolSpec:
    if prompt.forced_tool is not None:
        for tool in prompt.tools:
            if tool.name == prompt.forced_tool:
                return tool
    return prompt.tools[0]


def _cut_after_words(text: str, max_words: int) -> str | None:
    """``text`` cut after its first ``max_words`` words (trailing whitespace dropped), or None if it is shorter."""
    if len(text.split()) <= max_words:
        return None
    if max_words <= 0:
        return ""
    word = next(m for i, m in enumerate(re.finditer(r"\S+", text), 1) if i == max_words)
    return text[: word.end()]


def _first_stop_sequence(text: str, stop_sequences: Sequence[str]) -> tuple[int, str] | None:
    found = [(text.find(seq), seq) for seq in stop_sequences if seq and seq in text]
    return min(found) if found else None
