"""Channels and pinned versions: `<store>@<ref>` (`reloader.sources.split_ref`, `RefSource`),
publishing to a channel, moving it (`point_channel`, `python -m reloader channel`), promoting it
to the main manifest or aborting it (`promote_channel`, `abort_channel`, `python -m reloader
promote|abort`), the history's channel lines kept out of the main timeline, in a directory, on
SeaweedFS S3 and on the project's HTTP server."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from reloader.agent import HotModel
from reloader.errors import MissingObject, NotReady, SourceError
from reloader.history import HistoryEntry, entry_for, history_line, read_history, segments
from reloader.layout import HISTORY_NAME, MANIFEST_NAME, channel_key
from reloader.manifest import Manifest, effective_stamp, generate_key, parse
from reloader.publish import abort_channel, point_channel, promote_channel, publish
from reloader.sources import Fetched, Source, Validator, open_source, parse_ref, split_ref
from reloader.sources.pinned import RefSource
from tests.support.http_store import ModelStoreServer
from tests.support.stores import Version, Versions, reference_of
from tests.support.waiting import checked, wait_until

# -- the URL's ref -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "root", "ref"),
    [
        ("store/wine", "store/wine", None),
        ("store/wine@7", "store/wine", "7"),
        ("store/wine@7/", "store/wine", "7"),
        ("/srv/models/wine@stable", "/srv/models/wine", "stable"),
        ("file:///srv/models/wine@stable", "file:///srv/models/wine", "stable"),
        ("file:///srv/me%40home/wine", "file:///srv/me%40home/wine", None),
        ("s3://models/wine@stable", "s3://models/wine", "stable"),
        ("s3://models/a/b/wine@channel:canary", "s3://models/a/b/wine", "channel:canary"),
        ("http://host:8080/models/wine@v7", "http://host:8080/models/wine", "v7"),
        ("https://host/models/wine@version:v7", "https://host/models/wine", "version:v7"),
        # An `@` in the authority is user@host, never a ref.
        ("http://user@host/models/wine", "http://user@host/models/wine", None),
        ("http://user:pw@host:8080", "http://user:pw@host:8080", None),
        ("http://user@host/models/wine@stable", "http://user@host/models/wine", "stable"),
        # A ref is in the last segment only.
        ("/home/me@corp/store/wine", "/home/me@corp/store/wine", None),
        # From the first `@` of the last segment: a label may hold one.
        ("store/wine@version:v1@rc", "store/wine", "version:v1@rc"),
    ],
)
def test_split_ref(url: str, root: str, ref: str | None) -> None:
    assert split_ref(url) == (root, ref)


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("stable", (None, "stable")),  # a channel if the store has it, else a label
        ("v7", (None, "v7")),
        ("7", ("version", "7")),  # cannot be a channel name
        ("V7", ("version", "V7")),
        ("1.2.3", ("version", "1.2.3")),
        ("channel:stable", ("channel", "stable")),
        ("version:stable", ("version", "stable")),
        ("version:channel:x", ("version", "channel:x")),
        ("other:x", ("version", "other:x")),
    ],
)
def test_parse_ref(ref: str, parsed: tuple[str | None, str]) -> None:
    assert parse_ref(ref) == parsed


@pytest.mark.parametrize(
    "url",
    [
        "store/wine@",
        "@7",
        "store/@7",
        "http://host/@7",
        "store/wine@channel:Stable",
        "store/wine@channel:",
        "store/wine@channel:" + "a" * 65,
        "store/wine@version:",
        "store/wine@" + "7" * 129,
    ],
)
def test_a_malformed_ref_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError):
        split_ref(url)
    with pytest.raises(ValueError):
        open_source(url)


# -- the history's channel lines -----------------------------------------------------------------


def _m(label: str, at: int | None = None) -> Manifest:
    m = Manifest.for_bundle(
        f"bundle {label}".encode(), model="wine", version=label, created="2026-11-01T00:00:00Z"
    )
    return m if at is None else dataclasses.replace(m, effective_at=effective_stamp(at))


def test_channel_lines_stay_out_of_the_main_timeline(tmp_path: Path) -> None:
    a, b, c, d = _m("A"), _m("B", 1000), _m("C"), _m("D", 2000)
    lines = [
        history_line(a, a.to_bytes(), how="publish"),
        history_line(c, c.to_bytes(), how="publish", channel="canary"),
        history_line(b, b.to_bytes(), how="publish"),
        history_line(d, d.to_bytes(), how="publish", channel="canary"),
        history_line(a, a.to_bytes(), how="publish", channel="stable"),
    ]
    assert b'"channel"' not in lines[0] and json.loads(lines[1])["channel"] == "canary"
    store = tmp_path / "store"
    store.mkdir()
    (store / HISTORY_NAME).write_bytes(b"".join(lines))
    with open_source(str(store)) as source:
        entries = read_history(source)
    assert [(e.manifest.version, e.channel) for e in entries] == [
        ("A", None), ("C", "canary"), ("B", None), ("D", "canary"), ("A", "stable"),
    ]  # fmt: skip
    # The main timeline, as before channels existed: A, then B from 1000.
    assert [(s, m.version) for s, m in segments(entries)] == [(None, "A"), (1000, "B")]
    assert entry_for(entries, b) == 2
    assert entry_for(entries, c) is None  # published to a channel only
    assert entry_for(entries, a) == 0  # not the later line of channel `stable`
    # The same functions for a channel's lines.
    assert [(s, m.version) for s, m in segments(entries, channel="canary")] == [
        (None, "C"),
        (2000, "D"),
    ]
    assert entry_for(entries, c, channel="canary") == 1
    assert entry_for(entries, a, channel="stable") == 4
    assert entry_for(entries, b, channel="canary") is None
    # A line whose channel is not text is garbage, for every timeline.
    bad = json.loads(lines[0])
    bad["channel"] = 7
    (store / HISTORY_NAME).write_bytes(json.dumps(bad).encode() + b"\n" + lines[2])
    with open_source(str(store)) as source:
        assert [e.manifest.version for e in read_history(source)] == ["B"]


def test_a_history_entry_defaults_to_the_main_manifest() -> None:
    a = _m("A")
    assert HistoryEntry(a, "t", "publish", a.to_bytes()).channel is None


# -- a directory store ---------------------------------------------------------------------------


def _hot(url: str, tmp_path: Path, **kw: Any) -> HotModel:
    kw.setdefault("poll_interval", 3600)
    kw.setdefault("watch", False)
    return HotModel(url, cache_dir=tmp_path / "cache", trial=False, warmup_calls=1, **kw)


def _serves(hm: HotModel, wine: Any, v: Version) -> bool:
    """True when `hm` answers with `v` (the call adopts what the poll thread offered)."""
    got = hm.predict_versioned(wine.x)
    if got.version != v.label:
        return False
    assert got.sha256 == v.manifest.sha256
    np.testing.assert_allclose(got.value, reference_of(wine, v.base), atol=1e-5)
    return True


@pytest.fixture
def four(versions: Versions) -> list[Version]:
    """Versions 1-4, alternating the v1 and v2 weights, so each serves distinct outputs."""
    return [versions.make(str(i), "v1" if i % 2 else "v2") for i in range(1, 5)]


def _publish_123(store: str | Source, four: list[Version], **kw: Any) -> None:
    """1 and 2 to the main manifest, 3 to channel `canary`."""
    one, two, three, _ = four
    publish(store, one.data, one.manifest, **kw)
    publish(store, two.data, two.manifest, **kw)
    publish(store, three.data, three.manifest, channel="canary", **kw)


def test_a_channel_is_followed_and_rolled_back_in_one_call(
    store_dir: Path, tmp_path: Path, four: list[Version], wine: Any
) -> None:
    store = str(store_dir)
    one, two, three, _ = four
    _publish_123(store, four)
    assert parse((store_dir / MANIFEST_NAME).read_bytes()).version == "2"
    assert parse((store_dir / channel_key("canary")).read_bytes()).version == "3"
    with _hot(store + "@canary", tmp_path, watch=True) as hm:
        assert hm.info.watching
        assert _serves(hm, wine, three)
        # The rollback: the channel's pointer moves to the exact document of version 1; the
        # watch on the channel file (no poll comes for an hour) brings the job there.
        m = point_channel(store, "canary", "1")
        assert m == one.manifest
        assert (store_dir / channel_key("canary")).read_bytes() == one.manifest.to_bytes()
        wait_until(lambda: _serves(hm, wine, one), what="the channel's rollback to 1")
        assert hm.info.failures == 0
        # Promotion: the channel gets the main manifest.
        point_channel(store, "canary", "main")
        wait_until(lambda: _serves(hm, wine, two), what="the channel's promotion to main")
    # The main manifest never moved; the history has the channel's lines, marked.
    assert parse((store_dir / MANIFEST_NAME).read_bytes()) == two.manifest
    with open_source(store) as source:
        entries = read_history(source)
    assert [(e.manifest.version, e.channel) for e in entries] == [
        ("1", None), ("2", None), ("3", "canary"), ("1", "canary"), ("2", "canary"),
    ]  # fmt: skip
    assert [m.version for _, m in segments(entries)] == ["2"]


def test_a_pinned_version_stays_when_main_moves(
    store_dir: Path, tmp_path: Path, four: list[Version], wine: Any
) -> None:
    store = str(store_dir)
    _, two, _, four_ = four
    _publish_123(store, four)
    with _hot(store + "@2", tmp_path) as hm:
        assert _serves(hm, wine, two)
        publish(store, four_.data, four_.manifest)
        checked(hm)
        assert _serves(hm, wine, two)
        assert hm.info.unchanged == 1 and hm.info.reloads == 1
    # A pin reads the exact document published as 2, a channel of the same label does not
    # count (only the main manifest's lines do).
    publish(store, four_.data, four_.manifest, channel="canary")
    with open_source(store + "@version:2") as source:
        fetched = source.read_manifest()
        assert fetched is not None and fetched.data == two.manifest.to_bytes()
        assert source.read_manifest(fetched.validator) is None


def test_a_pin_to_an_unpublished_label_is_not_ready(
    store_dir: Path, tmp_path: Path, four: list[Version], wine: Any
) -> None:
    store = str(store_dir)
    _publish_123(store, four)
    with pytest.raises(NotReady, match=r"no version labelled '9' in the publish history"):
        _hot(store + "@9", tmp_path).start()
    # 3 is on channel `canary` only: not a version of the main manifest.
    with pytest.raises(NotReady, match="'3'"):
        _hot(store + "@version:3", tmp_path).start()
    with pytest.raises(NotReady, match="neither a channel 'later' nor a version labelled"):
        _hot(store + "@later", tmp_path).start()
    with pytest.raises(NotReady, match="no channel 'later'"):
        _hot(store + "@channel:later", tmp_path).start()
    # A job that waits: the version appears, the next check loads it.
    nine = Version(Manifest.for_bundle(four[0].data, model="wine", version="9"), four[0].data, "v1")
    publish(store, nine.data, nine.manifest)
    with _hot(store + "@9", tmp_path) as hm:
        assert _serves(hm, wine, nine)


def test_a_channel_follows_its_own_event_time_timeline(
    store_dir: Path, tmp_path: Path, four: list[Version], wine: Any
) -> None:
    store = str(store_dir)
    one, two, three, four_ = four
    t = 4_000_000_000_000  # 2096: the wall clock has not passed it
    publish(store, three.data, three.manifest)  # the main manifest's: no part of the channel's
    publish(store, one.data, one.manifest, channel="canary")
    publish(store, two.data, two.manifest, channel="canary", effective_at=t)
    publish(store, four_.data, four_.manifest)  # a main publish without a time: not the channel's
    x = wine.x[:2]
    with _hot(store + "@canary", tmp_path) as hm:
        got = hm.run_at(np.array([t - 1, t]), lambda rt, rows: rt.predict(x[rows]))
        assert [(rows.tolist(), v.version) for rows, v in got] == [([0], "1"), ([1], "2")]
        assert [(s["start_ms"], s["version"]) for s in hm.info.segments] == [
            (None, "1"),
            (t, "2"),
        ]


class _Counting(Source):
    """A real source that counts manifest and history reads."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.url = inner.url
        self.manifest_reads = self.history_reads = 0

    def read_manifest(
        self, validator: Validator | None = None, *, key: str = MANIFEST_NAME
    ) -> Fetched | None:
        self.manifest_reads += 1
        return self.inner.read_manifest(validator, key=key)

    def iter_bundle(self, key: str) -> Iterator[bytes]:
        if key == HISTORY_NAME:
            self.history_reads += 1
        return self.inner.iter_bundle(key)

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        self.inner.put(key, data, content_type=content_type)


