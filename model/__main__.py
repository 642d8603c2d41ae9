"""`python -m model export`: a saved Keras model + spec.json + training CSV -> a model project.

    python -m model export --keras penguins.keras --spec spec.json --data penguins.csv \\
        --out build/penguins [--hooks hooks.js] [--derive derive.py:derive]

Exit codes: 0 written, 1 the spec or the model is wrong (one line on stderr), 2 usage error.
Needs the train extra (TensorFlow, tf_keras, tensorflowjs, pandas): run it in .venv-train.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.spec import SpecError


def _opt(p: argparse.ArgumentParser, flag: str, env: str, help: str, **kw: Any) -> None:
    p.add_argument(flag, default=os.environ.get(env), help=f"{help} (default: ${env})", **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model", description="Model tooling of tf-on-flink."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser(
        "export",
        help="write a model project (model.json, shards, spec.json, hooks.js) from Keras",
        description="Fit the spec's unfitted parameters on the training CSV, convert the Keras "
        "model to TF.js, and write spec.json with the self-test (Keras' outputs) and the samples "
        "(the training features) that the bundle build checks (docs/model-spec.md).",
    )
    _opt(ex, "--keras", "MODEL_EXPORT_KERAS", "the saved tf_keras model (.keras, .h5)")
    _opt(ex, "--spec", "MODEL_EXPORT_SPEC", "the spec.json (fitted or not)")
    _opt(ex, "--data", "MODEL_EXPORT_DATA", "the training records, CSV with a header")
    _opt(ex, "--samples", "MODEL_EXPORT_SAMPLES", "CSV of the self-test's records (else --data)")
    _opt(ex, "--out", "MODEL_EXPORT_OUT", "the model project directory to write")
    _opt(ex, "--hooks", "MODEL_EXPORT_HOOKS", "your hooks.js, copied into the project")
    _opt(
        ex,
        "--derive",
        "MODEL_EXPORT_DERIVE",
        "FILE.py:function or module:function computing the derived inputs in Python",
    )
    _opt(ex, "--name", "MODEL_EXPORT_NAME", "the bundle's name (else the spec's)")
    _opt(ex, "--version", "MODEL_EXPORT_VERSION", "the bundle's version (else the spec's)")
    return parser


def load_function(ref: str) -> Any:
    """`path/to/file.py:name` or `package.module:name` -> the function."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise SpecError(f"--derive {ref!r}: expected FILE.py:function or module:function")
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        if spec is None or spec.loader is None:
            raise SpecError(f"--derive: cannot load {target}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SpecError(f"--derive: {target} has no function {attr!r}")
    return fn


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = [f"--{k}" for k in ("keras", "spec", "data", "out") if not getattr(args, k)]
    if missing:
        parser.error(f"export needs {', '.join(missing)}")
    import pandas as pd

    from model.export import export_keras

    try:
        out = export_keras(
            Path(args.keras),
            args.spec,
            args.out,
            train_records=pd.read_csv(args.data),
            samples=pd.read_csv(args.samples) if args.samples else None,
            derive=load_function(args.derive) if args.derive else None,
            hooks=args.hooks,
            name=args.name,
            version=args.version,
        )
    except (SpecError, OSError) as e:
        print(f"export: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
