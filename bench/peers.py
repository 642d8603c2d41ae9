"""Peers a user would pick instead of the V8 bundle, for bench/job_throughput.py: the WINE network
on the same weights (model/examples/wine/v2) as a PyFlink pandas UDF, in numpy or in ONNX Runtime.

    from bench.peers import peer_function
    fn, sig = peer_function("onnx", store)  # or "numpy"; store: the bundle store of wine v2
    p = fn(*[col(name) for name, _ in sig.inputs])
    table.select(p.get("label"), p.get("score"), p.get("model_version"))

Each one is called and answers like the model function (`job.table.model_function`): the same
parameters and the same ROW type (`job.table.signature` of the bundle the store serves), the same
`model_version` and `model_sha256`, and its DataFrame made by `job.table.frame`, so the output's
cost is the same and only the model differs. What differs, besides the model: no hot swap, and
input checking is one `isfinite` over the batch (a row with a null or non-finite feature is an
error row; the bundle also says which feature).

- numpy: `bench.v8_predict.NumpyWine`, the numpy reference of the network (standardization, Dense
  layers, softmax; float32).
- onnx: a graph built with `onnx.helper` from the same `NumpyWine` weights, the standardization
  in it as Sub and Div, run by `onnxruntime.InferenceSession` on the CPU execution provider. Only
  the float64 -> float32 column stacking happens in numpy before the session, as for numpy.

The UDF objects carry their weights (NumpyWine: 275 floats), not a path, and go to Flink's Python
workers pickled by value: a mini-cluster runs its workers in the driver's process (PyFlink's
loopback mode), where bench/ imports, but a worker process of its own, as on a TaskManager, fails
with "No module named 'bench'" otherwise. The ONNX session is made in `open()`, on the worker.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyflink.table.udf import FunctionContext, ScalarFunction

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.v8_predict import NumpyWine
from job.scoring import Scored
from job.table import Signature, frame, signature
from model.bundle import EXAMPLES
from reloader.codec import BundleMeta
from reloader.values import Versioned

MODEL_DIR = EXAMPLES / "v2"
# The ROW of a plain multiclass model (`job.table.signature`): the one these peers fill.
FIELDS = ("label", "score", "probabilities", "model_version", "model_sha256", "error")
NOT_FINITE = "a feature is null or not a finite number"
ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # opset 17's IR: read by every onnxruntime the dev extra pins


class Peer(ScalarFunction):  # type: ignore[misc]
    """A peer's pandas UDF: the model's input columns in, the model function's ROW out.

    numpy's OpenBLAS gives a matmul one thread while it has at most 65,536 x 4 multiply-adds (its
    rule in interface/gemm.c, not measured here): up to 1,260 rows for the 13 x 16 layer, and the
    job's Arrow batch is 1,000 rows, so the numpy peer too runs on one core per subtask.
    """

    def __init__(
        self, net: NumpyWine, meta: BundleMeta, version: str, sha256: str, sig: Signature
    ) -> None:
        self.net = net
        self.meta = meta
        self.sig = sig
        self.version = version
        self.sha256 = sha256
        self.predict: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]] = net

    def open(self, function_context: FunctionContext) -> None:
        pass

    def eval(self, *series: pd.Series) -> pd.DataFrame:
        x = np.column_stack([s.to_numpy(dtype=np.float32, na_value=np.nan) for s in series])
        ok = np.isfinite(x).all(axis=1)
        every = bool(ok.all())
        scored = Scored(
            probabilities=self.predict(x if every else x[ok]),
            ok=ok,
            errors={} if every else dict.fromkeys(np.flatnonzero(~ok).tolist(), NOT_FINITE),
            inputs=self.meta.inputs,
            outputs=self.meta.outputs,
            labels=self.meta.labels,
        )
        return frame(self.sig, Versioned(scored, self.version, self.sha256))


class NumpyPeer(Peer):
    """The network in numpy (`NumpyWine`)."""


class OnnxPeer(Peer):
    """The network in ONNX Runtime; its graph and session are made in `open()`."""

    def open(self, function_context: FunctionContext) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread, as the bundle has one V8 isolate per subtask: the figures compare per core,
        # and at parallelism 2 on 2 cores ORT's default pool (a thread per core in each subtask)
        # would have the subtasks fight over the cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(
            onnx_model(self.net), sess_options=options, providers=["CPUExecutionProvider"]
        )

        def predict(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            out: npt.NDArray[np.float32] = session.run(None, {"features": x})[0]
            return out

        self.predict = predict

    def close(self) -> None:
        self.predict = self.net  # drops the session


def onnx_model(net: NumpyWine) -> bytes:
    """The network as a serialized ONNX model: `features` float32 [n, inputs] in,
    `probabilities` float32 [n, classes] out.

    (x - mean) / std, then for each Dense layer MatMul, Add and its activation (relu, softmax or
    linear); ONNX Runtime fuses MatMul + Add itself.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: npt.NDArray[np.float32]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)

    initializers = [const("mean", net.mean), const("std", net.std)]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centered"]),
        helper.make_node("Div", ["centered", "std"], ["h0"]),
    ]
    h = "h0"
    for i, (w, b, activation) in enumerate(net.dense):
        out = "probabilities" if i == len(net.dense) - 1 else f"h{i + 1}"
        initializers += [const(f"w{i}", w), const(f"b{i}", b)]
        nodes += [
            helper.make_node("MatMul", [h, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"z{i}"]),
        ]
        if activation == "relu":
            nodes.append(helper.make_node("Relu", [f"z{i}"], [out]))
        elif activation == "softmax":
            nodes.append(helper.make_node("Softmax", [f"z{i}"], [out], axis=-1))
        elif activation == "linear":
            nodes.append(helper.make_node("Identity", [f"z{i}"], [out]))
        else:
            raise ValueError(f"layer {i}: activation {activation!r} has no ONNX op in this peer")
        h = out
    graph = helper.make_graph(
        nodes,
        "wine",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(net.mean)])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, _classes(net)])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="tf-on-flink bench/peers.py",
    )
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def _classes(net: NumpyWine) -> int:
    return int(net.dense[-1][0].shape[1])


