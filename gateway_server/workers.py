"""``--workers N``: N gateway processes on one port, under a supervisor.

gRPC Python's multiprocessing pattern: the supervisor reserves the port (a socket bound with
SO_REUSEPORT, never listening, so a port 0 is chosen once and kept across restarts), imports the
server and provider modules (``preload``: shared copy-on-write) and forks the workers before any
gRPC object exists in it; each worker builds its own grpc.aio server on the
same port with ``grpc.so_reuseport`` 1, and the kernel spreads new connections over them.

The supervisor
* restarts a worker that dies (in the same slot: the replacement has the same ``worker_id``), after
  a short back-off that doubles with each recent death;
* gives up when workers keep dying (more than ``server.worker_restart_limit`` deaths within
  ``server.worker_restart_window`` seconds): it stops the others and exits 1;
* forwards SIGTERM/SIGINT as SIGTERM, so that every worker drains (``server.grace_period``), and
  exits 0 when all have; a worker still alive ``KILL_MARGIN`` seconds after the grace period gets
  SIGKILL;
* forwards SIGHUP (TLS certificate reload);
* with ``server.pin_workers``, pins worker i to the i-th CPU it may use (before gRPC starts threads).

Metrics across workers: when metrics are on (a metrics port), before forking, the supervisor points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory (prometheus-client's multiprocess mode), serves ``/metrics`` itself
(``gateway_server.metrics.start_metrics_server``, when that module exists) and marks a dead worker's
files with ``prometheus_client.multiprocess.mark_process_dead``. Workers see ``GATEWAY_WORKER_ID`` in
their environment and start no metrics server of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway_server.logging_setup import configure_logging, stop_logging
from gateway_server.settings import GatewaySettings

log = logging.getLogger("gateway_server.workers")

FIRST_BACKOFF = 0.5  # seconds before the first restart; doubles with each recent death
MAX_BACKOFF = 10.0
KILL_MARGIN = 10.0  # seconds after the grace period before a worker that did not drain is killed
WORKER_ID_ENV = "GATEWAY_WORKER_ID"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PORT_ENV = "GATEWAY_METRICS_PORT"

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def restart_delay(recent_deaths: int) -> float:
    """Back-off before restarting a worker, given the deaths within the window (this one included)."""
    return float(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, recent_deaths - 1)))


def crash_looping(deaths: deque[float], now: float, *, limit: int, window: float) -> bool:
    """Whether workers keep dying: more than ``limit`` deaths in the last ``window`` seconds (old ones dropped)."""
    while deaths and deaths[0] < now - window:
        deaths.popleft()
    return len(deaths) > limit


@contextlib.contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Bind (never listen) ``host:port`` with SO_REUSEPORT and yield the port, kept while in the block."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _metrics_port(settings: GatewaySettings) -> int:
    """The /metrics port when metrics are on (settings ``metrics_port`` or $GATEWAY_METRICS_PORT), else 0."""
    value = getattr(settings, "metrics_port", None) or os.environ.get(METRICS_PORT_ENV, "")
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _start_metrics(port: int, directory: str) -> None:
    try:
        metrics = importlib.import_module("gateway_server.metrics")
    except ImportError:
        log.warning("Metrics port %d set but gateway_server.metrics is not available: no /metrics", port)
        return
    metrics.start_metrics_server(port, multiprocess_dir=directory)
    log.info("Serving /metrics for all workers on port %d", port)


def _mark_dead(pid: int) -> None:
    try:
        multiprocess = importlib.import_module("prometheus_client.multiprocess")  # optional dependency
    except ImportError:
        return
    with contextlib.suppress(Exception):
        multiprocess.mark_process_dead(pid)


def preload(settings: GatewaySettings) -> list[str]:
    """Import, before the fork, the modules every worker would import on its own: the server and the
    configured providers' SDKs (anthropic, aiobotocore: seconds of CPU each). The workers share them
    copy-on-write, so two workers (and a restarted one) start without importing them again. Imports
    only: no gRPC object, thread or event loop is made here. The modules that failed to import are
    left to the workers (which report the error)."""
    names = ["gateway_server.app"]
    names += sorted({f"gateway_server.providers.{cfg.type}" for cfg in settings.providers.values()})
    loaded = []
    for name in names:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # the worker will fail on it with a full report
            log.warning("Supervisor: could not preload %s (%s); each worker imports it", name, exc)
    return loaded


def unshared_limits(settings: GatewaySettings) -> list[str]:
    """What would be counted per worker with the memory backend: the limits, budgets and provider
    limits configured (empty with the Redis backend, or with nothing to count)."""
    if settings.rate_limit.backend != "memory":
        return []
    found = ["rate_limit.enabled"] if settings.rate_limit.enabled else []
    found += [f"rate_limit.providers.{name}" for name in settings.rate_limit.providers]
    for key in settings.keys:
        if key.limits is not None:
            found.append(f"keys[{key.name}].limits")
        if key.budget.daily_usd is not None or key.budget.monthly_usd is not None:
            found.append(f"keys[{key.name}].budget")
    return found


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker (so it drains) if the supervisor dies without saying so (SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def worker_cpu(slot: int, allowed: set[int]) -> int | None:
    """The CPU worker ``slot`` is pinned to with ``server.pin_workers``: the slot-th allowed one, round robin."""
    cpus = sorted(allowed)
    return cpus[slot % len(cpus)] if cpus else None


def _pin(slot: int) -> int | None:
    """Pin this process to its CPU (threads started later inherit it); the CPU, or None where unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = worker_cpu(slot, os.sched_getaffinity(0))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    return cpu


