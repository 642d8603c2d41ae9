"""The model zoo (`model/examples/zoo`, written by `model/zoo.py`): one small Keras model per
activation and layer type the fast-path kernels cover, and two they do not.

Each fixture is built into a bundle and loaded as a job loads it; the bundle must pick the expected
kernel (or, off the fast path, give the expected reason), and both the fast path and the JSON path
must reproduce Keras' outputs on the fixture's reference rows. Every covered model is also pinned to
each generated kernel. `plan_probe.mjs` runs `planModel` in Node, outside any bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from model.bundle import MODEL_DIR, build_bundle, bundle_path
from reloader.runtime import ModelRuntime

ZOO = MODEL_DIR / "examples" / "zoo"
PROBE = Path(__file__).resolve().parent / "plan_probe.mjs"
TOLERANCE = 1e-5
GENERATED = ("dense-unrolled", "dense-js")


@dataclass(frozen=True)
class Reference:
    inputs: npt.NDArray[np.float32]
    outputs: npt.NDArray[np.float32]
    kernel: str
    reason: str
    json_tolerance: float

    @classmethod
    def load(cls, model_dir: Path) -> Reference:
        ref = json.loads((model_dir / "reference.json").read_text())
        return cls(
            inputs=np.asarray(ref["inputs"], dtype=np.float32),
            outputs=np.asarray(ref["outputs"], dtype=np.float32),
            kernel=ref["kernel"],
            reason=ref["reason"],
            json_tolerance=float(ref["json_tolerance"]),
        )


def fixtures(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob("*/reference.json"))


def cases(root: Path) -> list[tuple[str, str | None]]:
    """(fixture, pinned kernel or None for the bundle's own choice): every covered model on each
    generated kernel that applies (dense-unrolled stops at a size; dense-js does not)."""
    out: list[tuple[str, str | None]] = []
    for name in fixtures(root):
        out.append((name, None))
        auto = Reference.load(root / name).kernel
        if auto in GENERATED:
            out += [(name, k) for k in GENERATED[GENERATED.index(auto) :]]
    return out


def build_all(root: Path, out: Path, todo: Iterable[tuple[str, str | None]]) -> dict[Any, Any]:
    """Builds each case into its own store, two at a time; a failed build is kept as its error so
    that it fails its own test only."""

    def one(case: tuple[str, str | None]) -> Path | Exception:
        name, kernel = case
        store = out / name / (kernel or "auto")
        try:
            build_bundle(root / name, store, kernel=kernel)
        except Exception as e:
            return e
        return store

    todo = list(todo)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip(todo, pool.map(one, todo), strict=True))


def check(store: Path | Exception, ref: Reference, kernel: str | None) -> tuple[float, float]:
    """Loads the bundle (which runs its self-test) and compares both paths with Keras; returns
    (max |fast - Keras|, max |JSON - Keras|)."""
    if isinstance(store, Exception):
        raise store
    with ModelRuntime(bundle_path(store).read_bytes()) as rt:
        assert rt.meta.kernel == (kernel or ref.kernel)
        if rt.meta.kernel == "tfjs-cpu":
            assert rt.meta.kernel_reason == ref.reason
        fast = rt.predict(ref.inputs)
        # An odd row count: dense-js computes rows in pairs and the last one alone, the same sums.
        assert np.array_equal(rt.predict(ref.inputs[:7]), fast[:7])
        records = rt.predict_records(ref.inputs.tolist())
    scores = np.asarray([r["scores"] for r in records], dtype=np.float32)
    fast_delta = float(np.abs(fast - ref.outputs).max())
    json_delta = float(np.abs(scores - ref.outputs).max())
    assert fast_delta <= TOLERANCE, f"fast path off Keras by {fast_delta:.3g}"
    assert json_delta <= ref.json_tolerance, f"JSON path off Keras by {json_delta:.3g}"
    return fast_delta, json_delta


@pytest.fixture(scope="module")
def zoo_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[Any, Any]:
    return build_all(ZOO, tmp_path_factory.mktemp("zoo"), cases(ZOO))


def test_the_zoo_is_there() -> None:
    names = fixtures(ZOO)
    assert len(names) >= 20, names
    kernels = {Reference.load(ZOO / n).kernel for n in names}
    assert kernels == {"dense-unrolled", "dense-js", "tfjs-cpu"}


@pytest.mark.parametrize(
    ("name", "kernel"), cases(ZOO), ids=[f"{n}-{k or 'auto'}" for n, k in cases(ZOO)]
)
def test_zoo_model_matches_keras(zoo_stores: dict[Any, Any], name: str, kernel: str | None) -> None:
    fast, js = check(zoo_stores[(name, kernel)], Reference.load(ZOO / name), kernel)
    print(f"{name} ({kernel or 'auto'}): max |fast - Keras| {fast:.3g}, |JSON - Keras| {js:.3g}")


def test_a_kernel_that_does_not_apply_is_refused_at_load(tmp_path: Path) -> None:
    from reloader.errors import BundleError

    build_bundle(ZOO / "wide", tmp_path, kernel="dense-unrolled")  # past the unrolling limit
    with pytest.raises(BundleError, match='kernel "dense-unrolled" does not apply'):
        ModelRuntime(bundle_path(tmp_path).read_bytes())


def probe(dirs: list[Path], *args: str) -> dict[str, dict[str, Any]]:
    proc = subprocess.run(
        ["node", "--no-warnings", str(PROBE), *args, *map(str, dirs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {Path(d["dir"]).name: d for d in lines}


def test_plan_model_names_the_layer_that_keeps_a_model_off_the_fast_path() -> None:
    plans = probe([ZOO / n for n in fixtures(ZOO)])
    for name, got in plans.items():
        ref = Reference.load(ZOO / name)
        assert got["reason"] == ref.reason, name
        assert (got["plan"] is None) == (ref.kernel == "tfjs-cpu"), name
    # What the fuser made of the layers: activations and well-conditioned batch normalizations
    # join a Dense; a batch normalization of raw values far from zero stays a step of its own.
    assert plans["batchnorm_after_dense"]["layers"] == [
        ["hidden1", "bn1", "relu1"],
        ["hidden2"],
        ["bn2", "out"],
    ]
    assert plans["batchnorm_first"]["layers"] == [["bn_in", "hidden"], ["out"]]
    assert plans["batchnorm_raw"]["plan"].startswith("affine 6->6 | dense")
    assert plans["batchnorm_last"]["plan"].endswith("| affine 1->1")
    assert plans["activation_layers"]["plan"] == (
        "dense 6->16 tanh | dense 16->16 relu(max=2.5) | dense 16->12 elu | "
        "dense 12->12 thresholded_relu(theta=0.10000000149011612) | dense 12->3 softmax"
    )


def test_erf_is_accurate_to_double_precision() -> None:
    import math

    xs = [i / 64 for i in range(-6 * 64, 6 * 64 + 1)] + [1e-12, -1e-300, 0.46875, 4.0, 27.0, -40.0]
    script = (
        f"import {{ erf }} from '{(MODEL_DIR / 'src' / 'kernels.js').as_uri()}';"
        f"process.stdout.write(JSON.stringify({json.dumps(xs)}.map(erf)));"
    )
    proc = subprocess.run(
        ["node", "--no-warnings", "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(proc.stdout)
    worst = max(
        abs(g - math.erf(x)) / max(abs(math.erf(x)), 1e-300) for x, g in zip(xs, got, strict=True)
    )
    assert worst < 1e-14


def node_json(script: str, stdin: str = "") -> Any:
    """Runs an ES module script in Node; returns what it writes to stdout, parsed as JSON."""
    proc = subprocess.run(
        ["node", "--no-warnings", "--input-type=module", "-e", script],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_exp_expm1_and_tanh_are_accurate_to_double_precision() -> None:
    """The kernels' own exp, expm1 and tanh (model/src/elementary.js; Math's are calls in the job's
    V8) against Python's math on float32 inputs, near 0, at the ends of their ranges and beyond."""
    import math

    rng = np.random.default_rng(3)
    xs = np.concatenate(
        [
            rng.uniform(-40, 40, 20000),
            rng.uniform(-0.02, 0.02, 20000),
            rng.uniform(-800, 800, 2000),
            [0.0, 1e-30, -1e-30, 1e-45, 0.0054, -0.0054, 19.9, 20.0, 20.5, -20.5],
            [708.0, 709.0, 709.5, -707.9, -708.5, -745.0, -746.0, -800.0],
        ]
    ).astype(np.float32)
    xs = [float(x) for x in xs]
    script = (
        "import { readFileSync } from 'node:fs';"
        f"import * as e from '{(MODEL_DIR / 'src' / 'elementary.js').as_uri()}';"
        "const xs = JSON.parse(readFileSync(0, 'utf8'));"
        "const special = [NaN, Infinity, -Infinity].map((x) => [e.exp(x), e.expm1(x), e.tanh(x)]);"
        "process.stdout.write(JSON.stringify({special: special.map((r) => r.map(String)),"
        " exp: xs.map(e.exp), expm1: xs.map(e.expm1), tanh: xs.map(e.tanh)}));"
    )
    got = node_json(script, json.dumps(xs))
    assert got["special"] == [["NaN"] * 3, ["Infinity", "Infinity", "1"], ["0", "-1", "-1"]]
    for name, ref in [("exp", math.exp), ("expm1", math.expm1), ("tanh", math.tanh)]:
        worst = 0.0
        for x, g in zip(xs, got[name], strict=True):
            try:
                want = ref(x)
            except OverflowError:
                want = math.inf
            if g is None or want in (math.inf, -math.inf) or abs(want) < 1e-300:
                assert g is None or g == want or abs(g) < 1e-300, (name, x, g, want)
                continue
            worst = max(worst, abs(g - want) / abs(want))
        assert worst < 2e-14, (name, worst)


