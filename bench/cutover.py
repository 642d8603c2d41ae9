"""Rollouts: what a batch split by version costs, memory over many cutovers, a shadow's cost.

    python bench/cutover.py [--cutovers 1000] [--batch 1000] [--seconds 1] [--json out.json]

1. Split cost: one thread scores `--batch`-row batches (WINE, event times spread over 10 s) as
   the job does (`HotModel.split`, then a call per version) beside `HotModel.run` on the same
   model, side by side, while a cutover is under way (two versions loaded): with every row on one
   side of T (one call), and with half the rows on each side (two calls on half batches).
   Reported: records/s of each, and the ratios.
2. Memory: `--cutovers` versions published one after another, each with an effective time T_i
   ahead of the stream; the predicting thread scores rows on both sides of T_i, then moves the
   watermark past T_i, so the older model is closed. Reported: this process's RSS growth per
   1,000 cutovers (from cutover 50 on), the most models loaded at once, and the largest pointer
   swap on the predicting thread.
3. Shadow: scoring a batch as the job does, alone and with a shadow candidate of the same network
   (`job.shadow`: one more model call and the comparison). Reported: the shadow's cost in units
   of the scoring (1.0: one more call and nothing else).
4. Canary: the job's vectorized predict function (routing, scoring, output lines), with and
   without a canary taking 5% of the ids to a candidate of the same network. Reported: the
   canary's cost as a fraction of records/s.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swap import rss_growth_of, wine_bundles

from model.data import load_wine_csv
from reloader import runtime as runtime_module
from reloader.agent import HotModel
from reloader.manifest import Manifest
from reloader.publish import publish

T0 = 1_800_000_000_000  # the first cutover, ms since the epoch
ROUNDS = 5


def _rate(call: Callable[[], Any], rows: int, seconds: float) -> float:
    """Records/s of `call` (scoring `rows` rows) over about `seconds` of process time."""
    call()
    n, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        call()
        n += 1
    return n * rows / (time.process_time() - start)


def split_cost(hm: HotModel, x: np.ndarray, cutover_at: int, seconds: float) -> dict[str, float]:
    one = np.linspace(cutover_at + 1, cutover_at + 10_000, len(x)).astype(np.int64)
    two = np.linspace(cutover_at - 5_000, cutover_at + 5_000, len(x)).astype(np.int64)

    def scored(times: np.ndarray) -> Any:
        """What the job does with a batch (`_Predicting.by_version`): split it by version, the
        whole batch to one model when its rows need only one, else a part per model."""
        groups = hm.split(times)
        if len(groups) == 1:
            return hm.run_on(groups[0][0], lambda rt: rt.predict(x))
        return [hm.run_on(m, lambda rt, rows=rows: rt.predict(x[rows])) for m, rows in groups]

    assert len(hm.split(two)) == 2 and len(hm.split(one)) == 1
    newest = hm.split(one)[0][0]
    sides: dict[str, Callable[[], Any]] = {
        "plain": lambda: hm.run_on(newest, lambda rt: rt.predict(x)),
        "one": lambda: scored(one),
        "two": lambda: scored(two),
    }
    best = dict.fromkeys(sides, 0.0)
    for _ in range(ROUNDS):  # interleaved, best round each: the machine's noise hits all alike
        for name, call in sides.items():
            best[name] = max(best[name], _rate(call, len(x), seconds / ROUNDS))
    plain, single, double = best["plain"], best["one"], best["two"]
    return {
        "plain_records_per_s": plain,
        "one_version_records_per_s": single,
        "two_versions_records_per_s": double,
        "cutover_one_version_vs_plain": single / plain,
        "cutover_two_versions_vs_plain": double / plain,
    }


def shadow_cost(
    serving: HotModel, candidate_url: str, x: np.ndarray, tmp: Path, seconds: float
) -> dict[str, float]:
    """Scoring a batch as the job does (`job.scoring.Scorer`), alone and with a shadow candidate
    (`job.shadow`) of the same network: the shadow's cost in units of the scoring itself (1.0:
    exactly one more model call, nothing else)."""
    from job.scoring import Batch, Scorer
    from job.shadow import Shadow

    names = serving.current().runtime.meta.inputs
    batch = Batch(columns={name: x[:, j].astype(np.float64) for j, name in enumerate(names)})
    scorer = Scorer()
    shadow = Shadow(
        lambda: HotModel(candidate_url, cache_dir=tmp / "cache-shadow", poll_interval=60),
        retry_seconds=0.1,
    )
    shadow.start()
    try:
        while shadow.model is None:
            time.sleep(0.01)

        def with_shadow() -> None:
            shadow.compare(batch, scorer.predict(serving.run, batch), scorer)

        sides: dict[str, Callable[[], Any]] = {
            "alone": lambda: scorer.predict(serving.run, batch),
            "shadow": with_shadow,
        }
        best = dict.fromkeys(sides, 0.0)
        for _ in range(ROUNDS):
            for name, call in sides.items():
                best[name] = max(best[name], _rate(call, len(x), seconds / ROUNDS))
    finally:
        shadow.stop()
    assert shadow.stats.rows > 0
    return {
        "scored_records_per_s": best["alone"],
        "shadowed_records_per_s": best["shadow"],
        "shadow_cost_vs_scoring": best["alone"] / best["shadow"] - 1.0,
    }


def canary_cost(
    store: str,
    features: list[str],
    x: np.ndarray,
    tmp: Path,
    seconds: float,
    fraction: float = 0.05,
) -> dict[str, float]:
    """The job's vectorized predict function outside Flink (`predict_batch`: routing, scoring,
    the output lines), with and without a canary taking `fraction` of the ids, side by side. The
    canary's candidate is the same network (the same cost per row): what is measured is the
    routing and the second, smaller call per batch."""
    from job.functions import PredictVectorized
    from job.mixin import ModelSettings
    from job.scoring import Batch

    ids = np.arange(len(x), dtype=np.int64)
    columns = {"id": ids, **{f: x[:, k].astype(np.float64) for k, f in enumerate(features)}}
    fns = {}
    for name, canary in (("plain", ""), ("canary", "canary")):
        settings = ModelSettings(
            url=store,
            cache_dir=str(tmp / f"cache-{name}"),
            poll_interval=60,
            canary=canary,
            canary_fraction=fraction,
        )
        fn = PredictVectorized(["id", *features], settings)
        fn._setup(object())  # no metrics, subtask 0
        fns[name] = fn
    gc.unfreeze()  # what a worker freezes is this process here
    try:
        canary = fns["canary"].canary
        assert canary is not None
        while canary.channel.model is None:
            time.sleep(0.01)  # the candidate starts in the background
        best = dict.fromkeys(fns, 0.0)
        for _ in range(ROUNDS):
            for name, fn in fns.items():
                call = lambda fn=fn: fn.predict_batch(Batch(columns=dict(columns)))  # noqa: E731
                best[name] = max(best[name], _rate(call, len(x), seconds / ROUNDS))
        assert canary.stats.rows > 0 and not canary.stats.rolled_back
    finally:
        for fn in fns.values():
            fn.close_model()
    return {
        "canary_fraction": fraction,
        "canary_plain_records_per_s": best["plain"],
        "canary_records_per_s": best["canary"],
        "canary_cost_vs_plain": best["plain"] / best["canary"] - 1.0,
    }


def many(bundles: dict[str, bytes], x: np.ndarray, cutovers: int, tmp: Path) -> dict[str, Any]:
    import psutil

    me = psutil.Process()
    store = str(tmp / "store")
    contexts = len(runtime_module._LIVE)
    data0 = bundles["v1"] + b"\n/* 0 */\n"
    publish(store, data0, Manifest.for_bundle(data0, model="wine", version="0"))
    samples: list[tuple[int, float]] = []
    most_loaded = 0
    hm = HotModel(store, poll_interval=0.05, cache_dir=tmp / "cache", trial=False).start()
    try:
        for i in range(1, cutovers + 1):
            at = T0 + i * 1000
            data = bundles["v2" if i % 2 else "v1"] + f"\n/* {i} */\n".encode()
            m = Manifest.for_bundle(data, model="wine", version=str(i))
            publish(store, data, m, effective_at=at)
            both = np.array([at - 1, at], dtype=np.int64)
            while hm.split(both)[-1][0].version != str(i):
                time.sleep(0.001)  # the poll thread builds the new version
            got = [v.version for _, v in hm.run_at(both, lambda rt, rows: rt.predict(x[rows]))]
            assert got == [str(i - 1), str(i)], got
            most_loaded = max(most_loaded, len(runtime_module._LIVE) - contexts)
            hm.advance(at)
            while len(runtime_module._LIVE) > contexts + 1:
                hm.split(both[1:])  # adopts the timeline without the passed model
                time.sleep(0.001)
            if i % 10 == 0 or i == cutovers:
                samples.append((i, me.memory_info().rss / 2**20))
        stall = hm.info.max_swap_stall_seconds or 0.0
        segments = len(hm.info.segments)
    finally:
        hm.stop()
    per_1000, measured, _ = rss_growth_of(samples, cutovers)
    return {
        "cutovers": cutovers,
        "cutover_rss_growth_1000_mb": per_1000,
        "cutover_rss_growth_measured_mb": measured,
        "cutover_models_loaded_max": most_loaded,
        "cutover_stall_max_ms": stall * 1e3,
        "segments_at_end": segments,
        "rss_mb_by_cutover": [[i, round(mb, 1)] for i, mb in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cutovers", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=1.0, help="per side, split cost")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    features, _, xs, _ = load_wine_csv()
    x = np.resize(xs.astype(np.float32), (args.batch, xs.shape[1]))
    results: dict[str, Any] = {"batch": args.batch}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        bundles = wine_bundles(tmp)
        # Two versions of the same network (the same cost per row), one from T0 on.
        store = str(tmp / "split")
        a, b = bundles["v2"] + b"/* a */", bundles["v2"] + b"/* b */"
        publish(store, a, Manifest.for_bundle(a, model="wine", version="a"))
        publish(store, b, Manifest.for_bundle(b, model="wine", version="b"), effective_at=T0)
        with HotModel(store, poll_interval=60, cache_dir=tmp / "cache-split") as hm:
            results.update(split_cost(hm, x, T0, args.seconds))
        serving, candidate = str(tmp / "serving"), str(tmp / "candidate")
        publish(serving, a, Manifest.for_bundle(a, model="wine", version="a"))
        publish(candidate, b, Manifest.for_bundle(b, model="wine", version="b"))
        with HotModel(serving, poll_interval=60, cache_dir=tmp / "cache-serving") as hm:
            results.update(shadow_cost(hm, candidate, x, tmp, args.seconds))
        publish(serving, b, Manifest.for_bundle(b, model="wine", version="b"), channel="canary")
        results.update(canary_cost(serving, list(features), x, tmp, args.seconds))
        results.update(many(bundles, x, args.cutovers, tmp))
    print(
        f"batch {args.batch}: plain {results['plain_records_per_s']:,.0f} rec/s, one version "
        f"{results['cutover_one_version_vs_plain']:.2f}x, two versions "
        f"{results['cutover_two_versions_vs_plain']:.2f}x; {results['cutovers']} cutovers: RSS "
        f"{results['cutover_rss_growth_measured_mb']:+.1f} MB, at most "
        f"{results['cutover_models_loaded_max']} models loaded at once, stall max "
        f"{results['cutover_stall_max_ms']:.3f} ms; a shadow costs "
        f"{results['shadow_cost_vs_scoring']:.2f}x the scoring; a {results['canary_fraction']:.0%} "
        f"canary costs {results['canary_cost_vs_plain']:+.1%} of records/s"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
