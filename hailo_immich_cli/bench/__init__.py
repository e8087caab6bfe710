"""Benchmarks behind `hailo-immich bench`: local sweeps, the `--url` load test, shared timing."""
