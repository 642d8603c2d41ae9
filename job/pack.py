"""`python -m job pack OUT.zip`: the job and everything its Python code needs on a cluster, in one
archive that `flink run -pyfs OUT.zip` ships (docs/deploy.md).

The archive's root is an import root, like a site-packages directory: Flink extracts a `-pyfs`
zip on each TaskManager and puts that directory on the Python workers' path (and on the path of
the `flink run` client). It holds our packages `reloader` and `job` (and `model`'s WINE data, for
the `wine` source), and the installed distributions this project needs at run time, taken from
the environment that runs `pack`, so the cluster runs the versions tested here. It must run on
the cluster's platform and Python version (compiled extensions: numpy, pyarrow, mini-racer).

Left out, as a Python worker never loads them: PyFlink's jars (`apache-flink-libraries`, ~346 MB:
the cluster has its own Flink), the HTTP store server's dependencies, tests, C headers and
byte-code caches.
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import os
import platform
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

PROJECT = "tf-on-flink"
# (package, the files of it that go in; None: all of it)
PACKAGES: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("reloader", None),
    ("job", None),
    ("model", ("__init__.py", "data.py", "data/wine.csv")),  # the `wine` source's rows
)
# Distributions the job never loads on a cluster: the HTTP store's server (`python -m server`),
# and PyFlink's jars, which the cluster's own Flink provides.
LEFT_OUT = frozenset({"fastapi", "uvicorn", "apache-flink-libraries"})
# Directories and file kinds no import needs.
SKIP_DIRS = frozenset({"__pycache__", "tests", "include"})
SKIP_SUFFIXES = (".pyc", ".pyx", ".pxd", ".pxi", ".h", ".hpp")


class PackError(Exception):
    """The archive cannot be built from this environment (the message says what to do)."""


@dataclass(frozen=True)
class Packed:
    """What `pack` wrote."""

    path: Path
    files: int
    bytes_in: int  # the files' sizes, uncompressed
    bytes_out: int  # the archive's size
    distributions: tuple[str, ...]  # name==version, sorted
    seconds: float

    def summary(self) -> str:
        return (
            f"wrote {self.path}: {self.bytes_out / 1e6:.0f} MB ({self.bytes_in / 1e6:.0f} MB "
            f"unpacked, {self.files} files, {len(self.distributions)} distributions) in "
            f"{self.seconds:.1f} s, for CPython {_minor()} on {sys.platform}-"
            f"{platform.machine()}: the cluster's -pyexec must be that too"
        )


def _minor() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def runtime_distributions() -> list[metadata.Distribution]:
    """The installed distributions the job needs at run time: this project's requirements (no
    extras) and theirs, transitively, minus `LEFT_OUT`."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    try:
        todo = list(metadata.requires(PROJECT) or [])
    except metadata.PackageNotFoundError as e:
        raise PackError(
            f"{PROJECT} is not installed in this Python ({sys.executable}): run `make setup` "
            "or `pip install .` in a checkout, then pack with that environment's python"
        ) from e
    found: dict[str, metadata.Distribution] = {}
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's requirement, or one for another platform or Python
        name = canonicalize_name(req.name)
        if name in found or name in LEFT_OUT:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as e:
            raise PackError(f"{name} (required by the job) is not installed: pip install .") from e
        found[name] = dist
        todo += dist.requires or []
    return [found[n] for n in sorted(found)]


def _wanted(path: PurePosixPath) -> bool:
    if path.parts[0] == ".." or SKIP_DIRS.intersection(path.parts[:-1]):
        return False  # `..`: scripts installed outside site-packages (bin/)
    return not path.name.endswith(SKIP_SUFFIXES)


def archive_entries(dists: Iterable[metadata.Distribution]) -> Iterator[tuple[str, Path]]:
    """(name in the archive, file on disk) for everything `pack` puts in: the files of `dists`
    and our packages, sorted by name."""
    entries: dict[str, Path] = {}
    for dist in dists:
        for file in dist.files or []:
            rel = PurePosixPath(str(file))
            if _wanted(rel):
                entries[str(rel)] = Path(str(dist.locate_file(file)))
    for package, only in PACKAGES:
        entries.update(_package_files(package, only))
    yield from sorted(entries.items())


def _package_files(package: str, only: Iterable[str] | None) -> dict[str, Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PackError(
            f"the package {package!r} is not importable in this Python ({sys.executable}): "
            "pack with the project's venv (make setup, or pip install . in a checkout)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    if only is not None:
        files = [root / name for name in only]
    else:
        files = [p for p in root.rglob("*") if p.is_file()]
    out = {}
    for path in files:
        rel = PurePosixPath(package, *path.relative_to(root).parts)
        if _wanted(rel):
            out[str(rel)] = path
    return out


def pack(out: Path, *, compresslevel: int = 1) -> Packed:
    """Writes the archive to `out` (a temp file beside it, renamed when complete).

    Deflate level 1: measured, the archive is 13% bigger than at zip's default level 6 and
    packs in a third of the time (docs/deploy.md).

    Raises `PackError` (the environment lacks something) or `OSError` (writing failed).
    """
    started = time.monotonic()
    dists = runtime_distributions()
    names = [f"{d.metadata['Name']}=={d.version}" for d in dists]
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    files = bytes_in = 0
    try:
        with zipfile.ZipFile(
            tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel
        ) as archive:
            for name, path in archive_entries(dists):
                try:
                    archive.write(path, name)  # keeps the file's mode (+x scripts)
                except FileNotFoundError:
                    continue  # listed in a RECORD but gone (e.g. removed by hand)
                files += 1
                bytes_in += archive.getinfo(name).file_size
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Packed(
        out, files, bytes_in, out.stat().st_size, tuple(names), time.monotonic() - started
    )
