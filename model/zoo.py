"""Train the model zoo: one tiny Keras model per activation and layer type the fast-path kernels
cover (`model/src/kernels.js`), and two they do not, each written as a buildable model directory.

    <out>/<name>/model.json, *.bin   the TF.js layers model (tensorflowjs converter)
    <out>/<name>/app.json            a contract-1 app (docs/bundle-contract.md): inputs, outputs,
                                     standardization, selfTest with Keras' outputs
    <out>/<name>/reference.json      raw input rows, Keras' outputs for them (`model(x,
                                     training=False)` on the float32 features), the kernel the
                                     bundle must choose and, off the fast path, the reason

Seeded and deterministic: the same TensorFlow build writes the same files. A few epochs each, on
synthetic data (scikit-learn's generators): the models only have to be trained enough that their
batch-normalization statistics and weights are not the initial ones. Needs the `train` extra;
`make zoo` runs it in .venv-train.

    python model/zoo.py [--out model/examples/zoo] [--only name,name]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# tensorflowjs' Keras converter speaks Keras 2 (tf_keras); TF 2.19 defaults to Keras 3.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 20261130
ROWS = 200  # reference rows per model
SELF_TEST_ROWS = 8
TOLERANCE = 1e-5
TRAIN_ROWS = 600
EPOCHS = 4

# Every Keras activation TF.js 4.22 loads as a Dense activation ('silu' is saved as 'swish').
# 'leaky_relu' and 'exponential' are Keras activations TF.js cannot load: out of scope.
ACTIVATIONS = [
    "linear", "relu", "relu6", "elu", "selu", "sigmoid", "hard_sigmoid", "tanh", "softplus",
    "softsign", "swish", "mish", "gelu", "softmax",
]  # fmt: skip

# (keras, inputs, outputs) -> the layers of a Sequential model after its InputLayer, or a functional
# model.
Builder = Callable[[Any, int, int], Any]


@dataclass(frozen=True)
class Fixture:
    name: str
    build: Builder
    task: str = "multiclass"  # or "binary", "regression"
    standardize: bool = True  # app.json standardizes the raw inputs (else the model does)
    kernel: str = "dense-unrolled"
    reason: str = ""
    inputs: int = 6
    far: bool = False  # raw features far from zero relative to their spread (years, prices)
    # The JSON path's (TF.js') tolerance, where TF.js itself cannot match Keras within TOLERANCE.
    json_tolerance: float = TOLERANCE


def dense_with(activation: str) -> Builder:
    def build(keras: Any, n_in: int, n_out: int) -> Any:
        # Large initial weights: pre-activations reach +-10, the tails and kinks of the activation
        # (relu6's cap, hard_sigmoid's clip, softplus' and gelu's asymptotes), not only its middle.
        wide = keras.initializers.RandomNormal(stddev=1.5, seed=SEED)
        hidden = keras.layers.Dense(12, activation, kernel_initializer=wide, name="hidden")
        return [hidden, keras.layers.Dense(n_out, "softmax", name="out")]

    return build


def log_softmax_output(keras: Any, n_in: int, n_out: int) -> Any:
    dense = keras.layers.Dense
    return [dense(12, "relu", name="hidden"), dense(n_out, "log_softmax", name="out")]


def batchnorm_after_dense(keras: Any, n_in: int, n_out: int) -> Any:
    # Dense -> BN -> ReLU (BN folds into the Dense before it), Dense(relu) -> BN -> Dense (BN folds
    # into the Dense after it).
    k = keras.layers
    return [
        k.Dense(16, name="hidden1"),
        k.BatchNormalization(momentum=0.8, name="bn1"),
        k.ReLU(name="relu1"),
        k.Dense(8, "relu", name="hidden2"),
        k.BatchNormalization(momentum=0.8, name="bn2"),
        k.Dense(n_out, "softmax", name="out"),
    ]


def batchnorm_first(keras: Any, n_in: int, n_out: int) -> Any:
    # On raw, unscaled features: the first BN is the input standardization.
    k = keras.layers
    return [
        k.BatchNormalization(momentum=0.5, name="bn_in"),
        k.Dense(12, "tanh", name="hidden"),
        k.Dense(n_out, "softmax", name="out"),
    ]


def batchnorm_raw(keras: Any, n_in: int, n_out: int) -> Any:
    # On raw features far from zero (a year: 2020 +- 3): Keras' float32 x * inv + shift cancels, so
    # the kernels keep this BatchNormalization a step that rounds as Keras does, not folded.
    k = keras.layers
    return [
        k.BatchNormalization(momentum=0.5, name="bn_in"),
        k.Dense(12, "relu", name="hidden"),
        k.Dense(n_out, name="value"),
    ]


def batchnorm_last(keras: Any, n_in: int, n_out: int) -> Any:
    # BN after an activation with no Dense after it: stays an affine step of its own.
    k = keras.layers
    return [
        k.Dense(12, "relu", name="hidden"),
        k.Dense(n_out, "tanh", name="out"),
        k.BatchNormalization(momentum=0.8, center=False, name="bn_out"),
    ]


def dropout_noise(keras: Any, n_in: int, n_out: int) -> Any:
    k = keras.layers
    return [
        k.GaussianNoise(0.1, name="noise"),
        k.Dense(16, "relu", name="hidden1"),
        k.Dropout(0.2, name="dropout"),
        k.Dense(12, "selu", name="hidden2"),
        k.AlphaDropout(0.1, name="alpha_dropout"),
        k.Dense(8, "relu", name="hidden3"),
        k.GaussianDropout(0.1, name="gaussian_dropout"),
        k.Dense(n_out, "softmax", name="out"),
    ]


def activation_layers(keras: Any, n_in: int, n_out: int) -> Any:
    k = keras.layers
    return [
        k.Dense(16, name="hidden1"),
        k.Activation("tanh", name="tanh"),
        k.Dense(16, name="hidden2"),
        k.ReLU(max_value=2.5, name="relu_capped"),
        k.Dense(12, name="hidden3"),
        k.ELU(name="elu"),
        k.Dense(12, name="hidden4"),
        k.ThresholdedReLU(theta=0.1, name="thresholded"),
        k.Dense(n_out, name="logits"),
        k.Softmax(name="softmax"),
    ]


def leaky_relu(keras: Any, n_in: int, n_out: int) -> Any:
    k = keras.layers
    return [
        k.Dense(16, name="hidden1"),
        k.LeakyReLU(alpha=0.1, name="leaky"),
        k.Dense(12, name="hidden2"),
        k.PReLU(alpha_initializer=keras.initializers.Constant(0.25), name="prelu"),
        k.Dense(n_out, "softmax", name="out"),
    ]


def functional_chain(keras: Any, n_in: int, n_out: int) -> Any:
    k = keras.layers
    x = inputs = keras.Input(shape=(n_in,), name="features")
    x = k.Dense(16, name="hidden1")(x)
    x = k.BatchNormalization(momentum=0.8, name="bn")(x)
    x = k.Activation("swish", name="swish")(x)
    x = k.Dropout(0.1, name="dropout")(x)
    x = k.Dense(12, "gelu", name="hidden2")(x)
    outputs = k.Dense(n_out, "softmax", name="out")(x)
    return keras.Model(inputs, outputs, name="functional_chain")


def regression(keras: Any, n_in: int, n_out: int) -> Any:
    dense = keras.layers.Dense
    hidden = [dense(16, "relu", name="hidden1"), dense(8, "relu", name="hidden2")]
    return [*hidden, dense(n_out, name="value")]


def binary(keras: Any, n_in: int, n_out: int) -> Any:
    dense = keras.layers.Dense
    return [dense(8, "relu", name="hidden"), dense(n_out, "sigmoid", name="probability")]


def wide(keras: Any, n_in: int, n_out: int) -> Any:
    # 20*64 + 64*32 + 32*3 = 3,424 multiply-adds: past what dense-unrolled generates (1,024).
    dense = keras.layers.Dense
    return [
        dense(64, "relu", name="hidden1"),
        dense(32, "relu", name="hidden2"),
        dense(n_out, "softmax", name="out"),
    ]


def conv1d(keras: Any, n_in: int, n_out: int) -> Any:
    k = keras.layers
    return [
        k.Reshape((n_in, 1), name="to_sequence"),
        k.Conv1D(4, 3, activation="relu", name="conv"),
        k.Flatten(name="flatten"),
        k.Dense(n_out, "softmax", name="out"),
    ]


def branches(keras: Any, n_in: int, n_out: int) -> Any:
    k = keras.layers
    inputs = keras.Input(shape=(n_in,), name="features")
    left = k.Dense(8, "relu", name="left")(inputs)
    right = k.Dense(8, "tanh", name="right")(inputs)
    joined = k.Concatenate(name="join")([left, right])
    outputs = k.Dense(n_out, "softmax", name="out")(joined)
    return keras.Model(inputs, outputs, name="fallback_branches")


FIXTURES: list[Fixture] = [
    *(Fixture(f"dense_{a}", dense_with(a)) for a in ACTIVATIONS),
    Fixture("log_softmax_output", log_softmax_output),
    Fixture("batchnorm_after_dense", batchnorm_after_dense),
    Fixture("batchnorm_first", batchnorm_first, standardize=False),
    Fixture("batchnorm_last", batchnorm_last, task="regression"),
    # TF.js computes BatchNormalization in double precision: it misses Keras' float32 cancellation
    # (by 4e-5 on these rows), so the JSON path cannot meet 1e-5 here; the fast path does.
    Fixture(
        "batchnorm_raw",
        batchnorm_raw,
        task="regression",
        standardize=False,
        far=True,
        json_tolerance=1e-4,
    ),
    Fixture("dropout_noise", dropout_noise),
    Fixture("activation_layers", activation_layers),
    Fixture("leaky_relu", leaky_relu),
    Fixture("functional_chain", functional_chain),
    Fixture("regression", regression, task="regression", inputs=10),
    Fixture("binary", binary, task="binary", inputs=12),
    Fixture("wide", wide, kernel="dense-js", inputs=20),
    Fixture(
        "fallback_conv1d",
        conv1d,
        kernel="tfjs-cpu",
        reason='layer "to_sequence" (Reshape) is not covered by the generated kernels',
    ),
    Fixture(
        "fallback_branches",
        branches,
        kernel="tfjs-cpu",
        reason='model is not a single chain: layer "right" (Dense) does not take the output of the '
        "layer before it",
    ),
]


def dataset(fixture: Fixture) -> tuple[Any, Any]:
    """(raw features float32 [n, inputs], targets) for the fixture's task, seeded by its name."""
    from sklearn.datasets import make_classification, make_regression

    n = TRAIN_ROWS + ROWS
    seed = SEED + sum(map(ord, fixture.name))
    if fixture.task == "regression":
        x, y = make_regression(
            n_samples=n, n_features=fixture.inputs, n_informative=fixture.inputs // 2,
            noise=5.0, random_state=seed,
        )  # fmt: skip
        y = ((y - y.mean()) / y.std()).astype(np.float32)[:, None]
    else:
        x, y = make_classification(
            n_samples=n, n_features=fixture.inputs, n_informative=fixture.inputs // 2 + 1,
            n_redundant=1, n_classes=2 if fixture.task == "binary" else 3, random_state=seed,
        )  # fmt: skip
    # Raw features on their own scales and offsets, as real ones are: the standardization (or the
    # model's first BatchNormalization) has something to do.
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-1, 2, size=fixture.inputs)
    offset = rng.normal(0, 3, size=fixture.inputs) * scale
    if fixture.far:
        offset = rng.uniform(200, 700, size=fixture.inputs) * scale
    return (x * scale + offset).astype(np.float32), y


