"""The trial process of `reloader.sandbox`: `python -m reloader.trial_child DIR FD PARENT_PID`.

Builds, self-tests and warms up DIR/bundle.js with the limits in DIR/trial.json, under its own
resource limits, and writes JSON lines to descriptor FD: `{"stage": ...}` as it goes, then
`{"ok": true, ...}` or `{"ok": false, "error": {type, message, fields}}`. It imports only the
runtime (every import is start-up time on the publish -> serve path) and runs untrusted code:
the parent reads its output as data, never as objects.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from reloader.runtime import ModelRuntime


class _Reporting(ModelRuntime):
    """A `ModelRuntime` that tells the parent which stage it is in, so a kill names the stage."""

    emit: Any = None
    _stage: str | None = None

    def _run(self, code: str, *, stage: str, timeout: float) -> Any:
        if stage != _Reporting._stage:
            _Reporting._stage = stage
            _Reporting.emit({"stage": stage})
        return super()._run(code, stage=stage, timeout=timeout)


def _child_main(argv: list[str]) -> int:
    import resource

    trial_dir, result_fd, parent = Path(argv[0]), int(argv[1]), int(argv[2])
    _die_with_parent(parent)
    out = os.fdopen(result_fd, "w", buffering=1, encoding="utf-8")

    def emit(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")

    spec = json.loads((trial_dir / "trial.json").read_text())
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # SIGXCPU at the soft limit, SIGKILL a second later.
    _lower(resource.RLIMIT_CPU, spec["cpu_seconds"], spec["cpu_seconds"] + 1)
    # V8 reserves ~520 MB of writable address space with the first context (measured), none of
    # it resident; the data limit counts from there.
    from reloader.v8 import new_context

    new_context().close()
    _lower(resource.RLIMIT_DATA, _vm_data() + spec["memory_limit"])
    bundle = (trial_dir / "bundle.js").read_bytes()
    _Reporting.emit = emit
    emit({"stage": "decode"})
    t0 = time.perf_counter()
    try:
        runtime = _Reporting(
            bundle,
            heap_limit=spec["heap_limit"],
            call_timeout=spec["call_timeout"],
            init_timeout=spec["init_timeout"],
            self_test=spec["self_test"],
        )
        try:
            runtime.warm_up(rows=spec["warmup_rows"], calls=spec["warmup_calls"])
        finally:
            runtime.close()
    except Exception as e:
        fields = {k: v for k, v in vars(e).items() if v is None or isinstance(v, str | int | float)}
        emit(
            {"ok": False, "error": {"type": type(e).__name__, "message": str(e), "fields": fields}}
        )
    else:
        emit({"ok": True, "build_seconds": time.perf_counter() - t0})
    out.flush()
    return 0


def _lower(limit: int, soft: int, hard: int | None = None) -> None:
    import resource

    current = resource.getrlimit(limit)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard if hard is not None else current, current)
    resource.setrlimit(limit, (soft, current if hard is None else hard))


def _vm_data() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 30  # no procfs: a generous allowance for V8's reservations


def _die_with_parent(parent: int) -> None:
    # The parent's thread waits for this process until it is reaped, so the death signal (sent
    # when that thread ends) only fires if the parent process itself dies.
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


if __name__ == "__main__":
    code = _child_main(sys.argv[1:])
    # No interpreter tear-down: the verdict is written, and closing V8 could only delay the exit.
    os._exit(code)
