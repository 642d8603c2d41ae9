"""The model spec (docs/model-spec.md): typed inputs, declarative pre-processing, output kind.

The Python runtime of "one spec, two runtimes": `Spec.fit` fills the fitted parameters from
training data and `Spec.transform` computes the float32 feature matrix as the bundle's
`model/src/features.js` does; the build compares the two on the export's samples. Raw values are
typed by `reloader.columns`, the host's own encoder, so training types a record exactly as
serving hands it to V8. The steps live in `model/spec_steps.py`, the output kinds in
`model/spec_output.py`, the inputs and the typing of records in `model/spec_inputs.py`.

    spec = Spec.load("spec.json").fit(train_df, derive=derive)
    features = spec.transform(records, derive=derive)   # .matrix, .names, .errors
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.spec_base import SpecError, keys_of, list_of, name_of
from model.spec_inputs import Derive, Input, failer, json_records, prepare, text
from model.spec_output import RESERVED, OutputSpec
from model.spec_steps import Column, Impute, Kind, OneHot, Step, Vocabulary, nulls, parse_step

__all__ = [
    "Derive",
    "Extra",
    "Feature",
    "Features",
    "Input",
    "OutputSpec",
    "Spec",
    "SpecError",
    "as_spec",
]

SPEC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # the bundle's name (as build.mjs checks)

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Feature:
    """A block of the feature vector: one input through `steps`, as column(s) named `name`
    (default: the input's name)."""

    input: str
    steps: tuple[Step, ...] = ()
    name: str | None = None

    @property
    def column(self) -> str:
        return self.name or self.input

    def where(self, i: int | None = None) -> str:
        if i is None:
            return f"feature {self.column!r}"
        return f"feature {self.column!r} step {i + 1} ({self.steps[i].key})"

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Feature:
        d = keys_of(d, ("input", "name", "steps"), where)
        name = d.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise SpecError(f"{where}: name must be a non-empty string, not {name!r}")
        if not isinstance(d.get("input"), str):
            raise SpecError(f"{where}: input must name an input, not {d.get('input')!r}")
        where = f"feature {name or d['input']!r}"
        steps = list_of(d.get("steps", []), f"{where}: steps")
        return cls(
            d["input"],
            tuple(parse_step(s, f"{where} step {i + 1}") for i, s in enumerate(steps)),
            name,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input}
        if self.name is not None:
            out["name"] = self.name
        out["steps"] = [{s.key: s.params()} for s in self.steps]
        return out

    def check(self, kind: Kind) -> Kind:
        """Follows the kinds through the steps; SpecError names the step that does not fit."""
        for i, step in enumerate(self.steps):
            if kind.name == "onehot":
                raise SpecError(f"{self.where(i)} comes after onehot, which must be the last step")
            kind = step.next(kind, self.where(i))
        if kind.name in ("string", "timestamp"):
            via = "vocabulary" if kind.name == "string" else "datepart"
            raise SpecError(
                f"{self.where()}: a {kind.name} input must reach a number through {via}"
            )
        return kind

    def columns(self) -> tuple[str, ...]:
        """The block's column names: `name`, `name=value` / `name=<oov>`, `name#i`."""
        if not self.steps or not isinstance(self.steps[-1], OneHot):
            return (self.column,)
        # the step that made the index (an impute may sit in between)
        source = next(s for s in reversed(self.steps[:-1]) if not isinstance(s, Impute))
        if isinstance(source, Vocabulary):
            if source.values is None:
                raise SpecError(f"{self.where()}: unfitted (vocabulary has no values)")
            oov = ("<oov>",) if source.bucket else ()
            return tuple(f"{self.column}={v}" for v in (*source.values, *oov))
        size = self.steps[-1].size
        if size is None:
            boundaries = getattr(source, "boundaries", None)
            if boundaries is None:
                raise SpecError(f"{self.where()}: unfitted (bucketize has no boundaries)")
            size = len(boundaries) + 1
        return tuple(f"{self.column}#{i}" for i in range(size))


@dataclass(frozen=True)
class Extra:
    """An extra output field the `finish` hook computes."""

    name: str
    type: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type}


@dataclass(frozen=True)
class Features:
    """`Spec.transform`'s result: the float32 matrix [n, width] (error rows hold zeros), the
    column names, and why each error row is one (row -> message)."""

    matrix: F32
    names: tuple[str, ...]
    errors: dict[int, str]

    @property
    def ok(self) -> npt.NDArray[np.bool_]:
        """True for the rows that are not error records."""
        ok = np.ones(len(self.matrix), dtype=bool)
        ok[list(self.errors)] = False
        return ok


_TOP = ("name", "version", "inputs", "features", "output", "extras", "hooks", "maxBatch", "kernel")
KERNELS = ("auto", "dense-unrolled", "dense-js", "tfjs-cpu")  # model/src/kernels.js' names
_TOP_ALL = (*_TOP, "selfTest", "samples")


