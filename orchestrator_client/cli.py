"""``gatewayctl``: poke the Model Gateway from a shell.

Usage::

    gatewayctl [--target T] [--config PATH] [--json] [options] generate "What is 25 + 75?"
    gatewayctl generate --stream "What is 25 + 75?"
    gatewayctl generate --thinking 2048 --max-tokens 8192 "Plan a trip"   # thinking on stderr
    gatewayctl generate --schema '{"type":"object",...}' "Paris has 2.1M people"
    gatewayctl generate --document report.pdf "Summarise it"
    gatewayctl generate --system "$(cat prompt.txt)" --cache-system "Hi"  # a cached system prompt
    gatewayctl count "How many tokens is this?"
    gatewayctl health
    gatewayctl providers
    gatewayctl status
    gatewayctl usage [KEY]          (an admin key: each API key's requests, tokens, spend, limits)
    gatewayctl keys new --name NAME (a new API key secret and the SHA-256 for the gateway's config)
    gatewayctl keys hash [SECRET]   (the SHA-256 of a secret; '-' or nothing reads it from stdin)

The target comes from ``--target``, else the configuration (``--config``, ``$ORCHESTRATOR_CONFIG``
or ``config/orchestrator.gateway.yaml``, with ``ORCHESTRATOR_GATEWAY_*`` overrides), else
``localhost:50051``. TLS is on for an ``https://`` or ``grpcs://`` target (the scheme of the target
used, ``--target`` or the config's url), unless ``--tls``/``--insecure`` or the config's ``tls``
say otherwise; a target without a port gets 50051, or 443 with TLS. Output is readable text by
default (for ``generate``: the answer on stdout, a summary line on stderr) and one JSON document
on stdout with ``--json`` (errors too).
``generate --stream`` prints the answer's text as it arrives (tool calls as ``[tool_use ...]``
lines), then the summary line on stderr; with ``--json`` it prints one JSON object per event
(JSON lines: ``{"type": "start" | "text" | "thinking" | "redacted_thinking" | "tool_use" | "end", ...}``;
an error as a last ``{"error": {...}}`` line). Thinking (``--thinking``) goes to stderr in the text
output. ``count`` prints the conversation's input tokens (the prompt, ``--system``, ``--document``s,
``--thinking``) as the provider's model counts them.

Exit status:

===  ==========================================================================
0    success (``health``: the gateway is healthy or degraded)
1    unexpected error in gatewayctl itself
2    usage or configuration error
3    invalid request: INVALID_ARGUMENT, OUT_OF_RANGE, and a message over gRPC's size limit
     (RESOURCE_EXHAUSTED without rate-limit details: ``MessageTooLargeError``)
4    not found: NOT_FOUND, UNIMPLEMENTED
5    gateway unavailable, timed out or rate limited: UNAVAILABLE, DEADLINE_EXCEEDED,
     RESOURCE_EXHAUSTED (a rate limit), ABORTED
6    refused: UNAUTHENTICATED, PERMISSION_DENIED, FAILED_PRECONDITION
7    gateway-side error: INTERNAL, UNKNOWN, DATA_LOSS and any other code
8    ``health`` only: the gateway answered but reports itself unhealthy
130  interrupted
141  stdout closed early (``gatewayctl ... | head -1``): quietly, as a process killed by SIGPIPE
===  ==========================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import grpc

from orchestrator_client.client import GatewayClient
from orchestrator_client.content import DocumentBlock, TextBlock, ToolCall
from orchestrator_client.errors import ConfigError, GatewayError, MessageTooLargeError
from orchestrator_client.results import (
    ChatMessage,
    GenerateResult,
    HealthReport,
    ProviderList,
    Status,
    StreamEnd,
    TextDelta,
    ThinkingDelta,
    TokenCount,
    to_jsonable,
)
from orchestrator_client.settings import load_config
from orchestrator_client.telemetry import new_trace
from orchestrator_client.usage import UsageReport

__all__ = ["EXIT_CODES", "exit_code_for", "exit_code_for_error", "main"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_UNHEALTHY = 8
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what the shell reports for a writer whose reader went away

EXIT_CODES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 3,
    grpc.StatusCode.OUT_OF_RANGE: 3,
    grpc.StatusCode.NOT_FOUND: 4,
    grpc.StatusCode.UNIMPLEMENTED: 4,
    grpc.StatusCode.UNAVAILABLE: 5,
    grpc.StatusCode.DEADLINE_EXCEEDED: 5,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 5,
    grpc.StatusCode.ABORTED: 5,
    grpc.StatusCode.UNAUTHENTICATED: 6,
    grpc.StatusCode.PERMISSION_DENIED: 6,
    grpc.StatusCode.FAILED_PRECONDITION: 6,
}
EXIT_SERVER_ERROR = 7

EPILOG = """\
exit status:
  0    success (health: healthy or degraded)
  1    unexpected error in gatewayctl
  2    usage or configuration error
  3    invalid request (INVALID_ARGUMENT, OUT_OF_RANGE, a message over gRPC's size
       limit: RESOURCE_EXHAUSTED without rate-limit details)
  4    not found (NOT_FOUND, UNIMPLEMENTED)
  5    unavailable, timed out or rate limited (UNAVAILABLE, DEADLINE_EXCEEDED,
       RESOURCE_EXHAUSTED, ABORTED)
  6    refused (UNAUTHENTICATED, PERMISSION_DENIED, FAILED_PRECONDITION)
  7    gateway-side error (INTERNAL, UNKNOWN, DATA_LOSS, other codes)
  8    health: the gateway reports itself unhealthy
  130  interrupted
  141  stdout closed early (e.g. piped into head)

