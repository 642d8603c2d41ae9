"""Export a trained model as a model project (docs/model-spec.md, "The model project").

    export_keras(model, spec, "build/penguins", train_records=df, derive=derive, hooks="hooks.js")

writes `model.json` + weight shards (tensorflowjs' Keras converter), `spec.json` with the
fitted spec, `selfTest` (raw records and Keras' own post-processed outputs for them) and
`samples` (raw records and the features training computed for them, which the build compares
with the bundle's), and `hooks.js`. `write_project` writes the spec part for any model given as
a `predict` callable (a TF.js graph model converted with `tensorflowjs_converter`, say).

TensorFlow is imported only by `export_keras`, so `write_project` runs without it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.spec import Derive, Spec, SpecError, as_spec

SpecSource = Spec | Mapping[str, Any] | str | Path
Predict = Callable[[npt.NDArray[np.float32]], Any]

HOOKS_FILE = "hooks.js"
SPEC_FILE = "spec.json"


def export_keras(
    model: Any,
    spec: SpecSource,
    out_dir: str | Path,
    *,
    train_records: Any = None,
    samples: Any = None,
    derive: Derive | None = None,
    hooks: str | Path | None = None,
    name: str | None = None,
    version: str | None = None,
    self_test_rows: int = 16,
    sample_rows: int = 64,
    tolerance: float = 1e-5,
) -> Path:
    """Writes a Keras (tf_keras, Keras 2) model and its spec as a model project in `out_dir`.

    Args:
        model: a tf_keras model, or the path of one saved with `model.save` (.keras, .h5).
        spec: a Spec, its dict, or the path of a spec.json. Unfitted parameters are fitted on
            `train_records`.
        out_dir: the model project directory (created; old weight shards are removed).
        train_records: the training records (list of dicts, dict of columns, DataFrame).
        samples: the records the self-test and the samples are taken from (default: the
            training records).
        derive: your Python derivation of the derived inputs (columns -> derived columns).
        hooks: the path of your hooks.js (copied to `out_dir/hooks.js`).
        name, version: the bundle's (default: the spec's; the name falls back to the model's).
        self_test_rows, sample_rows: how many records each takes, spread over the data.
        tolerance: the self-test's tolerance (bundle against Keras).

    Returns:
        `out_dir`.

    Raises:
        SpecError: the spec is wrong or unfitted, or does not fit the model (the input width
            against the spec's features, the output width against the output kind).
    """
    spec = as_spec(spec)
    if spec.unfitted() and train_records is not None:
        spec = spec.fit(train_records, derive=derive)
    spec.require_fitted("pass train_records= to fit it")
    records = samples if samples is not None else train_records
    if records is None:
        raise SpecError(
            "export needs records to take the self-test from: train_records= or samples="
        )
    model = _keras_model(model)
    check_widths(spec, _input_width(model), _output_widths(model))

    import tensorflowjs as tfjs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.bin"):
        old.unlink()
    tfjs.converters.save_keras_model(model, str(out))

    def predict(x: npt.NDArray[np.float32]) -> Any:
        y = model(x, training=False)  # Keras' own forward pass, not predict()'s batching
        if isinstance(y, list | tuple):  # several outputs: in the model's output order
            return np.concatenate([np.asarray(v, dtype=np.float32) for v in y], axis=1)
        return np.asarray(y, dtype=np.float32)

    return write_project(
        spec,
        out,
        predict=predict,
        samples=records,
        derive=derive,
        hooks=hooks,
        name=name or spec.name or _bundle_name(getattr(model, "name", "")),
        version=version,
        self_test_rows=self_test_rows,
        sample_rows=sample_rows,
        tolerance=tolerance,
    )


def write_project(
    spec: SpecSource,
    out_dir: str | Path,
    *,
    predict: Predict,
    samples: Any,
    derive: Derive | None = None,
    hooks: str | Path | None = None,
    name: str | None = None,
    version: str | None = None,
    self_test_rows: int = 16,
    sample_rows: int = 64,
    tolerance: float = 1e-5,
) -> Path:
    """Writes `out_dir/spec.json` (with `selfTest` and `samples`) and `hooks.js` for any model.

    Args:
        spec: a fitted Spec, its dict, or the path of a spec.json.
        out_dir: the model project directory (the model files are yours to put there).
        predict: the model: float32 features [n, width] -> its raw outputs [n, outputs]
            (before a regression's scale); the self-test's `expected` are its outputs, scaled.
        samples: the records the self-test and the samples are taken from (rows with errors
            are skipped).
        derive, hooks, name, version, self_test_rows, sample_rows, tolerance: as
            `export_keras`.

    Returns:
        `out_dir`.
    """
    spec = as_spec(spec)
    spec.require_fitted()
    if (name or spec.name) is None:
        raise SpecError("the bundle needs a name: pass name= (or set the spec's name)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hooks_name = _hooks(spec, out, hooks)
    features = spec.transform(samples, derive=derive)
    ok = np.flatnonzero(features.ok)
    if len(ok) == 0:
        first = next(iter(features.errors.items()), (0, "there are no records"))
        raise SpecError(
            f"none of the {len(features.matrix)} records transforms without an error "
            f"(record {first[0]}: {first[1]})"
        )
    test_rows = _spread(ok, self_test_rows)
    sample_rows_ = _covering(spec, samples, ok, sample_rows)
    raw = np.asarray(predict(features.matrix[test_rows]), dtype=np.float32)
    if raw.ndim != 2 or raw.shape[0] != len(test_rows):
        raise SpecError(f"the model gave outputs of shape {raw.shape} for {len(test_rows)} records")
    check_widths(spec, None, [raw.shape[1]])
    expected = spec.output.postprocess(raw)
    bad = np.flatnonzero(~np.isfinite(expected).all(axis=1))
    if len(bad):
        raise SpecError(f"the model's output for record {int(test_rows[bad[0]])} is not finite")
    sample_features = features.matrix[sample_rows_]
    if not np.isfinite(sample_features).all():
        r = int(sample_rows_[np.flatnonzero(~np.isfinite(sample_features).all(axis=1))[0]])
        raise SpecError(f"record {r} has a feature beyond float32's range")
    done = replace(
        spec,
        name=name or spec.name,
        version=version or spec.version,
        hooks=hooks_name,
        self_test={
            "records": spec.records_as_json(samples, test_rows.tolist()),
            "expected": expected.tolist(),
            "tolerance": tolerance,
        },
        samples={
            "records": spec.records_as_json(samples, sample_rows_.tolist()),
            "names": list(features.names),
            "features": sample_features.tolist(),
        },
    )
    done.save(out / SPEC_FILE)
    return out


def check_widths(spec: Spec, input_width: int | None, output_widths: list[int]) -> None:
    """SpecError unless the model takes the spec's features and gives its output kind's width."""
    width = spec.width()
    if input_width is not None and input_width != width:
        raise SpecError(
            f"the model takes {input_width} features, the spec makes {width}: "
            f"{spec.describe_columns()}"
        )
    total = sum(output_widths)
    want = spec.output.width()
    if total != want:
        per = " + ".join(str(w) for w in output_widths)
        raise SpecError(
            f"the model gives {total} outputs ({per}), the {spec.output.kind} output needs "
            f"{want}: {', '.join(spec.output.names())}"
        )


def _hooks(spec: Spec, out: Path, hooks: str | Path | None) -> str | None:
    target = out / HOOKS_FILE
    if hooks is not None:
        src = Path(hooks)
        if not src.is_file():
            raise SpecError(f"hooks {src}: no such file")
        if src.resolve() != target.resolve():
            shutil.copyfile(src, target)
        return HOOKS_FILE
    if spec.hooks is not None:
        if not (out / spec.hooks).is_file():
            raise SpecError(f"the spec names hooks {spec.hooks!r}, which is not in {out}")
        return spec.hooks
    derived = [i.name for i in spec.inputs if i.derived]
    if derived:
        raise SpecError(
            f"derived input {derived[0]!r} needs hooks: pass hooks= (a hooks.js whose prepare() "
            "computes it)"
        )
    if spec.extras:
        raise SpecError(
            f"extra {spec.extras[0].name!r} needs hooks: pass hooks= (a hooks.js whose finish() "
            "computes it)"
        )
    return None


def _spread(rows: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.int64]:
    """At most k of `rows`, evenly spread, in order."""
    if len(rows) <= k:
        return rows
    at = np.unique(np.linspace(0, len(rows) - 1, k).round().astype(np.int64))
    picked: npt.NDArray[np.int64] = rows[at]
    return picked


def _covering(spec: Spec, records: Any, ok: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.int64]:
    """k rows for the samples: first one with a null per nullable raw input (so the build also
    compares the defaults and imputes), then spread over the rest."""
    nullable = [i.name for i in spec.raw_inputs if i.nullable]
    chosen: list[int] = []
    if nullable and k > 0:
        # only the first few thousand rows are looked at: enough to find a null if nulls are common
        head = ok[: max(4 * k, 4096)]
        recs = spec.records_as_json(records, head.tolist())
        for name in nullable:
            row = next(
                (int(r) for r, rec in zip(head, recs, strict=True) if rec[name] is None), None
            )
            if row is not None and row not in chosen and len(chosen) < k:
                chosen.append(row)
    rest = _spread(np.setdiff1d(ok, chosen), k - len(chosen))
    return np.sort(np.concatenate([np.asarray(chosen, dtype=np.int64), rest]))


def _keras_model(model: Any) -> Any:
    # tensorflowjs' Keras converter speaks Keras 2 (tf_keras); TF 2.19 defaults to Keras 3.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if isinstance(model, str | Path):
        import tf_keras as keras

        return keras.models.load_model(str(model))
    if type(model).__module__.split(".")[0] == "keras":
        raise SpecError(
            "export_keras needs a tf_keras (Keras 2) model, this is Keras 3: set "
            "TF_USE_LEGACY_KERAS=1 before importing TensorFlow and build it with "
            "`import tf_keras as keras`"
        )
    return model


def _input_width(model: Any) -> int:
    inputs = model.inputs
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        shapes = ", ".join(str(tuple(i.shape)) for i in inputs)
        raise SpecError(f"the model must take one feature vector [n, width], not {shapes}")
    return int(inputs[0].shape[-1])


def _output_widths(model: Any) -> list[int]:
    widths = []
    for o in model.outputs:
        if len(o.shape) != 2:
            raise SpecError(f"each model output must be [n, width], not {tuple(o.shape)}")
        widths.append(int(o.shape[-1]))
    return widths


def _bundle_name(text: str) -> str | None:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in text).lstrip("._-")
    return cleaned or None


__all__ = ["check_widths", "export_keras", "write_project"]
