"""`make bench-quick` as CI runs it (no TTY): every benchmark runs, every figure key the docs cite
(README.md and docs/*.md) comes out of it as a figure, every other key of `bench/run.py` as a
figure or a skip with its reason, and the soak lost and duplicated nothing. Figures are not
asserted on: they are measurements, not pass/fail.

What counts as citing a figure key (what this reads, in every doc):
- a back-quoted name that is one of `bench/run.py`'s keys, in prose or anywhere else
  (docs/performance.md: "`swap_stall_max_ms` and `swap_stall_p99_ms` (`bench/swap.py`): ...");
- a back-quoted name of the same family as one of them (the same first two `_`-separated words)
  that is not one, e.g. `swap_stall_p50_ms`: a renamed or misspelt key, which fails the check;
- a table whose first header cell is `key` (`latest.md`'s, copied or excerpted): each row's
  first cell, e.g. "| `swap_stall_max_ms` | 0.0026 | <= 1 | ... |";
- a back-quoted family, e.g. `swap_stall_*`: every key it matches (none: fails the check).
A new name of a family the bench does not have is not recognized as a key.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`")
FAMILY = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)*_\*)`")
CELL_KEY = re.compile(r"`([A-Za-z0-9_]+)`")


def doc_paths() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _family(name: str) -> str:
    return "_".join(name.split("_")[:2])


def cited(paths: list[Path], declared: Collection[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(declared keys the docs cite, names they cite as keys that are not declared), each with
    where it is first cited (`file:line`)."""
    families = {_family(k) for k in declared}
    keys: dict[str, str] = {}
    unknown: dict[str, str] = {}

    def cite(name: str, where: str) -> None:
        (keys if name in declared else unknown).setdefault(name, where)

    for path in paths:
        in_key_table = False
        for n, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{n}"
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not line.lstrip().startswith("|"):
                in_key_table = False
            elif cells[0].lower() == "key":
                in_key_table = True
            elif in_key_table and (m := CELL_KEY.fullmatch(cells[0])):
                cite(m[1], where)
            for name in NAME.findall(line):
                if name in declared or _family(name) in families:
                    cite(name, where)
            for family in FAMILY.findall(line):
                members = fnmatch.filter(declared, family)
                for key in members:
                    keys.setdefault(key, where)
                if not members:
                    unknown.setdefault(family, where)
    return keys, unknown


def bench_run() -> Any:
    """`bench/run.py` as a module, loaded without leaving bench/ on sys.path."""
    saved = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def bench_keys() -> dict[str, tuple[str, str]]:
    """`bench/run.py`'s KEYS (key -> goal, what)."""
    keys: dict[str, tuple[str, str]] = bench_run().KEYS
    return keys


def test_a_partial_run_merges_the_other_figures_of_the_previous_one(tmp_path: Path) -> None:
    run = bench_run()
    previous = {
        "mode": "full",
        "finished": "2026-11-30T10:00:00Z",
        "notes": {"taken_from_earlier_runs": {"soak": "2026-11-29T09:00:00Z"}},
        "details": {"swap": {"old": 1}, "throughput": {"old": 2}, "soak": {"old": 3}},
    }
    (tmp_path / "latest.json").write_text(json.dumps(previous))
    details: dict[str, Any] = {"throughput": {"new": 2}}
    taken = run.merge_previous(tmp_path / "latest.json", "full", details)
    assert details == {"throughput": {"new": 2}, "swap": {"old": 1}, "soak": {"old": 3}}
    assert taken == {"swap": "2026-11-30T10:00:00Z", "soak": "2026-11-29T09:00:00Z"}
    with pytest.raises(SystemExit, match="is a full run, not quick"):
        run.merge_previous(tmp_path / "latest.json", "quick", {})
    with pytest.raises(SystemExit, match="cannot read"):
        run.merge_previous(tmp_path / "missing.json", "full", {})


def cited_bench_keys(declared: Collection[str]) -> dict[str, str]:
    """Every key the docs cite (key -> where); fails on a cited key the bench does not make."""
    keys, unknown = cited(doc_paths(), declared)
    assert not unknown, f"the docs cite figure keys that bench/run.py does not make: {unknown}"
    return keys


def test_every_key_the_docs_cite_is_one_the_bench_makes() -> None:
    """The quick half of the check below (no benchmark run): a cited key is at least declared."""
    cited_bench_keys(bench_keys())


@pytest.mark.slow
def test_bench_quick_makes_every_key_the_docs_cite(tmp_path: Path) -> None:
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
    declared = bench_keys()
    for key, at in cited_bench_keys(declared).items():
        reason = doc["skipped"].get(key, "not in latest.json")
        assert key in doc["keys"], f"{key} (cited at {at}) was not measured: {reason}"
    for key in declared:
        if key in doc["keys"]:
            assert isinstance(doc[key], float) and math.isfinite(doc[key]), key
        else:
            assert doc["skipped"].get(key), f"{key}: neither a figure nor a skip reason"
    assert doc["records_lost"] == 0.0 and doc["records_duplicated"] == 0.0
    soak = doc["details"]["soak"]
    assert soak["bad_published"] and not soak["bad_served"]
    assert soak["records_wrong_prediction"] == 0 and soak["records_error"] == 0
    assert {"cores", "cpu"} <= set(doc["machine"])
    assert (tmp_path / "latest.md").read_text().count("| `") == len(declared)
    assert {p.name for p in tmp_path.glob("*.png")} == set(doc["plots"])