environment: ORCHESTRATOR_CONFIG (config file), ORCHESTRATOR_GATEWAY_URL, _API_KEY,
_PROVIDER, _MODEL, _MAX_RETRIES, _TIMEOUT, _RETRY_DELAY, ... (see orchestrator_client.settings)

examples:
  gatewayctl generate "What is 25 + 75?"
  gatewayctl generate --stream "Tell me about gateways"
  gatewayctl --json generate --stream "What is 25 + 75?"     # JSON lines, one per event
  gatewayctl generate --thinking adaptive --cache-system --system "You are..." "Hi"
  gatewayctl count --system "Be terse." "How long is this conversation?"
  gatewayctl --target localhost:50051 --json providers
  gatewayctl --target dns:///gateway.internal:50051 health
  gatewayctl --api-key "$ADMIN_KEY" usage
  gatewayctl keys new --name search-service
"""


def exit_code_for(code: grpc.StatusCode) -> int:
    """The exit status for a call that failed with ``code``."""
    return EXIT_CODES.get(code, EXIT_SERVER_ERROR)


def exit_code_for_error(error: GatewayError) -> int:
    """The exit status for a failed call: by its code, except that a message over gRPC's size
    limit (RESOURCE_EXHAUSTED that is no rate limit) is an invalid request (3)."""
    if isinstance(error, MessageTooLargeError):
        return EXIT_CODES[grpc.StatusCode.INVALID_ARGUMENT]
    return exit_code_for(error.code)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # raise instead of sys.exit so main() returns 2
        raise _UsageError(f"{self.prog}: error: {message}")


def _common_options() -> _Parser:
    # default=SUPPRESS so the options work before and after the command without clobbering.
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--target", "-t", help="gateway address: host:port, dns:///host:port, http(s)://..., "
                        "grpc(s)://... (https/grpcs: TLS; no port: 50051, or 443 with TLS)")
    common.add_argument("--config", "-c", help="orchestrator YAML config (default: $ORCHESTRATOR_CONFIG or "
                        "config/orchestrator.gateway.yaml when present)")
    common.add_argument("--api-key", help="API key, sent as 'authorization: Bearer <key>'")
    tls = common.add_mutually_exclusive_group()
    tls.add_argument("--tls", dest="tls", action="store_const", const=True, help="use TLS")
    tls.add_argument("--insecure", dest="tls", action="store_const", const=False, help="plaintext")
    common.add_argument("--ca", metavar="PEM", help="CA certificate(s) to trust for the gateway (implies --tls)")
    common.add_argument("--cert", metavar="PEM", help="client certificate for mTLS (with --key; implies --tls)")
    common.add_argument("--key", metavar="PEM", help="private key of --cert")
    common.add_argument("--server-name", metavar="NAME",
                        help="name expected in the gateway's certificate, when it differs from the target's host")
    common.add_argument("--timeout", type=float, help="budget of the whole call in seconds (default 60)")
    common.add_argument("--max-retries", type=int, help="total attempts (default 3)")
    common.add_argument("--retry-delay", type=float, help="base wait between attempts in s (default 1.0)")
    common.add_argument("--attempt-timeout", type=float, help="cap of one attempt in seconds")
    common.add_argument("--json", action="store_true", help="print one JSON document (for scripts)")
    common.add_argument("--verbose", "-v", action="count", help="debug logging; prints the trace id of the call")
    common.add_argument("--quiet", "-q", action="store_true", help="no retry log, only the final error")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = _Parser(
        prog="gatewayctl",
        description="Call the Model Gateway: generate, count tokens, check health, list providers, status,\n"
        "usage per API key (an admin key); make or hash API keys.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    gen = commands.add_parser(
        "generate", parents=[common], help="generate a completion for a prompt", epilog=EPILOG,
        description="Generate a completion for a prompt.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    gen.add_argument("--system", "-s", default=None, help="system prompt")
    gen.add_argument("--provider", "-p", default=None, help="provider name (default: config or gateway's)")
    gen.add_argument("--model", "-m", default=None, help="model id or alias")
    gen.add_argument("--max-tokens", type=int, default=None, help="upper bound of output tokens")
    gen.add_argument("--temperature", type=float, default=None, help="sampling temperature in [0, 1]")
    gen.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                     help="a label for the gateway's logs (repeatable)")
    gen.add_argument("--request-id", default=None, help="x-request-id to send (default: generated)")
    gen.add_argument("--stream", action="store_true",
                     help="stream the answer: print text as it arrives (--json: one JSON object per event)")
    _add_conversation_options(gen)
    gen.add_argument("--schema", default=None, metavar="JSON|@FILE",
                     help="structured output: the answer is JSON matching this JSON schema (of an object)")
    count = commands.add_parser(
        "count", parents=[common], help="count a conversation's input tokens", epilog=EPILOG,
        description="Count a conversation's input tokens (costs no tokens).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    count.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    count.add_argument("--system", "-s", default=None, help="system prompt")
    count.add_argument("--provider", "-p", default=None, help="provider name (default: config or gateway's)")
    count.add_argument("--model", "-m", default=None, help="model id or alias")
    count.add_argument("--request-id", default=None, help="x-request-id to send (default: generated)")
    _add_conversation_options(count)
    for name, text in (
        ("health", "health of the gateway and each provider"),
        ("providers", "the configured providers, default and fallback order"),
        ("status", "service name, version, status and the worker that answered"),
    ):
        commands.add_parser(name, parents=[common], help=text, description=text[0].upper() + text[1:] + ".",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    usage = commands.add_parser("usage", parents=[common], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                help="each API key's requests, tokens, spend and limits (an admin key)",
                                description="Each API key's requests, tokens, spend and limits (needs an admin key).")
    usage.add_argument("key_name", nargs="?", default="", metavar="KEY", help="one key's name (default: every key)")
    keys = commands.add_parser("keys", parents=[common], help="make an API key, or hash one for the config",
                               description="Make an API key, or hash one for the config (offline).")
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", parser_class=_Parser)
    keys_commands.required = True
    new = keys_commands.add_parser("new", parents=[common], help="a new random secret and its SHA-256",
                                   description="Print a new random secret, its SHA-256 and the config lines.")
    new.add_argument("--name", default="my-service", help="the key's name in the config (default: my-service)")
    hashed = keys_commands.add_parser("hash", parents=[common], help="the SHA-256 of a secret, for the config",
                                      description="Print the SHA-256 of a secret, for the config.")
    hashed.add_argument("secret", nargs="?", default="-", help="the secret ('-' or nothing: read from stdin)")
    return parser


def _add_conversation_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--cache-system", nargs="?", const=True, default=False, metavar="TTL",
                         help="cache the system prompt (a cache breakpoint after it; TTL 5m or 1h)")
    command.add_argument("--thinking", default=None, metavar="BUDGET|adaptive|disabled",
                         help="extended thinking: a token budget (>= 1024, below --max-tokens), or a mode")
    command.add_argument("--document", action="append", default=[], metavar="PATH",
                         help="attach a document (.pdf as PDF, anything else as UTF-8 text; repeatable)")


SECRET_PREFIX = "mgk_"


def _keys(args: argparse.Namespace, as_json: bool, out: TextIO) -> int:
    """``keys new`` / ``keys hash``: the gateway's config holds only the SHA-256 of a secret."""
    if args.keys_command == "new":
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        name = args.name
    else:
        secret = (sys.stdin.readline() if args.secret == "-" else args.secret).strip()
        if not secret:
            raise _UsageError("gatewayctl: error: keys hash: the secret is empty")
        name = ""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    if as_json:
        doc = {"name": name, "secret": secret, "sha256": digest} if name else {"sha256": digest}
        json.dump(doc, out, indent=2)
        out.write("\n")
    elif name:
        out.write(f"secret: {secret}\n  (give it to the caller, who sends 'authorization: Bearer <secret>'; "
                  "it is not stored anywhere)\n")
        out.write(f"sha256: {digest}\n\nfor the gateway's config:\n\nkeys:\n  - name: {name}\n"
                  f"    sha256: \"{digest}\"\n")
    else:
        out.write(digest + "\n")
    return EXIT_OK


