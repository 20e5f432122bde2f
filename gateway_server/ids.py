"""Per-call identifiers: 32 hex characters (128 random bits), as ``uuid.uuid4().hex`` was, unique across
processes and hosts without coordination.

Drawn from a Mersenne Twister seeded from ``os.urandom`` (re-seeded in every forked child), not from
``os.urandom`` per call: that is a system call which also releases the GIL, handing the event loop's
thread over to the log listener's in the middle of a request. The ids are not secrets (callers see
them, and may choose their own with ``x-request-id``); they only have to be unique.
"""

from __future__ import annotations

import os
import random

__all__ = ["new_id"]

_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)  # never the parent's sequence in a worker
_bits = _random.getrandbits


def new_id() -> str:
    """A new random id: 32 lowercase hex characters."""
    return f"{_bits(128):032x}"
