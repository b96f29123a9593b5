"""The benchmarks: scripts run by path, and the GPU harness run as `python -m benchmarks.gpu` (a regular package, so
that no other installed `benchmarks` can shadow it)."""
