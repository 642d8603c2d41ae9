"""The schema compatibility gate: a version that does not fit the columns a job fixed is refused
before it serves, named and quarantined, while the old version keeps serving; compatible changes
go through."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from reloader.agent import HotModel
from reloader.codec import BundleMeta
from reloader.compat import Fixed, input_types, output_shape, problem
from reloader.errors import IncompatibleBundle
from reloader.publish import publish
from reloader.runtime import ModelRuntime
from tests.support.waiting import checked

TOY = Path(__file__).resolve().parents[1] / "support" / "typed_toy.js"
JOB_COLUMNS = {"x": "float", "n": "int", "flag": "bool", "word": "string", "when": "timestamp"}


@pytest.fixture(scope="module")
def meta() -> BundleMeta:
    with ModelRuntime(TOY.read_bytes()) as rt:
        return rt.meta


def _with(meta: BundleMeta, **schema: Any) -> BundleMeta:
    assert meta.schema is not None
    return dataclasses.replace(meta, schema={**meta.schema, **schema})


def test_what_fits_and_what_does_not(meta: BundleMeta) -> None:
    fixed = Fixed(JOB_COLUMNS, output_shape(meta))
    assert problem(meta, fixed) is None
    assert input_types(meta)["x"] == ("float", True) and input_types(meta)["n"] == ("int", False)
    inputs = meta.schema["inputs"]  # type: ignore[index]
    # A new optional input the job does not have: fine (null for every record).
    optional = [*inputs, {"name": "colour", "type": "string", "nullable": True}]
    assert problem(_with(meta, inputs=optional), fixed) is None
    # A new required one: refused, naming it and what the job has.
    required = [*inputs, {"name": "colour", "type": "string"}]
    assert problem(_with(meta, inputs=required), fixed) == (
        "typed-toy 1 needs input 'colour', which the job does not have "
        "(it has flag, n, when, word, x)"
    )
    as_text = [dict(f, type="string") if f["name"] == "n" else f for f in inputs]
    assert problem(_with(meta, inputs=as_text), fixed) == (
        "typed-toy 1 reads input 'n' as string; the job's column is int"
    )
    other_kind = {"kind": "binary", "labels": ["lo", "hi"]}
    assert problem(_with(meta, output=other_kind), fixed) == (
        "typed-toy 1 declares a binary output; the job's output columns were made for regression"
    )
    renamed = {"kind": "regression", "names": ["total"]}
    assert "declares output names ['total']" in str(problem(_with(meta, output=renamed), fixed))
    fewer = [e for e in meta.schema["extras"] if e["name"] != "upper"]  # type: ignore[index]
    assert problem(_with(meta, extras=fewer), fixed) == (
        "typed-toy 1 no longer makes the string extra 'upper' the job writes"
    )
    more = [*meta.schema["extras"], {"name": "note", "type": "string"}]  # type: ignore[index]
    assert problem(_with(meta, extras=more), fixed) is None
    # A job of JSON lines fixed nothing about its inputs: anything is worth a try.
    assert problem(_with(meta, inputs=required), Fixed(None, output_shape(meta))) is None


def test_an_incompatible_version_is_quarantined_and_the_old_one_serves(
    meta: BundleMeta, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    toy = TOY.read_bytes()
    publish(store, toy, model="typed-toy", version="1")
    hm = HotModel(
        store,
        cache_dir=str(tmp_path / "cache"),
        poll_interval=3600,
        fixed=Fixed(JOB_COLUMNS, output_shape(meta)),
    )
    hm.start()
    try:
        binary = toy.replace(
            b"output: { kind: 'regression', names: ['score'] }",
            b"output: { kind: 'binary', labels: ['lo', 'hi'] }",
        )
        assert binary != toy
        publish(store, binary, model="typed-toy", version="2")
        checked(hm)
        row = {"x": 1.0, "n": 1, "flag": False, "word": "a", "when": None}
        assert hm.predict_dicts([row]).version == "1"
        info = hm.info
        assert info.failures == 1 and len(info.quarantined) == 1
        (why,) = info.quarantined.values()
        assert "declares a binary output" in why and "stage: schema" in why
        # A compatible change (here: only the bytes) goes through.
        publish(store, toy + b"\n// 3\n", model="typed-toy", version="3")
        checked(hm)
        assert hm.predict_dicts([row]).version == "3"
    finally:
        hm.stop()


def test_the_first_version_must_fit_too(meta: BundleMeta, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    publish(store, TOY.read_bytes(), model="typed-toy", version="1")
    hm = HotModel(
        store,
        cache_dir=str(tmp_path / "cache"),
        fixed=Fixed({"x": "float"}, output_shape(meta)),
    )
    with pytest.raises(IncompatibleBundle, match="needs input 'n', which the job does not have"):
        hm.start()
    hm.stop()
