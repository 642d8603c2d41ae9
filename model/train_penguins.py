"""Train the penguins example: typed records with strings and nulls, declarative pre-processing,
a JavaScript hook, and an export that carries all of it into one model project.

The data is the `palmerpenguins` package's CSV (344 penguins: island and sex as text, five
numbers with missing values, a year). The spec below says what the bundle does to a raw record;
`Spec.fit` fills its statistics from the training rows, `Spec.transform` computes the features
Keras trains on, and the bundle computes the same in JavaScript (the build compares them).
`derive` is the Python side of `model/penguins_hooks.js`.

    python model/train_penguins.py [--out model/examples/penguins]

Writes the model project (model.json + shard, spec.json, hooks.js) and reference.json (every
record, raw, and Keras' outputs for it). Needs the train extra (`make setup-train`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from model.export import export_keras
from model.spec import Spec

HERE = Path(__file__).resolve().parent
SEED = 20261130
HOOKS = HERE / "penguins_hooks.js"
SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
MEASURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]

SPEC: dict[str, Any] = {
    "name": "penguins",
    "inputs": [
        {"name": "island", "type": "string"},
        *({"name": m, "type": "float", "nullable": True} for m in MEASURES),
        {"name": "sex", "type": "string", "nullable": True, "default": "unknown"},
        {"name": "year", "type": "int"},
        {"name": "bill_ratio", "type": "float", "nullable": True, "derived": True},
    ],
    "features": [
        {"input": "island", "steps": [{"vocabulary": {"oov": "bucket"}}, {"onehot": {}}]},
        {
            "input": "bill_length_mm",
            "steps": [{"impute": {"strategy": "mean"}}, {"standardize": {}}],
        },
        {
            "input": "bill_depth_mm",
            "steps": [{"impute": {"strategy": "mean"}}, {"standardize": {}}],
        },
        {
            "input": "flipper_length_mm",
            "steps": [
                {"impute": {"strategy": "median"}},
                {"clip": {"min": 160, "max": 240}},
                {"standardize": {}},
            ],
        },
        {
            "input": "body_mass_g",
            "steps": [{"impute": {"strategy": "mean"}}, {"log1p": {}}, {"minmax": {}}],
        },
        {"input": "sex", "steps": [{"vocabulary": {"oov": "bucket"}}, {"onehot": {}}]},
        {"input": "year", "steps": [{"bucketize": {"boundaries": [2008, 2009]}}, {"onehot": {}}]},
        {"input": "bill_ratio", "steps": [{"impute": {"strategy": "mean"}}, {"standardize": {}}]},
    ],
    "output": {"kind": "multiclass", "labels": SPECIES, "top_k": 2},
    "extras": [{"name": "margin", "type": "float"}, {"name": "confidence", "type": "string"}],
}


def derive(columns: dict[str, Any]) -> dict[str, Any]:
    """The Python side of penguins_hooks.js' `prepare`: the bill ratio, and `sex` normalised."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.asarray(columns["bill_length_mm"], dtype=np.float64) / np.asarray(
            columns["bill_depth_mm"], dtype=np.float64
        )
    sex = [None if s is None else s.strip().lower() for s in columns["sex"]]
    return {"bill_ratio": ratio, "sex": sex}


def load_records() -> tuple[list[dict[str, Any]], np.ndarray]:
    """Every penguin as a raw record (None for missing values) and its species index."""
    import palmerpenguins

    frame = palmerpenguins.load_penguins()
    records: list[dict[str, Any]] = []
    for row in frame.to_dict(orient="records"):
        rec: dict[str, Any] = {"id": len(records)}
        for key, value in row.items():
            if key == "species":
                continue
            if isinstance(value, float) and math.isnan(value):
                value = None
            elif isinstance(value, np.integer):
                value = int(value)
            rec[key] = value
        records.append(rec)
    labels = np.array([SPECIES.index(s) for s in frame["species"]])
    return records, labels


def train(out: Path) -> dict[str, float]:
    import tensorflow as tf
    import tf_keras as keras
    from sklearn.model_selection import train_test_split

    records, y = load_records()
    idx = np.arange(len(records))
    train_idx, test_idx = train_test_split(idx, test_size=0.3, random_state=SEED, stratify=y)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    train_records = [records[i] for i in train_idx]
    spec = Spec.from_dict(SPEC).fit(train_records, derive=derive)
    features = spec.transform(records, derive=derive)
    assert not features.errors, features.errors
    x = features.matrix

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(x.shape[1],), name="features"),
            keras.layers.Dense(16, activation="gelu", name="hidden"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Dropout(0.2, name="dropout"),
            keras.layers.Dense(len(SPECIES), activation="softmax", name="species"),
        ],
        name="penguins",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x[train_idx], y[train_idx], epochs=60, batch_size=16, verbose=0, shuffle=True)
    outputs = model(x, training=False).numpy().astype(np.float32)
    accuracy = float((outputs[test_idx].argmax(axis=1) == y[test_idx]).mean())

    export_keras(
        model,
        spec,
        out,
        samples=[records[i] for i in test_idx],
        derive=derive,
        hooks=HOOKS,
        version="1",
    )
    reference = {
        "records": records,
        "outputs": outputs.tolist(),
        "species": [SPECIES[i] for i in y],
        "test_ids": [int(i) for i in test_idx],
        "accuracy_test": accuracy,
    }
    (out / "reference.json").write_text(json.dumps(reference) + "\n")
    return {"test_accuracy": accuracy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "examples" / "penguins")
    args = parser.parse_args(argv)
    scores = train(args.out)
    print(f"penguins: held-out accuracy {scores['test_accuracy']:.4f} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
