"""Rows/s of raw typed records through the bundle's pre-processing + model (contract 2) against the
same model fed already-encoded float32 features (contract 1), side by side.

    python bench/preprocess.py [--seconds 1.0] [--batches 256,4096] [--json out.json]

One model (Dense 27 -> 16 relu -> 3 softmax), two bundles:

- raw: a spec with 4 nullable floats (impute, standardize), an int (minmax), a bool, two strings
  (vocabulary + one-hot; one with an OOV bucket, one with a default) and a timestamp (month,
  weekday, hour): 9 inputs, 10% nulls, 27 features. `ml.predictColumns(n)` on the column buffers.
- encoded: a spec of the 27 features as float inputs with no steps; `ml.predictBuffer(n)` on
  their float32 rows (the fused generated kernel, as the WINE bundles run).

Paths measured (each: write the batch into V8's buffers, one call, copy the scores out):

- `raw`: the columns already encoded (Arrow-like numpy columns, strings as UTF-8 + offsets):
  the host copies them into the buffers;
- `raw+enc`: the host also encodes the strings from Python `str` objects with numpy;
- `encoded`: the float32 features copied into the input buffer;
- `typed`: the production host, `ModelRuntime.predict_columns`, from what a pandas UDF holds
  (numpy columns, strings as Python `str` lists): reloader/columns.py's encoding included;
- `matrix`: the production host's contract-1 path, `ModelRuntime.predict(features)`.

The goal (issue 14) is raw >= 0.5 x encoded at batch 256 and 4096.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.v8_predict import cpu_model, rates
from model.bundle import build_bundle, bundle_path
from reloader.runtime import ModelRuntime
from tests.support.js_bundle import JsBundle
from tests.support.tfjs_models import dense_model, numpy_forward

SPECIES = ["Adelie", "Chinstrap", "Gentoo", "Macaroni", "Rockhopper"]
COLONIES = [f"colony-{i:02d}" for i in range(12)]
NULLS = 0.1


def raw_spec() -> dict[str, Any]:
    floats = [f"f{i}" for i in range(4)]
    return {
        "name": "raw",
        "version": "1",
        "inputs": [
            *({"name": f, "type": "float", "nullable": True} for f in floats),
            {"name": "year", "type": "int"},
            {"name": "tagged", "type": "bool"},
            {"name": "species", "type": "string"},
            {"name": "colony", "type": "string", "nullable": True, "default": "colony-00"},
            {"name": "seen", "type": "timestamp"},
        ],
        "features": [
            *(
                {
                    "input": f,
                    "steps": [
                        {"impute": {"value": 1.5}},
                        {"standardize": {"mean": 1.25, "std": 3.5}},
                    ],
                }
                for f in floats
            ),
            {"input": "year", "steps": [{"minmax": {"min": 2000, "max": 2030}}]},
            {"input": "tagged"},
            {
                "input": "species",
                "steps": [
                    {"vocabulary": {"values": SPECIES, "oov": "bucket"}},
                    {"onehot": {}},
                ],
            },
            {
                "input": "colony",
                "steps": [{"vocabulary": {"values": COLONIES, "oov": "error"}}, {"onehot": {}}],
            },
            *(
                {"input": "seen", "name": f"seen.{p}", "steps": [{"datepart": {"part": p}}]}
                for p in ("month", "weekday", "hour")
            ),
        ],
        "output": {"kind": "multiclass", "labels": ["a", "b", "c"]},
        "maxBatch": 4096,
    }


WIDTH = 4 + 1 + 1 + len(SPECIES) + 1 + len(COLONIES) + 3


class Rows:
    """n synthetic rows as the host holds them: numpy columns (NaN = null), strings as category
    codes (-1 = null) with their UTF-8 bytes, and the features the spec computes from them."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n = n
        self.cols: dict[str, np.ndarray] = {}
        for i in range(4):
            x = rng.normal(1, 4, n)
            x[rng.random(n) < NULLS] = np.nan
            self.cols[f"f{i}"] = x
        self.cols["year"] = rng.integers(2000, 2031, n).astype(np.float64)
        self.cols["tagged"] = (rng.random(n) < 0.5).astype(np.float64)
        self.cols["seen"] = rng.uniform(1.5e12, 1.8e12, n).round()
        species = [*SPECIES, "Emperor"]  # one word outside the vocabulary: the OOV bucket
        self.words = {"species": species, "colony": COLONIES}
        self.codes = {
            "species": rng.integers(0, len(species), n),
            "colony": np.where(rng.random(n) < NULLS, -1, rng.integers(0, len(COLONIES), n)),
        }
        self.strings = {
            k: [None if c < 0 else self.words[k][c] for c in v] for k, v in self.codes.items()
        }
        self.features = self._features()

    def _features(self) -> np.ndarray:
        c = self.cols
        parts = [
            ((np.where(np.isnan(c[f"f{i}"]), 1.5, c[f"f{i}"]) - 1.25) / 3.5)[:, None]
            for i in range(4)
        ]
        parts.append(((c["year"] - 2000) / 30)[:, None])
        parts.append(c["tagged"][:, None])
        parts.append(np.eye(len(SPECIES) + 1)[np.minimum(self.codes["species"], len(SPECIES))])
        parts.append(np.eye(len(COLONIES))[np.maximum(self.codes["colony"], 0)])
        t = c["seen"].astype("datetime64[ms]")
        month = t.astype("datetime64[M]").astype(int) % 12 + 1
        days = np.floor(c["seen"] / 86400000)
        weekday = (days + 3) % 7
        hour = np.floor((c["seen"] - days * 86400000) / 3600000)
        parts += [month[:, None], weekday[:, None], hour[:, None]]
        return np.concatenate(parts, axis=1).astype(np.float32)