def _worker_main(settings: GatewaySettings, slot: int, supervisor_pid: int) -> None:
    """The forked child: one gateway server on the shared port. Never returns."""
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until serve() handles it (TLS reload)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _die_with_parent()
        if os.getppid() != supervisor_pid:  # the supervisor died between fork and prctl
            os._exit(1)
        os.environ[WORKER_ID_ENV] = str(slot)
        cpu = _pin(slot) if settings.server.pin_workers else None  # before this process starts any thread
        # The log listener thread stayed in the supervisor (fork copies only this thread): start our own.
        configure_logging(settings.log_level, settings.log_format)
        if settings.server.pin_workers:
            log.info("Worker %d pinned to CPU %s", slot, cpu if cpu is not None else "- (no CPU affinity here)")
        from gateway_server.cli import serve  # after the fork

        asyncio.run(serve(settings, reuse_port=True, worker_id=slot))
        code = 0
    except OSError as exc:
        log.error("Worker %d cannot start: %s", slot, exc)
    except KeyboardInterrupt:
        code = 0
    except BaseException:
        log.exception("Worker %d crashed", slot)
    finally:
        stop_logging()  # write what is queued: os._exit skips the atexit hooks
        logging.shutdown()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


@dataclass
class Supervisor:
    settings: GatewaySettings
    count: int
    pids: dict[int, int] = field(default_factory=dict)  # pid -> slot
    restarts: dict[int, float] = field(default_factory=dict)  # slot -> monotonic time to restart it
    deaths: deque[float] = field(default_factory=deque)
    stopping: bool = False
    failed: bool = False
    kill_at: float | None = None

    def spawn(self, slot: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _worker_main(self.settings, slot, parent)
        self.pids[pid] = slot
        log.info("Started worker %d (pid %d)", slot, pid)

    def signal_all(self, sig: signal.Signals) -> None:
        for pid in list(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.restarts.clear()
        grace = self.settings.server.grace_period
        log.info("Supervisor: %s: draining %d worker(s) (grace %.1fs)", why, len(self.pids), grace)
        self.kill_at = time.monotonic() + grace + KILL_MARGIN
        self.signal_all(signal.SIGTERM)

    def reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.pids.clear()
                return
            if pid == 0:
                return
            slot = self.pids.pop(pid, None)
            if slot is None:
                continue
            _mark_dead(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("Worker %d (pid %d) exited (%s)", slot, pid, _describe(code))
                continue
            now = time.monotonic()
            self.deaths.append(now)
            limit, window = self.settings.server.worker_restart_limit, self.settings.server.worker_restart_window
            if crash_looping(self.deaths, now, limit=limit, window=window):
                log.error("Worker %d (pid %d) died (%s): more than %d worker deaths in %.0fs, giving up",
                          slot, pid, _describe(code), limit, window)
                self.failed = True
                self.stop("workers keep dying")
                continue
            delay = restart_delay(len(self.deaths))
            log.warning("Worker %d (pid %d) died (%s): restarting it in %.1fs", slot, pid, _describe(code), delay)
            self.restarts[slot] = now + delay

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        for slot in range(self.count):
            self.spawn(slot)
        log.info("Supervisor (pid %d) started %d workers on %s:%d", os.getpid(), self.count,
                 self.settings.host, self.settings.port)
        while self.pids or self.restarts:
            now = time.monotonic()
            wake = [t for t in self.restarts.values()] + ([self.kill_at] if self.kill_at is not None else [])
            timeout = max(0.01, min([*wake, now + 1.0]) - now)
            info = signal.sigtimedwait(_SIGNALS, timeout)
            if info is not None:
                if info.si_signo in (signal.SIGTERM, signal.SIGINT):
                    self.stop(f"{signal.Signals(info.si_signo).name} received")
                elif info.si_signo == signal.SIGHUP:
                    log.info("Supervisor: SIGHUP: forwarding to the workers")
                    self.signal_all(signal.SIGHUP)
            self.reap()
            now = time.monotonic()
            for slot, at in list(self.restarts.items()):
                if at <= now and not self.stopping:
                    del self.restarts[slot]
                    self.spawn(slot)
            if self.kill_at is not None and now >= self.kill_at and self.pids:
                log.error("Supervisor: %d worker(s) still running after the grace period: killing them",
                          len(self.pids))
                self.signal_all(signal.SIGKILL)
                self.kill_at = None
        log.info("Supervisor: all workers stopped")
        return 1 if self.failed else 0


def _describe(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def supervise(settings: GatewaySettings) -> int:
    """Run ``settings.worker_count`` workers until SIGTERM; the process's exit status."""
    count = settings.worker_count
    metrics_port = _metrics_port(settings)
    # Only with metrics on: a worker that sees PROMETHEUS_MULTIPROC_DIR records every call into the
    # shared files (GatewayApp turns its metrics on), work nobody would scrape with metrics off.
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-") if metrics_port else None
    if metrics_dir is not None:
        os.environ[METRICS_DIR_ENV] = metrics_dir
    try:
        with reserve_port(settings.host, settings.port) as port:
            preload(settings)
            if unshared := unshared_limits(settings):
                log.warning("rate_limit.backend is memory: each of the %d workers counts %s alone (up to %d times "
                            "the limit); set rate_limit.backend: redis to share them", count,
                            ", ".join(unshared[:4]) + (", ..." if len(unshared) > 4 else ""), count)
            if metrics_dir is not None:
                _start_metrics(metrics_port, metrics_dir)
            settings = settings.model_copy(update={"port": port})
            return Supervisor(settings, count).run()
    except OSError as exc:
        log.error("Cannot start: %s", exc)
        return 1
    finally:
        if metrics_dir is not None:
            os.environ.pop(METRICS_DIR_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)
