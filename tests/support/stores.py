"""Store helpers: distinct versions to publish, publishing them, and the outputs each must give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import reloader.publish
from reloader.layout import MANIFEST_NAME
from reloader.manifest import Manifest
from reloader.sources import Source


@dataclass(frozen=True)
class Version:
    """A publishable version: bundle bytes, its manifest, and the reference it must reproduce."""

    manifest: Manifest
    data: bytes
    base: str  # "v1" or "v2": whose weights, hence whose reference outputs

    @property
    def label(self) -> str:
        return self.manifest.version


class Versions:
    """Makes distinct versions cheaply: the real v1/v2 bundles plus a unique comment."""

    def __init__(self, bundles: dict[str, bytes]) -> None:
        self.bundles = bundles

    def make(self, label: str, base: str = "v2", *, data: bytes | None = None) -> Version:
        body = data if data is not None else self.bundles[base] + f"\n/* {label} */\n".encode()
        return Version(Manifest.for_bundle(body, model="wine", version=label), body, base)


def publish(source: Source, version: Version, *, manifest: Manifest | None = None) -> None:
    """`version` through the library's publish (bundle first, then the manifest)."""
    reloader.publish.publish(source, version.data, manifest or version.manifest)


def put_manifest(source: Source, manifest: Manifest | bytes) -> None:
    data = manifest if isinstance(manifest, bytes) else manifest.to_bytes()
    source.put(MANIFEST_NAME, data, content_type="application/json")


def reference_of(wine: Any, base: str) -> np.ndarray:
    return np.asarray(wine.reference(base)["outputs"], dtype=np.float32)
