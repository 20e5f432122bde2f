"""Routing and fallback: which providers a request goes to, in what order, within the deadline.

The chain is the requested (or default) provider, then ``fallback.fallback_order`` (when fallback
is enabled), skipping disabled and unconfigured providers, at most ``max_fallback_attempts``
providers in all. Each provider may be re-tried (``max_retries``) on fast transient failures.
What falls back and what retries is decided by policy.py; this module only applies it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import grpc

from gateway_server import policy
from gateway_server.errors import ErrorKind, GatewayError, ProviderError
from gateway_server.health import HealthMonitor
from gateway_server.model_aliases import ModelResolver
from gateway_server.outlier import Admission
from gateway_server.providers import Provider, ProviderRequest, ProviderResponse
from gateway_server.providers.base import StreamDone, StreamEvent, TextDelta
from gateway_server.settings import GatewaySettings
from modelgateway.v1 import model_gateway_pb2 as pb

log = logging.getLogger("gateway_server.router")

T = TypeVar("T")
# Consulted before a provider is called with a model: (reason, message) to skip it, e.g. a provider
# at the gateway's own limit for it (PROVIDER_RATE_LIMITED) or outside the caller's scope.
Admit = Callable[[str, str], Awaitable[tuple[str, str] | None]]


@dataclass(slots=True)
class StreamStarted:
    """The first item of a routed stream: who answers, and the attempts it took."""

    provider: str
    model: str
    attempts: list[pb.Attempt]
    first_token_ms: float


@dataclass(slots=True)
class RouteResult:
    response: ProviderResponse
    provider: str
    attempts: list[pb.Attempt]


@dataclass(slots=True)
class CountResult:
    input_tokens: int
    provider: str
    attempts: list[pb.Attempt]


def _with_attempts(err: GatewayError, attempts: list[pb.Attempt]) -> GatewayError:
    err.attempts = attempts
    return err


class Router:
    def __init__(self, settings: GatewaySettings, providers: Mapping[str, Provider], health: HealthMonitor) -> None:
        self._providers = providers
        self._health = health
        self._models = ModelResolver(settings.model_aliases)
        fb = settings.fallback
        self._fallback_enabled = fb.enabled
        self._fallback_order = tuple(fb.fallback_order)
        self._max_providers = fb.max_fallback_attempts if fb.enabled else 1
        self._retry_original = fb.retry_original
        self._on_invalid = fb.on_invalid_request
        srv = settings.server
        self._margin = srv.deadline_margin_ms / 1000
        self._min_attempt = srv.min_attempt_ms / 1000
        self._default_retry_after = srv.default_retry_after
        self._backoff = srv.retry_backoff
        self._backoff_max = srv.retry_backoff_max
        self._reserve_ratio = fb.reserve_ratio
        self._substitute_default = fb.substitute_default_model
        self._budget_percent = settings.retry_budget.budget_percent
        self._min_retry_concurrency = settings.retry_budget.min_retry_concurrency
        # The gateway-wide retry budget's counters (one event loop: plain ints).
        self._active_calls = 0
        self._active_retries = 0
        self.default_provider = self._effective_default(settings)
        # The chain for each possible first provider, computed once (and its providers, once each).
        self._chains = {name: self._chain(name) for name in providers}
        self._distinct = {name: tuple(dict.fromkeys(chain)) for name, chain in self._chains.items()}

    def _effective_default(self, settings: GatewaySettings) -> str:
        default = settings.default_provider
        if settings.mock_when_unconfigured and not any(
            p.usable for p in self._providers.values() if p.type != "mock"
        ):
            mock = next((n for n, p in self._providers.items() if p.type == "mock" and p.usable), None)
            if mock is not None and mock != default:
                log.warning("No provider has credentials: serving from the mock provider '%s' "
                            "(set GATEWAY_ANTHROPIC_API_KEY or AWS credentials for real answers)", mock)
                return mock
        return default

    def _chain(self, first: str) -> tuple[str, ...]:
        if not self._fallback_enabled:
            return (first,)
        chain = [first, *(n for n in self._fallback_order if n != first)]
        if self._retry_original:
            chain.append(first)
        return tuple(chain)

    @property
    def fallback_order(self) -> tuple[str, ...]:
        return self._fallback_order if self._fallback_enabled else ()

    def check_target(self, provider: str, model: str) -> None:
        """Reject an unknown provider or model before anything is sent (NOT_FOUND, naming the field)."""
        if provider and provider not in self._providers:
            raise GatewayError(grpc.StatusCode.NOT_FOUND, "UNKNOWN_PROVIDER",
                               f"provider: '{provider}' is not a configured provider "
                               f"({', '.join(self._providers)})", field="provider")
        if model and not self._models.knows(model):
            first = self._providers[provider or self.default_provider]
            if first.models and model not in first.models:
                raise GatewayError(grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL",
                                   f"model: '{model}' is not a model of provider '{first.name}' "
                                   f"nor a configured alias", field="model",
                                   metadata={"provider": first.name})

    async def generate(self, request: ProviderRequest, *, provider: str, model: str,
                       deadline: float | None, admit: Admit | None = None) -> RouteResult:
        """Run the chain. ``deadline`` is an event-loop time (loop.time()), None for no deadline."""

        async def call(p: Provider, target_model: str, timeout: float) -> ProviderResponse:
            return await p.generate(request, target_model, timeout)

        response, name, attempts = await self._run_chain(request, provider, model, deadline, call,
                                                         lambda p: p.timeout, admit=admit)
        if response.model and response.model != attempts[-1].model:
            attempts[-1].model = response.model
        return RouteResult(response=response, provider=name, attempts=attempts)

    async def count_tokens(self, request: ProviderRequest, *, provider: str, model: str,
                           deadline: float | None) -> CountResult:
        """Count the request's input tokens through the same chain as generate (retries, fallback)."""

        async def call(p: Provider, target_model: str, timeout: float) -> int:
            return await p.count_tokens(request, target_model, timeout)

        tokens, name, attempts = await self._run_chain(request, provider, model, deadline, call, lambda p: p.timeout)
        return CountResult(input_tokens=tokens, provider=name, attempts=attempts)

    async def stream(self, request: ProviderRequest, *, provider: str, model: str,
                     deadline: float | None, admit: Admit | None = None
                     ) -> AsyncGenerator[StreamStarted | StreamEvent, None]:
        """Stream through the chain: fall back until the first content event, never after it.

        Yields one StreamStarted, the provider's content events, then its StreamDone. A failure after
        the first content event raises GatewayError UNAVAILABLE / STREAM_INTERRUPTED naming what was
        delivered; closing this iterator closes the provider's stream.
        """
        loop = asyncio.get_running_loop()
        started = time.perf_counter()

        async def call(p: Provider, target_model: str, timeout: float) -> tuple[AsyncGenerator[StreamEvent, None],
                                                                                   StreamEvent]:
            upstream = p.stream(request, target_model, timeout)
            try:
                return upstream, await anext(upstream)
            except StopAsyncIteration:
                raise ProviderError(ErrorKind.MALFORMED_RESPONSE, "empty stream") from None
            except BaseException:
                await upstream.aclose()
                raise

        (upstream, event), name, attempts = await self._run_chain(
            request, provider, model, deadline, call, lambda p: p.first_token_timeout, admit=admit)
        p = self._providers[name]
        first_token_ms = (time.perf_counter() - started) * 1000
        stream_deadline = loop.time() + p.stream_timeout
        caller_bound = deadline is not None and deadline - self._margin < stream_deadline
        if deadline is not None:
            stream_deadline = min(stream_deadline, deadline - self._margin)
        events = chars = 0
        try:
            yield StreamStarted(provider=name, model=attempts[-1].model, attempts=attempts,
                                first_token_ms=first_token_ms)
            while True:
                if isinstance(event, StreamDone):
                    yield event
                    return
                yield event
                events += 1
                chars += len(event.text) if isinstance(event, TextDelta) else 0
                try:
                    async with asyncio.timeout(stream_deadline - loop.time()):
                        event = await anext(upstream)
                except StopAsyncIteration:
                    raise self._interrupted(name, events, chars,
                                            ProviderError(ErrorKind.MALFORMED_RESPONSE, "stream ended early")) from None
                except TimeoutError:
                    if caller_bound:
                        raise self._deadline_error(attempts, []) from None
                    raise self._interrupted(name, events, chars, ProviderError(
                        ErrorKind.TIMEOUT, f"stream took longer than {p.stream_timeout:g}s")) from None
                except ProviderError as exc:
                    if policy.counts_against_health(exc.kind):
                        self._health.record_failure(name, str(exc), None)
                    self._health.record_outcome(name, exc)
                    raise self._interrupted(name, events, chars, exc) from exc
                except Exception as exc:  # an unclassified provider failure: still the provider's
                    log.exception("Provider '%s' raised an unclassified %s mid-stream", name, type(exc).__name__)
                    error = ProviderError(ErrorKind.SERVER, f"unexpected provider failure ({type(exc).__name__})")
                    self._health.record_failure(name, str(error), None)
                    self._health.record_outcome(name, error)
                    raise self._interrupted(name, events, chars, error) from exc
        finally:
            await upstream.aclose()

    def _interrupted(self, name: str, events: int, chars: int, error: ProviderError) -> GatewayError:
        log.warning("Provider '%s' failed mid-stream after %d events (%d characters): %s",
                    name, events, chars, error.log_text())
        return GatewayError(grpc.StatusCode.UNAVAILABLE, "STREAM_INTERRUPTED",
                            f"provider '{name}' failed after {events} content events ({chars} characters "
                            f"delivered): {error}",
                            metadata={"provider": name, "delivered_events": str(events),
                                      "delivered_chars": str(chars), "cause": error.kind.reason})

    async def _run_chain(self, request: ProviderRequest, provider: str, model: str, deadline: float | None,
                         call: Callable[[Provider, str, float], Awaitable[T]],
                         base_timeout: Callable[[Provider], float], admit: Admit | None = None
                         ) -> tuple[T, str, list[pb.Attempt]]:
        """The chain with retries and fallback: (what ``call`` returned, the provider, the attempts)."""
        self._active_calls += 1  # the retry budget's measure of load
        try:
            return await self._run_chain_once(request, provider, model, deadline, call, base_timeout, admit)
        finally:
            self._active_calls -= 1

    async def _run_chain_once(self, request: ProviderRequest, provider: str, model: str, deadline: float | None,
                              call: Callable[[Provider, str, float], Awaitable[T]],
                              base_timeout: Callable[[Provider], float], admit: Admit | None
                              ) -> tuple[T, str, list[pb.Attempt]]:
        loop = asyncio.get_running_loop()
        first = provider or self.default_provider
        chain = self._chains[first]
        attempts: list[pb.Attempt] = []
        errors: list[ProviderError] = []
        failures: dict[str, ProviderError] = {}  # each provider's last failure, for the pushback
        tried = 0
        last = len(chain) - 1
        distinct = self._distinct[first]
        # Panic mode: when every provider of the chain is ejected, try them anyway (never strand traffic).
        panic = self._all_blocked(distinct)
        if panic:  # (with a single provider, ejection changes nothing: no need to shout)
            log.log(logging.WARNING if self._alternatives(distinct) else logging.DEBUG,
                    "PANIC: every provider of the chain %s is ejected; trying them anyway", ">".join(chain))
        for index, name in enumerate(chain):
            p = self._providers[name]
            if tried >= self._max_providers:
                # retry_original's extra try of the first provider comes on top of max_fallback_attempts.
                if not (self._retry_original and tried):
                    break
                if index != last:
                    continue
            if not p.usable:
                why = "disabled" if not p.enabled else "unconfigured"
                attempts.append(pb.Attempt(provider=name, outcome=pb.ATTEMPT_OUTCOME_SKIPPED,
                                           reason=f"PROVIDER_{why.upper()}", message=f"provider is {why}"))
                continue
            target_model = self._target_model(model, name, first)
            if target_model is None:
                attempts.append(pb.Attempt(
                    provider=name, outcome=pb.ATTEMPT_OUTCOME_SKIPPED, reason="MODEL_UNAVAILABLE",
                    message=f"model '{model}' has no alias for this provider "
                            f"(fallback.substitute_default_model is off)"))
                continue
            unsupported = p.unsupported(request, target_model)
            if unsupported is not None:
                field, why = unsupported
                if index == 0:
                    raise _with_attempts(GatewayError(
                        grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_BY_PROVIDER", f"{field}: {why}",
                        field=field, metadata={"provider": name}), attempts)
                attempts.append(pb.Attempt(provider=name, outcome=pb.ATTEMPT_OUTCOME_SKIPPED,
                                           reason="UNSUPPORTED_BY_PROVIDER", message=f"{field}: {why}"))
                continue
            retry_original = self._retry_original and index == last and index != 0
            if retry_original and not self._budget_allows():
                attempts.append(pb.Attempt(provider=name, model=target_model,
                                           outcome=pb.ATTEMPT_OUTCOME_SKIPPED, reason="RETRY_BUDGET_EXHAUSTED",
                                           message="the gateway's retry budget is spent"))
                continue
            admission = Admission.OPEN
            if not panic:
                admission = self._health.admit(name)
                if admission in (Admission.EJECTED, Admission.COOLING):
                    if tried == 0 and self._next_candidate(chain, index, model, first, tried,
                                                           panic=False) is None:
                        panic = True  # the others went while this call started: still never strand it
                        log.warning("PANIC: every provider of the chain %s is ejected; trying them anyway",
                                    ">".join(chain))
                    else:
                        attempts.append(self._ejected(name, target_model, admission))
                        continue
            if admit is not None:
                skip = await admit(name, target_model)
                if skip is not None:
                    if admission is Admission.TRIAL:
                        self._health.end_trial(name)
                    attempts.append(pb.Attempt(provider=name, model=target_model,
                                               outcome=pb.ATTEMPT_OUTCOME_SKIPPED, reason=skip[0], message=skip[1]))
                    continue
            tried += 1
            trial = admission is Admission.TRIAL
            if trial:
                log.info("Provider '%s' is half-open: this request is its trial", name)
            started = time.perf_counter()
            retries = 0
            retrying = retry_original
            if retrying:
                self._active_retries += 1
            try:
                while True:
                    remaining = None if deadline is None else deadline - loop.time()
                    # (only a deadline with a fallback reserve asks whether another provider follows)
                    more = remaining is not None and self._reserve_ratio > 0 and self._next_candidate(
                        chain, index, model, first, tried, panic=panic) is not None
                    timeout, limit = policy.attempt_limit(
                        base_timeout(p), remaining, margin=self._margin, reserve_ratio=self._reserve_ratio,
                        more_providers=more, min_attempt=self._min_attempt)
                    if timeout < self._min_attempt:
                        attempts.append(pb.Attempt(provider=name, model=target_model,
                                                   outcome=pb.ATTEMPT_OUTCOME_SKIPPED,
                                                   code="DEADLINE_EXCEEDED", reason="DEADLINE_EXCEEDED",
                                                   message="too little time left for another attempt",
                                                   latency_ms=(time.perf_counter() - started) * 1000,
                                                   retries=retries))
                        raise self._deadline_error(attempts, errors)
                    call_started = time.perf_counter()
                    error: ProviderError | None = None
                    try:
                        async with asyncio.timeout(timeout):
                            result = await call(p, target_model, timeout)
                    except TimeoutError:
                        error = ProviderError(ErrorKind.TIMEOUT, f"no answer within {timeout:.3f}s")
                    except ProviderError as exc:
                        error = exc
                    except Exception as exc:  # a provider bug or an SDK surprise: still the provider's failure
                        log.exception("Provider '%s' raised an unclassified %s", name, type(exc).__name__)
                        error = ProviderError(ErrorKind.SERVER,
                                              f"unexpected provider failure ({type(exc).__name__})")
                    if retrying:
                        self._active_retries -= 1
                        retrying = False
                    if error is None:
                        latency_ms = (time.perf_counter() - started) * 1000
                        self._health.record_success(name, (time.perf_counter() - call_started) * 1000)
                        trial = False
                        attempts.append(pb.Attempt(provider=name, model=target_model,
                                                   outcome=pb.ATTEMPT_OUTCOME_OK, latency_ms=latency_ms,
                                                   retries=retries))
                        if errors:
                            failed = next(a.provider for a in reversed(attempts)
                                          if a.outcome == pb.ATTEMPT_OUTCOME_ERROR)
                            log.info("FALLBACK SUCCESS: Provider '%s' succeeded after '%s' failed. "
                                     "Attempt %d/%d, latency=%.2fms", name, failed, tried,
                                     self._max_providers, latency_ms)
                        return result, name, attempts

                    # A timeout the caller's deadline or the fallback reserve cut short is no verdict
                    # on the provider: only one with its own full timeout counts against it.
                    counts = not (error.kind is ErrorKind.TIMEOUT and limit is not policy.AttemptLimit.PROVIDER)
                    if counts and policy.counts_against_health(error.kind):
                        self._health.record_failure(name, str(error),
                                                    (time.perf_counter() - call_started) * 1000)
                    self._health.record_outcome(name, error, counts=counts)
                    trial = False
                    if error.kind is ErrorKind.TIMEOUT and limit is policy.AttemptLimit.DEADLINE:
                        errors.append(error)
                        attempts.append(self._failed(name, target_model, error, started, retries))
                        raise self._deadline_error(attempts, errors)
                    wait = self._same_provider_wait(p, error, retries, deadline, loop.time(),
                                                    self._alternatives(distinct))
                    if wait is None:
                        break
                    if not self._budget_allows():
                        log.warning("Provider '%s' transient failure: %s. Not retrying: the gateway's "
                                    "retry budget is spent", name, error.log_text())
                        break
                    retries += 1
                    self._active_retries += 1
                    retrying = True
                    log.warning("Provider '%s' transient failure (try %d/%d): %s. Retrying in %.2fs...",
                                name, retries, p.max_retries + 1, error.log_text(), wait)
                    await asyncio.sleep(wait)
            finally:
                if retrying:
                    self._active_retries -= 1
                if trial:  # cancelled (or the caller's deadline) before a verdict: free the trial
                    self._health.end_trial(name)

            errors.append(error)
            failures[name] = error
            attempts.append(self._failed(name, target_model, error, started, retries))
            if not policy.falls_back(error.kind, on_invalid_request=self._on_invalid):
                break
            upcoming = self._next_candidate(chain, index, model, first, tried, panic=panic)
            if upcoming is not None:
                log.warning("Provider '%s' failed (attempt %d/%d): %s. Trying fallback to '%s'...",
                            name, tried, self._max_providers, error.log_text(), upcoming)
        raise self._exhausted_error(attempts, errors, failures)

    def _target_model(self, model: str, name: str, first: str) -> str | None:
        p = self._providers[name]
        # The first provider, and retry_original's try of it at the end, get the model as requested.
        return self._models.resolve(model, name, default_model=p.default_model, provider_models=p.models,
                                    first=name == first, substitute_default=self._substitute_default)

    def _budget_allows(self) -> bool:
        return policy.retry_budget_allows(self._active_calls, self._active_retries,
                                          budget_percent=self._budget_percent,
                                          min_retry_concurrency=self._min_retry_concurrency)

    def _alternatives(self, distinct: tuple[str, ...]) -> bool:
        """Whether the chain (``distinct``: its providers, each once) has more than one usable provider."""
        return sum(1 for n in distinct if self._providers[n].usable) > 1

    def _all_blocked(self, distinct: tuple[str, ...]) -> bool:
        """Whether every usable provider of the chain (``distinct``) is ejected; False when none is usable."""
        blocked = False
        for n in distinct:
            if self._providers[n].usable:
                if self._health.blocked_until(n) is None:
                    return False
                blocked = True
        return blocked

    def _next_candidate(self, chain: tuple[str, ...], index: int, model: str, first: str, tried: int, *,
                        panic: bool) -> str | None:
        """The provider the chain would try after ``chain[index]`` if it fails, None when none."""
        if tried < self._max_providers:
            later = chain[index + 1:]
        elif self._retry_original and index != len(chain) - 1:
            later = chain[-1:]
        else:
            return None
        for name in later:
            if not self._providers[name].usable or self._target_model(model, name, first) is None:
                continue
            if panic or self._health.blocked_until(name) is None:
                return name
        return None

    def _pushback(self, attempts: list[pb.Attempt], failures: Mapping[str, ProviderError]) -> float | None:
        """Seconds until a provider of this call's chain could answer, when the gateway knows it: a
        provider's retry-after, or the end of its ejection or cool-down; the soonest of them. None
        when a provider failed without saying when and is not ejected: the caller's own backoff
        schedule decides then (a made-up pushback would only replace it)."""
        now = self._health.outlier.clock()
        ready: list[float] = []
        for name in dict.fromkeys(a.provider for a in attempts):
            error = failures.get(name)
            blocked = self._health.blocked_until(name)
            if error is not None and error.retry_after is not None:
                ready.append(max(now + error.retry_after, blocked or 0.0))
            elif blocked is not None:
                ready.append(max(blocked, now))
            elif error is not None:
                return None
        return policy.pushback(now, ready)

    def _ejected(self, name: str, model: str, admission: Admission) -> pb.Attempt:
        until = self._health.blocked_until(name)
        left = max(0.0, (until or 0.0) - self._health.outlier.clock())
        if admission is Admission.COOLING:
            message = f"provider is cooling down after a rate limit for another {left:.1f}s"
        elif left > 0:
            message = f"provider is ejected for another {left:.1f}s"
        else:
            message = "provider is ejected; another request is its half-open trial"
        return pb.Attempt(provider=name, model=model, outcome=pb.ATTEMPT_OUTCOME_SKIPPED, reason="PROVIDER_EJECTED",
                          message=message)

    def _same_provider_wait(self, p: Provider, error: ProviderError, retries: int, deadline: float | None,
                            now: float, alternatives: bool) -> float | None:
        if retries >= p.max_retries or not policy.retries_same_provider(error.kind, alternatives=alternatives):
            return None
        wait = policy.retry_wait(retries + 1, base=self._backoff, cap=self._backoff_max,
                                 retry_after=error.retry_after)
        if wait is None:
            return None
        if deadline is not None and now + wait + self._margin + self._min_attempt > deadline:
            return None
        return wait

    @staticmethod
    def _failed(name: str, model: str, error: ProviderError, started: float, retries: int) -> pb.Attempt:
        return pb.Attempt(provider=name, model=model, outcome=pb.ATTEMPT_OUTCOME_ERROR,
                          code=error.kind.code.name, reason=error.kind.reason, message=error.summary(),
                          latency_ms=(time.perf_counter() - started) * 1000, retries=retries)

    def _deadline_error(self, attempts: list[pb.Attempt], errors: list[ProviderError]) -> GatewayError:
        tried = ",".join(a.provider for a in attempts)
        detail = f"; last error: {errors[-1]}" if errors else ""
        return _with_attempts(
            GatewayError(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED",
                         f"the caller's deadline left no time to finish (providers: {tried}){detail}",
                         metadata={"providers": tried}),
            attempts)

    def _exhausted_error(self, attempts: list[pb.Attempt], errors: list[ProviderError],
                         failures: Mapping[str, ProviderError] | None = None) -> GatewayError:
        if not errors:
            skipped = "; ".join(f"{a.provider}: {a.message}" for a in attempts)
            return _with_attempts(
                GatewayError(grpc.StatusCode.FAILED_PRECONDITION, "NO_USABLE_PROVIDER",
                             f"no usable provider ({skipped})", metadata={"providers": ",".join(
                                 a.provider for a in attempts)}),
                attempts)
        code, reason, decisive = policy.final_status(errors)
        failed = [a for a in attempts if a.outcome == pb.ATTEMPT_OUTCOME_ERROR]
        retry_after = None
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
            # Every provider the gateway will try for this call was tried (or is ejected): tell the
            # caller when a retry could help (RetryInfo + grpc-retry-pushback-ms) instead of its schedule.
            retry_after = self._pushback(attempts, failures or {})
            if retry_after is None and code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                retry_after = self._default_retry_after
        if len(failed) == 1:
            message = f"provider '{failed[0].provider}' failed: {decisive}"
        else:
            message = f"all {len(failed)} providers failed; last: '{failed[-1].provider}': {decisive}"
        return _with_attempts(
            GatewayError(code, reason, message, retry_after=retry_after,
                         metadata={"provider": failed[-1].provider,
                                   "providers": ",".join(a.provider for a in failed)}),
            attempts)
