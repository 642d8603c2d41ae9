"""The OpenAPI schema is served, and schemathesis fuzzing every operation finds no 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from reloader.sources import open_source
from tests.support.http_store import ModelStoreServer
from tests.support.stores import Versions, publish


@pytest.fixture(scope="module")
def fuzzed_server(
    tmp_path_factory: pytest.TempPathFactory, versions: Versions
) -> Iterator[ModelStoreServer]:
    s = ModelStoreServer(tmp_path_factory.mktemp("fuzz") / "store")
    with open_source(s.url(), token=s.token) as source:
        publish(source, versions.make("v1", "v1"))
        publish(source, versions.make("v2", "v2"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def store_schema(fuzzed_server: ModelStoreServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_server.base}/openapi.json")


def test_openapi_is_served(fuzzed_server: ModelStoreServer) -> None:
    doc = requests.get(f"{fuzzed_server.base}/openapi.json", timeout=10).json()
    paths = set(doc["paths"])
    assert {"/models/{name}/{path}", "/models/{name}/bundles/{filename}"} <= paths
    assert {"/models/{name}/version.json", "/api/models", "/api/models/{name}"} <= paths
    assert "/api/models/{name}/rollback" in paths


_FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


# schemathesis' pytest plugin does not run on pytest 9 (it reads `node._nodeid`), so the
# operations are driven through its Python API with hypothesis directly.
@pytest.mark.parametrize("authorized", [False, True], ids=["anonymous", "with-token"])
def test_fuzzing_finds_no_server_errors(
    store_schema: Any, fuzzed_server: ModelStoreServer, authorized: bool
) -> None:
    headers = fuzzed_server.auth() if authorized else None
    operations = [result.ok() for result in store_schema.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:

        @_FUZZ
        @given(case=operation.as_strategy())
        def no_5xx(case: Any) -> None:
            response = case.call(headers=headers, timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:300]}"
            )

        no_5xx()
