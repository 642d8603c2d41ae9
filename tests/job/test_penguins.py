"""The penguins example end to end, as a user runs it: the committed model project (strings,
nulls, declarative steps, a JavaScript hook) built, copied to S3 with `aws s3 cp`, followed by the
job, which reads the raw records as JSON lines; every prediction equals Keras' within 1e-5."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.bundle import MODEL_DIR, build_bundle
from tests.support import processes
from tests.support.flink import read_outputs
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

PENGUINS = MODEL_DIR / "examples" / "penguins"
REPO = MODEL_DIR.parent


def _ids_out(out: Path) -> int:
    if not out.exists():
        return 0
    return sum(len(recs) for recs in read_outputs(out).values())


@pytest.mark.parametrize("api", ["process", "vectorized"])
def test_penguins_from_s3_in_the_job(api: str, tmp_path: Path, s3_session: Any) -> None:
    reference = json.loads((PENGUINS / "reference.json").read_text())
    records: list[dict[str, Any]] = reference["records"]
    store = tmp_path / "build"
    build_bundle(PENGUINS, store)
    url = f"s3://models/penguins-{api}"
    env = {**os.environ, **s3_session.env()}
    aws = Path(sys.executable).with_name("aws")
    done = subprocess.run(
        [str(aws), "s3", "cp", "--recursive", "--only-show-errors", str(store), url + "/"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    # Field data as it comes: text in odd case, so the hook's normalisation is exercised, plus
    # records that cannot be predicted, which must come out as error records naming the input.
    noisy = [
        dict(r, sex=f" {r['sex'].upper()}") if r.get("sex") and r["id"] % 3 == 0 else r
        for r in records
    ]
    bad = [
        {"id": 10_001, "island": None, "year": 2008},
        {"id": 10_002, "island": "Dream", "year": "2008"},
        {"id": 10_003, "island": "Dream", "year": 2008.5, "bill_length_mm": "long"},
    ]
    (in_dir / "penguins.jsonl").write_text("".join(json.dumps(r) + "\n" for r in noisy + bad))
    # As a user runs it: `python -m job` in its own process, the S3 settings in its environment.
    # (In-process, a thread-mode job's Python runs inside the JVM PyFlink started earlier, with
    # that JVM's environment: variables set since would not reach it.)
    argv = [
        sys.executable, "-m", "job", "--model", url, "--source", f"dir:{in_dir}",
        "--sink", f"dir:{tmp_path / 'out'}", "--api", api, "--checkpoint-interval-ms", "500",
        "--roll-interval", "1 s", "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    total = len(noisy) + len(bad)
    with processes.process_group(
        argv,
        log=tmp_path / "job.log",
        stop_timeout=30,
        cwd=REPO,
        env={**env, "FLINK_LOG_DIR": str(tmp_path / "flink-logs")},
    ) as job:
        wait_until(
            lambda: _ids_out(tmp_path / "out") >= total or job.poll() is not None,
            timeout=180,
            what=f"all {total} penguins predicted",
        )
        assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
    out = {r["id"]: r for recs in read_outputs(tmp_path / "out").values() for r in recs}
    assert len(out) == total
    expected = np.asarray(reference["outputs"])
    labels = ["Adelie", "Chinstrap", "Gentoo"]
    for rec in records:
        got = out[rec["id"]]
        assert "error" not in got, got
        probs = [got["probabilities"][label] for label in labels]
        np.testing.assert_allclose(probs, expected[rec["id"]], atol=1e-5, err_msg=str(got))
        assert got["label"] == labels[int(np.argmax(expected[rec["id"]]))]
        assert [pair[0] for pair in got["top_k"]] == [
            labels[i] for i in np.argsort(-expected[rec["id"]])[:2]
        ]
        assert got["confidence"] == ("high" if got["margin"] >= 0.5 else "low")
        assert got["model_version"] == "1" and "island" not in got  # inputs are not echoed
    assert out[10_001]["error"] == "input 'island' is null and not nullable"
    assert out[10_002]["error"] == "input 'year' is str, not an integer"
    # The first problem in the order the inputs are declared.
    assert out[10_003]["error"] == "input 'bill_length_mm' is str, not a number"
    accuracy = np.mean(
        [out[r["id"]]["label"] == s for r, s in zip(records, reference["species"], strict=True)]
    )
    assert accuracy > 0.9
