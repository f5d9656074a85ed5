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

.PHONY: install test experiment experiments bench bench-device wheels clean lock

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
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
	@echo "gallery: runs/index.html (and runs/index.md)"

bench: install
	$(PY) benchmarks/surface.py
	$(PY) benchmarks/hessian.py
	$(PY) benchmarks/affine.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/resnet.py

# The prepared accelerator run (docs/gpu.md): every GPU figure in one command, table in $(OUT)/device.md.
OUT ?= runs/device
bench-device:
	OUT=$(OUT) PYTHON=$(if $(wildcard $(PY)),$(PY),$(PYTHON)) bash benchmarks/device.sh $(ARGS)

# Wheels of the packages jaxscape imports that the GPU machine lacks (it has no network): .whl/ (git-ignored),
# carried with the tree (run(..., carry=[".whl"])). Pure-Python wheels, about 60 KB.
WHEELS = matfree==0.6.3 mnist1d==0.0.2.post1
wheels:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $(WHEELS)
	du -sh .whl

clean:
	rm -rf $(VENV) .pytest_cache

# Newest versions allowed by pyproject.toml, in a scratch venv, written to constraints.txt (then run make test).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q -e '.[test]'
	{ head -2 constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-lock
