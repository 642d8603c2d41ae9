"""Loading one version: fetch → verify → (trial in a child process) → build → self-test → warm-up.

The one implementation of that path. `HotModel` uses it for every version it adopts (and to
rebuild a broken runtime), `python -m reloader check` and `python -m job`'s pre-flight use it
through `check`. Which failures are retried and which are quarantined is the caller's policy
(see `reloader.follower`); this module only raises the typed error of the step that failed.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from reloader import compat
from reloader.codec import BundleMeta
from reloader.compat import Fixed
from reloader.errors import IncompatibleBundle, MissingObject, NotReady, SourceError
from reloader.fetch import download_bundle
from reloader.layout import DEFAULT_MAX_BUNDLE_BYTES
from reloader.manifest import Manifest, load_public_key, parse
from reloader.runtime import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_HEAP_LIMIT,
    DEFAULT_INIT_TIMEOUT,
    ModelRuntime,
)
from reloader.sources import Fetched, Source, Validator, open_source
from reloader.values import Clock, LoadedModel, SystemClock


@dataclasses.dataclass(frozen=True)
class LoadSettings:
    """How a version is fetched, verified and built.

    Attributes:
        cache_dir: where verified bundles are kept (None: no cache).
        max_bundle_bytes: bundles larger than this are refused before download.
        public_key: when set, only manifests signed by this Ed25519 key are loaded.
        heap_limit, call_timeout, init_timeout: per-runtime V8 limits (see `ModelRuntime`).
        warmup_rows, warmup_calls: a new runtime predicts `warmup_calls` batches of up to
            `warmup_rows` rows before it is offered, so V8 has optimized its code.
        trial: build, self-test and warm up a bundle in a resource-limited child process
            before its first build in this process (see `reloader.sandbox`).
        trial_memory: the child's memory limit in bytes (resident set; default 4 x heap_limit).
        trial_timeout: the child's wall-clock limit in seconds (default 2 x init_timeout +
            10 x call_timeout).
        fixed: what the job serving the model fixed when it started (its typed columns); a
            version that does not fit them is refused with `IncompatibleBundle`
            (`reloader.compat`).
    """

    cache_dir: Path | None = None
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    public_key: Ed25519PublicKey | None = None
    heap_limit: int = DEFAULT_HEAP_LIMIT
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    init_timeout: float = DEFAULT_INIT_TIMEOUT
    warmup_rows: int = 256
    warmup_calls: int = 64
    trial: bool = True
    trial_memory: int | None = None
    trial_timeout: float | None = None
    fixed: Fixed | None = None

    def __post_init__(self) -> None:
        if self.max_bundle_bytes <= 0:
            raise ValueError("max_bundle_bytes must be > 0")
        if (self.trial_memory is not None and self.trial_memory <= 0) or (
            self.trial_timeout is not None and self.trial_timeout <= 0
        ):
            raise ValueError("trial_memory and trial_timeout must be > 0")


def public_key_of(key: Ed25519PublicKey | str | Path | bytes | None) -> Ed25519PublicKey | None:
    """A public key given as an object, PEM path, PEM bytes or base64 (None stays None)."""
    if key is None or isinstance(key, Ed25519PublicKey):
        return key
    return load_public_key(key)


class Loader:
    """Fetches, verifies and builds versions with one set of `LoadSettings`.

    Not thread-safe: one owner (the poll thread of a `HotModel`, or a command).
    """

    def __init__(self, settings: LoadSettings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self._clock: Clock = clock or SystemClock()

    def read_manifest(self, source: Source, validator: Validator | None = None) -> Fetched | None:
        """The store's manifest document (parse it with `manifest.parse`); None when it still
        matches `validator`. Raises `NotReady` (no manifest yet) or `SourceError`."""
        try:
            return source.read_manifest(validator)
        except MissingObject as e:
            raise NotReady(f"no manifest in the store yet ({e})") from e

    def fetch(self, source: Source, manifest: Manifest) -> bytes:
        """The verified bundle: signature (if a key is set), size cap, size and sha256.

        Raises `SignatureError`, `IntegrityError`, `NotReady` (bundle not uploaded yet),
        `SourceError`, `CacheError`.
        """
        s = self.settings
        if s.public_key is not None:
            manifest.verify(s.public_key)
        return download_bundle(
            source, manifest, cache_dir=s.cache_dir, max_bytes=s.max_bundle_bytes
        )

    def build(self, manifest: Manifest, data: bytes) -> LoadedModel:
        """A built, self-tested, warmed-up runtime for verified `data`.

        The first build of a bundle hash runs as a trial in a child process first (when
        `settings.trial`). Raises `BundleError` (and its subclasses).
        """
        s = self.settings
        t0 = time.perf_counter()
        self_test: bool | Mapping[str, Any] = (
            manifest.self_test if manifest.self_test is not None else True
        )
        if s.trial:
            _trial_once(manifest, data, self_test, s)
        runtime = ModelRuntime(
            data,
            heap_limit=s.heap_limit,
            call_timeout=s.call_timeout,
            init_timeout=s.init_timeout,
            self_test=self_test,
        )
        try:
            if s.fixed is not None:
                why = compat.problem(runtime.meta, s.fixed)
                if why is not None:
                    raise IncompatibleBundle(why)
            runtime.warm_up(rows=s.warmup_rows, calls=s.warmup_calls)
        except BaseException:
            runtime.close()
            raise
        return LoadedModel(runtime, manifest, self._clock.time(), time.perf_counter() - t0)

    def load(self, source: Source, manifest: Manifest) -> LoadedModel:
        """`fetch` then `build`."""
        return self.build(manifest, self.fetch(source, manifest))


# Trials passed in this process, by bundle hash and limits. Every subtask of a job follows the
# same store: in thread mode they share one interpreter, and one trial child per version is
# enough (two at once doubled publish -> serve on 2 cores). A failed trial is not remembered
# here: each follower quarantines it on its own.
_trials_guard = threading.Lock()
_trial_locks: dict[tuple[Any, ...], threading.Lock] = {}
_trials_passed: set[tuple[Any, ...]] = set()


def _trial_once(
    manifest: Manifest, data: bytes, self_test: bool | Mapping[str, Any], s: LoadSettings
) -> None:
    from reloader.sandbox import trial_build  # a child process: imported only when trials are on

    key = (
        manifest.sha256,
        json.dumps(self_test, sort_keys=True),
        s.heap_limit,
        s.call_timeout,
        s.init_timeout,
        s.warmup_rows,
        s.warmup_calls,
        s.trial_memory,
        s.trial_timeout,
    )
    with _trials_guard:
        lock = _trial_locks.setdefault(key, threading.Lock())
    with lock:  # a second follower of the same version waits for the first one's verdict
        if key in _trials_passed:
            return
        trial_build(
            data,
            self_test=self_test,
            heap_limit=s.heap_limit,
            call_timeout=s.call_timeout,
            init_timeout=s.init_timeout,
            warmup_rows=s.warmup_rows,
            warmup_calls=s.warmup_calls,
            memory_limit=s.trial_memory,
            wall_timeout=s.trial_timeout,
        )
        _trials_passed.add(key)


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """What `check` found: the manifest, the bundle's declared interface, timings (ms)."""

    url: str
    manifest: Manifest
    signature_verified: bool
    meta: BundleMeta
    self_test_max_delta: float | None
    timings_ms: Mapping[str, float]
    self_test_deltas: Mapping[str, float] = dataclasses.field(default_factory=dict)
    skew: Mapping[str, Any] | None = None  # `ModelRuntime.feature_skew()`

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "manifest": self.manifest.to_dict(),
            "signature": "verified" if self.signature_verified else "not checked",
            "meta": dataclasses.asdict(self.meta),
            "self_test_max_delta": self.self_test_max_delta,
            "self_test_deltas": dict(self.self_test_deltas),
            "skew": dict(self.skew) if self.skew is not None else None,
            "timings": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


