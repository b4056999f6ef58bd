"""offpost benchmarks: see bench/README.md."""
