# Two commands for a new user: `make run` and `make test`. Each sets up .venv on first use;
# the stamp file makes the second call skip the install (it reinstalls only when
# pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOGGERS_STAMP := $(VENV)/.installed-loggers

.PHONY: run test bench gpu-check lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,examples]'
	touch $(STAMP)

# the optional loggers', exports', rich displays' and search's extras (~40 s on first use), so their tests run instead of skipping
$(LOGGERS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[tensorboard,wandb,mlflow,onnx,rich,search]'
	touch $(LOGGERS_STAMP)

run: $(STAMP)
	$(VENV)/bin/ltrain fit configs/digits.yaml
	$(VENV)/bin/ltrain plot runs/digits-mlp --out runs/digits-mlp.png

# two pytest workers: most tests start real processes, and this keeps CI near 5 minutes on 2 cores;
# loadgroup keeps the parity tests on one worker, which runs Lightning and ltrain once for all
test: $(LOGGERS_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(PY) benchmarks/bench.py

# on a CUDA machine: the suite with the GPU tests, every precision, host syncs, the GPU bench rows
gpu-check: $(LOGGERS_STAMP)
	$(PY) benchmarks/gpu_check.py --out gpu-check.txt

lint: $(STAMP)
	$(VENV)/bin/ruff format --check ltrain tests benchmarks
	$(VENV)/bin/ruff check ltrain tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