def test_a_pin_reads_the_history_only_after_a_publish(local: Source, four: list[Version]) -> None:
    one, two, three, _ = four
    publish(local, one.data, one.manifest)
    counting = _Counting(local)
    pinned = RefSource(counting, "version:2", url=local.url + "@version:2")
    for _ in range(5):
        with pytest.raises(MissingObject, match="'2'"):
            pinned.read_manifest()
    assert counting.history_reads == 1  # the manifest did not change: nothing new to look for
    publish(local, three.data, three.manifest, channel="canary")  # not a main publish
    with pytest.raises(MissingObject):
        pinned.read_manifest()
    assert counting.history_reads == 1
    publish(local, two.data, two.manifest)
    fetched = pinned.read_manifest()
    assert fetched is not None and parse(fetched.data) == two.manifest
    assert counting.history_reads == 2
    # Found once, kept: no more reads of the store at all.
    reads = counting.manifest_reads
    for _ in range(5):
        assert pinned.read_manifest(fetched.validator) is None
        assert pinned.read_manifest() == fetched
    assert (counting.manifest_reads, counting.history_reads) == (reads, 2)


def test_a_bare_ref_is_decided_at_the_first_read(local: Source, four: list[Version]) -> None:
    one, two, three, _ = four
    beta = dataclasses.replace(one.manifest, version="beta")
    publish(local, one.data, beta)
    publish(local, two.data, two.manifest)
    with open_source(local.url + "@beta") as as_version:
        fetched = as_version.read_manifest()
        assert fetched is not None and parse(fetched.data) == beta
        assert isinstance(as_version, RefSource) and as_version.kind == "version"
        # A channel of that name created later does not take over.
        publish(local, three.data, three.manifest, channel="beta")
        assert as_version.read_manifest(fetched.validator) is None
    with open_source(local.url + "@beta") as as_channel:  # the channel exists now: it wins
        fetched = as_channel.read_manifest()
        assert fetched is not None and parse(fetched.data) == three.manifest
        assert isinstance(as_channel, RefSource) and as_channel.kind == "channel"
    with open_source(local.url + "@version:beta") as explicit:
        fetched = explicit.read_manifest()
        assert fetched is not None and parse(fetched.data) == beta


