"""Limits per API key and per provider account, budgets, and the usage behind GetUsage.

The algorithm (README "Keys, limits and budgets"): requests and tokens per minute are token
buckets holding one minute's limit and refilling limit/60 per second (GCRA's continuous refill, so
there is no window edge where twice the limit passes in a moment, and the state is two numbers per
bucket). A call reserves before it is sent: one request and its input-token estimate plus its
``max_tokens`` (capped at the bucket's size, so a key whose limit is under one request's
reservation still admits a request when its bucket is full: no 429 on the first call), a
concurrency slot, and checks the key's budgets. All rules of the key are checked and taken in one
atomic decision together with the first provider's; a provider at its limit is skipped and the
fallback asks the next one. After the call the reservation is settled with the real usage (a
refund, or a debt when the answer took more: the bucket goes below zero and later calls wait);
a failed call gives its tokens back and keeps its request counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from gateway_server.auth import ANONYMOUS, Caller, KeyRing, Scope
from gateway_server.errors import GatewayError
from gateway_server.ids import new_id
from gateway_server.limits.backends import (
    KEY_GROUP,
    PROVIDER_GROUP,
    Add,
    Backend,
    BackendError,
    Check,
    Give,
    MemoryBackend,
    RedisBackend,
    Release,
    SettleOp,
    Verdict,
)
from gateway_server.pricing import ModelPrice, PriceTable, TokenUsage
from gateway_server.providers.base import ImagePart, ProviderRequest, TextPart, ToolResultPart, ToolUsePart
from gateway_server.settings import GatewaySettings, LimitSettings

log = logging.getLogger("gateway_server.limits")

REMAINING_REQUESTS = "x-ratelimit-remaining-requests"
REMAINING_TOKENS = "x-ratelimit-remaining-tokens"
MINUTE_TTL = 180
DAY_TTL = 3 * 86400
MONTH_TTL = 33 * 86400
IMAGE_TOKENS = 1600  # a typical image's input tokens

# (model, input tokens, output tokens) -> USD
Pricer = Callable[[str, int, int], float]


def table_pricer(prices: Mapping[str, ModelPrice]) -> Pricer:
    """A Pricer from the gateway's price table (config ``pricing``, pricing.py): a model not in it costs 0."""
    table = PriceTable(prices)

    def price(model: str, input_tokens: int, output_tokens: int) -> float:
        return table.cost_usd(model, TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens))[0]

    return price


def estimate_input_tokens(request: ProviderRequest) -> int:
    """A deliberately high estimate of a request's input tokens: a token per 3 characters of text
    (English averages ~4), a few per message, a typical image's count per image."""
    chars = len(request.system)
    images = 0
    for message in request.messages:
        for part in message.all_parts():
            if isinstance(part, TextPart):
                chars += len(part.text)
            elif isinstance(part, ImagePart):
                images += 1
            elif isinstance(part, ToolUsePart):
                chars += len(part.name) + len(str(part.input))
            elif isinstance(part, ToolResultPart):
                chars += len(part.content)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(str(tool.input_schema))
    return math.ceil(chars / 3) + 4 * len(request.messages) + IMAGE_TOKENS * images


@dataclass(frozen=True, slots=True)
class Periods:
    """The UTC minute, day and month of a moment, and when the day and the month end (epoch seconds)."""

    minute: str
    day: str
    month: str
    day_end: float
    month_end: float


_last_periods: tuple[int, Periods] | None = None


