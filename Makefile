# The two commands of the README:
#   make figures   set up .venv (when missing) and regenerate the figures of the offline default
#   make test      set up .venv (when missing) and run the linter and the tests
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export QKDISSECT_DATA ?= $(CURDIR)/data
OFFLINE_MODEL := dinov2-vits14-imgfocus

.PHONY: figures test lint bench clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "qkdissect needs Python >= 3.11; run: make PYTHON=python3.11 ...")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

figures: $(VENV)/.installed
	$(PY) -m qkdissect fetch
	$(PY) -m qkdissect modes $(OFFLINE_MODEL) -o results/modes/$(OFFLINE_MODEL).zarr
	$(PY) -m qkdissect scores results/modes/$(OFFLINE_MODEL).zarr -o results/scores/$(OFFLINE_MODEL).zarr
	$(PY) -m qkdissect plot-layers results/scores/$(OFFLINE_MODEL).zarr -o results/figures/fig3_weighted_cosine.png
	$(PY) -m qkdissect plot-layers results/scores/$(OFFLINE_MODEL).zarr --unweighted -o results/figures/fig3_unweighted_cosine.png
	@echo "figures in results/figures/"

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m mypy src

test: lint
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_modes.py

clean:
	rm -rf results
