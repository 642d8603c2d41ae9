"""A TF.js graph model converted from a real SavedModel (`tensorflowjs_converter
--input_format=tf_saved_model`), with a spec written by `model.export.write_project`: built,
loaded, and equal to TensorFlow's own outputs on typed records within 1e-5.

The TensorFlow half runs under TRAIN_PYTHON (.venv-train)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from model.bundle import MODEL_DIR, build_bundle, bundle_path
from reloader.runtime import ModelRuntime

SCRIPT = r"""
import json, os, subprocess, sys
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, sys.argv[2])
import numpy as np
import tensorflow as tf
from model.export import write_project
from model.spec import Spec

out = sys.argv[1]
rng = np.random.default_rng(3)
records = [
    {"kind": str(rng.choice(["a", "b", "c"])), "x": None if i % 9 == 0 else float(rng.normal()),
     "n": int(rng.integers(0, 5))}
    for i in range(200)
]
spec = Spec.from_dict({
    "name": "graph", "version": "1",
    "inputs": [{"name": "kind", "type": "string"}, {"name": "x", "type": "float", "nullable": True},
               {"name": "n", "type": "int"}],
    "features": [{"input": "kind", "steps": [{"vocabulary": {}}, {"onehot": {}}]},
                 {"input": "x", "steps": [{"impute": {"strategy": "mean"}}, {"standardize": {}}]},
                 {"input": "n", "steps": [{"minmax": {}}]}],
    "output": {"kind": "regression", "names": ["y", "z"]},
}).fit(records)
width = spec.width()
w1 = tf.constant(rng.normal(0, 0.5, (width, 8)), tf.float32)
b1 = tf.constant(rng.normal(0, 0.1, 8), tf.float32)
w2 = tf.constant(rng.normal(0, 0.5, (8, 2)), tf.float32)

class Net(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, width], tf.float32)])
    def __call__(self, x):
        return tf.matmul(tf.tanh(tf.matmul(x, w1) + b1), w2)

net = Net()
saved = os.path.join(out, "saved")
tf.saved_model.save(net, saved, signatures=net.__call__)
project = os.path.join(out, "project")
subprocess.run([sys.executable, "-m", "tensorflowjs.converters.converter",
                "--input_format=tf_saved_model", saved, project], check=True)
write_project(spec, project, predict=lambda x: net(tf.constant(x)).numpy(), samples=records)
features = spec.transform(records).matrix
json.dump({"records": records, "outputs": net(tf.constant(features)).numpy().tolist()},
          open(os.path.join(out, "reference.json"), "w"))
"""


@pytest.mark.train
def test_saved_model_as_graph_model(tmp_path: Path, train_python: Path) -> None:
    proc = subprocess.run(
        [train_python, "-c", SCRIPT, str(tmp_path), str(MODEL_DIR.parent)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    project = tmp_path / "project"
    assert json.loads((project / "model.json").read_text())["format"] == "graph-model"
    build_bundle(project, tmp_path / "store")
    ref = json.loads((tmp_path / "reference.json").read_text())
    with ModelRuntime(bundle_path(tmp_path / "store").read_bytes()) as rt:
        assert rt.meta.kernel == "tfjs-cpu" and "graph model" in rt.meta.kernel_reason
        records = ref["records"]
        result = rt.predict_columns({k: [r.get(k) for r in records] for k in rt.meta.inputs})
        assert result.errors == {}
        assert float(np.abs(result.scores - np.asarray(ref["outputs"])).max()) <= 1e-5
        assert rt.predict_dicts(records[:1])[0].keys() == {"values"}