def periods(now: float) -> Periods:
    """The periods of ``now`` (computed once per minute: the labels change only at a minute's edge)."""
    global _last_periods
    minute_index = int(now // 60)
    cached = _last_periods
    if cached is not None and cached[0] == minute_index:
        return cached[1]
    t = datetime.fromtimestamp(minute_index * 60, UTC)
    day_start = t.replace(hour=0, minute=0)
    next_month = (day_start.replace(day=1) + timedelta(days=32)).replace(day=1)
    p = Periods(minute=t.strftime("%Y-%m-%dT%H:%M"), day=t.strftime("%Y-%m-%d"), month=t.strftime("%Y-%m"),
                day_end=(day_start + timedelta(days=1)).timestamp(), month_end=next_month.timestamp())
    _last_periods = (minute_index, p)
    return p


def _fmt(value: float) -> str:
    return f"{value:g}" if value < 1e15 else str(int(value))


class Limiter:
    """The limits of every caller and provider, on one backend. ``call()`` starts one call's accounting."""

    def __init__(self, settings: GatewaySettings, backend: Backend, keys: KeyRing, scope: Scope, *,
                 pricer: Pricer | None = None, clock: Callable[[], float] = time.time) -> None:
        rl = settings.rate_limit
        self.backend = backend
        self.keys = keys
        self.scope = scope
        self.clock = clock
        self.pricer = pricer or table_pricer(settings.pricing)
        self._default = (LimitSettings(requests_per_minute=rl.requests_per_minute,
                                       tokens_per_minute=rl.tokens_per_minute) if rl.enabled else None)
        self._providers = {name: lim for name, lim in rl.providers.items()
                           if lim.requests_per_minute or lim.tokens_per_minute or lim.max_concurrent}
        self._fail_closed = rl.on_failure == "fail_closed"
        self._retry_interval = rl.redis.retry_interval
        self._lease = rl.concurrency_lease
        self._default_retry_after = settings.server.default_retry_after
        self._prefix = "{" + rl.redis.key_prefix + "}"
        self._names: dict[tuple[str, str, str], str] = {}
        self._down = False
        self._retry_at = 0.0
        self.backend_errors = 0
        self._errors_metric: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: GatewaySettings, keys: KeyRing, scope: Scope) -> Limiter:
        rl = settings.rate_limit
        backend: Backend
        if rl.backend == "redis":
            backend = RedisBackend(rl.redis.url, timeout=rl.redis.timeout_ms / 1000, cluster=rl.redis.cluster)
        else:
            backend = MemoryBackend()
        return cls(settings, backend, keys, scope)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Count backend failures in ``registry`` (gateway_rate_limiter_backend_errors_total)."""
        self._errors_metric = Counter(
            "gateway_rate_limiter_backend_errors", "Calls to the rate limiter's backend that failed "
            "(unreachable or timed out)", ["backend"], registry=registry).labels(self.backend.name)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.backend.close()

    # ---- one call ----

    def limits_of(self, caller: Caller) -> LimitSettings | None:
        return caller.limits if caller.limits is not None else self._default

    def call(self, caller: Caller | None = None, context: grpc.aio.ServicerContext[Any, Any] | None = None
             ) -> CallQuota:
        """One call's accounting. With ``context``, whatever it holds when the RPC ends (a cancelled
        call) is given back."""
        quota = CallQuota(self, caller or ANONYMOUS)
        if context is not None and quota.active:
            context.add_done_callback(quota.on_rpc_done)  # type: ignore[arg-type]  # the stub wants its class
        return quota

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def key_name(self, kind: str, owner: str, what: str) -> str:
        """The backend's key of a caller's ("k"), provider's ("p") or usage ("u") record, hash-tagged."""
        name = self._names.get((kind, owner, what))
        if name is None:
            if len(self._names) > 10_000:  # usage keys change every minute: keep the cache small
                self._names.clear()
            name = self._names[(kind, owner, what)] = f"{self._prefix}:{kind}:{owner}:{what}"
        return name

    def provider_checks(self, provider: str, tokens: float, now: float) -> list[Check]:
        lim = self._providers.get(provider)
        if lim is None:
            return []
        checks: list[Check] = []
        if lim.requests_per_minute:
            checks.append(Check("tb", PROVIDER_GROUP, self.key_name("p", provider, "rpm"), lim.requests_per_minute, 1))
        if lim.tokens_per_minute:
            checks.append(Check("tb", PROVIDER_GROUP, self.key_name("p", provider, "tpm"), lim.tokens_per_minute,
                                min(tokens, lim.tokens_per_minute)))
        if lim.max_concurrent:
            checks.append(Check("cc", PROVIDER_GROUP, self.key_name("p", provider, "cc"), lim.max_concurrent,
                                now + self._lease))
        return checks

    def has_provider_limits(self) -> bool:
        return bool(self._providers)

    async def decide(self, checks: list[Check], now: float, call_id: str) -> list[Verdict] | None:
        """The backend's verdicts; None when it is unreachable and calls fail open."""
        if self._down and time.monotonic() < self._retry_at:
            self._unreachable()
            return None
        try:
            verdicts = await self.backend.admit(checks, now, call_id)
        except BackendError as exc:
            self._failed(exc)
            self._unreachable()
            return None
        self._recovered()
        return verdicts

    async def settle(self, ops: list[SettleOp], now: float) -> list[float] | None:
        """Per op the backend's value (a bucket's level); None when deferred, unreachable or nothing to do."""
        if not ops or (self._down and time.monotonic() < self._retry_at):
            return None
        try:
            values = await self.backend.settle(ops, now)
        except BackendError as exc:
            self._failed(exc)
            return None
        self._recovered()
        return values

    def _failed(self, exc: BackendError) -> None:
        self.backend_errors += 1
        if self._errors_metric is not None:
            self._errors_metric.inc()
        self._retry_at = time.monotonic() + self._retry_interval
        if not self._down:
            self._down = True
            log.error("Rate limiter backend '%s' unreachable (%s): calls are %s until it answers again",
                      self.backend.name, exc, "refused" if self._fail_closed else "admitted without limits")

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            log.warning("Rate limiter backend '%s' answers again: limits enforced", self.backend.name)

    def _unreachable(self) -> None:
        """Fail closed: raise UNAVAILABLE; fail open: return (the call goes without limits)."""
        if self._fail_closed:
            raise GatewayError(grpc.StatusCode.UNAVAILABLE, "RATE_LIMITER_UNAVAILABLE",
                               "the gateway's rate limiter is unreachable and calls are refused until it is back",
                               retry_after=max(self._retry_interval, 0.1))

    @property
    def available(self) -> bool:
        return not self._down

    # ---- usage ----

    async def usage(self, name: str = "") -> tuple[list[KeyReport], bool]:
        """Each key's usage (or one key's); False when the backend could not be read."""
        callers: Iterable[Caller] = self.keys.callers
        if name:
            one = self.keys.get(name)
            if one is None:
                raise GatewayError(grpc.StatusCode.NOT_FOUND, "UNKNOWN_KEY", f"key: no API key is named '{name}'",
                                   field="key")
            callers = [one]
        callers = list(callers)
        now = self.clock()
        p = periods(now)
        buckets: list[tuple[str, float]] = []
        slots: list[str] = []
        hashes: list[str] = []
        for c in callers:
            lim = self.limits_of(c)
            buckets.append((self.key_name("k", c.name, "rpm"), float((lim and lim.requests_per_minute) or 1)))
            buckets.append((self.key_name("k", c.name, "tpm"), float((lim and lim.tokens_per_minute) or 1)))
            slots.append(self.key_name("k", c.name, "cc"))
            hashes += [self.key_name("u", c.name, "m:" + p.minute), self.key_name("u", c.name, "d:" + p.day),
                       self.key_name("u", c.name, "M:" + p.month)]
        available = True
        try:
            snap = await self.backend.read(buckets, slots, hashes, now)
        except BackendError as exc:
            self._failed(exc)
            available = False
            reports = [KeyReport(c, p, {}, {}, {}, [], 0) for c in callers]
            return reports, available
        reports = []
        for i, c in enumerate(callers):
            lim = self.limits_of(c)
            minute, day, month = snap.usage[3 * i: 3 * i + 3]
            in_flight = snap.in_flight[i]
            status: list[tuple[str, float, float]] = []
            if lim is not None and lim.requests_per_minute:
                status.append(("requests_per_minute", lim.requests_per_minute, max(0.0, snap.levels[2 * i])))
            if lim is not None and lim.tokens_per_minute:
                status.append(("tokens_per_minute", lim.tokens_per_minute, max(0.0, snap.levels[2 * i + 1])))
            if lim is not None and lim.max_concurrent:
                status.append(("max_concurrent", lim.max_concurrent, max(0, lim.max_concurrent - in_flight)))
            if c.budget.daily_usd:
                status.append(("daily_usd", c.budget.daily_usd, max(0.0, c.budget.daily_usd - day.get("usd", 0.0))))
            if c.budget.monthly_usd:
                status.append(("monthly_usd", c.budget.monthly_usd,
                               max(0.0, c.budget.monthly_usd - month.get("usd", 0.0))))
            reports.append(KeyReport(c, p, minute, day, month, status, in_flight))
        return reports, available