@dataclass(frozen=True)
class Spec:
    """A model's spec: typed inputs, feature blocks, output kind, extras (docs/model-spec.md).

    Validated when made: a wrong spec raises SpecError with one line naming the input, feature
    or step. `self_test` and `samples` are the export's (kept as they are, JSON)."""

    inputs: tuple[Input, ...]
    features: tuple[Feature, ...]
    output: OutputSpec
    name: str | None = None
    version: str | None = None
    extras: tuple[Extra, ...] = ()
    hooks: str | None = None
    max_batch: int | None = None
    kernel: str | None = None  # pins the fast path's kernel (the build's --kernel)
    self_test: Mapping[str, Any] | None = field(default=None, compare=False)
    samples: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for attr in ("inputs", "features", "extras"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        if self.name is not None:
            name_of(self.name, "spec", SPEC_NAME)
        if self.version is not None and not isinstance(self.version, str):
            raise SpecError(f"spec: version must be a string, not {self.version!r}")
        if not self.inputs:
            raise SpecError("spec: inputs must not be empty")
        if not self.features:
            raise SpecError("spec: features must not be empty")
        by_name: dict[str, Input] = {}
        for inp in self.inputs:
            if inp.name in by_name:
                raise SpecError(f"input {inp.name!r} is declared twice")
            by_name[inp.name] = inp
        if all(i.derived for i in self.inputs):
            raise SpecError("spec: at least one input must be given by the job (not derived)")
        owner: dict[str, str] = {}
        for f in self.features:
            if f.input not in by_name:
                raise SpecError(f"{f.where()}: no input named {f.input!r}")
            f.check(by_name[f.input].kind)
            try:
                columns = f.columns()
            except SpecError:
                columns = (f.column + "=",)  # unfitted: the block's name must still be its own
            for c in columns:
                if c in owner:
                    raise SpecError(
                        f"{f.where()}: column {c!r} is also made by {owner[c]} (give a `name`)"
                    )
                owner[c] = f.where()
        heads = {h.head for h in self.output.heads}
        seen: set[str] = set()
        for e in self.extras:
            name_of(e.name, "extra")
            if e.name in RESERVED or e.name in heads:
                raise SpecError(f"extra {e.name!r} clashes with a field the job writes itself")
            if e.name in seen:
                raise SpecError(f"extra {e.name!r} is declared twice")
            seen.add(e.name)
            if e.type not in ("float", "string"):
                raise SpecError(f"extra {e.name!r}: type must be float or string, not {e.type!r}")
        if self.hooks is not None and not isinstance(self.hooks, str):
            raise SpecError(f"spec: hooks must be a file name, not {self.hooks!r}")
        mb = self.max_batch
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int) or mb < 1):
            raise SpecError(f"spec: maxBatch must be a positive integer, not {mb!r}")
        if self.kernel is not None and self.kernel not in KERNELS:
            raise SpecError(
                f"spec: kernel must be one of {', '.join(KERNELS)}, not {self.kernel!r}"
            )

    # -- reading and writing ----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Spec:
        """A spec from its JSON form (spec.json); SpecError names what is wrong."""
        d = keys_of(d, _TOP_ALL, "spec")
        for key in ("inputs", "features", "output"):
            if key not in d:
                raise SpecError(f"spec: {key} is missing")
        extras = []
        for i, e in enumerate(list_of(d.get("extras", []), "spec: extras")):
            e = keys_of(e, ("name", "type"), f"extras[{i}]")
            extras.append(Extra(name_of(e.get("name"), f"extras[{i}]"), str(e.get("type"))))
        return cls(
            inputs=tuple(
                Input.from_dict(x, f"inputs[{i}]")
                for i, x in enumerate(list_of(d["inputs"], "spec: inputs"))
            ),
            features=tuple(
                Feature.from_dict(x, f"features[{i}]")
                for i, x in enumerate(list_of(d["features"], "spec: features"))
            ),
            output=OutputSpec.from_dict(d["output"]),
            name=d.get("name"),
            version=d.get("version"),
            extras=tuple(extras),
            hooks=d.get("hooks"),
            max_batch=d.get("maxBatch"),
            kernel=d.get("kernel"),
            self_test=d.get("selfTest"),
            samples=d.get("samples"),
        )

    @classmethod
    def load(cls, path: str | Path) -> Spec:
        """Reads a spec.json."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise SpecError(f"{path}: cannot read the spec: {e}") from e
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: `Spec.from_dict(spec.to_dict()) == spec`."""
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.version is not None:
            out["version"] = self.version
        out["inputs"] = [i.to_dict() for i in self.inputs]
        out["features"] = [f.to_dict() for f in self.features]
        out["output"] = self.output.to_dict()
        if self.extras:
            out["extras"] = [e.to_dict() for e in self.extras]
        if self.hooks is not None:
            out["hooks"] = self.hooks
        if self.max_batch is not None:
            out["maxBatch"] = self.max_batch
        if self.kernel is not None:
            out["kernel"] = self.kernel
        if self.self_test is not None:
            out["selfTest"] = self.self_test
        if self.samples is not None:
            out["samples"] = self.samples
        return out

    def save(self, path: str | Path) -> Path:
        """Writes spec.json (`allow_nan=False`: JSON has no NaN)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return path

    # -- what it declares -------------------------------------------------------------------------

    def unfitted(self) -> list[str]:
        """The parameters `fit` still has to fill in, one line each (empty when fitted)."""
        return [
            f"{f.where(i)}: {what}"
            for f in self.features
            for i, s in enumerate(f.steps)
            if (what := s.missing()) is not None
        ]

    def require_fitted(self, hint: str = "call Spec.fit(records)") -> None:
        """SpecError naming the first parameter `fit` still has to fill in, if any."""
        missing = self.unfitted()
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise SpecError(f"spec is not fitted: {missing[0]} missing{more}; {hint}")

    def columns(self) -> list[tuple[str, tuple[str, ...]]]:
        """(block, its columns) per feature block, in the feature vector's order."""
        self.require_fitted()
        return [(f.column, f.columns()) for f in self.features]

    def feature_names(self) -> list[str]:
        return [c for _, cols in self.columns() for c in cols]

    def width(self) -> int:
        """The feature vector's length: the model's input width."""
        return len(self.feature_names())

    def describe_columns(self) -> str:
        """'block (col, col), ...': for messages about the width."""
        return ", ".join(f"{b} ({', '.join(cols)})" for b, cols in self.columns())

    @property
    def raw_inputs(self) -> tuple[Input, ...]:
        """The inputs the job gives (not derived), in order: `meta.inputs`."""
        return tuple(i for i in self.inputs if not i.derived)

    # -- fit and transform ------------------------------------------------------------------------

    def fit(self, records: Any, *, derive: Derive | None = None) -> Spec:
        """A copy with every missing fitted parameter filled from `records` (training data).

        Each step is fitted on its block's values after the steps before it (impute, then
        standardize: the std of the imputed values); nulls and error rows are left out.
        Parameters already given are kept."""
        values, n, errors = prepare(self.inputs, records, derive)
        if errors:  # the error records are left out
            keep = np.ones(n, dtype=bool)
            keep[np.fromiter(errors, dtype=np.int64, count=len(errors))] = False
            values = {k: x[keep] for k, x in values.items()}
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            fitted = [self._fit_block(f, values) for f in self.features]
        return replace(self, features=tuple(fitted))

    def _fit_block(self, f: Feature, values: dict[str, Any]) -> Feature:
        kind = self._input(f.input).kind
        col = Column(kind, values[f.input])
        steps = []
        failed = np.zeros(len(col.x), dtype=bool)

        def fail(rows: Any, message: Any) -> None:
            failed[np.flatnonzero(rows)] = True

        for i, step in enumerate(f.steps):
            if step.missing() is not None:
                step = step.fit(col, f.where(i))
            kind = step.next(kind, f.where(i))  # e.g. a given onehot size against a fitted one
            col = step.apply(col, fail)
            if failed.any():  # rows this block made error records: not fitted on further
                col = Column(col.kind, col.x[~failed])
                failed = np.zeros(len(col.x), dtype=bool)
            steps.append(step)
        return replace(f, steps=tuple(steps))

    def transform(self, records: Any, *, derive: Derive | None = None) -> Features:
        """The float32 feature matrix of `records`, as the bundle computes it.

        `records`: a list of dicts, a dict of columns, or a pandas DataFrame / pyarrow Table.
        A record that does not fit (wrong type, null, unknown value, ...) is an error row: zeros
        in the matrix and a message in `.errors` naming the input (the first error wins)."""
        self.require_fitted()
        values, n, errors = prepare(self.inputs, records, derive)
        blocks = []
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for f in self.features:
                col = Column(self._input(f.input).kind, values[f.input])
                fail = failer(errors, f.input)
                for step in f.steps:
                    col = step.apply(col, fail)
                null = nulls(col)
                if null.any():
                    fail(null, text("is null and has no default or impute"))
                x = col.x if col.x.ndim == 2 else col.x.reshape(-1, 1)
                x32 = x.astype(np.float32)  # the block rounded once, at its end
                over = np.isinf(x32).any(axis=1)
                if over.any():
                    fail(over, text(f"makes feature {f.column!r} overflow float32"))
                blocks.append(x32)
            matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), np.float32)
        if errors:
            matrix[np.fromiter(errors, dtype=np.int64, count=len(errors))] = 0.0
        return Features(matrix, tuple(self.feature_names()), dict(sorted(errors.items())))

    def records_as_json(
        self, records: Any, rows: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        """Records as JSON-able dicts of the raw inputs, typed as the host types them: ints as
        int, timestamps as ISO-8601 text in UTC ('...Z'; a sub-millisecond time as its number
        of ms), nulls as None. Rows with a type error hold None for the bad value."""
        return json_records([i.as_field for i in self.raw_inputs], records, rows)

    def _input(self, name: str) -> Input:
        return next(i for i in self.inputs if i.name == name)


def as_spec(source: Spec | Mapping[str, Any] | str | Path) -> Spec:
    """A Spec from a Spec, its dict, or the path of a spec.json."""
    if isinstance(source, Spec):
        return source
    if isinstance(source, Mapping):
        return Spec.from_dict(source)
    return Spec.load(source)
