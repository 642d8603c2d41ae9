"""Functions that fail their task once, at one record (for the checkpoint tests): a process-path
predictor and a Table function.

They live in their own module so PyFlink's workers can import them by name.
"""

from __future__ import annotations

import os
from typing import Any

from pyflink.table.udf import ScalarFunction

from job.functions import PredictBatched
from job.mixin import ModelSettings


def fail_once(marker: str, why: str) -> None:
    """Raises the first time it is called with `marker` (a file it creates); after that, never."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # already failed once: the restarted task goes on
    os.close(fd)
    raise RuntimeError(f"{why}: failing this task once")


class PoisonedPredict(PredictBatched):
    def __init__(self, settings: ModelSettings, *, poison_id: int, marker: str, **kw: Any) -> None:
        super().__init__(settings, **kw)
        self.poison_id = poison_id
        self.marker = marker

    def accept(self, value: Any) -> dict[str, Any] | None:
        record = super().accept(value)
        if record is not None and record.get("id") == self.poison_id:
            fail_once(self.marker, f"poison record {self.poison_id}")
        return record


class PoisonedId(ScalarFunction):  # type: ignore[misc]
    """A Table function that passes an id through and fails its task at `poison_id`, once."""

    def __init__(self, *, poison_id: int, marker: str) -> None:
        self.poison_id = poison_id
        self.marker = marker

    def eval(self, value: int | None) -> int | None:
        if value == self.poison_id:
            fail_once(self.marker, f"poison record {self.poison_id}")
        return value
