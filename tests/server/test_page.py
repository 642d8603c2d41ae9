"""The status page in a real browser (Debian's Chromium, driven by Playwright): see the versions,
click rollback, see the pointer change."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from reloader.manifest import parse
from reloader.sources import open_source
from tests.support.http_store import ModelStoreServer
from tests.support.stores import Versions, publish

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser_page():  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_rollback_from_the_status_page(
    server: ModelStoreServer,
    versions: Versions,
    browser_page,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    v1, v2 = versions.make("v1", "v1"), versions.make("v2", "v2")
    with open_source(server.url(), token=server.token) as source:
        publish(source, v1)
        publish(source, v2)
    page = browser_page
    page.goto(server.base + "/")
    live = page.get_by_test_id("live-wine")
    assert live.inner_text() == "v2"
    assert page.get_by_text("v1", exact=True).is_visible()  # the older bundle's label
    page.screenshot(path=str(tmp_path / "before.png"))

    # Without the token the server refuses, and the page says so.
    page.get_by_test_id(f"rollback-wine-{v1.manifest.sha256[:12]}").click()
    page.get_by_text("rollback failed: HTTP 401").wait_for()

    page.fill("#token", server.token or "")
    page.dispatch_event("#token", "change")
    page.get_by_test_id(f"rollback-wine-{v1.manifest.sha256[:12]}").click()
    page.wait_for_load_state("load")
    page.get_by_test_id("live-wine").filter(has_text="v1").wait_for()
    page.screenshot(path=str(tmp_path / "after.png"))

    served = parse(requests.get(f"{server.url()}/version.json", timeout=10).content)
    assert served.version == "v1" and served.sha256 == v1.manifest.sha256
    history = requests.get(f"{server.base}/api/models/wine", timeout=10).json()["history"]
    assert history[0]["how"] == "rollback" and history[0]["version"] == "v1"
