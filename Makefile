# Set-up and entry points. `make demo` and `make test` work on a fresh machine:
# they create .venv when it is missing and install into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; on a GPU box install your CUDA torch into .venv first and this is a no-op.
TORCH  ?= torch==2.13.0

.PHONY: demo test test-all bench bench-gpu gpu-check clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -qq "$(TORCH)"
	$(PY) -m pip install -qq -e ".[dev,sweep]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/weightsim-run experiment=demo

# Test files run TEST_JOBS at a time (pytest-xdist; each file stays in one process, so its fixtures
# are built once); TEST_JOBS=0 runs them one after another in this process.
TEST_JOBS ?= 2
test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile -m "slow or not slow"

# Speed checks, each a ratio measured side by side in one run (never timed assertions in tests).
# The benchmarks live in bench/, outside the package: run from this directory.
bench: $(VENV)/.installed
	$(PY) -m bench.zoo
	$(PY) -m bench.chains --nets 1000
	$(PY) -m bench.chains --memory
	$(PY) -m bench.compare
	$(PY) -m bench.steps --data-dir $${WEIGHTSIM_DATA:-../shared/data}/names
	$(PY) -m bench.htt

# The same on a CUDA GPU, plus a real 50 tasks x 100 seeds mlp4 zoo at CIFAR-100 shape, timed.
# Needs a CUDA torch in .venv (one `error:` line, exit 2, otherwise); population memory budget:
# 0.7 x the GPU's free memory (bench.zoo --memory-budget-gb to set it); peak FLOPs up to 16384^2, fp32 and TF32.
bench-gpu: $(VENV)/.installed
	$(PY) -m bench.zoo --accelerator gpu --paper-zoo 50x100

# The GPU checks in one script (<= 8 min on one H100): paper-scale populations of every image arch
# (steps/s, peak memory), a zoo and HTT on the GPU. GPU_CHECK_DRY=1: tiny sizes on the CPU.
gpu-check: $(VENV)/.installed
	PY=$(PY) bash bench/gpu_check.sh

clean:
	rm -rf outputs multirun wandb