@dataclass(frozen=True, slots=True)
class KeyReport:
    caller: Caller
    periods: Periods
    minute: dict[str, float]
    day: dict[str, float]
    month: dict[str, float]
    limits: list[tuple[str, float, float]]
    in_flight: int


@dataclass(slots=True)
class _Hold:
    """What a call holds of one provider's limits."""

    skip: tuple[str, str] | None
    tokens: float = 0.0
    capacity: float = 0.0
    slot: bool = False


class CallQuota:
    """One call's reservations: ``admit`` before routing, ``admit_provider`` for each provider the
    router is about to call, then ``settle`` with the real usage or ``release`` on failure."""

    def __init__(self, limiter: Limiter, caller: Caller) -> None:
        self._limiter = limiter
        self.caller = caller
        self._limits = limiter.limits_of(caller)
        self._budget = caller.budget if (caller.budget.daily_usd or caller.budget.monthly_usd) else None
        # The anonymous caller of an open gateway without limits: nothing to count.
        self.active = not caller.anonymous or self._limits is not None or limiter.has_provider_limits()
        self._call_id = ""  # made on first use: most calls never need one
        self._open = False
        self._tokens = 0.0  # reserved of the key's tokens per minute
        self._slot = False
        self._need = 0.0
        self._holds: dict[str, _Hold] = {}
        self._provider_wait: float | None = None
        self._remaining_requests: float | None = None
        self._remaining_tokens: float | None = None

    @property
    def _id(self) -> str:
        """This call's id in the backend's concurrency slots (unique across processes)."""
        if not self._call_id:
            self._call_id = new_id()
        return self._call_id

    def _key(self, what: str) -> str:
        return self._limiter.key_name("k", self.caller.name, what)

    def on_rpc_done(self, _context: Any) -> None:
        """The RPC ended (grpc's done callback): release what a cancelled call still holds."""
        if self._open:
            self._limiter._in_background(self.release())

    def _usage_key(self, period: str) -> str:
        return self._limiter.key_name("u", self.caller.name, period)

    async def admit(self, request: ProviderRequest, provider: str, model: str) -> None:
        """Reserve the key's share and the first provider's, or raise RESOURCE_EXHAUSTED (key limits,
        budget) / UNAVAILABLE (the backend is unreachable and calls fail closed)."""
        if not self.active:
            return
        lim = self._limits
        now = self._limiter.clock()
        estimate = estimate_input_tokens(request)
        self._need = need = float(estimate + request.max_tokens)
        checks: list[Check] = []
        if lim is not None and lim.requests_per_minute:
            checks.append(Check("tb", KEY_GROUP, self._key("rpm"), lim.requests_per_minute, 1))
        if lim is not None and lim.tokens_per_minute:
            if estimate > lim.tokens_per_minute:
                raise self._quota_error(
                    "KEY_RATE_LIMITED", "tokens_per_minute", lim.tokens_per_minute, None,
                    f"the request's input (about {estimate} tokens) is more than the {lim.tokens_per_minute} "
                    f"tokens per minute API key '{self.caller.name}' may use: it can never pass")
            self._tokens = min(need, lim.tokens_per_minute)
            checks.append(Check("tb", KEY_GROUP, self._key("tpm"), lim.tokens_per_minute, self._tokens))
        if lim is not None and lim.max_concurrent:
            checks.append(Check("cc", KEY_GROUP, self._key("cc"), lim.max_concurrent, now + self._limiter._lease))
        p = periods(now)
        if self._budget is not None and self._budget.daily_usd:
            checks.append(Check("bg", KEY_GROUP, self._usage_key("d:" + p.day), self._budget.daily_usd,
                                p.day_end - now))
        if self._budget is not None and self._budget.monthly_usd:
            checks.append(Check("bg", KEY_GROUP, self._usage_key("M:" + p.month), self._budget.monthly_usd,
                                p.month_end - now))
        key_rules = len(checks)
        if not self.caller.anonymous:
            checks += [Check("ct", KEY_GROUP, self._usage_key("m:" + p.minute), MINUTE_TTL),
                       Check("ct", KEY_GROUP, self._usage_key("d:" + p.day), DAY_TTL),
                       Check("ct", KEY_GROUP, self._usage_key("M:" + p.month), MONTH_TTL)]
        first = provider or self._limiter.scope.default_provider
        provider_checks = self._limiter.provider_checks(first, need, now)
        checks += provider_checks
        if not checks:
            return
        verdicts = await self._limiter.decide(checks, now, self._id)
        if verdicts is None:  # fail open
            return
        key_verdicts = verdicts[:key_rules]
        for c, v in zip(checks[:key_rules], key_verdicts, strict=True):
            if c.kind == "tb" and c.key.endswith(":rpm"):
                self._remaining_requests = v.remaining
            elif c.kind == "tb":
                self._remaining_tokens = v.remaining
        failed = [(c, v) for c, v in zip(checks[:key_rules], key_verdicts, strict=True) if not v.ok]
        if failed:
            raise self._refusal(failed)
        self._open = True
        self._slot = lim is not None and bool(lim.max_concurrent)
        if provider_checks:
            self._hold(first, provider_checks, verdicts[-len(provider_checks):])

    def _hold(self, provider: str, checks: list[Check], verdicts: list[Verdict]) -> _Hold:
        failed = [(c, v) for c, v in zip(checks, verdicts, strict=True) if not v.ok]
        if failed:
            waits = [v.wait for _, v in failed if v.wait >= 0]
            wait = max(waits) if waits else self._limiter._default_retry_after
            if self._provider_wait is None or wait < self._provider_wait:
                self._provider_wait = wait
            what = ", ".join(_LIMIT_WORDS[_limit_name(c)] for c, _ in failed)
            hold = _Hold(skip=("PROVIDER_RATE_LIMITED",
                               f"the gateway's limit of provider '{provider}' is reached ({what}); "
                               f"it could pass in {wait:.1f}s"))
        else:
            tpm = next((c for c in checks if c.key.endswith(":tpm")), None)
            hold = _Hold(skip=None, tokens=tpm.b if tpm else 0.0, capacity=tpm.a if tpm else 0.0,
                         slot=any(c.kind == "cc" for c in checks))
            self._open = True
        self._holds[provider] = hold
        return hold

    async def admit_provider(self, provider: str, model: str) -> tuple[str, str] | None:
        """The router's hook before it calls ``provider`` with ``model``: (reason, message) to skip it."""
        skip = self._limiter.scope.skip(self.caller, provider, model)
        if skip is not None:
            return skip
        held = self._holds.get(provider)
        if held is not None:
            return held.skip
        now = self._limiter.clock()
        checks = self._limiter.provider_checks(provider, self._need, now)
        if not checks:
            return None
        verdicts = await self._limiter.decide(checks, now, self._id)
        if verdicts is None:
            return None
        return self._hold(provider, checks, verdicts).skip

    def _settle_ops(self, answered: str | None, used: int) -> list[SettleOp]:
        ops: list[SettleOp] = []
        lim = self._limits
        if self._tokens and lim is not None and lim.tokens_per_minute:
            ops.append(Give(self._key("tpm"), lim.tokens_per_minute, self._tokens - used))
        if self._slot:
            ops.append(Release(self._key("cc"), self._id))
        for provider, hold in self._holds.items():
            if hold.skip is not None:
                continue
            if hold.tokens:
                back = hold.tokens - used if provider == answered else hold.tokens
                ops.append(Give(self._limiter.key_name("p", provider, "tpm"), hold.capacity, back))
            if hold.slot:
                ops.append(Release(self._limiter.key_name("p", provider, "cc"), self._id))
        return ops

    async def settle(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> None:
        """The call succeeded: charge the real usage (tokens, spend) and free what it held."""
        if not self.active:
            return
        used = input_tokens + output_tokens
        ops = self._settle_ops(provider, used) if self._open else []
        self._open = False
        if not self.caller.anonymous:
            now = self._limiter.clock()
            p = periods(now)
            cost = self._limiter.pricer(model, input_tokens, output_tokens)
            fields: tuple[tuple[str, float], ...] = (("in", input_tokens), ("out", output_tokens))
            if cost:
                fields += (("usd", cost),)
            for period, ttl in (("m:" + p.minute, MINUTE_TTL), ("d:" + p.day, DAY_TTL), ("M:" + p.month, MONTH_TTL)):
                ops.append(Add(self._usage_key(period), fields, ttl))
        await self._apply(ops)

    async def release(self) -> None:
        """The call failed or was cancelled: give back its tokens and slots (its request stays counted)."""
        if not self._open:
            return
        self._open = False
        await self._apply(self._settle_ops(None, 0))

    async def _apply(self, ops: list[SettleOp]) -> None:
        values = await self._limiter.settle(ops, self._limiter.clock())
        tpm = self._key("tpm")
        for i, op in enumerate(ops):
            if isinstance(op, Give) and op.key == tpm:
                if values is not None:
                    self._remaining_tokens = values[i]
                elif self._remaining_tokens is not None:  # deferred: what this call knows of the bucket
                    self._remaining_tokens = min(op.capacity, self._remaining_tokens + op.amount)

    def trailers(self) -> tuple[tuple[str, str], ...]:
        """The key's remaining quota, for the call's trailing metadata."""
        out: list[tuple[str, str]] = []
        if self._remaining_requests is not None:
            out.append((REMAINING_REQUESTS, str(max(0, math.floor(self._remaining_requests)))))
        if self._remaining_tokens is not None:
            out.append((REMAINING_TOKENS, str(max(0, math.floor(self._remaining_tokens)))))
        return tuple(out)

    def explain(self, err: GatewayError) -> GatewayError:
        """A call that found no provider because every one it could use was at its limit:
        RESOURCE_EXHAUSTED (PROVIDER_RATE_LIMITED) with the wait, instead of NO_USABLE_PROVIDER."""
        if err.reason != "NO_USABLE_PROVIDER" or self._provider_wait is None:
            return err
        limited = [a.provider for a in err.attempts if a.reason == "PROVIDER_RATE_LIMITED"]
        if not limited:
            return err
        better = GatewayError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "PROVIDER_RATE_LIMITED",
            f"every provider this call could use is at the gateway's limit for it ({', '.join(limited)}); "
            f"retry in {self._provider_wait:.1f}s",
            retry_after=max(self._provider_wait, 0.001), metadata={"providers": ",".join(limited)})
        better.attempts = err.attempts
        return better

    def _refusal(self, failed: list[tuple[Check, Verdict]]) -> GatewayError:
        # A budget outranks concurrency, which outranks the rates; the longest wait first (the call
        # can pass only when every rule does).
        order = {"bg": 0, "cc": 1, "tb": 2}
        failed.sort(key=lambda cv: (order[cv[0].kind], -cv[1].wait))
        check, verdict = failed[0]
        name = _limit_name(check)
        if check.kind == "bg":
            reason = "KEY_BUDGET_EXCEEDED"
            message = (f"API key '{self.caller.name}' has spent its {_LIMIT_WORDS[name]} of "
                       f"${check.a:g}; it renews in {verdict.wait:.0f}s")
            wait = verdict.wait
        elif check.kind == "cc":
            reason = "KEY_CONCURRENCY_LIMITED"
            wait = self._limiter._default_retry_after
            message = (f"API key '{self.caller.name}' already has {check.a:g} calls in flight "
                       f"(its {_LIMIT_WORDS[name]}); retry when one ends")
        else:
            reason = "KEY_RATE_LIMITED"
            wait = max(v.wait for c, v in failed if c.kind == "tb")
            words = " and ".join(f"{c.a:g} {_LIMIT_WORDS[_limit_name(c)]}" for c, _ in failed)
            message = f"API key '{self.caller.name}' is over its limit of {words}; retry in {wait:.2f}s"
        return self._quota_error(reason, name, check.a, wait, message)

    def _quota_error(self, reason: str, name: str, limit: float, wait: float | None, message: str) -> GatewayError:
        return GatewayError(grpc.StatusCode.RESOURCE_EXHAUSTED, reason, message,
                            retry_after=None if wait is None else max(wait, 0.001),
                            metadata={"key": self.caller.name, "limit_name": name, "limit": _fmt(limit)})


def _limit_name(check: Check) -> str:
    if check.kind == "cc":
        return "max_concurrent"
    if check.kind == "bg":
        return "daily_usd" if ":d:" in check.key else "monthly_usd"
    return "requests_per_minute" if check.key.endswith(":rpm") else "tokens_per_minute"


_LIMIT_WORDS = {
    "requests_per_minute": "requests per minute",
    "tokens_per_minute": "tokens per minute",
    "max_concurrent": "concurrent calls",
    "daily_usd": "daily budget",
    "monthly_usd": "monthly budget",
}
