"""Outlier ejection as pure state, on a controllable clock (no sleeps)."""

from __future__ import annotations

import pytest

from gateway_server.outlier import Admission, OutlierDetector, ejection_time
from gateway_server.settings import ConfigError, OutlierDetectionConfig, settings_from_mapping


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def detector(**cfg: float) -> tuple[OutlierDetector, FakeClock]:
    clock = FakeClock()
    settings = OutlierDetectionConfig(**{"consecutive_5xx": 3, "base_ejection_time": 30,  # type: ignore[arg-type]
                                         "max_ejection_time": 100, **cfg})
    return OutlierDetector(["a", "b"], settings, clock), clock


def test_consecutive_failures_eject_and_a_success_resets_the_count() -> None:
    d, clock = detector()
    assert not d.record_failure("a") and not d.record_failure("a")
    d.record_success("a")
    assert not d.record_failure("a") and not d.record_failure("a")
    assert d.admit("a") is Admission.OPEN
    assert d.record_failure("a")  # the third in a row
    assert d.admit("a") is Admission.EJECTED
    assert d.blocked_until("a") == clock.now + 30
    assert d.state("a").ejected and d.state("a").ejections == 1
    assert d.admit("b") is Admission.OPEN  # per provider


def test_half_open_trial_success_brings_it_back_failure_ejects_for_longer() -> None:
    d, clock = detector()
    for _ in range(3):
        d.record_failure("a")
    clock.advance(30)
    assert d.blocked_until("a") is None  # half-open, the trial is free
    assert d.admit("a") is Admission.TRIAL
    assert d.admit("a") is Admission.EJECTED  # one trial at a time
    assert d.record_failure("a")  # the trial failed: ejected again, twice as long
    assert d.blocked_until("a") == clock.now + 60
    clock.advance(60)
    assert d.admit("a") is Admission.TRIAL
    d.record_success("a")
    assert d.admit("a") is Admission.OPEN and not d.state("a").ejected


def test_ejection_time_grows_linearly_is_capped_and_decays_while_healthy() -> None:
    assert [ejection_time(n, 30, 100) for n in (1, 2, 3, 4)] == [30, 60, 90, 100]
    d, clock = detector()
    for _ in range(3):
        d.record_failure("a")
    lengths = []
    for _ in range(4):  # every half-open trial fails
        until = d.blocked_until("a")
        assert until is not None
        lengths.append(until - clock.now)
        clock.advance(until - clock.now)
        assert d.admit("a") is Admission.TRIAL
        d.record_failure("a")
    assert lengths == [30, 60, 90, 100]
    clock.advance(100)
    assert d.admit("a") is Admission.TRIAL
    d.record_success("a")
    clock.advance(90)  # healthy for three base ejection times: the multiplier drops from 5 to 2, then +1
    for _ in range(3):
        d.record_failure("a")
    assert d.state("a").ejections == 3
    assert d.blocked_until("a") == clock.now + 90


def test_failure_ratio_over_the_window_ejects() -> None:
    d, _clock = detector(consecutive_5xx=100, failure_percentage_threshold=50, failure_percentage_request_volume=10,
                         interval=10)
    for _ in range(4):
        d.record_success("a")
        assert not d.record_failure("a")
    d.record_success("a")
    assert d.record_failure("a")  # 5 of 10 within the window
    assert d.admit("a") is Admission.EJECTED


def test_old_outcomes_leave_the_window() -> None:
    d, clock = detector(consecutive_5xx=100, failure_percentage_threshold=50, failure_percentage_request_volume=4,
                         interval=10)
    for _ in range(3):
        d.record_failure("a")
        d.record_success("a")
    clock.advance(11)
    for _ in range(3):
        d.record_success("a")
    assert not d.record_failure("a")  # 1 of 4 recent ones


def test_a_rate_limit_cools_down_for_its_retry_after_capped() -> None:
    d, clock = detector()
    d.cool_down("a", 7)
    assert d.admit("a") is Admission.COOLING and d.blocked_until("a") == clock.now + 7
    assert not d.state("a").ejected and d.state("a").cooling_down
    clock.advance(7)
    assert d.admit("a") is Admission.OPEN
    d.cool_down("a", 10_000)
    assert d.blocked_until("a") == clock.now + 100


def test_a_successful_probe_brings_an_ejected_provider_back() -> None:
    d, _clock = detector()
    for _ in range(3):
        d.record_failure("a")
    d.probe_succeeded("a")
    assert d.admit("a") is Admission.OPEN
    assert d.state("a").ejections == 1  # the multiplier is kept


def test_an_abandoned_trial_frees_the_half_open_slot() -> None:
    d, clock = detector()
    for _ in range(3):
        d.record_failure("a")
    clock.advance(30)
    assert d.admit("a") is Admission.TRIAL
    d.end_trial("a")
    assert d.admit("a") is Admission.TRIAL


def test_disabled_detection_admits_everything() -> None:
    d, _ = detector(enabled=False)  # type: ignore[arg-type]
    for _ in range(10):
        d.record_failure("a")
    assert d.admit("a") is Admission.OPEN and d.blocked_until("a") is None


def test_the_config_section_is_checked_with_one_line_naming_the_field() -> None:
    base = {"providers": {"mock": {"type": "mock"}}, "default_provider": "mock"}
    with pytest.raises(ConfigError, match=r"outlier_detection: max_ejection_time must be at least base_ejection_time"):
        settings_from_mapping({**base, "outlier_detection": {"base_ejection_time": 60, "max_ejection_time": 30}},
                              env_file=None)
    with pytest.raises(ConfigError, match=r"outlier_detection\.consecutive_failures: unknown key"):
        settings_from_mapping({**base, "outlier_detection": {"consecutive_failures": 3}}, env_file=None)
    with pytest.raises(ConfigError, match=r"fallback\.reserve_ratio"):
        settings_from_mapping({**base, "fallback": {"reserve_ratio": 1}}, env_file=None)