def test_a_channel_reads_its_own_history(local: Source, four: list[Version]) -> None:
    one, two, three, _ = four
    publish(local, one.data, one.manifest)
    publish(local, two.data, two.manifest, channel="canary", effective_at=1000)
    publish(local, three.data, three.manifest, effective_at=2000)
    publish(local, one.data, one.manifest, channel="canary", effective_at=3000)
    with open_source(local.url + "@canary") as source:
        fetched = source.read_manifest()
        assert fetched is not None
        current = parse(fetched.data)
        entries = read_history(source)  # the channel's lines, as a reader's timeline sees them
        assert [(e.manifest.version, e.channel) for e in entries] == [("2", None), ("1", None)]
        index = entry_for(entries, current)
        assert index == 1
        assert [(s, m.version) for s, m in segments(entries[: index + 1])] == [
            (1000, "2"),
            (3000, "1"),
        ]
        # Through a pin, the history is the one publish pinned: it serves every event time.
        for label in ("1", "3"):  # 3 with an effective time
            with open_source(f"{local.url}@{label}") as pinned:
                assert pinned.read_manifest() is not None
                entries = read_history(pinned)
                assert [(e.manifest.version, e.channel) for e in entries] == [(label, None)]
        # Writing the history or the manifest through a ref would mean something else.
        with pytest.raises(Exception, match="publish to the store root"):
            source.put(HISTORY_NAME, b"", content_type="application/x-ndjson")
    with pytest.raises(ValueError, match="publish to the store root"):
        publish(local.url + "@canary", one.data, one.manifest)
    with pytest.raises(ValueError, match="invalid channel name"):
        publish(local, one.data, one.manifest, channel="Canary")


