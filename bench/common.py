"""What the benchmark's processes share: the model name, and dying with the parent."""

from __future__ import annotations

import ctypes
import signal

# config/gateway.yaml's default model (a deprecated one would make the SDK warn on every call).
MODEL = "claude-sonnet-5-5"

_PR_SET_PDEATHSIG = 1

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux/glibc
    _libc = None


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so a killed benchmark leaves no process behind.

    Used as ``preexec_fn`` (runs in the child between fork and exec: one syscall, nothing else).
    """
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

