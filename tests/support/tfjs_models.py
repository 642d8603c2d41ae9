"""Small TF.js models written by hand (no TensorFlow): model.json + one weight shard.

- `dense_model(dir, layers)`: a Keras `Sequential` of `Dense` layers, each `(kernel [in, out],
  bias [out], activation)`, as `tfjs.converters.save_keras_model` writes it.
- `two_head_model(dir, heads)`: a functional model with one input and one `Dense` head per output.
- `graph_model(dir, kernel, bias, activation)`: a graph model (`tensorflowjs_converter
  --input_format=tf_saved_model` format): `Placeholder -> MatMul -> BiasAdd -> activation`.
- `numpy_forward(layers, x)`: the same Dense stack in numpy (float32), for expected outputs.

Weights are little-endian float32, concatenated in `weightsManifest` order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Layer = tuple[npt.ArrayLike, npt.ArrayLike, str]

_SHARD = "group1-shard1of1.bin"


def _dense_config(name: str, units: int, activation: str) -> dict[str, Any]:
    return {
        "name": name,
        "trainable": True,
        "dtype": "float32",
        "units": units,
        "activation": activation,
        "use_bias": True,
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
        "bias_initializer": {"class_name": "Zeros", "config": {}},
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "bias_constraint": None,
    }


def _write(
    out: Path, topology: dict[str, Any], weights: list[tuple[str, np.ndarray]], **extra: Any
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    data = b"".join(np.ascontiguousarray(w, dtype="<f4").tobytes() for _, w in weights)
    (out / _SHARD).write_bytes(data)
    manifest = [
        {
            "paths": [_SHARD],
            "weights": [
                {"name": name, "shape": list(w.shape), "dtype": "float32"} for name, w in weights
            ],
        }
    ]
    model = {**extra, "modelTopology": topology, "weightsManifest": manifest}
    (out / "model.json").write_text(json.dumps(model, indent=1))
    return out


def _arrays(layer: Layer) -> tuple[np.ndarray, np.ndarray, str]:
    kernel, bias, act = layer
    k = np.asarray(kernel, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32)
    assert k.ndim == 2 and b.shape == (k.shape[1],), (k.shape, b.shape)
    return k, b, act


def dense_model(out: Path, layers: Sequence[Layer], *, name: str = "model") -> Path:
    """Writes a Sequential of Dense layers into `out`; returns `out`."""
    arrays = [_arrays(layer) for layer in layers]
    width = arrays[0][0].shape[0]
    config: list[dict[str, Any]] = [
        {
            "class_name": "InputLayer",
            "config": {"batch_input_shape": [None, width], "dtype": "float32", "name": "features"},
        }
    ]
    weights: list[tuple[str, np.ndarray]] = []
    for i, (k, b, act) in enumerate(arrays):
        lname = f"dense_{i}"
        config.append({"class_name": "Dense", "config": _dense_config(lname, k.shape[1], act)})
        weights += [(f"{lname}/kernel", k), (f"{lname}/bias", b)]
    topology = {
        "keras_version": "2.19.0",
        "backend": "tensorflow",
        "model_config": {"class_name": "Sequential", "config": {"name": name, "layers": config}},
    }
    return _write(out, topology, weights, format="layers-model", generatedBy="tests")


def two_head_model(out: Path, width: int, heads: Sequence[tuple[str, Layer]]) -> Path:
    """A functional model: one input of `width`, one Dense layer per named head, each an output."""
    layers: list[dict[str, Any]] = [
        {
            "class_name": "InputLayer",
            "name": "features",
            "config": {"batch_input_shape": [None, width], "dtype": "float32", "name": "features"},
            "inbound_nodes": [],
        }
    ]
    weights: list[tuple[str, np.ndarray]] = []
    for hname, layer in heads:
        k, b, act = _arrays(layer)
        assert k.shape[0] == width
        layers.append(
            {
                "class_name": "Dense",
                "name": hname,
                "config": _dense_config(hname, k.shape[1], act),
                "inbound_nodes": [[["features", 0, 0, {}]]],
            }
        )
        weights += [(f"{hname}/kernel", k), (f"{hname}/bias", b)]
    topology = {
        "keras_version": "2.19.0",
        "backend": "tensorflow",
        "model_config": {
            "class_name": "Functional",
            "config": {
                "name": "heads",
                "layers": layers,
                "input_layers": [["features", 0, 0]],
                "output_layers": [[h, 0, 0] for h, _ in heads],
            },
        },
    }
    return _write(out, topology, weights, format="layers-model", generatedBy="tests")


_GRAPH_ACT = {"softmax": "Softmax", "sigmoid": "Sigmoid", "relu": "Relu", "linear": "Identity"}


def graph_model(out: Path, kernel: npt.ArrayLike, bias: npt.ArrayLike, activation: str) -> Path:
    """A graph model computing activation(x @ kernel + bias) for x of shape [n, in]."""
    k, b, _ = _arrays((kernel, bias, activation))

    def dims(*sizes: int) -> dict[str, Any]:
        return {"dim": [{"size": str(s)} for s in sizes]}

    def const(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
        return {
            "name": name,
            "op": "Const",
            "attr": {
                "value": {"tensor": {"dtype": "DT_FLOAT", "tensorShape": dims(*shape)}},
                "dtype": {"type": "DT_FLOAT"},
            },
        }

    float_t = {"type": "DT_FLOAT"}
    nodes = [
        {
            "name": "x",
            "op": "Placeholder",
            "attr": {"dtype": float_t, "shape": {"shape": dims(-1, k.shape[0])}},
        },
        const("w", k.shape),
        const("b", b.shape),
        {
            "name": "matmul",
            "op": "MatMul",
            "input": ["x", "w"],
            "attr": {"T": float_t, "transpose_a": {"b": False}, "transpose_b": {"b": False}},
        },
        {"name": "logits", "op": "BiasAdd", "input": ["matmul", "b"], "attr": {"T": float_t}},
        {"name": "y", "op": _GRAPH_ACT[activation], "input": ["logits"], "attr": {"T": float_t}},
    ]
    topology = {"node": nodes, "library": {}, "versions": {"producer": 1}}
    signature = {
        "inputs": {
            "x:0": {"name": "x:0", "dtype": "DT_FLOAT", "tensorShape": dims(-1, k.shape[0])}
        },
        "outputs": {
            "y:0": {"name": "y:0", "dtype": "DT_FLOAT", "tensorShape": dims(-1, k.shape[1])}
        },
    }
    return _write(
        out,
        topology,
        [("w", k), ("b", b)],
        format="graph-model",
        generatedBy="tests",
        convertedBy="tests",
        signature=signature,
    )


def numpy_forward(layers: Sequence[Layer], x: npt.ArrayLike) -> np.ndarray:
    """The Dense stack in float32 numpy: what Keras would output for features `x`."""
    h = np.asarray(x, dtype=np.float32)
    for layer in layers:
        k, b, act = _arrays(layer)
        h = h @ k + b
        if act == "relu":
            h = np.maximum(h, 0)
        elif act == "sigmoid":
            h = 1 / (1 + np.exp(-h))
        elif act == "softmax":
            e = np.exp(h - h.max(axis=1, keepdims=True))
            h = e / e.sum(axis=1, keepdims=True)
        elif act != "linear":
            raise ValueError(f"activation {act!r} is not modelled here")
        h = h.astype(np.float32)
    return h
