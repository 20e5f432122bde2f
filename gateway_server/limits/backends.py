"""Where the limiter counts: ``memory`` (one process) and ``redis`` (shared by every replica).

Both run the same two decisions on the same rules, atomically: ``admit`` (check every rule, then
take from the groups whose rules all passed) and ``settle`` (give back or take tokens, free
concurrency slots, add usage). The Redis backend runs limiter.lua, one script call per decision;
the memory backend is that script's Python twin, atomic because it never awaits in between.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, Protocol

KEY_GROUP = 1
PROVIDER_GROUP = 2


@dataclass(frozen=True, slots=True)
class Check:
    """One rule of an admission. ``kind``:

    - ``tb``: token bucket holding ``a`` (per minute, refilled a/60 per second); takes ``b``;
    - ``cc``: concurrency, at most ``a`` calls; a slot's lease ends at epoch time ``b``;
    - ``bg``: budget, passes while the usage hash's ``usd`` is under ``a``; ``b``: seconds to the
      period's end (the wait when it fails);
    - ``ct``: counts the request in a usage hash (field ``req``), which expires after ``a`` seconds.
    """

    kind: Literal["tb", "cc", "bg", "ct"]
    group: int
    key: str
    a: float
    b: float = 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    remaining: float
    wait: float  # seconds until the rule could pass; -1: unknown


@dataclass(frozen=True, slots=True)
class Give:
    """Give ``amount`` tokens back to a bucket of ``capacity`` (negative: take them, going below zero)."""

    key: str
    capacity: float
    amount: float


@dataclass(frozen=True, slots=True)
class Release:
    """Free a call's concurrency slot."""

    key: str
    call_id: str


@dataclass(frozen=True, slots=True)
class Add:
    """Add to fields of a usage hash ((field, amount) pairs); the hash expires ``ttl`` seconds later."""

    key: str
    fields: tuple[tuple[str, float], ...]
    ttl: int


SettleOp = Give | Release | Add


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What ``read`` returns: bucket levels, slots in use, usage hashes."""

    levels: list[float]
    in_flight: list[int]
    usage: list[dict[str, float]]


class BackendError(Exception):
    """The backend could not be reached or did not answer in time."""


class Backend(Protocol):
    name: str

    async def admit(self, checks: Sequence[Check], now: float, call_id: str) -> list[Verdict]: ...

    async def settle(self, ops: Sequence[SettleOp], now: float) -> list[float] | None:
        """Per op the bucket's level after it (0 for others); None: deferred to the next round trip."""

    async def read(self, buckets: Sequence[tuple[str, float]], slots: Sequence[str], hashes: Sequence[str],
                   now: float) -> Snapshot: ...

    async def close(self) -> None: ...


def refill(value: float, stamp: float, capacity: float, now: float) -> float:
    """A token bucket's level now: ``value`` at ``stamp``, refilled capacity/60 per second, at most full."""
    return min(capacity, value + max(0.0, now - stamp) * capacity / 60)


