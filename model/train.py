"""Train the WINE classifier with Keras and convert it to a TF.js layers model.

Writes one directory per version (default: the two committed examples):

    <out>/<version>/model.json, *.bin   the TF.js layers model (tensorflowjs converter)
    <out>/<version>/app.json            what the bundle's app code needs: feature names, labels,
                                        standardization constants, the selfTest block
    <out>/<version>/reference.json      Keras' own outputs for all 178 rows, and the split

`v1` is deliberately weak (two epochs, tiny layer) and `v2` is good, so a hot swap is visible in
the demo. Needs the `train` extra (TensorFlow, tf-keras, tensorflowjs); `make train` installs it
into .venv-train.

    python model/train.py [--out model/examples/wine] [--versions v1,v2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# tensorflowjs' Keras converter speaks Keras 2 (tf_keras); TF 2.19 defaults to Keras 3.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Run as a script (`python model/train.py`, in .venv-train where the project is not installed).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from model.data import Array, load_wine_csv

HERE = Path(__file__).resolve().parent
SEED = 20261123
TEST_FRACTION = 0.3
SELF_TEST_PER_CLASS = 4
SELF_TEST_TOLERANCE = 1e-5

# name -> (hidden units, epochs, learning rate). v1 stops long before it converges.
RECIPES = {
    "v1": (4, 2, 0.002),
    "v2": (16, 150, 0.01),
}


def split(y: Array) -> tuple[Array, Array]:
    """Stratified, seeded train/test split; returns index arrays."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(
        idx, test_size=TEST_FRACTION, random_state=SEED, stratify=y
    )
    return np.sort(train_idx), np.sort(test_idx)


def standardize(x: Array, mean: Array, std: Array) -> Array:
    # The bundle repeats exactly this in JavaScript: double precision, then float32.
    out: Array = ((x - mean) / std).astype(np.float32)
    return out


def train_one(version: str, out: Path) -> dict[str, float]:
    import tensorflow as tf
    import tensorflowjs as tfjs
    import tf_keras as keras

    hidden, epochs, lr = RECIPES[version]
    features, ids, x, y = load_wine_csv()
    train_idx, test_idx = split(y)
    mean = x[train_idx].mean(axis=0).astype(np.float32).astype(np.float64)
    std = x[train_idx].std(axis=0).astype(np.float32).astype(np.float64)
    xs = standardize(x, mean, std)

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(len(features),), name="features"),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(3, activation="softmax", name="probabilities"),
        ],
        name=f"wine_{version}",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(xs[train_idx], y[train_idx], epochs=epochs, batch_size=16, verbose=0, shuffle=True)

    # The reference: Keras' own forward pass (not model.predict's batching quirks) on every row.
    reference = model(xs, training=False).numpy().astype(np.float32)
    pred = reference.argmax(axis=1)
    acc_test = float((pred[test_idx] == y[test_idx]).mean())
    acc_all = float((pred == y).mean())

    target = out / version
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.bin"):
        old.unlink()
    tfjs.converters.save_keras_model(model, str(target))

    # selfTest: a few held-out rows of each class, raw (un-standardized) features, as the bundle
    # receives them.
    st_idx = np.concatenate([test_idx[y[test_idx] == c][:SELF_TEST_PER_CLASS] for c in range(3)])
    app = {
        "name": "wine",
        "version": version,
        "inputs": features,
        "outputs": ["class_0", "class_1", "class_2"],
        "labels": ["class_0", "class_1", "class_2"],
        "maxBatch": 4096,
        "preprocess": {"standardize": {"mean": mean.tolist(), "std": std.tolist()}},
        "selfTest": {
            "inputs": x[st_idx].tolist(),
            "expected": [[float(v) for v in row] for row in reference[st_idx]],
            "tolerance": SELF_TEST_TOLERANCE,
        },
        "training": {
            "hidden_units": hidden,
            "epochs": epochs,
            "learning_rate": lr,
            "seed": SEED,
            "test_accuracy": acc_test,
            "tensorflow": tf.__version__,
            "tf_keras": keras.__version__,
            "tensorflowjs": tfjs.__version__,
        },
    }
    (target / "app.json").write_text(json.dumps(app, indent=1) + "\n")
    ref = {
        "ids": ids.tolist(),
        "outputs": [[float(v) for v in row] for row in reference],
        "train_ids": ids[train_idx].tolist(),
        "test_ids": ids[test_idx].tolist(),
        "accuracy_test": acc_test,
        "accuracy_all": acc_all,
    }
    (target / "reference.json").write_text(json.dumps(ref) + "\n")
    return {"test_accuracy": acc_test, "all_accuracy": acc_all}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "examples" / "wine")
    parser.add_argument(
        "--versions", default="v1,v2", help="comma-separated, of: " + ", ".join(RECIPES)
    )
    args = parser.parse_args(argv)
    versions = [v for v in args.versions.split(",") if v]
    unknown = [v for v in versions if v not in RECIPES]
    if unknown:
        parser.error(f"unknown version(s) {unknown}; known: {sorted(RECIPES)}")
    for version in versions:
        scores = train_one(version, args.out)
        print(
            f"{version}: held-out accuracy {scores['test_accuracy']:.4f}, "
            f"all rows {scores['all_accuracy']:.4f} -> {args.out / version}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
