"""model/export.py: a tiny Keras model on typed records (strings, nulls, a timestamp, a derived
input, two output heads) exported as a model project, checked against Keras.

The Keras half runs under TRAIN_PYTHON (.venv-train); this test then reads the project with the
project venv's model.spec, as the bundle build would.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.bundle import MODEL_DIR
from model.spec import Spec, SpecError

REPO = MODEL_DIR.parent

# The Python side of the hooks' prepare(), shared by the script and this test.
DERIVE = """
import numpy as np

def derive(cols):
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"ratio": cols["size"] / (cols["count"] + 1.0)}
"""

HOOKS = """export function prepare(batch) {
  const size = batch.get('size');
  const count = batch.get('count');
  const ratio = new Float64Array(batch.n);
  for (let i = 0; i < batch.n; i++) ratio[i] = size[i] / (count[i] + 1);
  return { ratio };
}
"""

SPEC: dict[str, Any] = {
    "inputs": [
        {"name": "colour", "type": "string", "nullable": True, "default": "none"},
        {"name": "size", "type": "float", "nullable": True},
        {"name": "count", "type": "int"},
        {"name": "seen", "type": "timestamp", "nullable": True},
        {"name": "flag", "type": "bool"},
        {"name": "ratio", "type": "float", "derived": True, "nullable": True},
    ],
    "features": [
        {
            "input": "colour",
            "steps": [{"vocabulary": {"oov": "bucket", "min_count": 5}}, {"onehot": {}}],
        },
        {"input": "size", "steps": [{"impute": {"strategy": "mean"}}, {"standardize": {}}]},
        {"input": "count", "steps": [{"bucketize": {"quantiles": 4}}, {"onehot": {}}]},
        {
            "input": "seen",
            "name": "seen.hour",
            "steps": [
                {"impute": {"value": "2024-06-01T12:00:00Z"}},
                {"datepart": {"part": "hour"}},
                {"minmax": {}},
            ],
        },
        {
            "input": "seen",
            "name": "seen.weekday",
            "steps": [
                {"impute": {"strategy": "most_frequent"}},
                {"datepart": {"part": "weekday"}},
                {"bucketize": {"boundaries": [1, 2, 3, 4, 5, 6]}},
                {"onehot": {}},
            ],
        },
        {"input": "flag"},
        {
            "input": "ratio",
            "steps": [
                {"impute": {"strategy": "median"}},
                {"clip": {"min": 0, "max": 50}},
                {"log1p": {}},
            ],
        },
    ],
    "output": {
        "kind": "multi",
        "heads": [
            {"name": "kind", "kind": "multiclass", "labels": ["a", "b", "c"], "top_k": 2},
            {"name": "amount", "kind": "regression", "scale": {"mean": 100, "std": 20}},
        ],
    },
}

SCRIPT = r"""
import datetime as dt
import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
repo, out, spec_path, hooks_path = sys.argv[1:5]
sys.path.insert(0, repo)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from model.export import export_keras
from model.spec import Spec, SpecError

exec(DERIVE_SOURCE)

