"""Bad bundles give typed errors and leave the process healthy."""

from __future__ import annotations

import numpy as np
import pytest

from reloader.errors import (
    BundleError,
    BundleMemoryError,
    BundleOutputError,
    BundleTimeout,
    RuntimeClosed,
    SelfTestError,
)
from reloader.runtime import ModelRuntime
from tests.support.faults import bad_bundle

CASES = [
    ("syntax_error", BundleError, "eval", "SyntaxError"),
    ("throws_at_eval", BundleError, "eval", "boom at eval"),
    ("missing_ml", BundleError, "contract", "global `ml` object"),
    ("bad_meta", BundleError, "contract", "`inputs` must be a non-empty list"),
    ("init_never_resolves", BundleTimeout, "init", "no result within 1 s"),
    ("init_rejects", BundleError, "init", "weights corrupt"),
    ("infinite_loop", BundleTimeout, "predict", "terminated"),
    ("heap_blowup", BundleMemoryError, "init", "heap limit of 64 MiB"),
    ("wrong_output_size", BundleOutputError, "predict", "values written"),
    ("small_output_buffer", BundleError, "buffers", "output buffer"),
    ("nan_output", BundleOutputError, "predict", "non-finite output for row 0"),
    ("selftest_mismatch", SelfTestError, "selftest", "row 1 differs by 0.25"),
    ("throws_in_predict", BundleError, "predict", "xxxx"),
    ("timer_loops", BundleError, "predict", "setTimeout is not available to model bundles"),
    ("wait_async_loops", BundleError, "predict", "Atomics.waitAsync is not available"),
    ("microtask_loops", BundleTimeout, "predict", "could not start"),
    ("stringify_garbage", BundleError, "contract", "not JSON"),
    ("stringify_undefined", BundleError, "contract", "not JSON"),
]


@pytest.mark.parametrize("kind, error, stage, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_bundle_is_refused_with_a_typed_error(
    bundle_v2: bytes, wine, kind, error, stage, fragment
) -> None:
    with pytest.raises(error) as info:
        ModelRuntime(
            bad_bundle(bundle_v2, kind), heap_limit=64 << 20, call_timeout=1.0, init_timeout=1.0
        )
    err = info.value
    assert err.stage == stage
    assert fragment in str(err)
    # Never a multi-KB minified source line in a message.
    assert len(str(err)) < 1200, len(str(err))
    # The process is healthy: a good bundle loads and predicts right after.
    with ModelRuntime(bundle_v2) as good:
        assert (good.predict(wine.x).argmax(axis=1) == wine.y).mean() > 0.9


def test_timeout_while_serving_breaks_only_that_runtime(bundle_v2: bytes, wine) -> None:
    rt = ModelRuntime(bad_bundle(bundle_v2, "infinite_loop"), call_timeout=0.5, self_test=False)
    with pytest.raises(BundleTimeout):
        rt.predict(wine.x[:4])
    with pytest.raises(RuntimeClosed, match="broken: predict timed out"):
        rt.predict(wine.x[:4])
    rt.close()
    with ModelRuntime(bundle_v2) as good:
        assert good.predict(wine.x[:4]).shape == (4, 3)


def test_nan_output_while_serving_is_refused(bundle_v2: bytes, wine) -> None:
    with ModelRuntime(bad_bundle(bundle_v2, "nan_output"), self_test=False) as rt:
        with pytest.raises(BundleOutputError, match="non-finite"):
            rt.predict(wine.x[:3])
        # an output check can be turned off by the caller who wants raw values
        rt.check_outputs = False
        assert np.isnan(rt.predict(wine.x[:3])[0, 0])


def test_non_utf8_bundle(bundle_v2: bytes) -> None:
    with pytest.raises(BundleError, match="not UTF-8") as info:
        ModelRuntime(b"\xff\xfe" + bundle_v2)
    assert info.value.stage == "decode"


def test_a_promise_callback_that_never_ends_costs_one_timeout_not_a_hang(
    bundle_v2: bytes, wine
) -> None:
    """It runs after its call returned; the next call cannot start. That call times out, the
    context is discarded (which stops the loop), and a new runtime serves normally."""
    rt = ModelRuntime(bad_bundle(bundle_v2, "microtask_loops"), call_timeout=0.5, self_test=False)
    rt.predict(wine.x[:4])  # queues the runaway callback, returns normally
    with pytest.raises(BundleTimeout, match="could not start"):
        rt.predict(wine.x[:4])
    with pytest.raises(RuntimeClosed, match="broken"):
        rt.predict(wine.x[:4])
    rt.close()
    with ModelRuntime(bundle_v2) as good:
        assert (good.predict(wine.x).argmax(axis=1) == wine.y).mean() > 0.9
