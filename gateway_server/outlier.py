"""Outlier ejection per provider, in the spirit of Envoy's outlier detection.

One ``OutlierDetector`` holds, per provider, what real traffic said about it:

- **consecutive failures** that count against health (timeout, connection failure, 5xx, 529, bad
  response: ``policy.counts_for_ejection``) -> ejected when they reach ``consecutive_5xx``;
- a **failure percentage** over a sliding ``interval`` -> ejected when at least
  ``failure_percentage_request_volume`` calls ended there and the failed share reached
  ``failure_percentage_threshold`` %;
- the **ejection time** is ``base_ejection_time`` x the number of times it was ejected, capped at
  ``max_ejection_time`` (Envoy's multiplier); the count decays by one per ``base_ejection_time`` the
  provider then stays un-ejected;
- when the ejection time is over the provider is **half-open**: one real request (the trial) may
  go; its success brings the provider back, its failure ejects it again for longer. A successful
  token-free health probe also brings it back;
- a **429 with retry-after** cools the provider down for that long (capped), without counting as an
  ejection.

Everything reads time from ``clock`` (monotonic seconds), so tests drive it without sleeping.
The router asks ``admit(name)`` before each attempt; metrics can read ``state(name)``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway_server.settings import OutlierDetectionConfig

Clock = Callable[[], float]


class Admission(enum.Enum):
    OPEN = "open"  # not ejected: go
    TRIAL = "trial"  # half-open: this request is the one trial
    EJECTED = "ejected"  # skip (ejected, or another request holds the half-open trial)
    COOLING = "cooling"  # skip: a 429's retry-after is running


@dataclass(slots=True)
class EjectionState:
    consecutive_failures: int = 0
    ejections: int = 0  # the multiplier: times ejected, decaying while healthy
    ejected_until: float | None = None  # monotonic; None when not ejected
    cooldown_until: float = 0.0  # monotonic
    trial_in_flight: bool = False
    recovered_at: float | None = None  # when it last came back
    window: deque[tuple[float, bool]] = field(default_factory=deque)  # (time, failed)


@dataclass(frozen=True, slots=True)
class EjectionView:
    """What Health, ListProviders and metrics show: ``until`` is monotonic (None: not blocked)."""

    ejected: bool
    until: float | None
    ejections: int
    cooling_down: bool


class OutlierDetector:
    def __init__(self, names: Iterable[str], cfg: OutlierDetectionConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self._states = {name: EjectionState() for name in names}

    # ---- reading ----

    def state(self, name: str) -> EjectionView:
        """The provider's ejection state right now (for Health, ListProviders and metrics)."""
        s = self._states[name]
        now = self.clock()
        ejected = s.ejected_until is not None and now < s.ejected_until
        cooling = now < s.cooldown_until
        until = None
        if ejected:
            until = s.ejected_until
        if cooling:
            until = max(until or 0.0, s.cooldown_until)
        return EjectionView(ejected=ejected, until=until, ejections=s.ejections, cooling_down=cooling)

    def blocked_until(self, name: str) -> float | None:
        """When the provider takes traffic again (monotonic), None when it would be admitted now.

        Read-only: a half-open provider whose trial is free counts as admitted.
        """
        if not self.cfg.enabled:
            return None
        s = self._states[name]
        now = self.clock()
        if now < s.cooldown_until:
            return s.cooldown_until
        if s.ejected_until is None:
            return None
        if now < s.ejected_until:
            return s.ejected_until
        return now if s.trial_in_flight else None

    # ---- the router's side ----

    def admit(self, name: str) -> Admission:
        """May a request go to this provider now? Taking the half-open trial when it is free."""
        if not self.cfg.enabled:
            return Admission.OPEN
        s = self._states[name]
        now = self.clock()
        if now < s.cooldown_until:
            return Admission.COOLING
        if s.ejected_until is None:
            return Admission.OPEN
        if now < s.ejected_until or s.trial_in_flight:
            return Admission.EJECTED
        s.trial_in_flight = True
        return Admission.TRIAL

    def end_trial(self, name: str) -> None:
        """The trial ended without a verdict (cancelled, or a failure that says nothing about the provider)."""
        self._states[name].trial_in_flight = False

    def record_success(self, name: str) -> None:
        s = self._states[name]
        now = self.clock()
        if s.ejected_until is not None:
            s.ejected_until = None
            s.recovered_at = now
        s.trial_in_flight = False
        s.consecutive_failures = 0
        self._observe(s, now, failed=False)

    def record_failure(self, name: str) -> bool:
        """A failure that counts against the provider; True when it ejected the provider just now."""
        s = self._states[name]
        now = self.clock()
        if s.ejected_until is not None:
            if s.trial_in_flight or now >= s.ejected_until:  # the half-open trial failed: longer this time
                s.trial_in_flight = False
                self._eject(s, now)
                return True
            return False  # already ejected (a panic-mode request): nothing more to learn
        s.consecutive_failures += 1
        self._observe(s, now, failed=True)
        if s.consecutive_failures >= self.cfg.consecutive_5xx or self._ratio_exceeded(s):
            self._eject(s, now)
            return True
        return False

    def record_neutral(self, name: str) -> None:
        """An outcome that says nothing about the provider's health (an invalid request, say)."""
        self.end_trial(name)

    def cool_down(self, name: str, seconds: float) -> None:
        """A 429 with retry-after: no traffic for ``seconds`` (capped at max_ejection_time)."""
        s = self._states[name]
        s.trial_in_flight = False
        until = self.clock() + min(seconds, self.cfg.max_ejection_time)
        s.cooldown_until = max(s.cooldown_until, until)

    def probe_succeeded(self, name: str) -> None:
        """A token-free probe answered: an ejected provider is brought back (the multiplier is kept)."""
        s = self._states[name]
        if s.ejected_until is not None and not s.trial_in_flight:
            s.ejected_until = None
            s.recovered_at = self.clock()
            s.consecutive_failures = 0

    # ---- internals ----

    def _observe(self, s: EjectionState, now: float, *, failed: bool) -> None:
        s.window.append((now, failed))
        horizon = now - self.cfg.interval
        while s.window and s.window[0][0] < horizon:
            s.window.popleft()

    def _ratio_exceeded(self, s: EjectionState) -> bool:
        total = len(s.window)
        if total < self.cfg.failure_percentage_request_volume:
            return False
        failed = sum(1 for _, f in s.window if f)
        return 100.0 * failed / total >= self.cfg.failure_percentage_threshold

    def _eject(self, s: EjectionState, now: float) -> None:
        if s.ejections and s.recovered_at is not None:
            healthy_for = max(0.0, now - s.recovered_at)
            s.ejections = max(0, s.ejections - int(healthy_for // self.cfg.base_ejection_time))
        s.ejections += 1
        s.ejected_until = now + ejection_time(s.ejections, self.cfg.base_ejection_time, self.cfg.max_ejection_time)
        s.consecutive_failures = 0
        s.window.clear()


def ejection_time(ejections: int, base: float, cap: float) -> float:
    """Envoy's rule: the base time multiplied by the number of ejections, capped."""
    return min(base * max(1, ejections), cap)
