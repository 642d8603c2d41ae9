"""The model as a SQL / Table API function: its signature from the serving version, its typed ROW,
and a real SQL query over Flink's filesystem connector in a mini-cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from job.mixin import ModelSettings
from job.scoring import Batch, Scorer
from job.table import frame, register_model, signature
from model.bundle import MODEL_DIR, build_bundle
from reloader.agent import HotModel
from reloader.publish import publish
from reloader.runtime import ModelRuntime

TOY = Path(__file__).resolve().parents[1] / "support" / "typed_toy.js"
PENGUINS = MODEL_DIR / "examples" / "penguins"


def test_signatures_follow_the_declared_output(bundle_v2: bytes) -> None:
    with ModelRuntime(TOY.read_bytes()) as rt:
        toy = signature(rt.meta)
    assert toy.inputs == (
        ("x", "float"), ("n", "int"), ("flag", "bool"), ("word", "string"), ("when", "timestamp"),
    )  # fmt: skip
    assert toy.fields == (
        ("value", "DOUBLE"), ("double", "DOUBLE"), ("upper", "STRING"),
        ("model_version", "STRING"), ("model_sha256", "STRING"), ("error", "STRING"),
    )  # fmt: skip
    assert toy.call("predict", {"when": "seen_at"}) == (
        "predict(`x`, `n`, `flag`, `word`, `seen_at`)"
    )
    with ModelRuntime(bundle_v2) as rt:
        wine = signature(rt.meta)
    assert wine.inputs[0] == ("alcohol", "float") and len(wine.inputs) == 13
    assert [f for f, _ in wine.fields][:3] == ["label", "score", "probabilities"]


def test_a_function_returns_only_the_fields_asked_for(tmp_path: Path) -> None:
    """`fields` picks and orders the ROW; the ones left out are not made (no MAP of
    probabilities), and an extra left out is no longer required of a new version."""
    build_bundle(PENGUINS, tmp_path / "store")
    hm = HotModel(str(tmp_path / "store"), cache_dir=str(tmp_path / "cache"), poll_interval=3600)
    hm.start()
    try:
        full = signature(hm.current().runtime.meta)
        reference = json.loads((PENGUINS / "reference.json").read_text())
        records = reference["records"][:40]
        columns = {name: [r.get(name) for r in records] for name, _ in full.inputs}
        result = Scorer().predict(hm.run, Batch(columns=columns))
    finally:
        hm.stop()
    lean = full.select(["model_version", "score", "label", "margin"])
    assert lean.fields == (
        ("model_version", "STRING"), ("score", "DOUBLE"), ("label", "STRING"),
        ("margin", "DOUBLE"),
    )  # fmt: skip
    assert lean.inputs == full.inputs and lean.shape["extras"] == {"margin": "float"}
    assert set(full.shape["extras"]) == {"margin", "confidence"}
    got, every = frame(lean, result), frame(full, result)
    assert list(got.columns) == ["model_version", "score", "label", "margin"]
    for name in got.columns:
        assert got[name].tolist() == every[name].tolist(), name
    for bad, why in (([], "no fields asked for"), (["label", "label"], "a field named twice"),
                     (["label", "scores"], "no field 'scores'")):  # fmt: skip
        with pytest.raises(ValueError, match=why) as e:
            full.select(bad)
        assert "its fields are label, score, probabilities" in str(e.value)


def test_frame_of_a_typed_batch(tmp_path: Path) -> None:
    publish(str(tmp_path / "store"), TOY.read_bytes(), model="typed-toy", version="t1")
    hm = HotModel(str(tmp_path / "store"), cache_dir=str(tmp_path / "cache"), poll_interval=3600)
    hm.start()
    try:
        sig = signature(hm.current().runtime.meta)
        columns = {
            "x": [1.0, None, 2.0],
            "n": [2, 1, 1],
            "flag": [True, False, False],
            "word": ["ab", "c", "bad"],
            "when": ["2024-03-05T00:00:00Z", None, None],
        }
        result = Scorer().predict(hm.run, Batch(columns=columns))
        df = frame(sig, result)
    finally:
        hm.stop()
    assert list(df.columns) == [f for f, _ in sig.fields]
    assert df["value"].tolist()[0] == 18.0 and df["upper"].tolist()[0] == "AB"
    assert df["value"].isna().tolist()[1:] == [True, True]
    assert df["error"].tolist() == [
        None,
        "input 'x' is null and has no default or impute",
        "input 'word' is bad",
    ]
    assert set(df["model_version"]) == {"t1"}


@pytest.mark.slow
def test_sql_query_over_a_file_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    reference = json.loads((PENGUINS / "reference.json").read_text())
    records = reference["records"]
    store = tmp_path / "store"
    build_bundle(PENGUINS, store)
    data = tmp_path / "observations"
    data.mkdir()
    (data / "part-0.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setenv("FLINK_LOG_DIR", str(tmp_path / "logs"))
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("python.executable", sys.executable)
    t_env.get_config().set("parallelism.default", "1")
    sig = register_model(
        t_env,
        "penguins",
        ModelSettings(url=str(store), cache_dir=str(tmp_path / "cache"), poll_interval=3600),
    )
    columns = ", ".join(
        f"`{name}` {'STRING' if kind == 'string' else 'DOUBLE' if kind == 'float' else 'BIGINT'}"
        for name, kind in sig.inputs
    )
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE observations (id BIGINT, {columns}) WITH ("
        f"'connector' = 'filesystem', 'path' = '{data.as_uri()}', 'format' = 'json')"
    )
    query = (
        "SELECT id, p.label, p.score, p.probabilities['Gentoo'] AS gentoo, p.top_k, p.margin, "
        "p.confidence, p.model_version, p.error "
        f"FROM (SELECT id, {sig.call('penguins')} AS p FROM observations)"
    )
    with t_env.sql_query(query).execute().collect() as rows:
        got = {row[0]: row for row in rows}
    assert len(got) == len(records)
    labels = ["Adelie", "Chinstrap", "Gentoo"]
    expected = np.asarray(reference["outputs"])
    for rec in records:
        row = got[rec["id"]]
        want = expected[rec["id"]]
        assert row[1] == labels[int(np.argmax(want))] and row[8] is None
        assert abs(row[2] - want.max()) <= 1e-5 and abs(row[3] - want[2]) <= 1e-5
        assert row[4] == [labels[i] for i in np.argsort(-want)[:2]]
        assert row[6] == ("high" if row[5] >= 0.5 else "low") and row[7] == "1"
