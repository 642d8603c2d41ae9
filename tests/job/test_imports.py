"""What importing the job pulls in: runtime code never imports training code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, os, sys
import job.cli, job.demo, job.functions, job.metrics, job.mixin, job.pipeline, job.scoring
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("model", "tensorflow")),
    "env": sorted(k for k in os.environ if k.startswith(("TF_", "CUDA_"))),
}))
"""


def test_the_job_does_not_import_the_training_script() -> None:
    """model/train.py sets TensorFlow's environment variables when imported; the job reads the
    WINE rows from model/data.py instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "CUDA_"))}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "model.train" not in got["modules"]
    assert not any(m.startswith("tensorflow") for m in got["modules"])
    assert got["env"] == []
