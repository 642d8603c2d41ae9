"""The PyFlink functions that predict, built on `ReloaderMixin`.

Records are JSON objects: an `id` and the model's features by name (`meta.inputs`). Outputs are
JSON objects: the `id`, the predicted `label`, the `probabilities` by output name, and the
`model_version` and `model_sha256` of the model that made the prediction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pyflink.datastream import ProcessFunction, RuntimeContext

from job.mixin import ModelSettings, ReloaderMixin


class PredictRecord(ReloaderMixin, ProcessFunction):  # type: ignore[misc]
    """Per-record prediction with room for custom logic (the "rich map function" path).

    One Python -> V8 round trip per record: simple and exact, and bound by that round trip.
    """

    def __init__(self, settings: ModelSettings | None = None, **kw: Any) -> None:
        ReloaderMixin.__init__(self, settings, **kw)

    def open(self, runtime_context: RuntimeContext) -> None:
        self.open_model(runtime_context)

    def close(self) -> None:
        self.close_model()

    def process_element(self, value: str, ctx: ProcessFunction.Context) -> Iterator[str]:
        record = json.loads(value)
        result = self.run_model(lambda rt: (rt.predict_rows([record])[0], rt.meta.outputs))
        prediction, outputs = result.value
        self.count_predictions(1)
        yield json.dumps(
            {
                "id": record.get("id"),
                "label": prediction.label,
                "probabilities": dict(zip(outputs, map(float, prediction.scores), strict=True)),
                "model_version": result.version,
                "model_sha256": result.sha256,
            }
        )