def _money(value: float) -> str:
    return f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def _print_usage(report: UsageReport, out: TextIO) -> None:
    if not report.backend_available:
        out.write(f"warning: the limiter's backend ({report.backend}) could not be read: counts are empty\n")
    rows = [["KEY", "TEAM", "REQ/MIN", "TOK/MIN", "REQ/DAY", "TOK/DAY", "USD/DAY", "USD/MONTH", "IN-FLIGHT",
             "REMAINING/LIMIT"]]
    short = {"requests_per_minute": "rpm", "tokens_per_minute": "tpm", "max_concurrent": "concurrent",
             "daily_usd": "daily", "monthly_usd": "monthly"}
    for k in report.keys:
        limits = ", ".join(
            f"{short.get(x.name, x.name)} " + (f"{_money(x.remaining)}/{_money(x.limit)}" if x.name.endswith("_usd")
                                               else f"{int(x.remaining)}/{x.limit:g}")
            for x in k.limits) or "-"
        rows.append([k.name, k.team or "-", str(k.minute.requests),
                     str(k.minute.input_tokens + k.minute.output_tokens), str(k.day.requests),
                     str(k.day.input_tokens + k.day.output_tokens), _money(k.day.spend_usd),
                     _money(k.month.spend_usd), str(k.in_flight), limits])
    _table(rows, out)
    periods = f" (day {report.keys[0].day.period}, month {report.keys[0].month.period}, UTC)" if report.keys else ""
    out.write(f"backend: {report.backend}{periods}\n")


