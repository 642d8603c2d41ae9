"""Planning a Table API query from a Python client that has more than one thread.

Flink's planner reads its metadata provider from a thread-local of the Java thread that plans
(Calcite's `RelMetadataQueryBase.THREAD_PROVIDERS`), and sets it only on the thread that
created the TableEnvironment (FLINK-23020). py4j runs each Python call on one Java thread of a
pool. Once two Python threads make py4j calls at the same time (a background thread that
finalizes a Java object is enough), the main thread can land on another Java thread for good,
and the next query it plans fails with `NullPointerException: metadataHandlerProvider`.

`planned(t_env, call)` binds the provider on the Java thread that serves the next call, then
makes the call (`execute_insert`, `to_data_stream`, an INSERT ...). If another thread took that
Java thread in between, the call fails the same way, and it binds and tries again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_SYMPTOM = "metadataHandlerProvider"
_ATTEMPTS = 5
_BINDING = "_tf_on_flink_metadata_binding"


def planned(t_env: Any, call: Callable[[], T]) -> T:
    """Runs `call`, a py4j call that makes `t_env`'s planner optimize a query, with the
    planner's metadata provider bound on the Java thread that serves it."""
    from py4j.protocol import Py4JJavaError

    local, provider = _binding(t_env)
    for attempt in range(1, _ATTEMPTS + 1):
        local.set(provider)
        try:
            return call()
        except Py4JJavaError as e:
            if _SYMPTOM not in str(e) or attempt == _ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _binding(t_env: Any) -> tuple[Any, Any]:
    """The thread-local and the provider to put in it, looked up once per TableEnvironment.

    The planner's classes live in its own class loader (flink-table-planner-loader), so they
    are reached by reflection through the planner object, not by name through py4j.
    """
    cached = getattr(t_env, _BINDING, None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    jvm = gateway.jvm
    planner = t_env._j_tenv.getPlanner()
    loader = planner.getClass().getClassLoader()

    def load(name: str) -> Any:
        return jvm.java.lang.Class.forName(f"org.apache.calcite.rel.metadata.{name}", True, loader)

    local = load("RelMetadataQueryBase").getField("THREAD_PROVIDERS").get(None)
    # What Calcite itself puts there: the Janino provider compiled from the cluster's own.
    params = gateway.new_array(jvm.java.lang.Class, 1)
    params[0] = load("RelMetadataProvider")
    args = gateway.new_array(jvm.java.lang.Object, 1)
    args[0] = planner.createRelBuilder().getCluster().getMetadataProvider()
    provider = load("JaninoRelMetadataProvider").getMethod("of", params).invoke(None, args)
    setattr(t_env, _BINDING, (local, provider))
    return local, provider