rng = np.random.default_rng(11)
records, kinds, amounts = [], [], []
start = dt.datetime(2024, 1, 1)
for i in range(240):
    colour = [None, "red", "green", "blue", "Teal", "red"][int(rng.integers(0, 6))]
    size = None if rng.random() < 0.1 else float(rng.normal(10, 3))
    count = int(rng.integers(0, 20))
    t = start + dt.timedelta(minutes=int(rng.integers(0, 60 * 24 * 200)))
    seen = [None, t, t.isoformat() + "Z", np.datetime64(t, "ms")][int(rng.integers(0, 4))]
    flag = bool(rng.random() < 0.5)
    records.append({"colour": colour, "size": size, "count": count, "seen": seen, "flag": flag})
    kinds.append((count // 7) % 3)
    amounts.append(100 + 20 * ((size or 10) - 10) / 3)

spec = Spec.from_dict(json.load(open(spec_path))).fit(records, derive=derive)
x = spec.transform(records, derive=derive)
assert not x.errors, x.errors

keras.utils.set_random_seed(3)
inp = keras.Input(shape=(x.matrix.shape[1],), name="features")
h = keras.layers.Dense(8, activation="relu", name="hidden")(inp)
kind = keras.layers.Dense(3, activation="softmax", name="kind")(h)
amount = keras.layers.Dense(1, name="amount")(h)
model = keras.Model(inp, [kind, amount], name="tiny-model")
model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy", "mse"])
y_amount = (np.array(amounts) - 100.0) / 20.0
model.fit(x.matrix, [np.array(kinds), y_amount], epochs=3, batch_size=32, verbose=0)

unfitted = json.load(open(spec_path))
export_keras(
    model, unfitted, out, train_records=records, derive=derive, hooks=hooks_path, version="3"
)

# Independently: Keras on the features of the records as spec.json carries them (JSON).
written = Spec.load(os.path.join(out, "spec.json"))
st = written.self_test
again = written.transform(st["records"], derive=derive)
assert not again.errors, again.errors
keras_out = np.concatenate([np.asarray(v) for v in model(again.matrix, training=False)], axis=1)
check = {"keras": written.output.postprocess(keras_out).tolist()}

# The width checks, one line each.
wrong = keras.Sequential([keras.Input(shape=(5,)), keras.layers.Dense(4)])
try:
    export_keras(wrong, written, os.path.join(out, "wrong"), samples=records, derive=derive)
except SpecError as e:
    check["wrong_input"] = str(e)
narrow = keras.Sequential([keras.Input(shape=(x.matrix.shape[1],)), keras.layers.Dense(3)])
try:
    export_keras(narrow, written, os.path.join(out, "narrow"), samples=records, derive=derive)
except SpecError as e:
    check["wrong_output"] = str(e)
json.dump(check, open(os.path.join(out, "check.json"), "w"))
print("exported", out)
"""


def _derive() -> Any:
    namespace: dict[str, Any] = {}
    exec(DERIVE, namespace)
    return namespace["derive"]


@pytest.mark.train
def test_export_keras_writes_a_checked_project(tmp_path: Path, train_python: Path) -> None:
    spec_path = tmp_path / "spec.in.json"
    spec_path.write_text(json.dumps(SPEC))
    hooks_path = tmp_path / "my_hooks.js"
    hooks_path.write_text(HOOKS)
    script = tmp_path / "export_tiny.py"
    script.write_text(SCRIPT.replace("exec(DERIVE_SOURCE)", DERIVE))
    out = tmp_path / "project"
    proc = subprocess.run(
        [train_python, str(script), str(REPO), str(out), str(spec_path), str(hooks_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the project's files
    assert (out / "model.json").exists() and list(out.glob("*.bin"))
    assert (out / "hooks.js").read_text() == HOOKS
    raw = json.loads((out / "spec.json").read_text())
    assert (raw["name"], raw["version"], raw["hooks"]) == ("tiny-model", "3", "hooks.js")
    spec = Spec.from_dict(raw)
    assert spec.unfitted() == []
    width = spec.width()
    topology = json.loads((out / "model.json").read_text())["modelTopology"]
    assert f"[null, {width}]" in json.dumps(topology)

    # samples: the training features, reproduced from the records as JSON carries them
    derive = _derive()
    samples = raw["samples"]
    assert samples["names"] == spec.feature_names()
    assert 1 < len(samples["records"]) <= 64
    again = spec.transform(samples["records"], derive=derive)
    assert again.errors == {}
    assert again.matrix.tobytes() == np.asarray(samples["features"], dtype=np.float32).tobytes()
    for name in ("colour", "size", "seen"):  # a null of each nullable input is among them
        assert any(r[name] is None for r in samples["records"]), name
    stamps = [r["seen"] for r in samples["records"] if r["seen"] is not None]
    assert stamps and all(s.endswith("Z") and "T" in s for s in stamps)

    # selfTest: Keras' own outputs (both heads, the regression scaled) for raw records
    st = raw["selfTest"]
    assert len(st["records"]) == 16 and st["tolerance"] == 1e-5
    expected = np.asarray(st["expected"], dtype=np.float32)
    assert expected.shape == (16, 4)
    assert spec.output.names() == ["kind.a", "kind.b", "kind.c", "amount.value"]
    check = json.loads((out / "check.json").read_text())
    assert np.abs(expected - np.asarray(check["keras"], dtype=np.float32)).max() <= 1e-6
    np.testing.assert_allclose(expected[:, :3].sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(expected[:, 3] - 100).max() < 100  # scaled back: around the mean of 100
    decoded = spec.output.decode(expected[:1])[0]
    assert set(decoded) == {"kind", "amount"} and len(decoded["kind"]["top_k"]) == 2

    # the width checks
    assert check["wrong_input"].startswith(f"the model takes 5 features, the spec makes {width}: ")
    assert "colour (colour=red, " in check["wrong_input"]
    assert "seen.weekday (seen.weekday#0, " in check["wrong_input"]
    assert check["wrong_output"] == (
        "the model gives 3 outputs (3), the multi output needs 4: "
        "kind.a, kind.b, kind.c, amount.value"
    )


def _records(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(5)
    colours = [None, "red", "green", "blue", "Teal"]
    return [
        {
            "colour": colours[i % 5],
            "size": None if i % 7 == 0 else float(rng.normal(10, 3)),
            "count": int(rng.integers(0, 20)),
            "seen": None if i % 3 == 0 else f"2024-05-{1 + i % 28:02d}T0{i % 10}:30:00Z",
            "flag": bool(i % 2),
        }
        for i in range(n)
    ]


def test_write_project_with_any_predict(tmp_path: Path) -> None:
    """The spec half of the export, for a model given as a function (no TensorFlow here)."""
    from model.export import write_project

    derive = _derive()
    records = _records(120)
    records[5]["count"] = 2.5  # an error record: never a sample
    spec = Spec.from_dict(SPEC).fit(records, derive=derive)
    weights = np.random.default_rng(0).normal(size=(spec.width(), 4)).astype(np.float32)

    def predict(x: np.ndarray) -> np.ndarray:
        return x @ weights

    (tmp_path / "hooks.js").write_text(HOOKS)
    with pytest.raises(SpecError, match="the bundle needs a name"):
        write_project(spec, tmp_path / "a", predict=predict, samples=records, derive=derive)
    named = dataclasses.replace(spec, name="tiny")
    with pytest.raises(SpecError, match="derived input 'ratio' needs hooks"):
        write_project(named, tmp_path / "a", predict=predict, samples=records, derive=derive)
    with pytest.raises(SpecError, match="spec is not fitted: feature 'colour' step 1"):
        write_project(SPEC, tmp_path / "a", predict=predict, samples=records, name="x")
    with pytest.raises(
        SpecError, match=r"the model gives 3 outputs \(3\), the multi output needs 4"
    ):
        write_project(
            named, tmp_path / "a", predict=lambda x: predict(x)[:, :3], samples=records,
            derive=derive, hooks=tmp_path / "hooks.js",
        )  # fmt: skip
    out = write_project(
        named,
        tmp_path / "p",
        predict=predict,
        samples=records,
        derive=derive,
        hooks=tmp_path / "hooks.js",
        self_test_rows=5,
        sample_rows=10,
    )
    written = Spec.load(out / "spec.json")
    st, samples = written.self_test, written.samples
    assert st is not None and samples is not None
    assert len(st["records"]) == 5 and len(samples["records"]) == 10
    assert all(r != records[5] for r in samples["records"])
    for name in ("colour", "size", "seen"):
        assert any(r[name] is None for r in samples["records"]), name
    again = written.transform(st["records"], derive=derive)
    want = written.output.postprocess(predict(again.matrix))
    assert np.asarray(st["expected"], dtype=np.float32).tobytes() == want.tobytes()
    raw = predict(again.matrix)[:, 3].astype(np.float64)
    assert want[:, 3].tolist() == (raw * 20.0 + 100.0).astype(np.float32).tolist()  # in float64
    x = written.transform(samples["records"], derive=derive).matrix
    assert x.tobytes() == np.asarray(samples["features"], dtype=np.float32).tobytes()