def test_dense_js_in_webassembly_equals_its_javascript_loops() -> None:
    """dense-js runs its Dense steps in WebAssembly SIMD (model/src/simd.js), the rest in
    JavaScript. On random plans (every activation, blocks of outputs cut anywhere, a step past
    simd.MAX_MACS that stays in JavaScript, an odd row count) it computes what JavaScript loops
    alone do, to the bit."""
    src = MODEL_DIR / "src"
    script = (
        f"import {{ compileDenseStack }} from '{(src / 'kernels.js').as_uri()}';"
        f"import {{ MAX_MACS }} from '{(src / 'simd.js').as_uri()}';"
        """
        let seed = 7;
        const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5;
        const array = (n, f) => Float64Array.from({ length: n }, f);
        const PARAMS = {
          relu6: { name: 'relu', max: 6 },
          leaky_relu: { name: 'leaky_relu', alpha: 0.1 },
          thresholded_relu: { name: 'thresholded_relu', theta: 0.1 },
        };
        const act = (name, O) =>
          name === 'prelu' ? { name, alpha: array(O, rnd) } : PARAMS[name] || { name };
        const dense = (I, O, acts) => ({
          kind: 'dense', inSize: I, outSize: O, layers: [], acts: acts.map((a) => act(a, O)),
          w: array(I * O, () => (rnd() * 3) / Math.sqrt(I)), b: array(O, () => rnd() * 0.2),
        });
        const affine = (n) => ({
          kind: 'affine', inSize: n, outSize: n, layers: [], acts: [],
          scale: array(n, () => Math.fround(1 + rnd())), shift: array(n, () => Math.fround(rnd())),
        });
        const big = Math.floor(MAX_MACS / 64) + 1;
        const plans = [
          [dense(20, 64, ['relu']), dense(64, 32, ['relu']), dense(32, 3, ['softmax'])],
          [affine(6), dense(6, 16, ['tanh']), dense(16, 16, ['relu6']), dense(16, 12, ['elu']),
            dense(12, 12, ['thresholded_relu']), dense(12, 3, ['log_softmax'])],
          [dense(7, 13, ['relu', 'sigmoid']), dense(13, 5, ['prelu']),
            dense(5, 9, ['selu', 'swish']), dense(9, 1, ['hard_sigmoid'])],
          [dense(3, 25, ['gelu']), dense(25, 14, ['mish']),
            dense(14, 11, ['softplus', 'softsign']), dense(11, 2, ['leaky_relu', 'gelu_tanh']),
            affine(2)],
          [dense(64, big, ['relu']), dense(big, 2, [])],
          [dense(1, 1, [])],
        ];
        const bits = (y) => Array.from(new Int32Array(y.buffer)).join();
        const result = plans.map((plan) => {
          const n = 37;
          const x = Float32Array.from({ length: n * plan[0].inSize }, () => rnd() * 4);
          const nOut = plan[plan.length - 1].outSize;
          const [a, b] = [new Float32Array(n * nOut), new Float32Array(n * nOut)];
          compileDenseStack(plan, 64)(x, a, n);
          compileDenseStack(plan, 64, { simd: false })(x, b, n);
          return { same: bits(a) === bits(b), finite: a.every(Number.isFinite) };
        });
        process.stdout.write(JSON.stringify(result));
        """
    )
    for k, r in enumerate(node_json(script)):
        assert r == {"same": True, "finite": True}, k


@pytest.mark.train
def test_zoo_script_trains_what_the_kernels_reproduce(tmp_path: Path, train_python: Path) -> None:
    """The whole zoo from Keras again (about 20 s of training), each bundle on its own kernel."""
    out = tmp_path / "zoo"
    proc = subprocess.run(
        [train_python, str(MODEL_DIR / "zoo.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fixtures(out) == fixtures(ZOO)
    stores = build_all(out, tmp_path / "stores", [(n, None) for n in fixtures(out)])
    for name in fixtures(out):
        fast, js = check(stores[(name, None)], Reference.load(out / name), None)
        print(f"{name}: max |fast - Keras| {fast:.3g}, |JSON - Keras| {js:.3g}")
