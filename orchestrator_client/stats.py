"""Call statistics of a client, as the seed's monitoring snippet reads them.

A call is counted once, when it completes (after all its retries): a success or a failure.
A call the caller cancels is counted in ``total_cancelled`` only. Only the calls that ask the model
count: ``generate`` and ``stream`` (and so the reasoner's ``reason*`` methods). ``health``,
``list_providers`` and ``status`` are not counted, so an orchestrator probing the gateway's health
on the reasoner's client does not skew ``total_requests`` or ``success_rate``.

The counters are updated without an ``await`` in between, so they are exact under any number
of concurrent calls on the client's event loop; a lock also keeps them exact when read or
updated from other threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["ClientStats", "StatsSnapshot"]


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    total_requests: int
    total_failures: int
    consecutive_failures: int
    total_retries: int
    total_attempts: int
    total_cancelled: int
    success_rate: float


class ClientStats:
    """Counters of completed model calls (``generate`` and ``stream``).

    ``success_rate`` is a percentage, ``(total_requests - total_failures) / total_requests *
    100``, and 100.0 before any call has completed (nothing has failed).
    """

    __slots__ = (
        "_lock",
        "consecutive_failures",
        "total_attempts",
        "total_cancelled",
        "total_failures",
        "total_requests",
        "total_retries",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total_requests = 0
        self.total_failures = 0
        self.consecutive_failures = 0
        self.total_retries = 0
        self.total_attempts = 0
        self.total_cancelled = 0

    def record_success(self, attempts: int) -> None:
        with self._lock:
            self.total_requests += 1
            self.consecutive_failures = 0
            self.total_attempts += attempts
            self.total_retries += max(attempts - 1, 0)

    def record_failure(self, attempts: int) -> None:
        with self._lock:
            self.total_requests += 1
            self.total_failures += 1
            self.consecutive_failures += 1
            self.total_attempts += attempts
            self.total_retries += max(attempts - 1, 0)

    def record_cancelled(self, attempts: int) -> None:
        with self._lock:
            self.total_cancelled += 1
            self.total_attempts += attempts
            self.total_retries += max(attempts - 1, 0)

    @property
    def success_rate(self) -> float:
        with self._lock:
            total, failures = self.total_requests, self.total_failures
        if total == 0:
            return 100.0
        return (total - failures) / total * 100.0

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            total, failures = self.total_requests, self.total_failures
            return StatsSnapshot(
                total_requests=total,
                total_failures=failures,
                consecutive_failures=self.consecutive_failures,
                total_retries=self.total_retries,
                total_attempts=self.total_attempts,
                total_cancelled=self.total_cancelled,
                success_rate=100.0 if total == 0 else (total - failures) / total * 100.0,
            )

    def reset(self) -> None:
        with self._lock:
            self.total_requests = self.total_failures = self.consecutive_failures = 0
            self.total_retries = self.total_attempts = self.total_cancelled = 0

    def __repr__(self) -> str:
        s = self.snapshot()
        return (
            f"ClientStats(total_requests={s.total_requests}, total_failures={s.total_failures}, "
            f"consecutive_failures={s.consecutive_failures}, total_retries={s.total_retries}, "
            f"success_rate={s.success_rate:.1f})"
        )
