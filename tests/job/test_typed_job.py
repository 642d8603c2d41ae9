"""`python -m job` on typed data: Flink's filesystem connector in (CSV, JSON) with the columns the
model declares, the SQL function, typed columns out."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from job.pipeline import JobOptions
from model.bundle import MODEL_DIR, build_bundle
from tests.support.flink import running_job

pytestmark = pytest.mark.slow

PENGUINS = MODEL_DIR / "examples" / "penguins"
COLUMNS = ["id", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g",
           "sex", "year"]  # fmt: skip
LABELS = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.fixture(scope="module")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    store = tmp_path_factory.mktemp("penguins") / "store"
    build_bundle(PENGUINS, store)
    return store, json.loads((PENGUINS / "reference.json").read_text())


def _outputs(out: Path, fmt: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for part in sorted(p for p in out.rglob("part-*") if not p.name.startswith(".")):
        if fmt == "json":
            rows += [json.loads(line) for line in part.read_text().splitlines() if line]
        else:
            rows += [dict(zip(HEAD_CSV, r, strict=True)) for r in csv.reader(part.open())]
    return rows


HEAD_CSV = ["id", "label", "score", "margin", "confidence", "model_version", "model_sha256",
            "error"]  # fmt: skip


@pytest.mark.parametrize("fmt_in, fmt_out", [("csv", "json"), ("json", "csv")])
def test_typed_files_in_and_out(
    fmt_in: str, fmt_out: str, tmp_path: Path, penguins: tuple[Path, dict[str, Any]]
) -> None:
    store, reference = penguins
    records = reference["records"]
    src = tmp_path / "in"
    src.mkdir()
    if fmt_in == "csv":
        with (src / "penguins.csv").open("w", newline="") as f:
            w = csv.writer(f)
            for r in records:
                w.writerow(["" if r.get(c) is None else r[c] for c in COLUMNS])
            w.writerow([10_001, "", "40.1", "18", "190", "4000", "male", "2008"])  # no island
    else:
        lines = [json.dumps(r) for r in records] + ['{"id": 10001, "island": null, "year": 2009}']
        (src / "penguins.json").write_text("\n".join(lines) + "\n")
    opts = JobOptions(
        model=str(store),
        source=f"{fmt_in}:{src}",
        sink=f"{fmt_out}:{tmp_path / 'out'}",
        cache_dir=str(tmp_path / "cache"),
        poll_interval=3600,
        checkpoint_interval_ms=500,
        roll_interval="1 s",
    )
    with running_job(opts, tmp_path) as job:
        job.result.wait()
    out = {int(r["id"]): r for r in _outputs(tmp_path / "out", fmt_out)}
    assert len(out) == len(records) + 1
    expected = np.asarray(reference["outputs"])
    for rec in records:
        row, want = out[rec["id"]], expected[rec["id"]]
        assert row["label"] == LABELS[int(np.argmax(want))], row
        assert abs(float(row["score"]) - want.max()) <= 1e-5
        assert row["model_version"] == "1" and row["error"] in (None, "")
        if fmt_out == "json":
            np.testing.assert_allclose([row["probabilities"][k] for k in LABELS], want, atol=1e-5)
            assert row["top_k"] == [LABELS[i] for i in np.argsort(-want)[:2]]
    bad = out[10_001]
    assert bad["error"] == "input 'island' is null and not nullable"
    assert bad["label"] in (None, "")


def test_typed_rows_are_scored_by_the_version_of_their_event_time(
    tmp_path: Path, versions: Any, wine: Any
) -> None:
    """`--event-time` on a typed source: a TIMESTAMP(3) column with a watermark, passed to the
    model function last; rows before the cutover T get the old version, the others the new."""
    import reloader.publish
    from tests.support.flink import check_predictions

    t = 1_800_000_000_000  # 2027-01-15 08:00:00 UTC
    store = tmp_path / "store"
    old, new = versions.make("1", "v1"), versions.make("2", "v2")
    reloader.publish.publish(str(store), old.data, old.manifest)
    reloader.publish.publish(str(store), new.data, new.manifest, effective_at=t)
    src = tmp_path / "in"
    src.mkdir()
    order = sorted(range(300), key=lambda i: (i * 7919) % 300)  # out of order
    lines = []
    for i in order:
        at = t + (i - 150) * 37  # 5.5 s on each side of T
        stamp = np.datetime_as_string(np.datetime64(at, "ms"), unit="ms").replace("T", " ")
        lines.append(json.dumps({"id": i, "ts": stamp, **wine.records[i % len(wine.records)]}))
    (src / "wine.json").write_text("\n".join(lines) + "\n")
    opts = JobOptions(
        model=str(store),
        source=f"json:{src}",
        sink=f"json:{tmp_path / 'out'}",
        event_time="ts",
        out_of_orderness_ms=20_000,
        cache_dir=str(tmp_path / "cache"),
        poll_interval=3600,
        checkpoint_interval_ms=500,
        roll_interval="1 s",
    )
    with running_job(opts, tmp_path) as job:
        job.result.wait()
    rows = _outputs(tmp_path / "out", "json")
    assert sorted(int(r["id"]) for r in rows) == list(range(300))
    for r in rows:
        assert r["model_version"] == ("2" if int(r["id"]) >= 150 else "1"), r
    check_predictions(rows, {"1": "v1", "2": "v2"}, wine)
