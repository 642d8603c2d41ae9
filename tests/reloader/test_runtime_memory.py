"""Memory across V8 contexts: 200 create/predict/close cycles neither leak (RSS growth <= 30 MB)
nor hand out memory that closing a context frees or a later context reuses."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import psutil

from reloader.runtime import ModelRuntime
from tests.support.stores import reference_of

CYCLES = 200
# A context that is not freed costs ~6 MB of RSS here (60 kept open: +370 MB), so leaking one
# in ten cycles would already exceed this; allocator noise over 200 freed ones is ~0 MB.
MAX_GROWTH_MB = 30


def test_create_close_cycles_do_not_grow_rss_or_reuse_output_memory(
    bundle_v2: bytes, wine: Any
) -> None:
    proc = psutil.Process()
    reference = reference_of(wine, "v2")
    # Warm up allocator pools and V8's process-wide state before the baseline.
    for _ in range(10):
        with ModelRuntime(bundle_v2) as rt:
            rt.predict(wine.x)
    gc.collect()
    baseline = proc.memory_info().rss
    samples = []
    for i in range(CYCLES):
        # Each cycle predicts the rows in another order, so an output read from memory a
        # previous context wrote (a stale or reused buffer) cannot pass for this one's.
        shift = i % len(wine.x)
        rt = ModelRuntime(bundle_v2)
        out = rt.predict(np.roll(wine.x, shift, axis=0))
        # The caller's own array, not a view into the context's heap (which close() frees).
        assert out.flags.owndata and out.base is None
        rt.close()
        np.testing.assert_allclose(out, np.roll(reference, shift, axis=0), atol=1e-5)
        if i % 50 == 49:
            gc.collect()
            samples.append(proc.memory_info().rss)
    growth_mb = (samples[-1] - baseline) / 2**20
    assert growth_mb <= MAX_GROWTH_MB, (
        f"RSS baseline {baseline / 2**20:.1f} MB, after 50/100/150/200 cycles: "
        + ", ".join(f"{s / 2**20:.1f}" for s in samples)
        + f" MB: grew {growth_mb:.1f} MB (bound {MAX_GROWTH_MB} MB)"
    )
