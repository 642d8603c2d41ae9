"""Output kinds, graph models and the contract-1 side of numeric specs, each built from a small
hand-written model and run in mini-racer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.bundle import build_bundle, bundle_path
from tests.support.js_bundle import JsBundle
from tests.support.spec_projects import BuildSpec
from tests.support.tfjs_models import dense_model, graph_model, numpy_forward, two_head_model

RNG = np.random.default_rng(21)
RECORDS = [
    {"a": float(a), "b": int(b)}
    for a, b in zip(RNG.normal(0, 2, 6), RNG.integers(0, 9, 6), strict=True)
]
X = np.asarray([[r["a"], (r["b"] - 4) / 2] for r in RECORDS])
INPUTS = [{"name": "a", "type": "float"}, {"name": "b", "type": "int"}]
FEATURES = [{"input": "a"}, {"input": "b", "steps": [{"standardize": {"mean": 4, "std": 2}}]}]


def _spec(output: dict[str, Any], expected: np.ndarray, **more: Any) -> dict[str, Any]:
    return {
        "name": "kinds",
        "version": "1",
        "inputs": INPUTS,
        "features": FEATURES,
        "output": output,
        "selfTest": {"records": RECORDS, "expected": expected.tolist(), "tolerance": 1e-5},
        **more,
    }


def _dense(tmp_path: Path, output: dict[str, Any], act: str, width: int) -> Path:
    layer = (RNG.normal(0, 1, (2, width)), RNG.normal(0, 0.1, width), act)
    expected = numpy_forward([layer], X).astype(np.float64)
    if output.get("scale"):
        expected = expected * np.asarray(output["scale"]["std"]) + np.asarray(
            output["scale"]["mean"]
        )
        expected = expected.astype(np.float32).astype(np.float64)
    project = dense_model(tmp_path / "p", [layer])
    (project / "spec.json").write_text(json.dumps(_spec(output, expected)))
    return project


def test_binary(tmp_path: Path, build_spec: BuildSpec) -> None:
    out = {"kind": "binary", "labels": ["no", "yes"], "threshold": 0.4}
    with JsBundle(build_spec(_dense(tmp_path, out, "sigmoid", 1))) as b:
        assert b.meta["outputs"] == ["yes"] and "labels" not in b.meta
        results = b.call("ml.predict(a[0])", RECORDS)
    for r in results:
        assert set(r) == {"scores", "label", "probability"}
        assert r["label"] == ("yes" if r["probability"] >= 0.4 else "no")


def test_regression_scale_is_applied_in_the_bundle(tmp_path: Path, build_spec: BuildSpec) -> None:
    out = {"kind": "regression", "names": ["lo", "hi"], "scale": {"mean": [10, -3], "std": 4}}
    with JsBundle(build_spec(_dense(tmp_path, out, "linear", 2))) as b:
        assert b.meta["outputs"] == ["lo", "hi"]
        results = b.call("ml.predict(a[0])", RECORDS)
        scores, errors = b.run_records(RECORDS)
    assert errors == {}
    # TF.js and the generated kernel sum in their own order: a float32 ulp apart, times std 4
    assert np.abs(np.asarray([r["scores"] for r in results]) - scores).max() <= 1e-5
    assert results[0]["values"] == {"lo": results[0]["scores"][0], "hi": results[0]["scores"][1]}


def test_one_regression_value(tmp_path: Path, build_spec: BuildSpec) -> None:
    with JsBundle(build_spec(_dense(tmp_path, {"kind": "regression"}, "linear", 1))) as b:
        assert b.meta["outputs"] == ["value"]
        r = b.call("ml.predict(a[0])", RECORDS[:1])[0]
    assert r["value"] == r["scores"][0]


def test_multi_heads_of_a_two_output_model(tmp_path: Path, build_spec: BuildSpec) -> None:
    species = (RNG.normal(0, 1, (2, 3)), RNG.normal(0, 0.1, 3), "softmax")
    mass = (RNG.normal(0, 1, (2, 1)), RNG.normal(0, 0.1, 1), "linear")
    expected = np.concatenate(
        [numpy_forward([species], X), numpy_forward([mass], X) * 100 + 4000], 1
    )
    output = {
        "kind": "multi",
        "heads": [
            {"name": "species", "kind": "multiclass", "labels": ["A", "C", "G"]},
            {
                "name": "mass",
                "kind": "regression",
                "names": ["g"],
                "scale": {"mean": 4000, "std": 100},
            },
        ],
    }
    project = two_head_model(tmp_path / "p", 2, [("species", species), ("mass", mass)])
    (project / "spec.json").write_text(
        json.dumps(_spec(output, expected.astype(np.float32).astype(np.float64)))
    )
    with JsBundle(build_spec(project)) as b:
        assert b.meta["outputs"] == ["species.A", "species.C", "species.G", "mass.g"]
        assert b.call("ml.kernel") == "tfjs-cpu"
        assert b.call("ml.kernelReason") == "model is not a single chain: it has 2 outputs"
        r = b.call("ml.predict(a[0])", RECORDS[:1])[0]
        scores, _ = b.run_records(RECORDS)
    assert set(r) == {"scores", "species", "mass"}
    assert r["species"]["label"] in ("A", "C", "G") and r["mass"] == {"value": r["scores"][3]}
    assert np.abs(scores - expected).max() <= 1e-3  # 4000 + ...: float32 resolution


def test_graph_model(tmp_path: Path, build_spec: BuildSpec) -> None:
    k, bias = RNG.normal(0, 1, (2, 3)), RNG.normal(0, 0.1, 3)
    project = graph_model(tmp_path / "g", k, bias, "softmax")
    expected = numpy_forward([(k, bias, "softmax")], X).astype(np.float64)
    output = {"kind": "multiclass", "labels": ["x", "y", "z"]}
    (project / "spec.json").write_text(json.dumps(_spec(output, expected)))
    bundle = build_spec(project)
    assert b"GlorotUniform" not in bundle  # no tfjs-layers in a graph model's bundle
    with JsBundle(bundle) as b:
        assert b.call("ml.kernel") == "tfjs-cpu"
        assert b.call("ml.kernelReason") == "graph model: the generated kernels cover layers models"
        scores, errors = b.run_records(RECORDS)
    assert errors == {} and np.abs(scores - expected).max() <= 1e-6


def test_graph_model_width_is_checked(tmp_path: Path) -> None:
    from model.bundle import BuildError

    project = graph_model(tmp_path / "g", RNG.normal(0, 1, (3, 2)), np.zeros(2), "linear")
    out = {"kind": "regression", "names": ["p", "q"]}
    (project / "spec.json").write_text(json.dumps(_spec(out, np.zeros((6, 2)))))
    with pytest.raises(
        BuildError, match=r"the features make 2 columns \(a: 1, b: 1\), but the model takes 3"
    ):
        build_bundle(project, tmp_path / "store")


def test_numeric_spec_keeps_contract_1(tmp_path: Path, build_spec: BuildSpec) -> None:
    layer = (RNG.normal(0, 1, (3, 2)), RNG.normal(0, 0.1, 2), "softmax")
    inputs = [*INPUTS, {"name": "c", "type": "bool", "nullable": True}]
    features = [*FEATURES, {"input": "c", "steps": [{"impute": {"value": False}}]}]
    x = np.concatenate([X, np.asarray([[i % 2] for i in range(6)], float)], 1)
    records = [{**r, "c": bool(i % 2)} for i, r in enumerate(RECORDS)]
    spec = _spec({"kind": "multiclass", "labels": ["l", "r"]}, numpy_forward([layer], x))
    spec.update(inputs=inputs, features=features)
    spec["selfTest"]["records"] = records
    project = dense_model(tmp_path / "p", [layer])
    (project / "spec.json").write_text(json.dumps(spec))
    with JsBundle(build_spec(project)) as b:
        st = b.call("ml.selfTest")
        assert st["inputs"] == [[r["a"], r["b"], float(r["c"])] for r in records]
        bufs = b.eval("ml.buffers(6)")
        xin = np.frombuffer(bufs[0], dtype=np.float32)
        xin[:18] = np.asarray(st["inputs"], np.float32).ravel()
        assert b.eval("ml.predictBuffer(6)") == 12
        out = np.frombuffer(bufs[1], dtype=np.float32)[:12].reshape(6, 2).copy()
        assert np.abs(out - np.asarray(spec["selfTest"]["expected"])).max() <= 1e-6
        xin[2] = np.nan  # c is nullable: imputed
        xin[4] = 2.5  # b is an int
        with pytest.raises(
            Exception, match=r"InputError: record 1: input 'b' is 2\.5, not an integer"
        ):
            b.eval("ml.predictBuffer(6)")
        del xin, out, bufs


def test_legacy_app_json_keeps_contract_1(built_stores: dict[str, Path], wine: Any) -> None:
    with JsBundle(bundle_path(built_stores["v2"]).read_bytes()) as b:
        meta = b.meta
        assert meta["contract"] == 1 and meta["outputs"] == ["class_0", "class_1", "class_2"]
        assert b.call("ml.kernel") == "dense-unrolled"
        bufs = b.eval("ml.buffers(4)")
        xin = np.frombuffer(bufs[0], dtype=np.float32)
        xin[: 4 * 13] = wine.x[:4].ravel()
        xin[13 + 5] = np.nan
        with pytest.raises(Exception, match=r"InputError: record 1: input 'total_phenols' is null"):
            b.eval("ml.predictBuffer(4)")
        # the columns of contract 2 work all the same
        scores, errors = b.run_records(wine.records[:5])
        assert errors == {}
        ref = np.asarray(wine.reference("v2")["outputs"][:5])
        assert np.abs(scores - ref).max() <= 1e-5
        del xin, bufs