class MemoryBackend:
    """The limiter's state in this process (the default; each worker and replica counts alone)."""

    name = "memory"

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float, float]] = {}  # key -> (level, when, capacity)
        self._slots: dict[str, dict[str, float]] = {}  # key -> call id -> lease expiry
        self._hashes: dict[str, tuple[float, dict[str, float]]] = {}  # key -> (expiry, fields)
        self._ops = 0

    def _level(self, key: str, capacity: float, now: float) -> float:
        state = self._buckets.get(key)
        return capacity if state is None else refill(state[0], state[1], capacity, now)

    def _store(self, key: str, level: float, capacity: float, now: float) -> None:
        self._buckets[key] = (level, now, capacity)

    def _hash(self, key: str, now: float) -> dict[str, float]:
        entry = self._hashes.get(key)
        if entry is None or entry[0] <= now:
            return {}
        return entry[1]

    def _live_slots(self, key: str, now: float) -> dict[str, float]:
        slots = self._slots.setdefault(key, {})
        for call_id in [c for c, expiry in slots.items() if expiry <= now]:
            del slots[call_id]
        return slots

    def admit_now(self, checks: Sequence[Check], now: float, call_id: str) -> list[Verdict]:
        verdicts: list[Verdict] = []
        passed = {KEY_GROUP: True, PROVIDER_GROUP: True}
        for c in checks:
            ok, remaining, wait = True, 0.0, 0.0
            if c.kind == "tb":
                level = self._level(c.key, c.a, now)
                if level >= c.b:
                    remaining = level - c.b
                else:
                    ok, remaining, wait = False, level, (c.b - level) / (c.a / 60)
            elif c.kind == "cc":
                used = len(self._live_slots(c.key, now))
                if used < c.a:
                    remaining = c.a - used - 1
                else:
                    ok, wait = False, -1.0
            elif c.kind == "bg":
                spent = self._hash(c.key, now).get("usd", 0.0)
                if spent < c.a:
                    remaining = c.a - spent
                else:
                    ok, wait = False, c.b
            if not ok:
                passed[c.group] = False
            verdicts.append(Verdict(ok, remaining, wait))
        if not passed[KEY_GROUP]:
            passed[PROVIDER_GROUP] = False
        for c in checks:
            if not passed[c.group]:
                continue
            if c.kind == "tb":
                self._store(c.key, self._level(c.key, c.a, now) - c.b, c.a, now)
            elif c.kind == "cc":
                self._live_slots(c.key, now)[call_id] = c.b
            elif c.kind == "ct":
                fields = self._hash(c.key, now)
                fields["req"] = fields.get("req", 0.0) + 1
                self._hashes[c.key] = (now + c.a, fields)
        self._tick(now)
        return verdicts

    def settle_now(self, ops: Sequence[SettleOp], now: float) -> list[float]:
        out: list[float] = []
        for op in ops:
            remaining = 0.0
            if isinstance(op, Give):
                remaining = min(op.capacity, self._level(op.key, op.capacity, now) + op.amount)
                self._store(op.key, remaining, op.capacity, now)
            elif isinstance(op, Release):
                self._slots.get(op.key, {}).pop(op.call_id, None)
            else:
                fields = self._hash(op.key, now)
                for name, amount in op.fields:
                    fields[name] = fields.get(name, 0.0) + amount
                self._hashes[op.key] = (now + op.ttl, fields)
            out.append(remaining)
        return out

    def _tick(self, now: float) -> None:
        """Forget what has expired, now and then (full buckets, past periods, empty slot sets)."""
        self._ops += 1
        if self._ops % 4096:
            return
        self._hashes = {k: v for k, v in self._hashes.items() if v[0] > now}
        self._slots = {k: v for k, v in self._slots.items() if v}
        self._buckets = {k: v for k, v in self._buckets.items() if refill(v[0], v[1], v[2], now) < v[2]}

    async def admit(self, checks: Sequence[Check], now: float, call_id: str) -> list[Verdict]:
        return self.admit_now(checks, now, call_id)

    async def settle(self, ops: Sequence[SettleOp], now: float) -> list[float] | None:
        return self.settle_now(ops, now)

    async def read(self, buckets: Sequence[tuple[str, float]], slots: Sequence[str], hashes: Sequence[str],
                   now: float) -> Snapshot:
        return Snapshot(levels=[self._level(k, cap, now) for k, cap in buckets],
                        in_flight=[len(self._live_slots(k, now)) for k in slots],
                        usage=[dict(self._hash(k, now)) for k in hashes])

    async def close(self) -> None:
        return None


LUA_SOURCE = resources.files("gateway_server.limits").joinpath("limiter.lua").read_text(encoding="utf-8")


def _settle_json(ops: Sequence[SettleOp]) -> str:
    rules: list[list[Any]] = []
    for op in ops:
        if isinstance(op, Give):
            rules.append(["tb", float(op.capacity), float(op.amount)])
        elif isinstance(op, Release):
            rules.append(["cc", op.call_id])
        else:
            rules.append(["hi", op.ttl, [[name, float(amount)] for name, amount in op.fields]])
    return json.dumps(rules, separators=(",", ":"))


