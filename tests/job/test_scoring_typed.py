"""The job's scoring core on a contract-2 bundle: typed columns straight to the bundle, output
fields by the declared kind, extras, and error records naming the input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from job.scoring import Batch, Scorer, parse_record
from reloader.agent import HotModel
from reloader.publish import publish

TOY = Path(__file__).resolve().parents[1] / "support" / "typed_toy.js"


@pytest.fixture(scope="module")
def typed_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HotModel]:
    root = tmp_path_factory.mktemp("typed")
    publish(str(root / "store"), TOY.read_bytes(), model="typed-toy", version="t1")
    hm = HotModel(str(root / "store"), cache_dir=str(root / "cache"), poll_interval=3600)
    hm.start()
    yield hm
    hm.stop()


def _lines(model: HotModel, batch: Batch) -> list[dict[str, Any]]:
    scorer = Scorer()
    scorer.subtask = 0
    _result, lines = scorer.score(model.run, batch)
    return [json.loads(line) for line in lines]


def test_typed_records_and_columns(typed_model: HotModel) -> None:
    good = {
        "id": 1,
        "x": 1.0,
        "n": 2,
        "flag": True,
        "word": "ab",
        "when": "2024-03-05",
        "note": "k",
    }
    records = [
        good,
        good | {"id": 2, "x": None},
        good | {"id": 3, "n": "two"},
        good | {"id": 4, "word": "bad"},
        parse_record("{not json"),
        {k: v for k, v in good.items() if k != "when"} | {"id": 6},
    ]
    out = _lines(typed_model, Batch(records=records))
    assert out[0] == {
        "id": 1, "value": 18.0, "double": 36.0, "upper": "AB", "model_version": "t1",
        "model_sha256": out[0]["model_sha256"], "subtask": 0, "note": "k",
    }  # fmt: skip
    assert [o.get("error") for o in out[1:]] == [
        "input 'x' is null and has no default or impute",
        "input 'n' is str, not an integer",
        "input 'word' is bad",
        out[4]["error"],
        None,
    ]
    assert out[4]["error"].startswith("not JSON")
    assert out[5]["value"] == 15.0  # no time stamp: a nullable input
    columns = {name: [r.get(name) for r in records[:4]] for name in good}
    by_columns = _lines(typed_model, Batch(columns=columns))
    assert by_columns == out[:4]