def test_point_channel_needs_a_published_version(local: Source, four: list[Version]) -> None:
    one, _, three, _ = four
    with pytest.raises(MissingObject):
        point_channel(local, "stable", "main")  # no main manifest
    publish(local, one.data, one.manifest)
    with pytest.raises(MissingObject, match="no version labelled '7'"):
        point_channel(local, "stable", "7")
    publish(local, three.data, three.manifest, channel="canary")
    # A label published to a channel only can be pointed at too: it is in the history.
    assert point_channel(local, "stable", "3") == three.manifest
    assert point_channel(local, "stable", "main") == one.manifest


# -- SeaweedFS S3 --------------------------------------------------------------------------------


def test_channels_and_pins_on_s3(
    s3: Any, s3_url: str, tmp_path: Path, four: list[Version], wine: Any
) -> None:
    one, two, three, four_ = four
    _publish_123(s3_url, four)
    with open_source(s3_url) as source:
        assert [e.channel for e in read_history(source)] == [None, None, "canary"]
    with _hot(s3_url + "@canary", tmp_path) as canary, _hot(s3_url + "@2", tmp_path) as pinned:
        assert _serves(canary, wine, three) and _serves(pinned, wine, two)
        checked(canary)
        assert canary.info.unchanged == 1  # a channel's pointer is a conditional GET too
        point_channel(s3_url, "canary", "1")
        publish(s3_url, four_.data, four_.manifest)
        checked(canary)
        checked(pinned)
        assert _serves(canary, wine, one) and _serves(pinned, wine, two)
        assert pinned.info.reloads == 1