class StringColumn:
    """Categorical UTF-8 as numpy: a padded byte table per word, gathered by codes."""

    def __init__(self, words: list[str]) -> None:
        encoded = [w.encode() for w in words]
        self.lens = np.array([len(b) for b in encoded], dtype=np.int32)
        self.table = np.zeros((len(words), int(self.lens.max())), dtype=np.uint8)
        for i, b in enumerate(encoded):
            self.table[i, : len(b)] = np.frombuffer(b, np.uint8)
        self.mask = np.arange(self.table.shape[1])[None, :] < self.lens[:, None]

    def encode(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """codes (-1 = null) -> (UTF-8 bytes, lengths)."""
        c = np.maximum(codes, 0)
        lens = np.where(codes < 0, 0, self.lens[c])
        return self.table[c][self.mask[c] & (codes >= 0)[:, None]], lens


def encode_from_python(strings: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Python strings -> (UTF-8 bytes, lengths): what a host does with a batch of `str`."""
    parts = [b"" if s is None else s.encode() for s in strings]
    lens = np.fromiter(map(len, parts), dtype=np.int32, count=len(parts))
    return np.frombuffer(b"".join(parts), np.uint8), lens


class RawPath:
    """The contract-2 host side for one bundle: numpy views of its column buffers."""

    def __init__(self, bundle: JsBundle, rows: int) -> None:
        self.b = bundle
        self.rows = rows
        views = bundle.columns(rows)
        self.inputs = bundle.schema["inputs"]
        self.num = np.frombuffer(views[0], np.float64)
        self.valid = np.frombuffer(views[1], np.uint8)
        self.offsets = np.frombuffer(views[2], np.int32)
        self.status = np.frombuffer(views[3], np.uint8)
        self.out = np.frombuffer(views[4], np.float32)
        self.bytes = [np.frombuffer(v, np.uint8) for v in views[6:]]

    def fill(
        self, data: Rows, strings: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]]
    ) -> None:
        n, rows = data.n, self.rows
        self.status[:n] = 0
        k = s = 0
        for j, field in enumerate(self.inputs):
            name = field["name"]
            if field["type"] == "string":
                flat, lens = strings[name]()
                off = self.offsets[s * (rows + 1) : s * (rows + 1) + n + 1]
                off[0] = 0
                np.cumsum(lens, out=off[1:])
                if len(flat) > len(self.bytes[s]):
                    self.bytes[s] = np.frombuffer(
                        self.b.eval(f"ml.reserve({s}, {len(flat)})"), np.uint8
                    )
                self.bytes[s][: len(flat)] = flat
                self.valid[j * rows : j * rows + n] = data.codes[name] >= 0
                s += 1
            else:
                x = data.cols[name]
                self.num[k * rows : k * rows + n] = x
                np.logical_not(np.isnan(x), out=self.valid[j * rows : j * rows + n].view(bool))
                k += 1

    def release(self) -> None:
        # numpy views into V8 memory must be gone before the context closes
        self.num = self.valid = self.offsets = self.status = self.out = np.empty(0)
        self.bytes = []

    def predict(self, n: int) -> np.ndarray:
        failed = self.b.eval(f"ml.predictColumns({n})")
        if failed:
            raise RuntimeError(f"{failed} error rows: {self.b.call('ml.rowErrors()')[:3]}")
        return self.out[: n * 3].reshape(n, 3).copy()


class EncodedPath:
    def __init__(self, bundle: JsBundle, rows: int) -> None:
        self.b = bundle
        bufs = bundle.eval(f"ml.buffers({rows})")
        self.views = (bufs[0], bufs[1])
        self.x = np.frombuffer(self.views[0], np.float32)
        self.out = np.frombuffer(self.views[1], np.float32)

    def release(self) -> None:
        self.x = self.out = np.empty(0, np.float32)
        self.views = ()

    def predict(self, features: np.ndarray) -> np.ndarray:
        n = len(features)
        self.x[: n * WIDTH] = features.ravel()
        self.b.eval(f"ml.predictBuffer({n})")
        return self.out[: n * 3].reshape(n, 3).copy()


def build(tmp: Path) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(1)
    layers = [
        (rng.normal(0, 0.4, (WIDTH, 16)), rng.normal(0, 0.1, 16), "relu"),
        (rng.normal(0, 0.4, (16, 3)), rng.normal(0, 0.1, 3), "softmax"),
    ]
    probe = Rows(8, seed=99)
    records = []
    for i in range(8):
        rec: dict[str, Any] = {}
        for name, col in probe.cols.items():
            v = float(col[i])
            rec[name] = None if np.isnan(v) else v
        rec["tagged"] = bool(rec["tagged"])
        rec["year"] = int(rec["year"])
        rec.update({k: v[i] for k, v in probe.strings.items()})
        records.append(rec)
    expected = numpy_forward(layers, probe.features).astype(np.float64).tolist()
    raw = raw_spec()
    raw["selfTest"] = {"records": records, "expected": expected, "tolerance": 1e-5}
    names = [f"x{i}" for i in range(WIDTH)]
    encoded = {
        "name": "encoded",
        "version": "1",
        "inputs": [{"name": n, "type": "float"} for n in names],
        "features": [{"input": n} for n in names],
        "output": raw["output"],
        "maxBatch": 4096,
        "selfTest": {
            "records": [dict(zip(names, map(float, row), strict=True)) for row in probe.features],
            "expected": expected,
            "tolerance": 1e-5,
        },
    }
    out = []
    for spec in (raw, encoded):
        project = dense_model(tmp / spec["name"], layers)
        (project / "spec.json").write_text(json.dumps(spec))
        build_bundle(project, tmp / f"{spec['name']}-store")
        out.append(bundle_path(tmp / f"{spec['name']}-store").read_bytes())
    return out[0], out[1]


def measure(
    raw: RawPath,
    enc: EncodedPath,
    n: int,
    seconds: float,
    typed: ModelRuntime,
    matrix: ModelRuntime,
) -> dict[str, float]:
    """Rows/s of the five paths at batch n, checked against each other first."""
    data = Rows(n, seed=n)
    tables = {k: StringColumn(w) for k, w in data.words.items()}
    pre = {k: tables[k].encode(c) for k, c in data.codes.items()}
    cached = {k: (lambda p=p: p) for k, p in pre.items()}
    python = {k: (lambda s=s: encode_from_python(s)) for k, s in data.strings.items()}

    def raw_run(strings: dict[str, Any] = cached) -> np.ndarray:
        raw.fill(data, strings)
        return raw.predict(n)

    columns: dict[str, Any] = {**data.cols, **data.strings}
    columns["tagged"] = data.cols["tagged"] > 0.5
    want = enc.predict(data.features)
    checks = [raw_run(cached), raw_run(python), matrix.predict(data.features)]
    host = typed.predict_columns(columns, n)
    assert not host.errors, list(host.errors.items())[:3]
    for got in (*checks, host.scores):
        assert np.abs(got - want).max() <= 1e-5, np.abs(got - want).max()
    return rates(
        {
            "raw": raw_run,
            "raw+enc": lambda: raw_run(python),
            "encoded": lambda: enc.predict(data.features),
            "typed": lambda: typed.predict_columns(columns, n).scores,
            "matrix": lambda: matrix.predict(data.features),
        },
        n,
        seconds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="seconds per path and batch (1.0)"
    )
    parser.add_argument("--batches", default="256,4096")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        raw_code, enc_code = build(Path(tmp))
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}")
    head = (
        "batch", "raw rows/s", "raw+enc rows/s", "encoded rows/s", "raw/enc", "raw+enc/enc",
        "typed rows/s", "matrix rows/s", "typed/matrix",
    )  # fmt: skip
    widths = (6, 14, 15, 15, 8, 12, 13, 14, 13)
    results = []
    with (
        JsBundle(raw_code) as raw_b,
        JsBundle(enc_code) as enc_b,
        ModelRuntime(raw_code) as typed,
        ModelRuntime(enc_code) as matrix,
    ):
        print(
            f"kernels: raw {raw_b.call('ml.kernel')}, encoded {enc_b.call('ml.kernel')}; "
            f"{len(raw_spec()['inputs'])} raw inputs -> {WIDTH} features -> 16 -> 3"
        )
        print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
        rows = max(batches)
        raw, enc = RawPath(raw_b, rows), EncodedPath(enc_b, rows)
        for n in batches:
            r = measure(raw, enc, n, args.seconds, typed, matrix)
            row = {
                "batch": n,
                **{f"{k}_rows_s": v for k, v in r.items()},
                "raw_vs_encoded": r["raw"] / r["encoded"],
                "raw_enc_vs_encoded": r["raw+enc"] / r["encoded"],
                "typed_vs_matrix": r["typed"] / r["matrix"],
            }
            results.append(row)
            cells = (
                f"{n}",
                f"{r['raw']:,.0f}",
                f"{r['raw+enc']:,.0f}",
                f"{r['encoded']:,.0f}",
                f"{row['raw_vs_encoded']:.2f}",
                f"{row['raw_enc_vs_encoded']:.2f}",
                f"{r['typed']:,.0f}",
                f"{r['matrix']:,.0f}",
                f"{row['typed_vs_matrix']:.2f}",
            )
            print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
        raw.release()
        enc.release()
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "rows": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
