# tf-on-flink: `make run` (demo) and `make test` (whole suite) set up everything they need first.
PYTHON ?= python3
VENV ?= .venv
TRAIN_VENV ?= .venv-train
PY := $(VENV)/bin/python
TRAIN_PY := $(TRAIN_VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-train run test test-fast train zoo bundle bench bench-quick lint typecheck clean

setup: $(VENV)/.installed model/node_modules/.package-lock.json

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

model/node_modules/.package-lock.json: model/package.json model/package-lock.json
	cd model && npm ci --no-audit --no-fund

# The train extra lives in its own venv: TensorFlow's pins clash with apache-beam's (pulled in by PyFlink).
# Its requirement list is read from pyproject.toml so there is one place that pins it.
setup-train: $(TRAIN_VENV)/.installed

$(TRAIN_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TRAIN_VENV)
	$(PYTHON) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['train']))" > $(TRAIN_VENV)/requirements-train.txt
	$(TRAIN_VENV)/bin/pip install --quiet -r $(TRAIN_VENV)/requirements-train.txt
	touch $@

run: setup
	$(PY) -m job

test: setup setup-train
	TRAIN_PYTHON=$(abspath $(TRAIN_PY)) $(PY) -m pytest $(PYTEST_ARGS)

# Everything but the Keras path (no TensorFlow needed).
test-fast: setup
	$(PY) -m pytest -m 'not train' $(PYTEST_ARGS)

# Regenerate the committed example models: wine/v1, v2, the penguins and the zoo (model/examples/).
train: setup-train
	$(TRAIN_PY) model/train.py
	$(TRAIN_PY) model/train_penguins.py
	$(TRAIN_PY) model/zoo.py

# Regenerate the committed model zoo (model/examples/zoo): one small Keras model per activation and layer
# type the fast-path kernels cover, and two they do not (tests/model/test_zoo.py, bench/zoo.py).
zoo: setup-train
	$(TRAIN_PY) model/zoo.py

# Build a bundle store: make bundle MODEL=model/examples/wine/v2 OUT=build/wine
MODEL ?= model/examples/wine/v2
OUT ?= build/wine
bundle: setup
	cd model && node build.mjs $(abspath $(MODEL)) $(abspath $(OUT))

# Every benchmark side by side (<= 15 min on 2 cores): bench/results/latest.{json,md} + plots.
bench: setup setup-train
	TRAIN_PYTHON=$(abspath $(TRAIN_PY)) $(PY) bench/run.py

# The same, smaller (<= 3 min): every key, soak of 1 minute.
bench-quick: setup setup-train
	TRAIN_PYTHON=$(abspath $(TRAIN_PY)) $(PY) bench/run.py --quick

lint: setup
	$(VENV)/bin/ruff check reloader job server model tests bench
	$(VENV)/bin/ruff format --check reloader job server model tests bench

typecheck: setup
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(TRAIN_VENV) model/node_modules build .pytest_cache