# -- the HTTP store ------------------------------------------------------------------------------


@pytest.fixture
def model_store(tmp_path: Path) -> Iterator[ModelStoreServer]:
    server = ModelStoreServer(tmp_path / "http-store")
    yield server
    server.stop()


def test_channels_and_pins_on_the_http_store(
    model_store: ModelStoreServer, tmp_path: Path, four: list[Version], wine: Any
) -> None:
    one, two, three, four_ = four
    url = model_store.url("wine")
    options = {"token": model_store.token}
    _publish_123(url, four, source_options=options)
    # The server wrote the channel's pointer and its history line (before the pointer).
    root = model_store.root / "wine"
    assert parse((root / channel_key("canary")).read_bytes()) == three.manifest
    lines = [json.loads(line) for line in (root / HISTORY_NAME).read_text().splitlines()]
    assert [(h["manifest"]["version"], h.get("channel")) for h in lines] == [
        ("1", None), ("2", None), ("3", "canary"),
    ]  # fmt: skip
    r = requests.get(f"{url}/{channel_key('canary')}", timeout=10)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-cache" and r.headers["ETag"]
    detail = requests.get(f"{model_store.base}/api/models/wine", timeout=10).json()
    assert detail["current"]["version"] == "2"
    assert [h["channel"] for h in detail["history"]] == ["canary", None, None]

    with open_source(url + "@canary") as source:  # a GET through HttpSource, then a 304
        fetched = source.read_manifest()
        assert fetched is not None and parse(fetched.data) == three.manifest
        assert source.read_manifest(fetched.validator) is None
    with _hot(url + "@canary", tmp_path) as canary, _hot(url + "@2", tmp_path) as pinned:
        assert _serves(canary, wine, three) and _serves(pinned, wine, two)
        assert point_channel(url, "canary", "1", source_options=options) == one.manifest
        publish(url, four_.data, four_.manifest, source_options=options)
        checked(canary)
        checked(pinned)
        assert _serves(canary, wine, one) and _serves(pinned, wine, two)

    # The channel PUT has the manifest PUT's checks.
    body = one.manifest.to_bytes()
    put = f"{url}/channels"
    assert requests.put(f"{put}/canary.json", data=body, timeout=10).status_code == 401
    auth = model_store.auth()
    for bad in ("Canary.json", "canary.js", "1x.json"):
        r = requests.put(f"{put}/{bad}", data=body, headers=auth, timeout=10)
        assert r.status_code in (400, 404, 405), (bad, r.status_code)
        assert not (root / "channels" / bad).exists()
    r = requests.put(f"{put}/canary.json", data=b"{}", headers=auth, timeout=10)
    assert r.status_code == 422
    missing = Manifest.for_bundle(b"not uploaded", model="wine", version="x")
    r = requests.put(f"{put}/canary.json", data=missing.to_bytes(), headers=auth, timeout=10)
    assert r.status_code == 409
    other = dataclasses.replace(one.manifest, model="beer")
    r = requests.put(f"{put}/canary.json", data=other.to_bytes(), headers=auth, timeout=10)
    assert r.status_code == 422
    assert parse((root / channel_key("canary")).read_bytes()) == one.manifest


