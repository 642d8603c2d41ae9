"""A process the tests start in its own session (so its own process group) and stop with its
whole group: `python -m job` (PyFlink, its JVM and its Python workers), Prometheus, the docs'
background servers.

`start_group(argv, log=...)` starts one, stdout and stderr to `log`, stdin empty;
`stop_group(proc, timeout=...)` sends the group SIGTERM, then SIGKILL after `timeout` seconds;
`process_group(...)` is the two as a context manager.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def start_group(argv: Sequence[str | Path], *, log: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """`argv` in a new session; `popen` are more `subprocess.Popen` options (cwd, env)."""
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **popen,
        )


def stop_group(proc: subprocess.Popen[Any], *, timeout: float) -> None:
    """SIGTERM to the process's group, SIGKILL after `timeout` s; returns once it is reaped."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):  # the group ended since the poll
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def process_group(
    argv: Sequence[str | Path], *, log: Path, stop_timeout: float, **popen: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """`start_group`, then `stop_group` on the way out."""
    proc = start_group(argv, log=log, **popen)
    try:
        yield proc
    finally:
        stop_group(proc, timeout=stop_timeout)
