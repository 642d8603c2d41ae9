"""Model tooling of tf-on-flink (training, bundle build, demo). Not part of the installed distribution."""
