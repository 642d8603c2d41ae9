"""The V8 runtime on real bundles built from the committed examples."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from model.bundle import EXAMPLES, build_bundle, bundle_path
from reloader.codec import Prediction
from reloader.errors import BundleError, InputError, RuntimeClosed
from reloader.runtime import ModelRuntime


def test_v2_reproduces_keras_on_all_rows_and_is_accurate(bundle_v2: bytes, wine) -> None:
    ref = wine.reference("v2")
    with ModelRuntime(bundle_v2) as rt:
        assert rt.meta.name == "wine" and rt.meta.version == "v2"
        assert rt.meta.inputs == tuple(wine.features)
        assert rt.meta.kernel == "dense-unrolled"
        assert rt.self_test_delta is not None and rt.self_test_delta <= 1e-5
        out = rt.predict(wine.x)
    assert out.shape == (178, 3) and out.dtype == np.float32
    expected = np.asarray(ref["outputs"], dtype=np.float64)
    delta = float(np.abs(out - expected).max())
    print(f"max |V8 - Keras| over 178 rows: {delta:.3g}")
    assert delta <= 1e-5
    test_rows = np.isin(wine.ids, ref["test_ids"])
    accuracy = float((out[test_rows].argmax(axis=1) == wine.y[test_rows]).mean())
    print(f"held-out accuracy in V8: {accuracy:.4f} ({int(test_rows.sum())} rows)")
    assert accuracy >= 0.93


@pytest.mark.parametrize("kernel", ["dense-unrolled", "dense-js", "tfjs-cpu"])
def test_every_fast_path_kernel_reproduces_keras(tmp_path, wine, kernel: str) -> None:
    build_bundle(EXAMPLES / "v2", tmp_path, kernel=kernel)
    with ModelRuntime(bundle_path(tmp_path).read_bytes(), max_batch=64) as rt:
        assert rt.meta.kernel == kernel
        out = rt.predict(wine.x)
    delta = float(np.abs(out - np.asarray(wine.reference("v2")["outputs"])).max())
    print(f"{kernel}: max |V8 - Keras| {delta:.3g}")
    assert delta <= 1e-5


def test_unknown_kernel_is_refused_at_init(tmp_path) -> None:
    build_bundle(EXAMPLES / "v2", tmp_path, kernel="gpu")
    with pytest.raises(BundleError, match='unknown kernel "gpu"') as info:
        ModelRuntime(bundle_path(tmp_path).read_bytes())
    assert info.value.stage == "init"


def test_json_path_matches_fast_path(bundle_v2: bytes, wine) -> None:
    with ModelRuntime(bundle_v2) as rt:
        fast = rt.predict(wine.x)
        by_dict = rt.predict_records(wine.records)
        by_row = rt.predict_records(wine.x.tolist())
    slow = np.asarray([r["scores"] for r in by_dict])
    assert np.abs(slow - fast).max() <= 1e-5
    assert [r["scores"] for r in by_row] == [r["scores"] for r in by_dict]
    assert [r["label"] for r in by_dict] == [f"class_{i}" for i in fast.argmax(axis=1)]


def test_chunking_gives_identical_results(bundle_v2: bytes, wine) -> None:
    with ModelRuntime(bundle_v2) as whole, ModelRuntime(bundle_v2, max_batch=7) as chunked:
        assert chunked.max_batch == 7
        big = np.tile(wine.x, (3, 1))
        np.testing.assert_array_equal(whole.predict(big), chunked.predict(big))
        assert chunked.predict(np.empty((0, 13), np.float32)).shape == (0, 3)


def test_max_batch_is_capped_by_the_bundle(bundle_v2: bytes) -> None:
    with ModelRuntime(bundle_v2, max_batch=10**6) as rt:
        assert rt.max_batch == rt.meta.max_batch == 4096


def test_predict_rows_uses_the_codec(bundle_v2: bytes, wine) -> None:
    with ModelRuntime(bundle_v2) as rt:
        preds = rt.predict_rows([*wine.records[:5], list(wine.x[5])])
    assert all(isinstance(p, Prediction) for p in preds)
    assert [p.label for p in preds[:5]] == [f"class_{c}" for c in wine.y[:5]]
    assert preds[0].score == max(preds[0].scores)


@pytest.mark.parametrize(
    "records, fragment",
    [
        ([{"alcohol": 1.0}], "'malic_acid' is missing"),
        ([[1.0] * 12], "has 12 values"),
        ([["x"] * 13], "is str, not a number"),
        ([[float("nan")] * 13], "is nan"),
        ([[True] * 13], "is bool"),
        (["abc"], "expected a mapping or a sequence"),
    ],
)
def test_codec_rejects_bad_records_with_typed_errors(
    bundle_v2: bytes, records, fragment: str
) -> None:
    with ModelRuntime(bundle_v2) as rt:
        with pytest.raises(InputError, match=fragment) as info:
            rt.predict_rows(records)
        assert info.value.row == 0
        # the runtime keeps working afterwards
        assert rt.predict(np.ones((2, 13), np.float32)).shape == (2, 3)


def test_predict_rejects_bad_matrices(bundle_v2: bytes) -> None:
    with ModelRuntime(bundle_v2) as rt:
        with pytest.raises(InputError, match=r"expected a matrix \[n, 13\]"):
            rt.predict(np.ones((3, 12), np.float32))
        with pytest.raises(InputError, match="row 1 has non-finite"):
            rt.predict(np.array([[1.0] * 13, [np.inf] * 13], np.float32))
        with pytest.raises(InputError, match='record 1: feature "alcohol" is missing') as info:
            rt.predict_records([[1.0] * 13, {"a": 1}])
        assert info.value.row == 1
        with pytest.raises(InputError, match="JSON"):
            rt.predict_records([[float("nan")] * 13])


def test_close_is_idempotent_and_final(bundle_v2: bytes) -> None:
    rt = ModelRuntime(bundle_v2)
    rt.close()
    rt.close()
    assert rt.closed
    with pytest.raises(RuntimeClosed, match="closed"):
        rt.predict(np.ones((1, 13), np.float32))
    with pytest.raises(RuntimeClosed):
        rt.predict_records([[1.0] * 13])


def test_runtimes_are_independent_across_threads(bundle_v1: bytes, bundle_v2: bytes, wine) -> None:
    # Each thread creates, uses and closes its own runtime; creation is serialized inside
    # ModelRuntime.
    results: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(name: str, bundle: bytes) -> None:
        try:
            with ModelRuntime(bundle) as rt:
                for _ in range(20):
                    results[name] = rt.predict(wine.x)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=(f"{v}-{i}", b))
        for i in range(3)
        for v, b in (("v1", bundle_v1), ("v2", bundle_v2))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert all(not t.is_alive() for t in threads)
    np.testing.assert_array_equal(results["v2-0"], results["v2-2"])
    assert not np.array_equal(results["v1-0"], results["v2-0"])


def test_forgotten_runtimes_do_not_hang_interpreter_exit(built_stores, tmp_path) -> None:
    # A program that never closes its runtimes (one made in a thread) must still exit promptly.
    script = tmp_path / "forget.py"
    script.write_text(
        "import sys, threading, numpy as np\n"
        "from reloader.runtime import ModelRuntime\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "kept = [ModelRuntime(data) for _ in range(2)]\n"
        "kept[0].predict(np.ones((3, 13), np.float32))\n"
        "t = threading.Thread(target=lambda: kept.append(ModelRuntime(data)))\n"
        "t.start(); t.join()\n"
        "print('done', len(kept))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script), str(bundle_path(built_stores["v2"]))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done 3"
