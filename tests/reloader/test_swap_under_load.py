"""Hot swap under load: one thread predicts without pause while 50 versions are published.

Every call is checked against its version's reference and the swap stall against a loose bound;
the stall's figure (goal <= 1 ms) is `bench/swap.py`'s `swap_stall_max_ms`."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from reloader import runtime as runtime_module
from reloader.agent import HotModel
from reloader.sources import Source
from tests.support.stores import Versions, publish, reference_of
from tests.support.waiting import wait_until

VERSIONS = 50
# The goal is <= 1 ms and the benchmark measures a few µs; a swap that waited for something (a
# build, the poll thread, a lock held across a check) would take tens of ms or more. 50 ms holds
# on a busy 2-core machine shared with other jobs.
STALL_BOUND_SECONDS = 0.05


def test_fifty_versions_while_predicting(
    store_dir: Path, tmp_path: Path, local: Source, versions: Versions, wine: Any
) -> None:
    threads = {t.ident for t in threading.enumerate()}
    contexts = len(runtime_module._LIVE)
    refs = {base: reference_of(wine, base) for base in ("v1", "v2")}
    # Neighbouring versions have different weights, so a half-swapped model could not pass.
    plan = [versions.make(f"{i:03d}", "v1" if i % 2 else "v2") for i in range(VERSIONS + 1)]
    base_of = {v.label: v.base for v in plan}
    publish(local, plan[0])
    hm = HotModel(str(store_dir), poll_interval=0.5, cache_dir=tmp_path / "cache").start()

    seen: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def predict_forever() -> None:
        try:
            last = None
            while not done.is_set():
                got = hm.predict_versioned(wine.x)
                # Every output row matches the reference of the version that claims it.
                np.testing.assert_allclose(got.value, refs[base_of[got.version]], atol=1e-5)
                if got.version != last:
                    seen.append(got.version)
                    last = got.version
        except BaseException as e:
            errors.append(e)

    worker = threading.Thread(target=predict_forever, name="predictor")
    worker.start()
    try:
        for v in plan[1:]:
            publish(local, v)
            # The predicting thread adopts it at its next call; wait for that before the next.
            wait_until(lambda v=v: hm.info.version == v.label or errors, what=f"{v.label}")
            assert not errors, errors
    finally:
        done.set()
        worker.join(30)
        info = hm.info
        hm.stop()
    assert not errors, errors
    assert seen == [v.label for v in plan], "every version served, in publish order"
    assert info.reloads == VERSIONS + 1 and info.failures == 0
    stall = info.max_swap_stall_seconds
    assert stall is not None and 0 <= stall < STALL_BOUND_SECONDS, (
        f"pointer swap stalled the predicting thread {stall} s (bound {STALL_BOUND_SECONDS} s)"
    )

    wait_until(lambda: {t.ident for t in threading.enumerate()} <= threads, what="threads gone")
    assert len(runtime_module._LIVE) == contexts, "every context closed"
