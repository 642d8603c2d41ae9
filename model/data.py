"""The WINE data set (`model/data/wine.csv`), for training, tests, benchmarks and the demo job.

Plain numpy: no TensorFlow and no environment changes, so runtime code (the job) can read the
rows without importing the training script.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

DATA = Path(__file__).resolve().parent / "data" / "wine.csv"


def load_wine_csv(path: Path = DATA) -> tuple[list[str], Array, Array, Array]:
    """Returns (feature names, ids, features float64 [n, 13], classes int [n])."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    features = header[1:-1]
    ids = np.array([int(r[0]) for r in body])
    x = np.array([[float(v) for v in r[1:-1]] for r in body], dtype=np.float64)
    y = np.array([int(r[-1]) for r in body])
    return features, ids, x, y
