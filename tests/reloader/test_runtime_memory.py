"""200 create/close cycles must not leak (RSS growth <= 30 MB)."""

from __future__ import annotations

import gc

import numpy as np
import psutil

from reloader.runtime import ModelRuntime


def test_create_close_cycles_do_not_grow_rss(bundle_v2: bytes, wine) -> None:
    proc = psutil.Process()
    # Warm up allocator pools and V8's process-wide state before the baseline.
    for _ in range(10):
        with ModelRuntime(bundle_v2) as rt:
            rt.predict(wine.x)
    gc.collect()
    baseline = proc.memory_info().rss
    samples = []
    for i in range(200):
        rt = ModelRuntime(bundle_v2)
        out = rt.predict(wine.x)
        rt.close()
        assert out.shape == (178, 3)
        if i % 50 == 49:
            gc.collect()
            samples.append(proc.memory_info().rss)
    growth_mb = (samples[-1] - baseline) / 2**20
    print(
        f"RSS baseline {baseline / 2**20:.1f} MB, after 50/100/150/200 cycles: "
        + ", ".join(f"{s / 2**20:.1f}" for s in samples)
        + f" MB; growth {growth_mb:.1f} MB"
    )
    assert growth_mb <= 30
    assert np.isfinite(out).all()
