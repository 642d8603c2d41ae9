"""Rollouts seen from the HTTP store: each channel's readers with their own rollout, a canary that
a job's subtask rolled back (reported with its polls, counted and shown), and promote and abort
of a channel through the API and the status page's buttons."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from job.functions import PredictVectorized
from job.mixin import ModelSettings
from job.scoring import Batch
from reloader.agent import HotModel
from reloader.history import read_history
from reloader.layout import MANIFEST_NAME, channel_key
from reloader.manifest import generate_key, parse
from reloader.publish import publish
from reloader.sources import REPORT_MAX_CHARS, open_source
from server.fleet import Fleet
from tests.server.test_page import browser_page  # noqa: F401 -- the Chromium page fixture
from tests.support.faults import POISON_LOOP
from tests.support.http_store import ModelStoreServer
from tests.support.stores import Version, Versions
from tests.support.waiting import FakeClock, checked, wait_until

ROLLED_BACK = "rolled back 1a2b3c4d5e6f after 200 rows: error rate 40.0% against 2.0%"


def _publish(server: ModelStoreServer, v: Version, channel: str | None = None, **kw: Any) -> None:
    options = {"token": server.token}
    publish(server.url(), v.data, v.manifest, channel=channel, source_options=options, **kw)


def _report(client: str, served: Version, **extra: str) -> dict[str, str]:
    """What a reloader reports before a poll (see `StoreFollower._report`)."""
    return {
        "client": client,
        "job": "predict-wine",
        "subtask": client.rsplit("/", 1)[-1],
        "version": served.label,
        "sha256": served.manifest.sha256,
        "poll_interval": "5",
        **extra,
    }


def _poll(url: str, info: dict[str, str]) -> None:
    """One read of the pointer `url` names (`URL@channel` for a channel), reporting `info`."""
    with open_source(url) as source:
        source.report(info)
        assert source.read_manifest() is not None


def _detail(server: ModelStoreServer) -> dict[str, Any]:
    r = requests.get(f"{server.base}/api/models/wine", timeout=10)
    r.raise_for_status()
    return r.json()


def _channel(detail: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in detail["channels"] if c["name"] == name]
    return found


def _rollout(
    version: str | None, *, clients: int, on_current: int, complete: bool
) -> dict[str, Any]:
    """A rollout summary with nothing rolled back and nothing stale."""
    return {
        "version": version,
        "clients": clients,
        "on_current": on_current,
        "rolled_back": 0,
        "stale": 0,
        "complete": complete,
    }


def _post(server: ModelStoreServer, path: str, **headers: str) -> requests.Response:
    return requests.post(f"{server.base}/api/models/{path}", headers=headers, timeout=10)


# -- the fleet, per pointer ----------------------------------------------------------------------


def test_each_channel_has_its_readers_and_rollout(
    server: ModelStoreServer, versions: Versions
) -> None:
    v1, v2, v3 = versions.make("v1", "v1"), versions.make("v2", "v2"), versions.make("v3", "v1")
    _publish(server, v1)
    _publish(server, v2, "canary")
    _publish(server, v3, "shadow")
    url = server.url()
    _poll(url, _report("predict-wine/0", v1, role="serving"))
    _poll(url, _report("predict-wine/1", v1, role="serving"))
    # The same client id on the canary channel is another reader; one of them still on v1.
    _poll(f"{url}@canary", _report("predict-wine/0", v2, role="canary", channel="canary"))
    _poll(f"{url}@canary", _report("predict-wine/1", v1, role="canary", channel="canary"))
    _poll(f"{url}@channel:shadow", _report("predict-wine/0", v3, role="shadow", channel="shadow"))
    # A pin reads version.json (its history's key) but does not follow it: listed, not counted.
    _poll(f"{url}@version:v1", _report("pinned/0", v1, channel="version:v1"))

    detail = _detail(server)
    assert [(f["client"], f["follows"]) for f in detail["fleet"]] == [
        ("pinned/0", "version:v1"),
        ("predict-wine/0", None),
        ("predict-wine/1", None),
    ]
    assert detail["rollout"] == _rollout("v1", clients=2, on_current=2, complete=True)
    assert [c["name"] for c in detail["channels"]] == ["canary", "shadow"]
    canary = _channel(detail, "canary")
    assert canary["current"]["version"] == "v2"
    assert canary["current"]["sha256"] == v2.manifest.sha256
    assert [(f["client"], f["role"], f["current"]) for f in canary["fleet"]] == [
        ("predict-wine/0", "canary", True),
        ("predict-wine/1", "canary", False),
    ]
    assert canary["rollout"] == _rollout("v2", clients=2, on_current=1, complete=False)
    shadow = _channel(detail, "shadow")
    assert shadow["rollout"]["complete"] is True and shadow["fleet"][0]["role"] == "shadow"

    # Subtask 1 loads v2, then its job rolls it back: it says so with its next poll.
    _poll(f"{url}@canary", _report("predict-wine/1", v2, role="canary", state=ROLLED_BACK))
    canary = _channel(_detail(server), "canary")
    entry = canary["fleet"][1]
    assert entry["rolled_back"] is True and entry["state"] == ROLLED_BACK
    assert canary["rollout"]["on_current"] == 2 and canary["rollout"]["rolled_back"] == 1
    assert canary["rollout"]["complete"] is False  # loaded everywhere, but not serving there
    page = requests.get(server.base + "/", timeout=10).text
    assert "rolled back</span> by 1 of 2 subtasks" in page
    assert "error rate 40.0% against 2.0%" in page


def test_hostile_roles_and_states_are_cut_and_escaped(
    server: ModelStoreServer, versions: Versions
) -> None:
    v1 = versions.make("v1", "v1")
    _publish(server, v1)
    _publish(server, v1, "canary")
    hostile = _report(
        "evil/0", v1, role="<img src=x onerror=alert(1)>", state="rolled back <script>x</script>"
    )
    hostile["channel"] = "c" * 5000
    _poll(server.url() + "@canary", hostile)
    (entry,) = _channel(_detail(server), "canary")["fleet"]
    assert entry["follows"] == "canary"  # the pointer it read, not what it claims
    assert entry["rolled_back"] is True  # a claim about itself only
    page = requests.get(server.base + "/", timeout=10).text
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<img" not in page and "c" * (REPORT_MAX_CHARS + 1) not in page


def test_channel_readers_share_the_bound_of_their_model() -> None:
    clock = FakeClock()
    fleet = Fleet(clock=clock.time, max_clients=2)
    assert fleet.record("wine", {"client": "c0"}, None)
    clock.now += 1
    assert fleet.record("wine", {"client": "c0"}, None, channel="canary")
    clock.now += 1
    assert fleet.record("wine", {"client": "c1"}, None, channel="canary")
    described = fleet.describe("wine", None, {"canary": None, "stable": None})
    assert described["fleet"] == [] and described["rollout"]["clients"] == 0  # c0 of main went
    canary, stable = described["channels"]
    assert [f["client"] for f in canary["fleet"]] == ["c0", "c1"]
    assert stable == {
        "name": "stable",
        "current": None,
        "fleet": [],
        "rollout": _rollout(None, clients=0, on_current=0, complete=False),
    }


def test_a_hot_model_reports_what_it_follows_its_role_and_state(
    server: ModelStoreServer, versions: Versions, tmp_path: Path
) -> None:
    v1, v2, v3 = versions.make("v1", "v1"), versions.make("v2", "v2"), versions.make("v3", "v1")
    _publish(server, v1)
    _publish(server, v2, "canary")
    common: dict[str, Any] = {"cache_dir": tmp_path / "cache", "trial": False, "warmup_calls": 1}
    common.update(poll_interval=3600, watch=False)
    pinned = HotModel(server.url() + "@version:v1", client={"client": "pinned"}, **common)
    shadow = HotModel(server.url() + "@channel:canary", client={"client": "cand"}, **common)
    shadow.set_report(role="shadow")  # before start: with the first poll
    with pinned, shadow:
        checked(shadow)  # its first poll came before its first load: it served nothing yet
        detail = _detail(server)
        (entry,) = detail["fleet"]
        assert (entry["client"], entry["follows"], entry["role"]) == (
            "pinned",
            "version:v1",
            "serving",
        )
        assert detail["rollout"]["clients"] == 0
        (entry,) = _channel(detail, "canary")["fleet"]
        assert (entry["client"], entry["role"], entry["version"]) == ("cand", "shadow", "v2")
        assert entry["current"] is True and entry["state"] is None

        # A state goes out at once (no poll would come for an hour), about the bundle served.
        shadow.set_report(state="warming up")
        wait_until(
            lambda: _channel(_detail(server), "canary")["fleet"][0]["state"] == "warming up",
            what="the state reported",
        )
        # The channel moves: the state was about v2, v3 is reported without it.
        _publish(server, v3, "canary")
        checked(shadow)  # loads v3
        checked(shadow)  # says so
        (entry,) = _channel(_detail(server), "canary")["fleet"]
        assert entry["version"] == "v3" and entry["state"] is None and entry["role"] == "shadow"


# -- a job's canary, rolled back -----------------------------------------------------------------

FEATURES = [
    "alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols",
    "flavanoids", "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue",
    "od280_od315_of_diluted_wines", "proline",
]  # fmt: skip


@pytest.fixture
def canary_function(
    server: ModelStoreServer, versions: Versions, tmp_path: Path
) -> Iterator[PredictVectorized]:
    """The job's vectorized predict function outside Flink, on the HTTP store: serving v1, the
    channel `canary` on a candidate that loops forever on an alcohol of 999 (a timeout)."""
    v1 = versions.make("1", "v1")
    bad = versions.make("2", "v2", data=versions.bundles["v2"] + POISON_LOOP.encode())
    _publish(server, v1)
    _publish(server, bad, "canary")
    settings = ModelSettings(
        url=server.url(),
        cache_dir=str(tmp_path / "cache"),
        poll_interval=0.1,
        call_timeout=0.5,
        canary="canary",
        canary_fraction=0.5,
        job_name="predict-wine",
    )
    fn = PredictVectorized(["id", *FEATURES], settings)
    fn._setup(object())  # no metrics, subtask 0
    gc.unfreeze()  # what the worker freezes is this test process here
    try:
        yield fn
    finally:
        fn.close_model()


def test_a_canary_rollback_is_visible_on_the_status_page(
    canary_function: PredictVectorized,
    server: ModelStoreServer,
    versions: Versions,
    wine: Any,
) -> None:
    fn = canary_function
    canary = fn.canary
    assert canary is not None
    wait_until(lambda: canary.channel.model is not None, what="the candidate started")
    ids = np.arange(200)
    rows = [wine.records[i % len(wine.records)] for i in ids]
    columns: dict[str, Any] = {f: np.array([r[f] for r in rows]) for f in FEATURES}
    columns.update(id=ids, alcohol=np.full(len(ids), 999.0))
    for _ in range(3):
        lines = [json.loads(x) for x in fn.predict_batch(Batch(columns=columns))]
        assert {r["model_version"] for r in lines} == {"1"}  # the serving version took them
    assert canary.stats.rolled_back

    def reported() -> dict[str, Any] | None:
        channel = _channel(_detail(server), "canary")
        return channel if channel["rollout"]["rolled_back"] == 1 else None

    channel = wait_until(reported, what="the rollback reported to the store")
    (entry,) = channel["fleet"]
    assert entry["job"] == "predict-wine" and entry["role"] == "canary"
    assert entry["version"] == "2" and entry["current"] is True
    assert entry["state"].startswith(f"rolled back {canary.stats.sha256[:12]} after ")
    assert entry["state"].endswith(": 3 batches failed")
    assert channel["rollout"]["complete"] is False
    page = requests.get(server.base + "/", timeout=10).text
    assert "rolled back</span> by 1 of 1 subtasks" in page and "3 batches failed" in page

    # A new candidate: the state was about the old bundle, the subtask reports without it.
    good = versions.make("3", "v2")
    _publish(server, good, "canary")
    wait_until(
        lambda: (
            (e := _channel(_detail(server), "canary")["fleet"][0])["version"] == "3"
            and e["state"] is None
        ),
        what="the new candidate reported without the rollback",
    )


# -- promote and abort ---------------------------------------------------------------------------


def test_promote_and_abort_through_the_api(server: ModelStoreServer, versions: Versions) -> None:
    v1, v2, v3 = versions.make("v1", "v1"), versions.make("v2", "v2"), versions.make("v3", "v1")
    key = generate_key()
    _publish(server, v1, signing_key=key)
    _publish(server, v2, "canary", signing_key=key)
    _publish(server, v3, "shadow")
    root = server.root / "wine"
    canary_doc = (root / channel_key("canary")).read_bytes()

    # Refusals, each typed: no token, a wrong one, bad names, what is not there.
    assert _post(server, "wine/channels/canary/promote").status_code == 401
    wrong = {"Authorization": "Bearer wrong-token"}
    assert _post(server, "wine/channels/canary/promote", **wrong).status_code == 403
    auth = server.auth()
    for path, status, detail in (
        ("wine/channels/Canary/promote", 400, "invalid channel name"),
        ("wine/channels/nope/promote", 404, "no channel 'nope'"),
        ("wine/channels/nope/abort", 404, "no channel 'nope'"),
        ("beer/channels/canary/promote", 404, "no channel 'canary' in model 'beer'"),
        ("-bad/channels/canary/abort", 400, "invalid model name"),
    ):
        r = _post(server, path, **auth)
        assert r.status_code == status and detail in r.json()["detail"], (path, r.text)
    assert (root / MANIFEST_NAME).read_bytes() == v1.manifest.signed(key).to_bytes()
    assert not (root.parent / "beer").exists()

    r = _post(server, "wine/channels/canary/promote", **auth)
    assert r.status_code == 200 and r.json()["current"]["version"] == "v2"
    assert (root / MANIFEST_NAME).read_bytes() == canary_doc
    parse(canary_doc).verify(key.public_key())  # the exact document: still signed
    r = _post(server, "wine/channels/shadow/abort", **auth)
    assert r.status_code == 200
    assert r.json() == {"channel": "shadow", "current": parse(canary_doc).to_dict()}
    assert (root / channel_key("shadow")).read_bytes() == canary_doc

    history = _detail(server)["history"]
    assert [(h["how"], h["version"], h["channel"]) for h in history[:2]] == [
        ("abort", "v2", "shadow"),
        ("promote", "v2", None),
    ]
    with open_source(server.url()) as source:  # what readers rebuild their timeline from
        entries = read_history(source)
    assert entries[-2].document == canary_doc and entries[-2].channel is None


def test_read_only_store_refuses_promote(tmp_path: Path, versions: Versions) -> None:
    s = ModelStoreServer(tmp_path / "ro", token=None)
    try:
        r = _post(s, "wine/channels/canary/promote", Authorization="Bearer anything")
        assert r.status_code == 403 and "read-only" in r.json()["detail"]
        assert "promote-" not in requests.get(s.base, timeout=10).text
    finally:
        s.stop()


def test_promote_and_abort_from_the_status_page(
    server: ModelStoreServer,
    versions: Versions,
    browser_page,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    v1, v2, v3 = versions.make("v1", "v1"), versions.make("v2", "v2"), versions.make("v3", "v1")
    _publish(server, v1)
    _publish(server, v2, "canary")
    _publish(server, v3, "shadow")
    _poll(server.url() + "@canary", _report("predict-wine/0", v2, role="canary"))
    _poll(server.url() + "@canary", _report("predict-wine/1", v2, role="canary", state=ROLLED_BACK))
    page = browser_page
    page.goto(server.base + "/")
    assert page.get_by_test_id("channel-wine-canary").inner_text() == "v2"
    summary = page.get_by_test_id("rollout-wine-canary").inner_text()
    assert summary == "2 of 2 on v2; rolled back by 1 of 2 subtasks"
    rows = page.get_by_test_id("fleet-wine-canary").locator("tbody tr")
    assert rows.count() == 2
    assert "current" in rows.nth(0).inner_text() and "canary" in rows.nth(0).inner_text()
    second = rows.nth(1).inner_text()
    assert "rolled back" in second and "error rate 40.0% against 2.0%" in second

    # Without the token the server refuses, and the page says so.
    page.get_by_test_id("promote-wine-canary").click()
    page.get_by_text("promote failed: HTTP 401").wait_for()

    page.fill("#token", server.token or "")
    page.dispatch_event("#token", "change")
    page.get_by_test_id("promote-wine-canary").click()
    page.get_by_test_id("live-wine").filter(has_text="v2").wait_for()
    # The canary now points at the live version: nothing to promote or abort there.
    assert page.get_by_test_id("promote-wine-canary").count() == 0
    page.get_by_test_id("abort-wine-shadow").click()
    page.get_by_test_id("channel-wine-shadow").filter(has_text="v2").wait_for()
    assert page.get_by_test_id("abort-wine-shadow").count() == 0

    root = server.root / "wine"
    assert parse((root / MANIFEST_NAME).read_bytes()) == v2.manifest
    assert parse((root / channel_key("shadow")).read_bytes()) == v2.manifest
    history = _detail(server)["history"]
    assert [h["how"] for h in history[:2]] == ["abort", "promote"]
