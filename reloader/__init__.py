"""tf-on-flink's serving side: run a model bundle, read a store, follow a store.

Run a bundle (no network, no polling):
    runtime.py   `ModelRuntime`: one bundle in its own V8 isolate, zero-copy batched predict
    v8.py        mini-racer made safe for untrusted code (no timers, an eval that cannot hang)
    codec.py     records <-> float32 matrices by `ml.meta`; the meta's validation
    columns.py   typed columns (numpy, pandas, arrow, lists) in the Arrow layout, typed per input
    buffers.py   a contract-2 bundle's buffers and one batch of columns through them
    outputs.py   the declared output kinds, decoded into output fields
    selftest.py  the self-test's and the skew check's comparisons
    sandbox.py   a new bundle's first build in a memory- and time-limited child process

Read a store (no V8):
    layout.py    the store format: names, key patterns, size caps (the server imports it too)
    manifest.py  `version.json`: parse, validate, sign, verify
    sources/     one scheme registry: local dir, http(s)://, s3://
    fetch.py     verified download into a content-addressed cache
    publish.py   the publish sequence: bundle first, manifest last

Follow a store (joins the two):
    load.py      the one fetch -> verify -> trial -> build -> self-test -> warm-up path; `check`
    compat.py    the schema gate: does a version fit the columns a running job fixed?
    serving.py   the serving pointer and the swap (processing thread)
    follower.py  the poll/build worker and its failure policy (poll thread)
    agent.py     `HotModel`: owns the three above and the life cycle

`errors.py` holds the typed errors (`ReloaderError` and subclasses), `values.py` the values
handed out (`LoadedModel`, `Versioned`, `ModelInfo`) and the injectable `Clock`; `cli.py` is
`python -m reloader` (check, publish, keygen; `cli_rollouts.py`: channel, promote, abort,
history). `timeline.py` and `history.py` are versions by event time and the store's publish
history.
"""
