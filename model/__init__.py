"""Model tooling of tf-on-flink: training, bundle build, demo (not in the installed package)."""
