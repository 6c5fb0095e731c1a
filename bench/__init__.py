"""Speed and memory benchmarks (`make bench`), outside the weightsim package: run from the
repository root as `python -m bench.zoo` and `python -m bench.chains`."""