def outputs_of(fixture: Fixture, classes: int) -> list[str]:
    if fixture.task == "regression":
        return ["value"]
    if fixture.task == "binary":
        return ["positive"]
    return [f"class_{c}" for c in range(classes)]


def f32_list(a: Any) -> Any:
    """float32 values as the shortest decimal that round-trips to the same float32 (half the bytes
    of the double's repr; JSON readers cast back to the same float32)."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 0:
        return float(str(a))
    return [f32_list(v) for v in a]


def train_one(fixture: Fixture, out: Path) -> dict[str, Any]:
    import tensorflow as tf
    import tensorflowjs as tfjs
    import tf_keras as keras

    x, y = dataset(fixture)
    train, probe = slice(0, TRAIN_ROWS), slice(TRAIN_ROWS, None)
    if fixture.standardize:
        # As model/train.py: float32 constants, applied in double precision, then float32.
        mean = x[train].astype(np.float64).mean(axis=0).astype(np.float32).astype(np.float64)
        std = x[train].astype(np.float64).std(axis=0).astype(np.float32).astype(np.float64)
        features = ((x.astype(np.float64) - mean) / std).astype(np.float32)
    else:
        features = x
    n_out = 1 if fixture.task in ("binary", "regression") else 3

    keras.utils.set_random_seed(SEED)
    model = fixture.build(keras, fixture.inputs, n_out)
    if isinstance(model, list):
        features_in = keras.layers.InputLayer(input_shape=(fixture.inputs,), name="features")
        model = keras.Sequential([features_in, *model], name=fixture.name)
    loss = {
        "multiclass": "sparse_categorical_crossentropy",
        "binary": "binary_crossentropy",
        "regression": "mse",
    }[fixture.task]
    if fixture.name == "log_softmax_output":  # log-probabilities out
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss=loss)
    model.fit(features[train], y[train], epochs=EPOCHS, batch_size=32, verbose=0, shuffle=True)

    # The reference: Keras' own forward pass (inference mode) on the exact float32 features.
    reference = model(features[probe], training=False).numpy().astype(np.float32)

    target = out / fixture.name
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.bin"):
        old.unlink()
    tfjs.converters.save_keras_model(model, str(target))

    raw = x[probe]
    outputs = outputs_of(fixture, n_out)
    app: dict[str, Any] = {
        "name": fixture.name,
        "version": "1",
        "inputs": [f"x{i}" for i in range(fixture.inputs)],
        "outputs": outputs,
        "maxBatch": 4096,
    }
    if fixture.standardize:
        app["preprocess"] = {"standardize": {"mean": mean.tolist(), "std": std.tolist()}}
    app["selfTest"] = {
        "inputs": f32_list(raw[:SELF_TEST_ROWS]),
        "expected": f32_list(reference[:SELF_TEST_ROWS]),
        "tolerance": fixture.json_tolerance,
    }
    app["training"] = {
        "seed": SEED,
        "epochs": EPOCHS,
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "tensorflowjs": tfjs.__version__,
    }
    (target / "app.json").write_text(json.dumps(app, indent=1) + "\n")
    ref = {
        "kernel": fixture.kernel,
        "reason": fixture.reason,
        "json_tolerance": fixture.json_tolerance,
        "inputs": f32_list(raw),
        "outputs": f32_list(reference),
    }
    (target / "reference.json").write_text(json.dumps(ref) + "\n")
    return {"layers": [layer.__class__.__name__ for layer in model.layers]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "examples" / "zoo")
    parser.add_argument("--only", default="", help="comma-separated fixture names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the fixture names and exit")
    args = parser.parse_args(argv)
    known = {f.name: f for f in FIXTURES}
    if args.list:
        print("\n".join(known))
        return 0
    names = [n for n in args.only.split(",") if n] or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown fixture(s) {unknown}; known: {sorted(known)}")

    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    for name in names:
        info = train_one(known[name], args.out)
        print(f"{name}: {' -> '.join(info['layers'])} -> {args.out / name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
