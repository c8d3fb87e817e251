PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install benchmark clean

# Create the virtual environment and install the package with every test dependency.
$(STAMP): pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/landmark-retrieval demo

test: $(STAMP)
	$(BIN)/python -m pytest

benchmark: $(STAMP)
	$(BIN)/python benchmarks/run_benchmarks.py

clean:
	rm -rf $(VENV) data/demo work submission/*.csv submission/*.png

# Wheels for an offline install on Kaggle (upload the folder as the dataset
# "landmark-retrieval-wheels"; see docs/kaggle.md). Only what Kaggle's image lacks: this package,
# pydegensac (+ faiss-cpu with KAGGLE_WHEEL_ARGS=--faiss); never TensorFlow, OpenCV, numpy, ...
# Target another Python with e.g. KAGGLE_WHEEL_ARGS="--python-version 3.10".
WHEELHOUSE ?= wheelhouse/kaggle
KAGGLE_WHEEL_ARGS ?=
.PHONY: kaggle-wheels
kaggle-wheels: $(STAMP)
	$(BIN)/landmark-retrieval wheelhouse $(WHEELHOUSE) $(KAGGLE_WHEEL_ARGS)