class RedisBackend:
    """The limiter's state in Redis, shared by every replica: one limiter.lua call per decision.

    Settlements (refunds, freed slots, usage) are not a round trip of their own: they travel with the
    next admission this process sends, or after ``flush_delay`` seconds when none comes, so a call
    costs one round trip. Until then the reservation is held a little longer (never less).
    """

    name = "redis"
    MAX_PENDING = 100_000  # settle ops kept while Redis is unreachable; the oldest are dropped

    def __init__(self, url: str, *, timeout: float, flush_delay: float = 0.05, cluster: bool = False) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.cluster import RedisCluster
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError
        from redis.retry import Retry

        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        self._timeout = timeout
        self._flush_delay = flush_delay
        # Short timeouts and no client-side retries: a call never waits on an unreachable Redis for
        # longer than the timeout; the client reconnects by itself on a later command.
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                                   "retry": Retry(NoBackoff(), 0), "decode_responses": True}
        self._redis: Any = (RedisCluster.from_url(url, **options) if cluster
                            else aioredis.Redis.from_url(url, health_check_interval=0, **options))
        self._script: Any = self._redis.register_script(LUA_SOURCE)
        self._pending: list[SettleOp] = []
        self._flusher: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._settled_at = 0.0  # the limiter's clock when the pending settlements were made

    async def _run(self, keys: list[str], args: list[Any]) -> Any:
        try:
            # NOSCRIPT (a restarted Redis) is handled by the script object: it loads the script again.
            async with asyncio.timeout(self._timeout * 3):
                return await self._script(keys=keys, args=args)
        except self._errors as exc:
            raise BackendError(f"{type(exc).__name__}: {exc}") from None

    def _take_pending(self) -> list[SettleOp]:
        pending, self._pending = self._pending, []
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        return pending

    def _put_back(self, ops: list[SettleOp]) -> None:
        self._pending = (ops + self._pending)[-self.MAX_PENDING:]
        self._schedule()

    def _schedule(self) -> None:
        if self._flusher is None and self._pending:
            loop = asyncio.get_running_loop()
            self._flusher = loop.call_later(self._flush_delay, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flusher = None
        task = asyncio.ensure_future(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self, now: float | None = None) -> None:
        """Send the pending settlements now (kept for a later try when Redis does not answer)."""
        pending = self._take_pending()
        if not pending:
            return
        args = ["settle", repr(self._settled_at if now is None else now), "", _settle_json(pending)]
        try:
            await self._run([op.key for op in pending], args)
        except BackendError:
            self._put_back(pending)

    async def admit(self, checks: Sequence[Check], now: float, call_id: str) -> list[Verdict]:
        pending = self._take_pending()
        rules = json.dumps([[c.kind, c.group, float(c.a), float(c.b)] for c in checks], separators=(",", ":"))
        args = ["admit", repr(now), call_id, _settle_json(pending), rules]
        try:
            reply = await self._run([op.key for op in pending] + [c.key for c in checks], args)
        except BackendError:
            self._put_back(pending)
            raise
        return [Verdict(bool(int(ok)), float(remaining), float(wait)) for ok, remaining, wait in reply]

    async def settle(self, ops: Sequence[SettleOp], now: float) -> list[float] | None:
        self._pending.extend(ops)
        self._settled_at = now
        if len(self._pending) > self.MAX_PENDING:
            del self._pending[:-self.MAX_PENDING]
        self._schedule()
        return None

    async def read(self, buckets: Sequence[tuple[str, float]], slots: Sequence[str], hashes: Sequence[str],
                   now: float) -> Snapshot:
        await self.flush(now)
        try:
            async with asyncio.timeout(self._timeout * 3):
                pipe = self._redis.pipeline(transaction=False)
                for key, _ in buckets:
                    pipe.hmget(key, "v", "t")
                for key in slots:
                    pipe.zcount(key, f"({now!r}", "+inf")
                for key in hashes:
                    pipe.hgetall(key)
                replies = await pipe.execute()
        except self._errors as exc:
            raise BackendError(f"{type(exc).__name__}: {exc}") from None
        levels = []
        for (_, capacity), (value, stamp) in zip(buckets, replies, strict=False):
            levels.append(capacity if value is None else refill(float(value), float(stamp), capacity, now))
        rest = replies[len(buckets):]
        in_flight = [int(n) for n in rest[:len(slots)]]
        usage = [{k: float(v) for k, v in h.items()} for h in rest[len(slots):]]
        return Snapshot(levels=levels, in_flight=in_flight, usage=usage)

    async def close(self) -> None:
        await self.flush()
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        await self._redis.aclose()
