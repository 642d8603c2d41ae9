"""The fleet view: readers report themselves with their manifest reads (`Source.report`, the
`X-Reloader-*` headers), and the store's API and status page show who serves which version."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn

from reloader.manifest import parse
from reloader.sources import REPORT_MAX_CHARS, Fetched, open_source, report_headers
from reloader.sources.http import HttpSource
from server.app import create_app
from server.fleet import Fleet
from tests.server.test_page import browser_page  # noqa: F401 -- the Chromium page fixture
from tests.support.http_store import ModelStoreServer
from tests.support.stores import Version, Versions, publish
from tests.support.waiting import FakeClock, wait_until


class InProcessStore:
    """`create_app` under uvicorn in a thread of this process, so that the test holds its clock
    (`python -m server` in its own process, the `server` fixture, keeps the wall clock)."""

    def __init__(self, root: Path, clock: FakeClock) -> None:
        self.token = "tok-" + "y" * 12
        app = create_app(root, token=self.token, clock=clock.time)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="store-under-test")
        self._thread.start()
        wait_until(lambda: self._server.started, what="the in-process store")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, model: str = "wine") -> str:
        return f"{self.base}/models/{model}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked_server(tmp_path: Path, clock: FakeClock) -> Iterator[InProcessStore]:
    s = InProcessStore(tmp_path / "store", clock)
    yield s
    s.stop()


def _reader(
    client: str, subtask: int, served: Version | None, interval: float = 5.0
) -> dict[str, str]:
    """What a reloader reports before a poll (`served`: the version it serves now)."""
    return {
        "client": client,
        "job": "predict-wine",
        "subtask": str(subtask),
        "version": served.label if served else "",
        "sha256": served.manifest.sha256 if served else "",
        "poll_interval": f"{interval:g}",
    }


def _detail(base: str, model: str = "wine") -> dict[str, Any]:
    r = requests.get(f"{base}/api/models/{model}", timeout=10)
    r.raise_for_status()
    return r.json()


def _by_client(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["client"]: f for f in detail["fleet"]}


def test_report_headers_are_clean() -> None:
    headers = report_headers(
        {
            "client": "host-1:4242",
            "job": "wein-vorhersage-\u00fc\r\nX-Injected: 1",
            "version": "v" * (REPORT_MAX_CHARS + 50),
            "sha256": "   ",
            "poll_interval": "2.5",
            "password": "not a report key",
        }
    )
    assert headers == {
        "X-Reloader-Client": "host-1:4242",
        "X-Reloader-Job": "wein-vorhersage-X-Injected: 1",
        "X-Reloader-Version": "v" * REPORT_MAX_CHARS,
        "X-Reloader-Poll-Interval": "2.5",
    }


def test_a_rollout_seen_from_the_store(server: ModelStoreServer, versions: Versions) -> None:
    v1, v2 = versions.make("v1", "v1"), versions.make("v2", "v2")
    with open_source(server.url(), token=server.token) as publisher:
        publish(publisher, v1)
    with (
        HttpSource(server.url()) as a,
        HttpSource(server.url()) as b,
        HttpSource(server.url()) as c,
    ):
        a.report(_reader("predict-wine/0", 0, v1))
        b.report(_reader("predict-wine/1", 1, v1))
        seen_a, seen_b = a.read_manifest(), b.read_manifest()
        assert seen_a is not None and seen_b is not None
        assert c.read_manifest() is not None  # never reported: not part of the fleet

        detail = _detail(server.base)
        assert detail["rollout"] == {
            "version": "v1",
            "clients": 2,
            "on_current": 2,
            "rolled_back": 0,
            "stale": 0,
            "complete": True,
        }
        first = _by_client(detail)["predict-wine/0"]
        assert first["job"] == "predict-wine" and first["subtask"] == "0"
        assert first["version"] == "v1" and first["sha256"] == v1.manifest.sha256
        assert first["address"] == "127.0.0.1" and first["poll_interval"] == 5.0
        assert first["current"] is True and first["stale"] is False
        assert first["last_poll"].endswith("Z") and first["seconds_since"] >= 0

        # v2 is published; both see it on their next (conditional) poll, still serving v1.
        with open_source(server.url(), token=server.token) as publisher:
            publish(publisher, v2)
        new = a.read_manifest(seen_a.validator)
        assert isinstance(new, Fetched) and parse(new.data).version == "v2"
        assert b.read_manifest(seen_b.validator) is not None
        detail = _detail(server.base)
        assert detail["rollout"]["version"] == "v2"
        assert detail["rollout"]["clients"] == 2 and detail["rollout"]["on_current"] == 0

        # Subtask 0 has swapped: it says so with its next poll, a 304.
        a.report(_reader("predict-wine/0", 0, v2))
        assert a.read_manifest(new.validator) is None
        detail = _detail(server.base)
        assert [f["client"] for f in detail["fleet"]] == ["predict-wine/0", "predict-wine/1"]
        assert [f["current"] for f in detail["fleet"]] == [True, False]
        assert detail["rollout"]["on_current"] == 1 and detail["rollout"]["complete"] is False

        # Subtask 1 too: the rollout is complete.
        b.report(_reader("predict-wine/1", 1, v2))
        assert b.read_manifest(new.validator) is None
        detail = _detail(server.base)
        assert _by_client(detail)["predict-wine/1"]["version"] == "v2"
        assert detail["rollout"] == {
            "version": "v2",
            "clients": 2,
            "on_current": 2,
            "rolled_back": 0,
            "stale": 0,
            "complete": True,
        }
        listing = requests.get(server.base + "/", timeout=10).text
        assert 'data-testid="rollout-wine"' in listing and "rollout complete" in listing


def test_hostile_reports_are_cut_and_escaped(server: ModelStoreServer, versions: Versions) -> None:
    with open_source(server.url(), token=server.token) as publisher:
        publish(publisher, versions.make("v1", "v1"))
    hostile = {
        "X-Reloader-Client": "<script>alert(1)</script>",
        "X-Reloader-Job": "j" * 5000,
        "X-Reloader-Subtask": '"><img src=x onerror=alert(2)>',
        "X-Reloader-Version": "caf\u00e9",  # sent as latin-1: not printable ASCII
        "X-Reloader-Poll-Interval": "nan",
    }
    r = requests.get(f"{server.url()}/version.json", headers=hostile, timeout=10)
    assert r.status_code == 200
    # Without a client id, nothing is noted.
    r = requests.get(f"{server.url()}/version.json", headers={"X-Reloader-Job": "x"}, timeout=10)
    assert r.status_code == 200

    (entry,) = _detail(server.base)["fleet"]
    assert entry["client"] == "<script>alert(1)</script>"
    assert entry["job"] == "j" * REPORT_MAX_CHARS
    assert entry["version"] == "caf" and entry["poll_interval"] is None
    assert entry["current"] is False  # it reports no sha256, and its label is not the live one
    page = requests.get(server.base + "/", timeout=10).text
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page and "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert "j" * REPORT_MAX_CHARS + "<" in page and "j" * (REPORT_MAX_CHARS + 1) not in page


def test_a_silent_reader_becomes_stale(
    clocked_server: InProcessStore, clock: FakeClock, versions: Versions
) -> None:
    v1 = versions.make("v1", "v1")
    with open_source(clocked_server.url(), token=clocked_server.token) as publisher:
        publish(publisher, v1)
    url = clocked_server.url()
    with HttpSource(url) as steady, HttpSource(url) as silent, HttpSource(url) as quiet:
        steady.report(_reader("steady", 0, v1, interval=5))
        silent.report(_reader("silent", 1, None, interval=5))
        quiet.report({"client": "quiet", "version": "v1"})  # declares no interval: 60 s assumed
        seen = steady.read_manifest()
        assert seen is not None
        assert silent.read_manifest() is not None and quiet.read_manifest() is not None
        detail = _detail(clocked_server.base)
        assert detail["rollout"]["clients"] == 3 and detail["rollout"]["complete"] is False
        assert _by_client(detail)["quiet"]["current"] is True  # by its label

        clock.now += 14  # under 3 x 5 s
        assert steady.read_manifest(seen.validator) is None
        fleet = _by_client(_detail(clocked_server.base))
        assert fleet["silent"]["seconds_since"] == 14 and fleet["silent"]["stale"] is False

        clock.now += 2  # 16 s since the silent one's poll: stale, and out of the count
        assert steady.read_manifest(seen.validator) is None
        detail = _detail(clocked_server.base)
        fleet = _by_client(detail)
        assert fleet["silent"]["stale"] is True and fleet["steady"]["stale"] is False
        assert fleet["quiet"]["stale"] is False
        assert detail["rollout"] == {
            "version": "v1",
            "clients": 2,
            "on_current": 2,
            "rolled_back": 0,
            "stale": 1,
            "complete": True,
        }
        page = requests.get(clocked_server.base + "/", timeout=10).text
        assert "(1 stale, not counted)" in page and "<tr class=stale>" in page

        clock.now += 170  # 186 s since the quiet one's poll: over 3 x 60 s
        assert steady.read_manifest(seen.validator) is None
        assert _by_client(_detail(clocked_server.base))["quiet"]["stale"] is True
        # A poll again makes the silent one live again.
        assert silent.read_manifest() is not None
        assert _by_client(_detail(clocked_server.base))["silent"]["stale"] is False


def test_the_fleet_is_bounded() -> None:
    clock = FakeClock()
    fleet = Fleet(clock=clock.time, max_clients=3)
    for i in range(4):
        assert fleet.record("wine", {"client": f"c{i}"}, "10.0.0.1")
        clock.now += 1
    assert fleet.record("wine", {"client": "c1"}, None)  # polls again: now the newest
    assert not fleet.record("wine", {"job": "no id"}, None)
    assert fleet.record("wine", {"client": "c4"}, None)
    clients = [f["client"] for f in fleet.describe("wine", None)["fleet"]]
    assert sorted(clients) == ["c1", "c3", "c4"]  # c0, then c2, the longest silent, went
    assert fleet.describe("beer", None) == {
        "fleet": [],
        "rollout": {
            "version": None,
            "clients": 0,
            "on_current": 0,
            "rolled_back": 0,
            "stale": 0,
            "complete": False,
        },
        "channels": [],
    }


def test_the_status_page_shows_the_fleet(
    server: ModelStoreServer,
    versions: Versions,
    browser_page,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    v1, v2 = versions.make("v1", "v1"), versions.make("v2", "v2")
    with open_source(server.url(), token=server.token) as publisher:
        publish(publisher, v1)
        publish(publisher, v2)
    with HttpSource(server.url()) as a, HttpSource(server.url()) as b:
        a.report(_reader("predict-wine/0", 0, v2))
        b.report(_reader("<b>predict-wine/1</b>", 1, v1))
        assert a.read_manifest() is not None and b.read_manifest() is not None
    page = browser_page
    page.goto(server.base + "/")
    assert page.get_by_test_id("rollout-wine").inner_text() == "1 of 2 on v2"
    rows = page.get_by_test_id("fleet-wine").locator("tbody tr")
    assert rows.count() == 2
    first, second = rows.nth(0).inner_text(), rows.nth(1).inner_text()
    assert "predict-wine/0" in first and "v2" in first and "current" in first
    assert "<b>predict-wine/1</b>" in second and "behind" in second  # shown as text, not markup
    assert page.locator("table b").count() == 0
