# The two commands of the README:
#   make figures   set up .venv (when missing) and regenerate the figures of the offline default (config/config.yaml)
#                  through the Snakemake workflow; SNAKEMAKE_ARGS='--configfile config/paper.yaml' for the paper's
#   make test      set up .venv (when missing) and run the linter and the tests (the docs built strictly among them)
#   make test-fast the unit tier (tests/unit/: the package's modules on tiny models), for the edit loop
#   make docs      the documentation site (docs/, mkdocs.yml) into site/, strictly: a broken link fails
#   make rehearsal the paper's configuration end to end offline, on stand-ins (needs ../shared/assets)
#   make paper-fig3 the paper's Fig. 3, S1, S2, S3 and claims 1-4 from its 16 models' weights (config/paper-weights.yaml)
#   make kick-the-tires  the offline default's figures and the paper's Fig. 3 rehearsed offline on stand-ins
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Snakemake with its --configfile files checked first (a YAML error names its file and line)
QKDISSECT := $(VENV)/bin/qkdissect
# weights go to ./data: inside a checkout, the CLI, the API and Snakemake all use its data/ folder
# (qkdissect.locations.data_dir; $QKDISSECT_DATA overrides it)
# the rules call qkdissect and papermill: the venv's, without activating it
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: figures test test-fast test-durations test-rehearsal lint browser bench rehearsal paper-fig3 kick-the-tires docs clean

$(VENV)/.installed: pyproject.toml requirements/lock.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "qkdissect needs Python >= 3.11; run: make PYTHON=python3.11 ...")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/lock.txt -e '.[workflow,test,docs]'
	touch $@

figures: $(VENV)/.installed
	$(QKDISSECT) run --workflow-profile workflow/profiles/default $(SNAKEMAKE_ARGS)
	$(QKDISSECT) run --report results/report.html $(SNAKEMAKE_ARGS)
	@echo "figures in results/figures/, executed notebooks in results/notebooks/, report: results/report.html"

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks rehearsal requirements docs/hooks
	$(PY) -m ruff format --check src tests benchmarks rehearsal requirements docs/hooks
	$(PY) -m mypy src rehearsal
	$(VENV)/bin/lint-imports

# the mode atlas's browser test drives Debian's chromium and chromium-driver: installed with apt-get when missing and
# make runs as root (CI); otherwise that test skips with the reason (QKDISSECT_REQUIRE_BROWSER=1 makes it fail)
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "no chromium here: the mode atlas's browser test will skip (as root, make installs it)"; fi; \
	fi

# both cores: $(WORKERS) workers take the tests longest first, a file's tests together only where they share a
# module fixture (tests/helpers/schedule.py, the durations of tests/durations.json); every tier
WORKERS ?= 2
XDIST = -n $(WORKERS) --dist loadgroup --no-loadscope-reorder
test: lint browser
	$(PY) -m pytest $(XDIST)

# the unit tier only (tests/unit/, no lint): the tiers integration, workflow and browser are make test's
test-fast: $(VENV)/.installed
	$(PY) -m pytest $(XDIST) tests/unit

# record each test's seconds in tests/durations.json (the order make test runs them in); run it after adding slow tests
test-durations: lint browser
	QKDISSECT_TEST_DURATIONS=tests/durations.json $(PY) -m pytest $(XDIST)

# the paper's run through Snakemake on stand-ins (tests/workflow/test_rehearsal.py, 162 jobs with the mode atlas, about 16 min on 2 cores)
test-rehearsal: $(VENV)/.installed
	QKDISSECT_REHEARSAL=1 $(PY) -m pytest tests/workflow/test_rehearsal.py

# the paper's own run (config/paper.yaml, unchanged) offline, on stand-ins of its 13 hub models, its SimMIM and
# I-JEPA checkpoints and its datasets built from the real photographs of ../shared/assets (README "Rehearsal");
# REHEARSAL_ARGS=--shallow for the 2-block version (make test-rehearsal runs it through tests/workflow/test_rehearsal.py)
# REHEARSAL_CONFIG=config/paper-weights.yaml rehearses the weights-only figures instead (no dataset is built)
REHEARSAL_DIR ?= rehearsal-run
REHEARSAL_CONFIG ?= config/paper.yaml
rehearsal: $(VENV)/.installed
	$(PY) -m rehearsal.run $(REHEARSAL_DIR) --config $(REHEARSAL_CONFIG) $(REHEARSAL_ARGS)

# the paper's central figure from its models' weights alone, in its own folder (results/ stays the offline
# default's): the 13 hub models are downloaded into $$HF_HOME (9.5 GB), the SimMIM and I-JEPA checkpoints must be
# under $$QKDISSECT_DATA/weights/ (config/paper.yaml says where to get them); see docs/how-to/paper-fig3.md
PAPER_FIG3_DIR ?= paper-fig3
paper-fig3: $(VENV)/.installed
	$(QKDISSECT) run --workflow-profile workflow/profiles/default --configfile $(CURDIR)/config/paper-weights.yaml \
	  --directory $(PAPER_FIG3_DIR) $(SNAKEMAKE_ARGS)
	$(QKDISSECT) run --configfile $(CURDIR)/config/paper-weights.yaml --directory $(PAPER_FIG3_DIR) \
	  --report $(abspath $(PAPER_FIG3_DIR))/results/report.html $(SNAKEMAKE_ARGS)
	@echo "figures in $(PAPER_FIG3_DIR)/results/figures/, claims 1-4: $(PAPER_FIG3_DIR)/results/claims/claims.html"

# a first look for a reviewer, offline but for the offline default's PyPI wheels: the offline default's figures
# (make figures) and the paper's Fig. 3, S1, S2, S3 and claims 1-4 rehearsed on stand-ins of its 16 models at their
# real width, 2 blocks each (its cost table: $(KICK_DIR)/paper-fig3/cost.md)
KICK_DIR ?= kick-the-tires
kick-the-tires: $(VENV)/.installed
	$(MAKE) figures
	$(PY) -m rehearsal.run $(KICK_DIR)/paper-fig3 --config config/paper-weights.yaml --shallow

# the reference pages (CLI, config keys, stores, errors, the claims table) are generated from the code as it builds
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site
	@echo "documentation in site/index.html"

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_modes.py
	$(PY) benchmarks/bench_projections.py --memory
	$(PY) -m qkdissect resolve minilm-l6 > /dev/null
	$(PY) benchmarks/bench_text.py

clean:
	rm -rf results .snakemake site
