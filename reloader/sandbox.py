"""A new bundle's first build, self-test and warm-up, run in a throw-away child process.

`trial_build(bundle, ...)` starts `python -m reloader.trial_child` with resource limits, lets it
build the bundle exactly as the job would (`ModelRuntime`, then `warm_up`), and waits for a JSON
verdict on a pipe. A bundle that blows memory, hangs or crashes V8 takes the child down, never
the job.

Why a process: the V8 hard heap limit does not see `ArrayBuffer` backing stores, WebAssembly
memories or the transient peaks of one large on-heap allocation, and mini-racer exposes no
external-memory counter (`heap_stats()` has five heap fields). Measured with mini-racer 0.12.4 (V8
12.6) under a 256 MiB heap limit: 16 `Uint8Array`s of 256 MiB filled to 4 GiB of RSS without an
error; `new Array(2**27).fill(1.5)` peaked at +1.5 GB before the limit stopped it; and
`new Array(2**28).fill(1.5)` aborted the whole process ("Fatal JavaScript out of memory: invalid
table size"). docs/security.md ("The trial build") has the measurements and what remains at
serving time.

Limits on the child:
- memory: the parent samples the child's RSS (`/proc/<pid>/statm`) every `POLL_INTERVAL` and
  kills it above `memory_limit`; the kernel refuses the child's writable memory beyond
  `memory_limit` over V8's start-up reservations (RLIMIT_DATA), so one huge allocation fails at
  once instead of overshooting the sampling. RLIMIT_AS cannot be used: V8's sandbox reserves
  1 TiB of address space, and under RLIMIT_AS <= 8 GiB the first context aborts (measured).
- time: the usual per-call timeouts inside the child; the parent's wall clock kills the child's
  process group; RLIMIT_CPU is the backstop should the parent die first (so is PR_SET_PDEATHSIG).
- nothing else: no inherited descriptors but its result pipe, stdin/stdout on /dev/null, an
  environment of only what an interpreter needs to start (no credentials), a private working
  directory, no core dumps.

The child's verdict is JSON (class name, message and scalar fields of a typed error); nothing
from the child is unpickled, since the child runs untrusted code.

Length: one role, the parent side of a trial (start, watch, verdict, restore the child's typed
error); the child is `reloader.trial_child`.

Threads: `trial_build` blocks its caller (the agent's poll thread) until the child is reaped and
starts no threads of its own; calls from several threads are independent.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reloader.errors import (
    BundleError,
    BundleMemoryError,
    BundleOutputError,
    BundleResourceError,
    BundleTimeout,
    InputError,
    ReloaderError,
    RuntimeClosed,
    SandboxError,
    SelfTestError,
)
from reloader.runtime import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_HEAP_LIMIT,
    DEFAULT_INIT_TIMEOUT,
)

DEFAULT_WARMUP_ROWS = 256
DEFAULT_WARMUP_CALLS = 64
POLL_INTERVAL = 0.01  # seconds between RSS samples; a 2 GB/s fill overshoots by ~20 MB
_MAX_OUTPUT = 1 << 20  # bytes of verdict the parent reads before it gives up on the child
_STDERR_TAIL = 8 << 10
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class TrialReport:
    """A bundle that passed its trial.

    Attributes:
        peak_rss: the trial process's peak resident set in bytes (the kernel's count).
        seconds: wall time of the whole trial, process start-up and tear-down included.
        build_seconds: of which building, self-testing and warming up the bundle.
    """

    peak_rss: int
    seconds: float
    build_seconds: float


def trial_build(
    bundle: bytes,
    *,
    self_test: bool | Mapping[str, Any] = True,
    heap_limit: int = DEFAULT_HEAP_LIMIT,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    init_timeout: float = DEFAULT_INIT_TIMEOUT,
    warmup_rows: int = DEFAULT_WARMUP_ROWS,
    warmup_calls: int = DEFAULT_WARMUP_CALLS,
    memory_limit: int | None = None,
    wall_timeout: float | None = None,
) -> TrialReport:
    """Builds, self-tests and warms up `bundle` in a resource-limited child process.

    Args:
        bundle: the verified bundle bytes.
        self_test, heap_limit, call_timeout, init_timeout: as for `ModelRuntime`.
        warmup_rows, warmup_calls: as for `warm_up`.
        memory_limit: bytes the child may use (default `4 * heap_limit`, 1 GiB at the default
            heap limit: the heap itself, ~80 MB of interpreter and V8, and twice the heap for
            the bundle's weights and buffers outside it; the WINE bundle peaks at ~80 MB).
        wall_timeout: seconds for the whole trial (default `2 * init_timeout + 10 *
            call_timeout`: evaluation and `ml.init()` may each take `init_timeout`). The
            per-call timeouts still apply inside the child; this stops what they cannot.

    Raises:
        BundleResourceError: the child went past `memory_limit` (killed, or an allocation refused).
        BundleTimeout: the trial ran past `wall_timeout` (or the child's own call timeouts).
        BundleError: any other failure of the bundle, re-raised with the child's class
            (`SelfTestError`, `BundleMemoryError`, ...), message and fields.
        SandboxError: the child could not get as far as the bundle.
    """
    if memory_limit is None:
        memory_limit = 4 * heap_limit
    if wall_timeout is None:
        wall_timeout = 2 * init_timeout + 10 * call_timeout
    if memory_limit <= 0 or wall_timeout <= 0:
        raise ValueError("memory_limit and wall_timeout must be > 0")
    spec = {
        "self_test": self_test if isinstance(self_test, bool) else dict(self_test),
        "heap_limit": heap_limit,
        "call_timeout": call_timeout,
        "init_timeout": init_timeout,
        "warmup_rows": warmup_rows,
        "warmup_calls": warmup_calls,
        "memory_limit": memory_limit,
        "cpu_seconds": math.ceil(wall_timeout) + 1,
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reloader-trial-") as tmp:
        Path(tmp, "bundle.js").write_bytes(bundle)
        Path(tmp, "trial.json").write_text(json.dumps(spec))
        result_r, result_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-s",
                    "-m",
                    "reloader.trial_child",
                    tmp,
                    str(result_w),
                    str(os.getpid()),
                ],
                cwd=tmp,
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(result_w,),
                start_new_session=True,  # its own process group, killed as one
            )
        except OSError as e:
            os.close(result_r)
            raise SandboxError(f"could not start the trial process: {e}") from e
        finally:
            os.close(result_w)
        watch = _Watch(proc, result_r, memory_limit=memory_limit, wall_timeout=wall_timeout)
        try:
            watch.run()
        finally:
            watch.finish()
    seconds = time.perf_counter() - t0
    return _verdict(watch, heap_limit=heap_limit, wall_timeout=wall_timeout, seconds=seconds)


# -- parent side ----------------------------------------------------------------------------------


class _Watch:
    """Reads the child's verdict and stderr, samples its RSS, enforces the limits, reaps it."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        result_fd: int,
        *,
        memory_limit: int,
        wall_timeout: float,
    ) -> None:
        self.proc = proc
        self._result_fd = result_fd
        self.memory_limit = memory_limit
        self.deadline = time.monotonic() + wall_timeout
        self.messages: list[dict[str, Any]] = []
        self.killed: str | None = None  # "memory", "wall" or "output" once we killed it
        self.peak_rss = 0
        self.status: int | None = None
        self._out = bytearray()
        self._err = bytearray()
        self._sel = selectors.DefaultSelector()
        self._sel.register(result_fd, selectors.EVENT_READ, self._out)
        assert proc.stderr is not None
        self._sel.register(proc.stderr.fileno(), selectors.EVENT_READ, self._err)
        try:
            self._statm: int | None = os.open(f"/proc/{proc.pid}/statm", os.O_RDONLY)
        except OSError:  # no procfs: RLIMIT_DATA is the only memory limit
            self._statm = None
        try:  # readable when the child exits (Linux >= 5.3)
            self._pidfd: int | None = os.pidfd_open(proc.pid)
            self._sel.register(self._pidfd, selectors.EVENT_READ, None)
        except (AttributeError, OSError):
            self._pidfd = None

    def run(self) -> None:
        while self.status is None:
            wait = min(POLL_INTERVAL, max(0.0, self.deadline - time.monotonic()))
            for key, _ in self._sel.select(wait):
                if key.data is not None:
                    self._read(key.fd, key.data)
            if self._reap(block=False):
                break
            rss = self._rss()
            self.peak_rss = max(self.peak_rss, rss)
            if rss > self.memory_limit:
                self._kill("memory")
            elif time.monotonic() >= self.deadline:
                self._kill("wall")
            elif len(self._out) > _MAX_OUTPUT:
                self._kill("output")
        # What the child wrote just before it exited, up to EOF (it is gone: nothing blocks).
        while pipes := [k for k in self._sel.get_map().values() if k.data is not None]:
            for key in pipes:
                self._read(key.fd, key.data)
        self._parse()

    def finish(self) -> None:
        """Kills and reaps the child if it is still there; closes every descriptor."""
        if self.status is None:
            self._kill(self.killed or "error")
        self._sel.close()
        for fd in (self._result_fd, self._statm, self._pidfd):
            if fd is not None:
                os.close(fd)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    @property
    def stderr_tail(self) -> str:
        return self._err.decode("utf-8", "replace")

    def _read(self, fd: int, into: bytearray) -> None:
        try:
            data = os.read(fd, 1 << 16)
        except OSError:
            data = b""
        if not data:
            self._sel.unregister(fd)
            return
        into += data
        if into is self._err and len(into) > _STDERR_TAIL:
            del into[: len(into) - _STDERR_TAIL]

    def _rss(self) -> int:
        if self._statm is None:
            return 0
        try:
            return int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            return 0

    def _kill(self, why: str) -> None:
        self.killed = self.killed or why
        # SIGKILL straight away: the child holds nothing worth a graceful exit, and a bundle
        # (or a wedged V8) must not be able to delay it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._reap(block=True)

    def _reap(self, *, block: bool) -> bool:
        if self.status is not None:
            return True
        # os.wait4 rather than Popen.wait: its rusage carries the kernel's peak RSS of the child,
        # also of a child we killed.
        pid, status, usage = os.wait4(self.proc.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return False
        self.status = status
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.peak_rss = max(self.peak_rss, usage.ru_maxrss * 1024)  # Linux: KiB
        return True

    def _parse(self) -> None:
        for line in bytes(self._out).splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                self.messages.append(msg)


def _verdict(watch: _Watch, *, heap_limit: int, wall_timeout: float, seconds: float) -> TrialReport:
    stages = [m["stage"] for m in watch.messages if isinstance(m.get("stage"), str)]
    stage = stages[-1] if stages else None
    final = next((m for m in reversed(watch.messages) if "ok" in m), None)
    code = watch.proc.returncode
    detail = _stderr_summary(watch.stderr_tail)
    limits = {
        "memory_limit": watch.memory_limit,
        "peak_rss": watch.peak_rss,
        "heap_limit": heap_limit,
    }
    if stage is None:
        # Nothing of the bundle has run: whatever happened is not the bundle's fault.
        why = {"memory": "went past its memory limit", "wall": "ran past its wall clock"}
        raise SandboxError(
            f"the trial process failed before it reached the bundle "
            f"({why.get(watch.killed or '', _exit(code))}): {detail}"
        )
    if watch.killed == "memory" or (final is None and _oom(watch.stderr_tail)):
        raise BundleResourceError("the trial build was stopped", stage=stage, **limits)
    if watch.killed == "wall":
        raise BundleTimeout("the trial build was killed", stage=stage, timeout=wall_timeout)
    if watch.killed == "output":
        raise BundleError("the trial process wrote more than its verdict", stage=stage)
    if code == -signal.SIGXCPU:
        raise BundleTimeout(
            "the trial build used up its CPU time", stage=stage, timeout=wall_timeout
        )
    if final is not None and final.get("ok") is True and code == 0:
        build = final.get("build_seconds")
        return TrialReport(
            peak_rss=watch.peak_rss,
            seconds=seconds,
            build_seconds=float(build) if isinstance(build, int | float) else seconds,
        )
    if final is not None and final.get("ok") is False:
        error = _restore(final.get("error"), stage=stage)
        if _refused_allocation(error):
            raise BundleResourceError(
                "an allocation of the trial build was refused", stage=stage, **limits
            )
        raise error
    raise BundleError(
        f"the trial process crashed ({_exit(code)}{'; ' + detail if detail else ''})",
        stage="close" if final is not None else stage,
    )


# Errors the child may report, restored by name; nothing else from the child becomes a class.
_ERRORS: dict[str, type[ReloaderError]] = {
    c.__name__: c
    for c in (
        BundleError,
        BundleTimeout,
        BundleMemoryError,
        BundleOutputError,
        SelfTestError,
        InputError,
        RuntimeClosed,
    )
}


def _restore(data: Any, *, stage: str | None) -> ReloaderError:
    """The child's typed error, rebuilt in the parent with the same class, message and fields."""
    if not isinstance(data, dict):
        data = {}
    kind, message, fields = data.get("type"), data.get("message"), data.get("fields")
    cls = _ERRORS.get(kind) if isinstance(kind, str) else None
    if cls is None or not isinstance(message, str) or not isinstance(fields, dict):
        return BundleError(
            f"the trial build failed with {str(kind)[:80]}: {str(message)[:500]}",
            stage=stage or "decode",
        )
    # Bypasses __init__, which would format the message a second time: the text is the child's.
    error = cls.__new__(cls)
    Exception.__init__(error, message[:2000])
    for key, value in fields.items():
        usable = value is None or isinstance(value, str | int | float | bool)
        if usable and isinstance(key, str) and key.isidentifier() and not key.startswith("_"):
            setattr(error, key, value)
    if isinstance(error, BundleError):
        if not isinstance(getattr(error, "stage", None), str):
            error.stage = stage or "decode"
        if not hasattr(error, "js_message"):
            error.js_message = None
    return error


# What V8 throws when RLIMIT_DATA refuses an ArrayBuffer or a WebAssembly memory (measured).
_REFUSED = (
    "Array buffer allocation failed",
    "Unable to grow instance memory",
    "could not allocate",
)


def _refused_allocation(error: ReloaderError) -> bool:
    text = getattr(error, "js_message", None) or ""
    return type(error) is BundleError and "RangeError" in text and any(r in text for r in _REFUSED)


def _oom(detail: str) -> bool:
    # V8's fatal OOM ("Fatal JavaScript out of memory: ...", "Fatal process out of memory")
    # aborts the process; Python reports MemoryError.
    return "out of memory" in detail or "MemoryError" in detail


def _stderr_summary(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip(" #")]
    pick = next((line for line in lines if "Fatal" in line or "Error" in line), None)
    pick = pick or (lines[-1] if lines else "")
    return pick.strip("# ")[:300]


def _exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _child_env() -> dict[str, str]:
    # The child imports what this process imports (PyFlink puts dependencies on sys.path at run
    # time) and gets nothing else: no credentials of the job in reach of the bundle's process.
    root = str(Path(__file__).resolve().parent.parent)
    paths = [root] + [p for p in sys.path if p and os.path.isabs(p) and os.path.exists(p)]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    for name in ("PYTHONHOME", "LD_LIBRARY_PATH"):  # relocatable interpreters need these
        if name in os.environ:
            env[name] = os.environ[name]
    return env
