"""The publish history (`reloader.history`) and a manifest's `effective_at`: the field, the
timeline the publishes define, publish writing the history in every store (directory, SeaweedFS
S3, the project's HTTP server), damaged histories, and `python -m reloader publish --at|history`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import reloader.history
from reloader.errors import ManifestError, SignatureError, SourceError
from reloader.history import (
    HistoryEntry,
    HistoryTooLarge,
    append_entry,
    entry_for,
    history_line,
    read_history,
    segments,
)
from reloader.layout import HISTORY_NAME, MANIFEST_NAME, MAX_HISTORY_BYTES
from reloader.manifest import (
    Manifest,
    effective_ms,
    effective_stamp,
    from_mapping,
    generate_key,
    parse,
)
from reloader.publish import KEEP, publish, relabel
from reloader.sources import Fetched, Source, Validator, open_source
from tests.support.http_store import ModelStoreServer
from tests.support.stores import Version, Versions


def _manifest(label: str = "v1", **fields: Any) -> Manifest:
    base = Manifest.for_bundle(
        f"bundle {label}".encode(), model="wine", version=label, created="2026-11-01T00:00:00Z"
    )
    return from_mapping({**base.to_dict(), **fields})


def _entry(manifest: Manifest, how: str = "publish") -> HistoryEntry:
    return HistoryEntry(manifest, "2026-11-01T00:00:00Z", how, manifest.to_bytes())


def _at(label: str, ms: int | None) -> HistoryEntry:
    extra = {} if ms is None else {"effective_at": effective_stamp(ms)}
    return _entry(_manifest(label, **extra))


def _timeline(entries: list[HistoryEntry]) -> list[tuple[int | None, str]]:
    return [(start, m.version) for start, m in segments(entries)]


# -- effective_at --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "ms"),
    [
        ("2026-12-01T08:00:00Z", 1_796_112_000_000),
        ("2026-12-01T09:00:00+01:00", 1_796_112_000_000),
        ("2026-12-01T03:30:00-04:30", 1_796_112_000_000),
        ("2026-12-01t08:00:00z", 1_796_112_000_000),
        ("2026-12-01T08:00:00.123Z", 1_796_112_000_123),
        ("2026-12-01T08:00:00.5Z", 1_796_112_000_500),
        # A finer fraction rounds up: event times in whole ms >= it are exactly those after it.
        ("1970-01-01T00:00:00.0001Z", 1),
        ("1970-01-01T00:00:00.999000001Z", 1000),
        ("1969-12-31T23:59:59.999Z", -1),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_effective_at_parses_to_exact_milliseconds(stamp: str, ms: int) -> None:
    m = _manifest(effective_at=stamp)
    assert m.effective_at == stamp and m.effective_at_ms == ms == effective_ms(stamp)
    again = parse(m.to_bytes())
    assert again == m and again.to_bytes() == m.to_bytes()
    assert json.loads(m.to_bytes())["effective_at"] == stamp


@pytest.mark.parametrize(
    "bad",
    [
        "2026-12-01T08:00:00",  # no zone
        "2026-12-01 08:00:00Z",  # no T
        "2026-12-01T08Z",  # fromisoformat takes it; RFC 3339 does not
        "2026-W48-2T08:00:00Z",
        "2026-02-30T08:00:00Z",
        "2026-12-01T24:00:00Z",
        "2026-12-01T08:00:60Z",
        "2026-12-01T08:00:00+24:00",
        "2026-12-01T08:00:00.Z",
        "tomorrow",
        "",
        "2026-12-01T08:00:00Z" + " " * 60,
        1_796_112_000_000,  # a number in the document: the CLI converts, the format does not
        True,
        {"at": 1},
    ],
)
def test_a_bad_effective_at_is_refused_naming_the_field(bad: Any) -> None:
    with pytest.raises(ManifestError) as e:
        _manifest(effective_at=bad)
    assert e.value.field == "effective_at"
    document = json.dumps({**_manifest().to_dict(), "effective_at": bad}).encode()
    with pytest.raises(ManifestError, match="effective_at"):
        parse(document)


def test_effective_stamp_of_milliseconds() -> None:
    assert effective_stamp(1_796_112_000_000) == "2026-12-01T08:00:00Z"
    assert effective_stamp(1_796_112_000_007) == "2026-12-01T08:00:00.007Z"
    assert effective_stamp(-1) == "1969-12-31T23:59:59.999Z"
    assert effective_stamp("2026-12-01T09:00:00+01:00") == "2026-12-01T09:00:00+01:00"
    for bad in (10**20, -(10**20)):
        with pytest.raises(ManifestError, match="out of range"):
            effective_stamp(bad)


def test_a_manifest_without_it_is_unchanged() -> None:
    m = _manifest()
    assert m.effective_at is None and m.effective_at_ms is None
    assert "effective_at" not in m.to_dict() and b"effective_at" not in m.canonical_bytes()
    document = (
        b'{"format": 1, "model": "wine", "version": "v1", "bundle": "bundles/'
        + m.sha256.encode()
        + b'.js", "sha256": "'
        + m.sha256.encode()
        + b'", "size": 9, "created": "2026-11-01T00:00:00Z"}'
    )
    assert parse(document) == m
    assert m.to_bytes() == (json.dumps(json.loads(document), indent=2) + "\n").encode()


def test_the_signature_covers_effective_at() -> None:
    key = generate_key()
    signed = _manifest(effective_at="2026-12-01T08:00:00Z").signed(key)
    signed.verify(key.public_key())
    assert b'"effective_at":"2026-12-01T08:00:00Z"' in signed.canonical_bytes()
    for fields in (
        {"effective_at": "2026-12-01T08:00:01Z"},  # moved
        {"effective_at": "2026-12-01T09:00:00+01:00"},  # the same instant, other bytes
    ):
        edited = from_mapping({**signed.to_dict(), **fields})
        with pytest.raises(SignatureError, match="changed after signing"):
            edited.verify(key.public_key())
    removed = signed.to_dict()
    del removed["effective_at"]
    with pytest.raises(SignatureError):
        from_mapping(removed).verify(key.public_key())
    unset = _manifest().signed(key)
    added = from_mapping({**unset.to_dict(), "effective_at": "2026-12-01T08:00:00Z"})
    with pytest.raises(SignatureError):
        added.verify(key.public_key())


def test_relabel_keeps_sets_and_removes_it() -> None:
    m = _manifest(effective_at="2026-12-01T08:00:00Z").signed(generate_key())
    kept = relabel(m, "v9")
    assert kept.effective_at == m.effective_at and kept.version == "v9" and kept.signature is None
    assert relabel(m, None, effective_at=KEEP).effective_at == m.effective_at
    same = relabel(m, None, effective_at=1_796_112_000_000)  # the same instant: not re-stamped
    assert same.effective_at == m.effective_at and same.created == m.created
    moved = relabel(m, None, effective_at=1_796_112_001_000)
    assert moved.effective_at == "2026-12-01T08:00:01Z" and moved.created != m.created
    assert moved.version == m.version
    assert relabel(m, None, effective_at=None).effective_at is None
    with pytest.raises(ManifestError, match="effective_at"):
        relabel(m, None, effective_at="soon")


# -- the timeline --------------------------------------------------------------------------------


def test_segments_apply_the_publishes_in_order() -> None:
    assert _timeline([]) == []
    assert _timeline([_at("A", None), _at("B", 1000), _at("C", 2000)]) == [
        (None, "A"),
        (1000, "B"),
        (2000, "C"),
    ]
    # A cutover earlier than a later one's replaces it.
    assert _timeline([_at("A", None), _at("B", 2000), _at("C", 1000)]) == [(None, "A"), (1000, "C")]
    # A publish without an effective time replaces everything.
    assert _timeline([_at("A", None), _at("B", 1000), _at("D", None)]) == [(None, "D")]
    # The same time again: the later publish wins it.
    assert _timeline([_at("A", None), _at("B", 1000), _at("B2", 1000)]) == [
        (None, "A"),
        (1000, "B2"),
    ]
    # A history that starts with a cutover: before it nothing was published.
    assert _timeline([_at("B", 1000), _at("C", 500)]) == [(500, "C")]
    assert _timeline([_at("B", 1000), _at("C", 2000), _at("D", 1500)]) == [(1000, "B"), (1500, "D")]
    # Negative event times (before 1970) order as numbers.
    assert _timeline([_at("A", None), _at("B", -5000), _at("C", 0)]) == [
        (None, "A"),
        (-5000, "B"),
        (0, "C"),
    ]


def test_a_rollback_entry_republishes_with_its_own_time() -> None:
    a, b, c = _at("A", None), _at("B", 1000), _at("C", 2000)
    back_to_b = _entry(b.manifest, "rollback")
    assert _timeline([a, b, c, back_to_b]) == [(None, "A"), (1000, "B")]
    assert _timeline([a, b, c, _entry(a.manifest, "rollback")]) == [(None, "A")]


def test_entry_for_finds_the_exact_manifest() -> None:
    a, b = _at("A", None), _at("B", 1000)
    entries = [a, b, a, _entry(relabel(a.manifest, "A2"))]
    assert entry_for(entries, a.manifest) == 2  # the last one
    assert entry_for(entries, b.manifest) == 1
    key = generate_key()
    assert entry_for(entries, a.manifest.signed(key)) is None  # re-signed: another manifest
    restamped = dataclasses.replace(a.manifest, created="2026-11-02T00:00:00Z")
    assert entry_for(entries, restamped) is None
    moved = relabel(b.manifest, None, effective_at=2000)
    assert entry_for(entries, moved) is None
    # The same fields in other bytes (a compact document) are the same manifest.
    compact = json.dumps(b.manifest.to_dict()).encode()
    assert entry_for([HistoryEntry(b.manifest, "t", "publish", compact)], b.manifest) == 0
    assert entry_for([], a.manifest) is None


# -- publish writes the history ------------------------------------------------------------------


class _Recording(Source):
    """A real source that records its writes and can fail the manifest write."""

    def __init__(self, inner: Source, *, fail_manifest: bool = False) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail_manifest = fail_manifest
        self.puts: list[str] = []
        self.history_at_manifest: list[HistoryEntry] | None = None

    def read_manifest(self, validator: Validator | None = None) -> Fetched | None:
        return self.inner.read_manifest(validator)

    def iter_bundle(self, key: str) -> Iterator[bytes]:
        return self.inner.iter_bundle(key)

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        self.puts.append(key)
        if key == MANIFEST_NAME:
            self.history_at_manifest = read_history(self.inner)
            if self.fail_manifest:
                raise SourceError("injected: the publisher died", url=self.describe(key))
        self.inner.put(key, data, content_type=content_type)


def _current(source: Source) -> Manifest:
    fetched = source.read_manifest()
    assert fetched is not None
    return parse(fetched.data)


def _publish_abc(source: Source, versions: Versions) -> tuple[Version, Version, Version]:
    a, b, c = versions.make("A", "v1"), versions.make("B", "v2"), versions.make("C", "v1")
    publish(source, a.data, a.manifest)
    publish(source, b.data, b.manifest, effective_at="2026-12-01T08:00:00Z")
    publish(source, c.data, c.manifest, effective_at=1_796_112_060_000)  # 08:01
    return a, b, c


def _check_abc(source: Source, a: Version, b: Version, c: Version) -> None:
    entries = read_history(source)
    assert [(e.how, e.manifest.version) for e in entries] == [
        ("publish", "A"),
        ("publish", "B"),
        ("publish", "C"),
    ]
    current = _current(source)
    assert current.version == "C" and current.effective_at == "2026-12-01T08:01:00Z"
    index = entry_for(entries, current)
    assert index == 2 and entries[index].document == current.to_bytes()
    assert [(start, m.sha256) for start, m in segments(entries[: index + 1])] == [
        (None, a.manifest.sha256),
        (1_796_112_000_000, b.manifest.sha256),
        (1_796_112_060_000, c.manifest.sha256),
    ]
    for e in entries:
        assert e.published_at.endswith("Z") and effective_stamp(e.published_at)


def test_publish_to_a_directory_writes_history_then_manifest(
    local: Source, store_dir: Path, versions: Versions
) -> None:
    rec = _Recording(local)
    a, b, c = _publish_abc(rec, versions)
    assert rec.puts == [
        a.manifest.bundle,
        HISTORY_NAME,
        MANIFEST_NAME,
        b.manifest.bundle,
        HISTORY_NAME,
        MANIFEST_NAME,
        c.manifest.bundle,
        HISTORY_NAME,
        MANIFEST_NAME,
    ]
    # When the manifest was written, the history already held it.
    assert rec.history_at_manifest is not None
    assert rec.history_at_manifest[-1].document == _current(local).to_bytes()
    _check_abc(local, a, b, c)
    lines = (store_dir / HISTORY_NAME).read_bytes().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["how"] == "publish" for line in lines)


def test_a_publisher_that_dies_before_the_manifest_leaves_a_later_entry(
    local: Source, versions: Versions
) -> None:
    a, b = versions.make("A", "v1"), versions.make("B", "v2")
    publish(local, a.data, a.manifest)
    with pytest.raises(SourceError, match="injected"):
        publish(_Recording(local, fail_manifest=True), b.data, b.manifest, effective_at=0)
    entries = read_history(local)
    assert [e.manifest.version for e in entries] == ["A", "B"]
    index = entry_for(entries, _current(local))
    assert index == 0  # B is newer than the manifest: readers ignore it
    assert [m.version for _, m in segments(entries[: index + 1])] == ["A"]


def test_publish_signs_after_setting_effective_at(local: Source, versions: Versions) -> None:
    key = generate_key()
    v = versions.make("S", "v1")
    old = dataclasses.replace(v.manifest, created="2026-11-01T00:00:00Z")
    signed = old.signed(generate_key())  # an old signature by another key: dropped
    m = publish(local, v.data, signed, effective_at="2026-12-01T08:00:00Z", signing_key=key)
    assert m.effective_at == "2026-12-01T08:00:00Z" and m.created != old.created
    m.verify(key.public_key())
    assert _current(local) == m and read_history(local)[-1].manifest == m
    # Without a new time the manifest is published as it is, its signature intact.
    again = publish(local, v.data, m, effective_at=1_796_112_000_000)
    assert again == m
    again.verify(key.public_key())


def test_publish_to_s3_writes_the_history(s3: Any, s3_url: str, versions: Versions) -> None:
    with open_source(s3_url) as source:
        assert read_history(source) == []  # no history.jsonl: NoSuchKey
        a, b, c = _publish_abc(source, versions)
        _check_abc(source, a, b, c)
        raw = b"".join(source.iter_bundle(HISTORY_NAME))
    assert raw.count(b"\n") == 3


def test_an_s3_store_written_without_publish_has_no_history(
    s3: Any, s3_url: str, versions: Versions
) -> None:
    v = versions.make("plain", "v1")
    with open_source(s3_url) as source:
        # What `aws s3 cp --recursive build/ s3://…` leaves: a bundle and a manifest.
        source.put(v.manifest.bundle, v.data, content_type="application/javascript")
        source.put(MANIFEST_NAME, v.manifest.to_bytes(), content_type="application/json")
        entries = read_history(source)
        assert entries == [] and entry_for(entries, _current(source)) is None


@pytest.fixture
def model_store(tmp_path: Path) -> Iterator[ModelStoreServer]:
    server = ModelStoreServer(tmp_path / "http-store")
    yield server
    server.stop()


def test_the_http_server_writes_the_history(
    model_store: ModelStoreServer, versions: Versions
) -> None:
    url = model_store.url("wine")
    with open_source(url, token=model_store.token) as source:
        rec = _Recording(source)
        a, b, c = _publish_abc(rec, versions)
        # No history PUT (the server refuses one): it appends the line on the manifest PUT.
        assert HISTORY_NAME not in rec.puts
        _check_abc(source, a, b, c)
        assert (model_store.root / "wine" / HISTORY_NAME).is_file()
        with pytest.raises(ValueError, match="HTTP store"):
            append_entry(source, a.manifest)

        r = requests.post(
            f"{model_store.base}/api/models/wine/rollback",
            json={"version": "B"},
            headers=model_store.auth(),
            timeout=10,
        )
        assert r.status_code == 200, r.text
        entries = read_history(source)
        assert [(e.how, e.manifest.version) for e in entries][-1] == ("rollback", "B")
        current = _current(source)
        # The exact manifest once published for B: its effective time and all.
        assert current == entries[1].manifest and current.effective_at == "2026-12-01T08:00:00Z"
        index = entry_for(entries, current)
        assert index == 3
        assert [m.version for _, m in segments(entries[: index + 1])] == ["A", "B"]
    r = requests.get(f"{url}/{HISTORY_NAME}", timeout=10)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-cache"


# -- damaged histories ---------------------------------------------------------------------------


def _line(label: str, **fields: Any) -> bytes:
    m = _manifest(label, **fields)
    return history_line(m, m.to_bytes(), how="publish", published_at="2026-11-01T00:00:00Z")


def _write_history(store_dir: Path, data: bytes) -> None:
    (store_dir / HISTORY_NAME).write_bytes(data)


def test_a_torn_last_line_is_skipped(local: Source, store_dir: Path) -> None:
    whole = _line("A") + _line("B")
    torn = _line("C")[:-40]
    _write_history(store_dir, whole + torn)
    assert [e.manifest.version for e in read_history(local)] == ["A", "B"]
    # The next append must not run into the torn line.
    append_entry(local, _manifest("D"))
    assert [e.manifest.version for e in read_history(local)] == ["A", "B", "D"]
    # A line without its newline that is whole still counts.
    _write_history(store_dir, whole + _line("E").rstrip(b"\n"))
    assert [e.manifest.version for e in read_history(local)] == ["A", "B", "E"]


def test_a_torn_line_run_into_by_the_next_append_keeps_the_next(
    local: Source, store_dir: Path
) -> None:
    # An appender that does not repair the tear (`open(..., "a")`): the next line follows it.
    _write_history(store_dir, _line("A") + _line("B")[:-40] + _line("C"))
    assert [e.manifest.version for e in read_history(local)] == ["A", "C"]


def test_lines_that_do_not_parse_are_skipped(local: Source, store_dir: Path) -> None:
    good = _manifest("A")
    bad_document = json.dumps(
        {"published_at": "t", "how": "publish", "manifest": {}, "document": '{"format": 2}'}
    ).encode()
    wrong_model = json.dumps(
        {"published_at": "t", "how": "publish", "document": '{"model": "x"}'}
    ).encode()
    no_document = json.dumps({"published_at": "t", "how": "publish"}).encode()
    signed_bad = json.dumps(
        {
            "published_at": "t",
            "document": json.dumps({**good.to_dict(), "effective_at": "later"}),
        }
    ).encode()
    lines = [
        b"garbage",
        b"",
        b"[1, 2]",
        b"\xff\xfe not utf-8",
        bad_document,
        wrong_model,
        no_document,
        signed_bad,
        _line("A").rstrip(b"\n"),
        b"{" * 100_000,
        # A line whose `how` is not text still publishes its manifest.
        json.dumps(
            {"published_at": "t", "how": 7, "document": _manifest("Z").to_bytes().decode()}
        ).encode(),
    ]
    _write_history(store_dir, b"\n".join(lines) + b"\n")
    entries = read_history(local)
    assert [(e.manifest, e.how) for e in entries] == [
        (good, "publish"),
        (_manifest("Z"), "publish"),
    ]


def test_an_oversized_history_raises_a_typed_error(
    local: Source, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(store_dir / HISTORY_NAME, "wb") as f:
        f.truncate(MAX_HISTORY_BYTES + 1)  # sparse: no 64 MiB written
    with pytest.raises(HistoryTooLarge) as e:
        read_history(local)
    assert e.value.limit == MAX_HISTORY_BYTES and HISTORY_NAME in e.value.url
    with pytest.raises(HistoryTooLarge):
        append_entry(local, _manifest())

    # An append that would cross the cap is refused, and the manifest is not published.
    line = _line("A")
    _write_history(store_dir, line)
    monkeypatch.setattr(reloader.history, "MAX_HISTORY_BYTES", len(line) + 10)
    v = _manifest("B")
    with pytest.raises(HistoryTooLarge, match="cap"):
        publish(local, b"bundle B", v)
    assert not (store_dir / MANIFEST_NAME).exists()
    assert (store_dir / HISTORY_NAME).read_bytes() == line


# -- the CLI -------------------------------------------------------------------------------------


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reloader", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_cli_publish_at_and_history(built_stores: dict[str, Path], tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    v1, v2 = str(built_stores["v1"]), str(built_stores["v2"])
    out = _run("history", store)
    assert out.returncode == 0 and "no publish history" in out.stdout, out.stderr

    assert _run("publish", v1, store, "--no-check", "--version", "a").returncode == 0
    out = _run("publish", v2, store, "--no-check", "--version", "b", "--at", "2026-12-01T08:00:00Z")
    assert out.returncode == 0, out.stderr
    assert "from event time 2026-12-01T08:00:00Z" in out.stdout
    out = _run("publish", v1, store, "--no-check", "--version", "c", "--at", "1796112060000")
    assert out.returncode == 0, out.stderr
    assert parse(Path(store, MANIFEST_NAME).read_bytes()).effective_at == "2026-12-01T08:01:00Z"

    for bad in ("2026-12-01T08:00:00", "next tuesday", "1.5e12", ""):
        out = _run("publish", v2, store, "--no-check", "--at", bad)
        assert out.returncode == 2, (bad, out.stderr)
        assert out.stderr.count("\n") == 1 and "--at" in out.stderr and "RFC 3339" in out.stderr
    assert parse(Path(store, MANIFEST_NAME).read_bytes()).version == "c"  # nothing published

    out = _run("history", store)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if " publish " in line]
    assert len(rows) == 3 and rows[2].startswith("*") and not rows[0].startswith("*")
    assert "2026-12-01T08:01:00Z" in rows[2] and rows[0].split()[-1] == "-"
    assert "from 2026-12-01T08:00:00Z: b" in out.stdout

    out = _run("history", f"file://{store}", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["current"] == 2 and doc["manifest"]["version"] == "c"
    assert [e["version"] for e in doc["entries"]] == ["a", "b", "c"]
    assert [e["current"] for e in doc["entries"]] == [False, False, True]
    assert doc["entries"][1]["effective_at_ms"] == 1_796_112_000_000
    assert [(s["start_ms"], s["version"]) for s in doc["timeline"]] == [
        (None, "a"),
        (1_796_112_000_000, "b"),
        (1_796_112_060_000, "c"),
    ]


def test_cli_history_of_a_manifest_published_without_it(
    built_stores: dict[str, Path], tmp_path: Path
) -> None:
    store = tmp_path / "copied"
    # What a plain copy of a build (cp -r, aws s3 cp) gives: no history.jsonl.
    _copy_tree(built_stores["v1"], store)
    out = _run("history", str(store))
    assert out.returncode == 0, out.stderr
    assert "no publish history" in out.stdout
    doc = json.loads(_run("history", str(store), "--json").stdout)
    assert doc["entries"] == [] and doc["current"] is None and doc["timeline"] is None
    assert doc["manifest"]["version"] == "v1"

    _line_to(store, _manifest("elsewhere"))
    out = _run("history", str(store))
    assert out.returncode == 0 and "is not in the history" in out.stdout, out.stdout


def _copy_tree(src: Path, dst: Path) -> None:
    for path in src.rglob("*"):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def _line_to(store: Path, manifest: Manifest) -> None:
    with open_source(str(store)) as source:
        append_entry(source, manifest)
