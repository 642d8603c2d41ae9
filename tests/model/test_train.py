"""The whole model path: Keras training -> tensorflowjs -> bundle -> V8, against Keras' outputs.

Needs the train extra; `make test` installs it into .venv-train and passes its interpreter as
TRAIN_PYTHON.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from model.bundle import MODEL_DIR, build_bundle, bundle_path
from reloader.runtime import ModelRuntime


@pytest.mark.train
def test_train_convert_build_predict(tmp_path: Path, wine, train_python: Path) -> None:
    proc = subprocess.run(
        [train_python, str(MODEL_DIR / "train.py"), "--out", str(tmp_path / "models")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    for version, floor in (("v1", None), ("v2", 0.93)):
        model_dir = tmp_path / "models" / version
        assert (model_dir / "model.json").exists() and list(model_dir.glob("*.bin"))
        ref = json.loads((model_dir / "reference.json").read_text())
        store = tmp_path / "store" / version
        build_bundle(model_dir, store)
        with ModelRuntime(bundle_path(store).read_bytes()) as rt:
            out = rt.predict(wine.x)
        delta = float(np.abs(out - np.asarray(ref["outputs"])).max())
        test_rows = np.isin(wine.ids, ref["test_ids"])
        accuracy = float((out[test_rows].argmax(axis=1) == wine.y[test_rows]).mean())
        print(f"{version}: max |V8 - Keras| {delta:.3g}, held-out accuracy in V8 {accuracy:.4f}")
        assert delta <= 1e-5
        assert accuracy == pytest.approx(ref["accuracy_test"])
        if floor is not None:
            assert accuracy >= floor
    # v1 is deliberately weak, so the swap in the demo is visible.
    v1 = json.loads((tmp_path / "models" / "v1" / "reference.json").read_text())
    assert v1["accuracy_test"] < 0.8


@pytest.mark.train
def test_train_penguins_export_build_predict(tmp_path: Path, train_python: Path) -> None:
    """The penguins example from scratch: typed records, the spec fitted in Python, the hook, the
    export; the bundle's predictions on every record (its own encoding of the raw values) equal
    Keras' within 1e-5."""
    out = tmp_path / "penguins"
    proc = subprocess.run(
        [train_python, str(MODEL_DIR / "train_penguins.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"model.json", "spec.json", "hooks.js", "reference.json"} <= {
        p.name for p in out.iterdir()
    }
    ref = json.loads((out / "reference.json").read_text())
    store = tmp_path / "store"
    build_bundle(out, store)
    with ModelRuntime(bundle_path(store).read_bytes()) as rt:
        assert rt.meta.contract == 2 and "bill_ratio" in rt.meta.schema["derived"]
        records = ref["records"]
        result = rt.predict_columns({k: [r.get(k) for r in records] for k in rt.meta.inputs})
    assert result.errors == {}
    assert float(np.abs(result.scores - np.asarray(ref["outputs"])).max()) <= 1e-5
    assert ref["accuracy_test"] >= 0.9