def check(
    url: str,
    settings: LoadSettings | None = None,
    *,
    source_options: Mapping[str, Any] | None = None,
) -> CheckReport:
    """Loads the version `url` serves exactly as a `HotModel` would, then closes it.

    Raises the typed error of the first step that fails (`NotReady`, `SourceError`,
    `ManifestError`, `SignatureError`, `IntegrityError`, `BundleError`, `CacheError`).
    """
    settings = settings or LoadSettings()
    loader = Loader(settings)
    timings: dict[str, float] = {}
    with open_source(url, **dict(source_options or {})) as source:
        t0 = time.perf_counter()
        fetched = loader.read_manifest(source)
        if fetched is None:  # only possible with a validator
            raise SourceError("no manifest returned", url=url)
        manifest = parse(fetched.data)
        timings["manifest_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        data = loader.fetch(source, manifest)
        timings["download_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    loaded = loader.build(manifest, data)
    timings["build_and_self_test_ms"] = (time.perf_counter() - t0) * 1e3
    try:
        runtime = loaded.runtime
        return CheckReport(
            url=url,
            manifest=manifest,
            signature_verified=settings.public_key is not None,
            meta=runtime.meta,
            self_test_max_delta=runtime.self_test_delta,
            timings_ms=timings,
            self_test_deltas=dict(runtime.self_test_deltas),
            skew=runtime.feature_skew(),
        )
    finally:
        loaded.runtime.close()