# -- the CLI -------------------------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reloader", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_cli_channels(built_stores: dict[str, Path], tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    v1, v2 = str(built_stores["v1"]), str(built_stores["v2"])
    for build, label in ((v1, "1"), (v2, "2")):
        out = _run("publish", build, store, "--no-check", "--version", label)
        assert out.returncode == 0, out.stderr
    out = _run("publish", v1, store, "--no-check", "--version", "3", "--channel", "stable")
    assert out.returncode == 0, out.stderr
    assert "to channel stable of" in out.stdout
    out = _run("channel", store, "stable")
    assert out.returncode == 0 and "channel stable of" in out.stdout and " 3 (" in out.stdout

    out = _run("check", store + "@stable", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["manifest"]["version"] == "3"
    out = _run("check", store + "@2", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["manifest"]["version"] == "2"

    out = _run("channel", store, "stable", "--to", "2")
    assert out.returncode == 0, out.stderr
    assert "points at wine 2" in out.stdout
    out = _run("channel", store, "stable", "--json")
    assert json.loads(out.stdout)["manifest"]["version"] == "2"
    out = _run("history", store)
    assert out.returncode == 0, out.stderr
    rows = [r.split() for r in out.stdout.splitlines() if " publish " in r]
    assert [r[r.index("publish") + 1] for r in rows] == ["main", "main", "stable", "stable"]
    assert rows[1][0] == "*"  # the main manifest's entry
    out = _run("history", store, "--json")
    channels = [e["channel"] for e in json.loads(out.stdout)["entries"]]
    assert channels == [None, None, "stable", "stable"]
    out = _run("history", store + "@stable", "--json")
    doc = json.loads(out.stdout)
    assert [e["version"] for e in doc["entries"]] == ["3", "2"] and doc["current"] == 1

    # "No such version/channel": exit 1, one line.
    for args in (
        ("check", store + "@9"),
        ("check", store + "@channel:nope"),
        ("channel", store, "nope"),
        ("channel", store, "stable", "--to", "9"),
    ):
        out = _run(*args)
        assert out.returncode == 1, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
    out = _run("check", store + "@9")
    assert "'9'" in out.stderr and store in out.stderr
    # Usage: exit 2, one line.
    for args in (
        ("publish", v1, store, "--no-check", "--channel", "Stable"),
        ("publish", v1, store + "@stable", "--no-check"),
        ("channel", store, "no/such", "--to", "1"),
        ("channel", store + "@stable", "stable", "--to", "1"),
        ("check", store + "@channel:Bad"),
        ("check", store + "@"),
    ):
        out = _run(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
    assert parse(Path(store, channel_key("stable")).read_bytes()).version == "2"


# -- promote and abort ---------------------------------------------------------------------------


def test_promote_and_abort_a_channel(
    store_dir: Path, tmp_path: Path, four: list[Version], wine: Any
) -> None:
    store = str(store_dir)
    one, two, three, _ = four
    key = generate_key()
    _publish_123(store, four, signing_key=key)
    channel_doc = (store_dir / channel_key("canary")).read_bytes()
    with _hot(store, tmp_path) as main, _hot(store + "@canary", tmp_path) as canary:
        assert _serves(main, wine, two) and _serves(canary, wine, three)
        # Promote: version.json becomes the channel's exact document, still signed.
        promoted = promote_channel(store, "canary")
        assert (store_dir / MANIFEST_NAME).read_bytes() == channel_doc
        promoted.verify(key.public_key())
        checked(main)
        assert _serves(main, wine, three) and main.info.failures == 0
        # Abort: the channel points at the main manifest again (after a publish, the new one).
        publish(store, one.data, one.manifest, signing_key=key)
        aborted = abort_channel(store, "canary")
        assert (store_dir / channel_key("canary")).read_bytes() == (
            store_dir / MANIFEST_NAME
        ).read_bytes()
        assert aborted.version == "1"
        checked(canary)
        assert _serves(canary, wine, one)
    with open_source(store) as source:
        entries = read_history(source)
    assert [(e.how, e.manifest.version, e.channel) for e in entries[3:]] == [
        ("promote", "3", None), ("publish", "1", None), ("abort", "1", "canary"),
    ]  # fmt: skip
    assert entries[3].document == channel_doc  # the history line has the exact bytes too
    # The main timeline takes the promotion as a publish of 3.
    assert [m.version for _, m in segments(entries[:4])] == ["3"]


def test_promote_and_abort_refuse_what_is_not_there(local: Source, four: list[Version]) -> None:
    one, *_ = four
    with pytest.raises(MissingObject, match="no channel 'canary'"):
        promote_channel(local, "canary")  # an empty store
    publish(local, one.data, one.manifest)
    for call in (promote_channel, abort_channel):
        with pytest.raises(MissingObject, match=r"no channel 'canary' in .*: create it with"):
            call(local, "canary")
        with pytest.raises(ValueError, match="invalid channel name"):
            call(local, "Canary")
        with pytest.raises(ValueError, match="names a channel or version"):
            call(local.url + "@canary", "canary")
    # Nothing was written: no channel, one history line.
    assert not Path(local.url, "channels").exists()
    assert len(read_history(local)) == 1


def test_promote_and_abort_on_s3(s3: Any, s3_url: str, four: list[Version]) -> None:
    _publish_123(s3_url, four)
    three = four[2]
    assert promote_channel(s3_url, "canary") == three.manifest
    with open_source(s3_url) as source:
        fetched = source.read_manifest()
        assert fetched is not None and fetched.data == three.manifest.to_bytes()
    assert abort_channel(s3_url, "canary") == three.manifest
    with open_source(s3_url) as source:
        assert [(e.how, e.channel) for e in read_history(source)][-2:] == [
            ("promote", None),
            ("abort", "canary"),
        ]


def test_promote_and_abort_on_the_http_store(
    model_store: ModelStoreServer, four: list[Version]
) -> None:
    url = model_store.url("wine")
    options = {"token": model_store.token}
    _publish_123(url, four, source_options=options)
    _, two, three, _ = four
    root = model_store.root / "wine"
    # Without the token: the server's refusal, in one typed error.
    with pytest.raises(SourceError, match=r"HTTP 401.*RELOADER_HTTP_TOKEN"):
        promote_channel(url, "canary")
    assert promote_channel(url, "canary", source_options=options) == three.manifest
    assert (root / MANIFEST_NAME).read_bytes() == three.manifest.to_bytes()
    publish(url, two.data, two.manifest, source_options=options)
    assert abort_channel(url, "canary", source_options=options) == two.manifest
    assert (root / channel_key("canary")).read_bytes() == two.manifest.to_bytes()


def test_cli_promote_and_abort(built_stores: dict[str, Path], tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    v1, v2 = str(built_stores["v1"]), str(built_stores["v2"])
    assert _run("publish", v1, store, "--no-check", "--version", "1").returncode == 0
    out = _run("publish", v2, store, "--no-check", "--version", "2", "--channel", "canary")
    assert out.returncode == 0, out.stderr
    out = _run("promote", store, "--channel", "canary")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"promoted channel canary of {store}: the main manifest is ")
    assert " wine 2 (" in out.stdout and out.stdout.count("\n") == 1
    assert parse(Path(store, MANIFEST_NAME).read_bytes()).version == "2"

    assert _run("publish", v1, store, "--no-check", "--version", "3").returncode == 0
    out = _run("abort", store, "--channel", "canary")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"aborted channel canary of {store}: it points at the main ")
    assert " wine 3 (" in out.stdout and out.stdout.count("\n") == 1
    assert parse(Path(store, channel_key("canary")).read_bytes()).version == "3"
    out = _run("history", store)
    assert [
        r.split()[2] for r in out.stdout.splitlines() if " promote " in r or " abort " in r
    ] == [
        "promote",
        "abort",
    ]

    # No such channel, no store: exit 1, one line. A bad name, a URL with a ref, no --channel:
    # exit 2 (argparse's usage says more for the last).
    for args in (("promote", store, "--channel", "nope"), ("abort", store, "--channel", "nope")):
        out = _run(*args)
        assert out.returncode == 1, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: MissingObject: no ")
        assert "'nope'" in out.stderr
    out = _run("promote", str(tmp_path / "nothing"), "--channel", "canary")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    for args in (
        ("promote", store, "--channel", "Canary"),
        ("abort", store + "@canary", "--channel", "canary"),
    ):
        out = _run(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
    out = _run("promote", store)
    assert out.returncode == 2 and "--channel" in out.stderr and "Traceback" not in out.stderr
    assert parse(Path(store, MANIFEST_NAME).read_bytes()).version == "3"
