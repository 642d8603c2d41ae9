"""A process-path predictor that fails its task once, at one record (for the checkpoint test).

It lives in its own module so PyFlink's workers can import it by name.
"""

from __future__ import annotations

import os
from typing import Any

from job.functions import PredictBatched
from job.mixin import ModelSettings


class PoisonedPredict(PredictBatched):
    def __init__(self, settings: ModelSettings, *, poison_id: int, marker: str, **kw: Any) -> None:
        super().__init__(settings, **kw)
        self.poison_id = poison_id
        self.marker = marker

    def accept(self, value: Any) -> dict[str, Any] | None:
        record = super().accept(value)
        if record is not None and record.get("id") == self.poison_id:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return record  # already failed once: the restarted task goes on
            os.close(fd)
            raise RuntimeError(f"poison record {self.poison_id}: failing this task once")
        return record
