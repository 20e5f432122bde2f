"""Logging set up once at start-up: the seed's text format, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys

TEXT_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str = "text") -> None:
    # One line per request is on the hot path: skip the caller/thread/process look-ups no format uses.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT, "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDKs' HTTP clients log request lines at INFO; keep them quiet unless debugging.
    for noisy in ("httpx", "httpx2", "botocore", "boto3", "urllib3", "anthropic", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
