"""`make bench-quick` as CI runs it (no TTY): every benchmark runs, the JSON has every key the
README's performance table names (a float, or a skip with its reason), and the soak lost and
duplicated nothing. Figures are not asserted on: they are measurements, not pass/fail."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

pytestmark = pytest.mark.slow


def test_bench_quick_writes_every_key(tmp_path: Path) -> None:
    from run import KEYS

    env = {**os.environ, "CI": "true", "FLINK_LOG_DIR": str(tmp_path / "logs")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads((tmp_path / "latest.json").read_text())
    for key in KEYS:
        if key in doc["keys"]:
            assert isinstance(doc[key], float) and math.isfinite(doc[key]), key
        else:
            assert doc["skipped"].get(key), f"{key}: neither a figure nor a skip reason"
    assert doc["records_lost"] == 0.0 and doc["records_duplicated"] == 0.0
    soak = doc["details"]["soak"]
    assert soak["bad_published"] and not soak["bad_served"]
    assert soak["records_wrong_prediction"] == 0 and soak["records_error"] == 0
    assert {"cores", "cpu"} <= set(doc["machine"])
    assert (tmp_path / "latest.md").read_text().count("| `") == len(KEYS)
    assert {p.name for p in tmp_path.glob("*.png")} == set(doc["plots"])
