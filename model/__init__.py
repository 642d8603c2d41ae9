"""Model tooling of tf-on-flink: the WINE data, training (TensorFlow, in .venv-train), and the
bundle build (Node.js + esbuild). The job imports only `model.data` and `model.bundle` from here."""
