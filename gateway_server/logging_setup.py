"""Logging set up once at start-up: the seed's text format, or one JSON object per line.

JSON (``GATEWAY_LOG_FORMAT=json``) uses python-json-logger: the time, level, logger and message,
plus the fields a log call passes in ``extra`` (the access log: request_id, trace_id, span_id,
caller, provider, model, input_tokens, output_tokens, cost_usd, latency_ms, attempts).

The event loop never writes to stderr itself: records go through a ``QueueHandler`` to a listener
thread that formats and writes them, in batches: it wakes for a record, lets the records of the next
20 milliseconds join it, and writes them with one ``flush``, so a busy gateway pays one thread
wake-up and one system call per batch instead of per access log line.
``stop_logging()`` (at exit) drains it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import logging.handlers
import queue
import sys
import threading
import time
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_RENAME = {"asctime": "time", "levelname": "level", "name": "logger"}

__all__ = ["JSON_FORMAT", "TEXT_FORMAT", "configure_logging", "json_formatter", "stop_logging", "structured"]

_BATCH_WAIT = 0.02  # seconds a woken listener lets more records join the batch (a line is that late at most)
_STOP = object()  # the sentinel stop_logging() queues

_listener: _BatchListener | None = None
# Whether log records' ``extra`` fields reach the output: only the JSON format writes them, so with
# the text format the access log skips building them. True until configure_logging says otherwise
# (a gateway embedded in another program's logging may have any formatter).
_structured = True


def structured() -> bool:
    """True when the access log's ``extra`` fields may be written (JSON, or logging not configured here)."""
    return _structured


def json_formatter() -> logging.Formatter:
    return JsonFormatter(JSON_FORMAT, rename_fields=JSON_RENAME, datefmt="%Y-%m-%dT%H:%M:%S%z")


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands the record over as it is (the message merged with its args, the traceback as text):
    the listener's formatter does the rest, off the event loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.message = record.getMessage()
        record.msg, record.args = record.message, None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


class _BatchListener:
    """The listener thread: formats the queued records with ``handler``'s formatter and writes them
    to its stream, flushed once a batch."""

    def __init__(self, records: queue.SimpleQueue[object], handler: logging.StreamHandler[TextIO]) -> None:
        self._records = records
        self._handler = handler
        self._thread = threading.Thread(target=self._run, name="gateway-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._records.put_nowait(_STOP)
        self._thread.join()

    def _run(self) -> None:
        get, get_nowait = self._records.get, self._records.get_nowait
        while True:
            batch = [get()]
            if batch[0] is not _STOP:
                time.sleep(_BATCH_WAIT)
            try:
                while True:
                    batch.append(get_nowait())
            except queue.Empty:
                pass
            stop = any(r is _STOP for r in batch)
            self._write([r for r in batch if r is not _STOP])
            if stop:
                return

    def _write(self, batch: list[object]) -> None:
        """The records formatted as StreamHandler.emit would, flushed once for the batch. A stream that
        writes through or by line (stderr) gets the batch in one write: else every line is a system call."""
        handler = self._handler
        lines = []
        for record in batch:
            assert isinstance(record, logging.LogRecord)
            try:
                lines.append(handler.format(record) + handler.terminator)
            except Exception:
                handler.handleError(record)
        if not lines:
            return
        with handler.lock or contextlib.nullcontext():
            stream = handler.stream
            try:
                if getattr(stream, "write_through", False) or getattr(stream, "line_buffering", False):
                    stream.write("".join(lines))
                else:
                    for line in lines:
                        stream.write(line)
                handler.flush()
            except Exception:
                handler.handleError(batch[-1])  # type: ignore[arg-type]


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Root logging to ``stream`` (stderr) through a queue and a listener thread."""
    global _listener, _structured
    stop_logging()
    _structured = fmt == "json"
    # One line per request is on the hot path: skip the caller/thread/process look-ups no format uses.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT, "%Y-%m-%d %H:%M:%S"))
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    _listener = _BatchListener(records, handler)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [_QueueHandler(records)]
    root.setLevel(level)
    # The SDKs' HTTP clients log request lines at INFO; keep them quiet unless debugging.
    for noisy in ("httpx", "httpx2", "botocore", "boto3", "urllib3", "anthropic", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))


def stop_logging() -> None:
    """Write what is queued and stop the listener thread (idempotent)."""
    global _listener, _structured
    _structured = True
    if _listener is not None:
        listener, _listener = _listener, None
        listener.stop()


atexit.register(stop_logging)