def _configure_logging(verbose: int, quiet: bool, err: TextIO) -> Callable[[], None]:
    """Show the client's retry log on ``err`` ("WARNING Gateway connection error ..."); returns
    the function that undoes it (main() may run in-process, e.g. in tests)."""
    level = logging.CRITICAL + 10 if quiet else (logging.INFO if verbose == 0 else logging.DEBUG)
    log = logging.getLogger("orchestrator_client")
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.setLevel(level)
    previous = log.level
    log.addHandler(handler)
    if log.getEffectiveLevel() > level:
        log.setLevel(level)

    def restore() -> None:
        log.removeHandler(handler)
        log.setLevel(previous)

    return restore


def _make_client(args: argparse.Namespace) -> GatewayClient:
    config = load_config(getattr(args, "config", None))
    overrides: dict[str, Any] = {}
    for name in ("target", "api_key", "tls", "timeout", "max_retries", "retry_delay", "attempt_timeout"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    for name in ("timeout", "retry_delay", "attempt_timeout"):
        if name in overrides and overrides[name] < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
    for option, name in (("ca", "root_certificates"), ("cert", "client_certificate"), ("key", "client_key")):
        path = getattr(args, option, None)
        if path is None:
            continue
        try:
            overrides[name] = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"--{option}: cannot read {path}: {exc.strerror or exc}") from None
        overrides.setdefault("tls", True)
    if getattr(args, "server_name", None):
        overrides["tls_server_name"] = args.server_name
    try:
        return GatewayClient.from_settings(config.gateway, **overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _parse_metadata(items: Sequence[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _UsageError(f"gatewayctl: error: --metadata expects KEY=VALUE, got {item!r}")
        metadata[key] = value
    return metadata


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _print_generate(result: GenerateResult, out: TextIO, err: TextIO) -> None:
    if result.thinking:
        err.write(f"[thinking] {result.thinking}\n")
    out.write(result.content.rstrip("\n") + "\n")
    usage = result.usage
    err.write(
        f"-- provider={result.provider} model={result.model} finish={result.finish_reason} "
        f"tokens={usage.input_tokens}+{usage.output_tokens}{_cache_note(usage)} "
        f"latency={result.latency_ms:.1f}ms "
        f"elapsed={result.elapsed_ms:.1f}ms attempts={result.attempts} request_id={result.request_id}\n"
    )


def _cache_note(usage: Any) -> str:
    if not (usage.cache_read_input_tokens or usage.cache_creation_input_tokens):
        return ""
    return f" cache_read={usage.cache_read_input_tokens} cache_write={usage.cache_creation_input_tokens}"


def _print_count(count: TokenCount, out: TextIO, err: TextIO) -> None:
    out.write(f"{count.input_tokens}\n")
    err.write(f"-- provider={count.provider} model={count.model} latency={count.latency_ms:.1f}ms "
              f"request_id={count.request_id}\n")


def _print_stream_summary(end: StreamEnd, model: str, provider: str, err: TextIO) -> None:
    usage = end.usage
    err.write(
        f"-- provider={provider} model={model} finish={end.finish_reason} "
        f"tokens={usage.input_tokens}+{usage.output_tokens}{_cache_note(usage)} latency={end.latency_ms:.1f}ms "
        f"first_token={end.first_token_ms:.1f}ms elapsed={end.elapsed_ms:.1f}ms "
        f"attempts={end.client_attempts} request_id={end.request_id}\n"
    )


def _thinking(value: str | None) -> int | str | None:
    if value is None or not value.isdigit():
        return value
    return int(value)


def _schema(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        if value.startswith("@"):
            with open(value[1:], encoding="utf-8") as file:
                value = file.read()
        schema = json.loads(value)
    except (OSError, ValueError) as exc:
        raise _UsageError(f"gatewayctl: error: --schema: {exc}") from None
    if not isinstance(schema, dict):
        raise _UsageError("gatewayctl: error: --schema: a JSON schema is an object")
    return schema


def _document(path: str) -> DocumentBlock:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise _UsageError(f"gatewayctl: error: --document: {exc}") from None
    media_type = "application/pdf" if path.lower().endswith(".pdf") else "text/plain"
    return DocumentBlock(media_type, data, title=os.path.basename(path))


def _conversation(args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    """The messages (with documents), system, thinking, target from the command line."""
    options: dict[str, Any] = {"provider": args.provider, "model": args.model, "request_id": args.request_id,
                               "thinking": _thinking(args.thinking)}
    if args.document:
        options["messages"] = [ChatMessage("user", [*(_document(p) for p in args.document), TextBlock(prompt)])]
    if args.cache_system and args.system:
        options["system"] = [TextBlock(args.system, cache=args.cache_system)]
    else:
        options["system"] = args.system
    return options


def _generate_options(args: argparse.Namespace, metadata: dict[str, str], prompt: str) -> dict[str, Any]:
    """The keyword arguments `generate` and `stream` share, from the command line."""
    return {**_conversation(args, prompt), "max_tokens": args.max_tokens, "temperature": args.temperature,
            "metadata": metadata, "output_schema": _schema(args.schema)}


def _prompt_arg(args: argparse.Namespace, prompt: str) -> str | None:
    """The prompt to pass beside the options: None when they carry it in messages (documents)."""
    return None if args.document else prompt


async def _stream_generate(
    client: GatewayClient, args: argparse.Namespace, prompt: str, metadata: dict[str, str], as_json: bool,
    out: TextIO, err: TextIO,
) -> int:
    events = client.stream(_prompt_arg(args, prompt), **_generate_options(args, metadata, prompt))
    thinking_open = False
    line_open = False  # text written without its final newline
    async with events:
        try:
            async for event in events:
                if as_json:
                    out.write(json.dumps(to_jsonable(event)) + "\n")
                elif isinstance(event, ThinkingDelta):
                    if event.thinking:
                        err.write(("" if thinking_open else "[thinking] ") + event.thinking)
                        thinking_open = True
                    elif thinking_open:
                        err.write("\n")
                        thinking_open = False
                    err.flush()
                elif isinstance(event, TextDelta):
                    out.write(event.text)
                    if event.text:
                        line_open = not event.text.endswith("\n")
                elif isinstance(event, ToolCall):
                    prefix = "\n" if line_open else ""
                    out.write(f"{prefix}[tool_use {event.name} {json.dumps(event.input)} id={event.id}]\n")
                    line_open = False
                out.flush()
        except BaseException:
            if line_open:
                out.write("\n")
                out.flush()
            raise
    if not as_json:
        if line_open:
            out.write("\n")
            out.flush()
        if events.end is not None:
            start = events.start
            _print_stream_summary(events.end, start.model if start else "", start.provider if start else "", err)
    return EXIT_OK


def _print_health(report: HealthReport, out: TextIO) -> None:
    stamp = f" at {report.timestamp.isoformat()}" if report.timestamp else ""
    out.write(f"Gateway: {report.status}{stamp}\n")
    if report.providers:
        rows = [["PROVIDER", "TYPE", "STATUS", "LATENCY", "MODEL", "REGION", "LAST ERROR"]]
        for p in report.providers:
            rows.append([p.name, p.type, p.status, f"{p.latency_ms:.1f}ms", p.default_model,
                         p.region or "-", p.last_error or "-"])
        _table(rows, out)


def _print_providers(listing: ProviderList, out: TextIO) -> None:
    out.write(f"Default provider: {listing.default_provider or '-'}\n")
    out.write(f"Fallback order:   {' -> '.join(listing.fallback_order) or '-'}\n")
    if listing.providers:
        rows = [["PROVIDER", "TYPE", "ENABLED", "CONFIGURED", "DEFAULT MODEL", "REGION", "MODELS"]]
        for p in listing.providers:
            rows.append([p.name, p.type, "yes" if p.enabled else "no", "yes" if p.configured else "no",
                         p.default_model or "-", p.region or "-", ", ".join(p.models) or "-"])
        _table(rows, out)


def _print_status(status: Status, out: TextIO) -> None:
    out.write(f"{status.service} {status.version}: {status.status}\n")
    names = ", ".join(status.providers) or "-"
    out.write(f"Providers: {names} (default: {status.default_provider or '-'})\n")
    if status.worker_pid:
        out.write(f"Answered by: worker {status.worker_id} (pid {status.worker_pid})\n")


async def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    as_json = bool(getattr(args, "json", False))
    if args.command == "keys":
        return _keys(args, as_json, out)
    metadata = _parse_metadata(args.metadata) if args.command == "generate" else {}
    prompt = ""
    if args.command in ("generate", "count"):
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    async with _make_client(args) as client:
        if args.command == "generate" and args.stream:
            return await _stream_generate(client, args, prompt, metadata, as_json, out, err)
        if args.command == "count":
            count = await client.count_tokens(_prompt_arg(args, prompt), **_conversation(args, prompt))
            if as_json:
                json.dump(to_jsonable(count), out, indent=2)
                out.write("\n")
            else:
                _print_count(count, out, err)
            return EXIT_OK
        if args.command == "generate":
            result = await client.generate(_prompt_arg(args, prompt), **_generate_options(args, metadata, prompt))
            if as_json:
                json.dump(to_jsonable(result), out, indent=2)
                out.write("\n")
            else:
                _print_generate(result, out, err)
            return EXIT_OK
        if args.command == "health":
            report = await client.health()
            if as_json:
                json.dump(to_jsonable(report), out, indent=2)
                out.write("\n")
            else:
                _print_health(report, out)
            return EXIT_OK if report.healthy else EXIT_UNHEALTHY
        if args.command == "providers":
            listing = await client.list_providers()
            if as_json:
                json.dump(to_jsonable(listing), out, indent=2)
                out.write("\n")
            else:
                _print_providers(listing, out)
            return EXIT_OK
        if args.command == "usage":
            usage = await client.usage(args.key_name)
            if as_json:
                json.dump(to_jsonable(usage), out, indent=2)
                out.write("\n")
            else:
                _print_usage(usage, out)
            return EXIT_OK
        status = await client.status()
        if as_json:
            json.dump(to_jsonable(status), out, indent=2)
            out.write("\n")
        else:
            _print_status(status, out)
        return EXIT_OK


def _report_error(kind: str, message: str, as_json: bool, out: TextIO, err: TextIO,
                  extra: dict[str, Any] | None = None, json_lines: bool = False) -> None:
    if as_json:
        json.dump({"error": extra or {"error": kind, "message": message}}, out, indent=None if json_lines else 2)
        out.write("\n")
    else:
        err.write(f"gatewayctl: {message}\n")


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run gatewayctl with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    When the reader of the output goes away early (``gatewayctl providers --json | head -1``), it
    stops quietly with status 141 (128 + SIGPIPE, as a writer killed by SIGPIPE), no traceback.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        code = _main(argv, out, err)
        out.flush()  # a closed pipe shows here, not in Python's flush at exit
        return code
    except BrokenPipeError:
        _discard_pending_output(out, err)
        return EXIT_BROKEN_PIPE


def _discard_pending_output(*streams: TextIO) -> None:
    """Point the process's standard streams among ``streams`` at /dev/null, so that Python's own
    flush at exit does not meet the closed pipe again (the recipe of the ``signal`` module's docs)."""
    standard = [s for s in streams if s is sys.stdout or s is sys.stderr or s is sys.__stdout__]
    if not standard:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in standard:
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):  # no file descriptor (replaced or closed stream)
                pass
    finally:
        os.close(devnull)


@contextlib.contextmanager
def _verbose_trace(args: argparse.Namespace, err: TextIO) -> Iterator[None]:
    """-v: the call goes out with a W3C traceparent of a new trace, whose id is printed first."""
    if not getattr(args, "verbose", 0):
        yield
        return
    with new_trace() as trace_id:
        err.write(f"-- trace_id={trace_id}\n")
        yield


def _main(argv: Sequence[str] | None, out: TextIO, err: TextIO) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except _UsageError as exc:
        err.write(parser.format_usage())
        err.write(f"{exc}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int | None) else EXIT_USAGE
    as_json = bool(getattr(args, "json", False))
    lines = bool(getattr(args, "stream", False))  # --json --stream: JSON lines, errors too
    restore_logging = _configure_logging(
        int(getattr(args, "verbose", 0) or 0), bool(getattr(args, "quiet", False)), err
    )
    try:
        with _verbose_trace(args, err):
            return asyncio.run(_run(args, out, err))
    except _UsageError as exc:
        err.write(f"{exc}\n")
        return EXIT_USAGE
    except ConfigError as exc:
        _report_error("ConfigError", f"configuration error: {exc}", as_json, out, err, json_lines=lines)
        return EXIT_USAGE
    except GatewayError as exc:
        _report_error(type(exc).__name__, f"error: {exc}", as_json, out, err, exc.to_dict(), json_lines=lines)
        return exit_code_for_error(exc)
    except KeyboardInterrupt:
        err.write("gatewayctl: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away: main() stops quietly
        raise
    except Exception as exc:  # a bug: say so plainly, with the type
        _report_error(type(exc).__name__, f"unexpected error: {type(exc).__name__}: {exc}", as_json, out, err,
                      json_lines=lines)
        return EXIT_INTERNAL
    finally:
        restore_logging()
