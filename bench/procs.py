"""The processes under test: start, find their port, read their CPU time, stop."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import die_with_parent

CLK_TCK = os.sysconf("SC_CLK_TCK")


class StartError(RuntimeError):
    """A process under test did not come up; the message ends with the tail of its log."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/<pid>/stat (clock ticks)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()  # after "pid (comm) ": field 3 (state) is index 0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 (utime), 15 (stime)


def thread_runtimes_ns(pid: int) -> dict[int, int]:
    """Each live thread's CPU time in ns (/proc/<pid>/task/<tid>/schedstat); {} where unavailable."""
    out: dict[int, int] = {}
    task_dir = f"/proc/{pid}/task"
    with contextlib.suppress(OSError):
        for tid in os.listdir(task_dir):
            with contextlib.suppress(OSError, ValueError, IndexError), open(f"{task_dir}/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
    return out


@dataclass(frozen=True)
class CpuSample:
    """A process's CPU time at one moment; ``later - earlier`` is the CPU seconds in between.

    /proc/<pid>/stat counts in clock ticks (10 ms at 100 Hz: coarse for a short phase), so the
    difference is taken from the threads' nanosecond run times when no thread ended in between
    (a thread born in between counts from zero), else from the ticks.
    """

    ticks_s: float
    threads_ns: dict[int, int]

    @classmethod
    def of(cls, pid: int) -> CpuSample:
        return cls(cpu_seconds(pid), thread_runtimes_ns(pid))

    def __sub__(self, earlier: CpuSample) -> float:
        if self.threads_ns and earlier.threads_ns and earlier.threads_ns.keys() <= self.threads_ns.keys():
            return sum(ns - earlier.threads_ns.get(tid, 0) for tid, ns in self.threads_ns.items()) / 1e9
        return self.ticks_s - earlier.ticks_s


def rss_mb(pid: int | None) -> float | None:
    """A process's resident set (VmRSS) in MB; None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def last_core() -> str | None:
    """The CPU the benches pin their targets to by default: the last one allowed (None with one CPU)."""
    cpus = sorted(os.sched_getaffinity(0))
    return str(cpus[-1]) if len(cpus) > 1 else None


def listening_ports(pid: int) -> list[int]:
    """TCP ports a process listens on: its socket inodes matched against /proc/net/tcp{,6}."""
    inodes: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            link = os.readlink(f"{fd_dir}/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = []
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:  # 0A: LISTEN
                    ports.append(int(parts[1].rsplit(":", 1)[1], 16))
    return sorted(set(ports))


class Proc:
    """One child process; stdout to a pipe (``port_from="stdout"``) or, like stderr, to its log file."""

    def __init__(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str], log_path: Path,
                 port_from: str, port_pattern: re.Pattern[str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self.port_from = port_from  # "stdout" | "log" | "proc"
        self.port_pattern = port_pattern
        self.port: int | None = None
        self._stdout_buf = b""
        self._log = open(log_path, "wb")  # closed in stop()
        self.popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if port_from == "stdout" else self._log, stderr=self._log,
            start_new_session=True,  # Ctrl-C reaches only the parent, which stops the children itself
            preexec_fn=die_with_parent,  # no threads yet in the parent at this point
        )
        self.pid = self.popen.pid

    def cpu(self) -> CpuSample:
        return CpuSample.of(self.pid)

    def poll_port(self) -> int | None:
        """Non-blocking: the port once the process has announced (or opened) it."""
        if self.port is not None:
            return self.port
        if self.popen.poll() is not None:
            raise StartError(f"{self.name} exited with status {self.popen.returncode} before listening"
                             f"{self.tail()}")
        if self.port_from == "stdout":
            assert self.popen.stdout is not None
            fd = self.popen.stdout.fileno()
            while select.select([fd], [], [], 0)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                self._stdout_buf += chunk
            line, sep, _ = self._stdout_buf.partition(b"\n")
            if sep:
                self.port = int(line.strip())
        elif self.port_from == "log":
            assert self.port_pattern is not None
            match = self.port_pattern.search(self.log_path.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
        else:
            with contextlib.suppress(OSError):
                ports = listening_ports(self.pid)
                if len(ports) == 1:
                    self.port = ports[0]
        return self.port

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
            if text:
                return "\n  | " + "\n  | ".join(text)
        return ""

    def terminate(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (the gateway drains, grace 0), then SIGKILL after ``timeout`` seconds. Idempotent."""
        p = self.popen
        self.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()
        self._log.close()


def stop_all(procs: list[Proc], timeout: float = 5.0) -> None:
    """SIGTERM to every process at once, then wait for each (SIGKILL past ``timeout``)."""
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.stop(timeout=max(0.1, deadline - time.monotonic()))


def wait_for_ports(procs: list[Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending:
        pending = [p for p in pending if p.poll_port() is None]
        if not pending:
            return
        if time.monotonic() > deadline:
            p = pending[0]
            raise StartError(f"{p.name} did not announce its port within {timeout:.0f}s{p.tail()}")
        time.sleep(0.02)