IMPLEMENTATIONS: dict[str, type[Peer]] = {"numpy": NumpyPeer, "onnx": OnnxPeer}
PEERS = tuple(IMPLEMENTATIONS)


def onnx_missing() -> str | None:
    """Why the ONNX peer cannot run here, or None when it can."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"{e}: the ONNX peer needs the dev extra's onnx and onnxruntime (make setup)"
    return None


def peer(
    name: str,
    store: str,
    *,
    model_dir: Path = MODEL_DIR,
    fields: Sequence[str] | None = None,
) -> Peer:
    """The peer `name` ("numpy" or "onnx") on `model_dir`'s weights, answering with the ROW,
    version and sha256 of the version `store` serves (built from the same `model_dir`); with
    `fields`, only those of the ROW (as `job.table.model_function`).

    Not opened: Flink calls `open()`; outside Flink, call `open(None)` before `eval`.
    """
    from reloader.load import check

    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown peer {name!r}: one of {', '.join(PEERS)}")
    if name == "onnx" and (why := onnx_missing()):
        raise RuntimeError(why)
    report = check(store)  # the version's meta, as `job.table.model_function` reads it
    meta, net = report.meta, NumpyWine(Path(model_dir))
    sig = signature(meta)
    have = tuple(f for f, _ in sig.fields)
    if have != FIELDS or len(meta.inputs) != len(net.mean) or len(meta.labels) != _classes(net):
        raise ValueError(
            f"{store} serves {meta.name} {report.manifest.version} (ROW {', '.join(have)}; "
            f"{len(meta.inputs)} inputs, {len(meta.labels)} labels), not the multiclass model of "
            f"{model_dir} ({len(net.mean)} inputs, {_classes(net)} classes): build the store "
            "from the same model directory"
        )
    if fields is not None:
        sig = sig.select(fields)
    return IMPLEMENTATIONS[name](net, meta, report.manifest.version, report.manifest.sha256, sig)


def peer_function(
    name: str,
    store: str,
    *,
    model_dir: Path = MODEL_DIR,
    fields: Sequence[str] | None = None,
) -> tuple[Any, Signature]:
    """The peer `name` as a pandas UDF, and its signature (as `job.table.model_function`):
    call it on `[col(n) for n, _ in sig.inputs]`."""
    import cloudpickle
    from pyflink.table.udf import udf

    fn = peer(name, store, model_dir=model_dir, fields=fields)
    # A Python worker in a process of its own cannot import bench/ (see the module's doc).
    for module in (__name__, NumpyWine.__module__):
        cloudpickle.register_pickle_by_value(sys.modules[module])
    wrapped = udf(
        fn, input_types=fn.sig.input_types(), result_type=fn.sig.result_type(), func_type="pandas"
    )
    return wrapped, fn.sig
