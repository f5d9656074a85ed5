# jaxscape: two commands on a fresh machine.
#   make experiment NAME=<name> [PRESET=smoke|cpu|full] [SEED=0] [DATA_DIR=...] [SET="key=value key2=value2"]
#   make test
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
NAME   ?= skip_transition
PRESET ?= cpu
SEED   ?= 0
DATA_DIR ?=
JOBS   ?= 2

.PHONY: install test experiment experiments bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -n $(JOBS) tests

experiment: install
	$(PY) -m experiments $(NAME) --preset $(PRESET) --seed $(SEED) $(if $(DATA_DIR),--data-dir $(DATA_DIR),) $(foreach s,$(SET),--set $(s))

experiments: install
	@set -e; for f in experiments/[a-z]*.py; do \
	  n=$$(basename $$f .py); \
	  $(PY) -m experiments.$$n --preset $(PRESET) --seed $(SEED) $(if $(DATA_DIR),--data-dir $(DATA_DIR),); \
	done
	@echo "index: runs/index.md"

bench: install
	$(PY) benchmarks/surface.py
	$(PY) benchmarks/hessian.py
	$(PY) benchmarks/affine.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/resnet.py

clean:
	rm -rf $(VENV) .pytest_cache
