# The README's two Quick-start commands: `make train` and `make test`.
# Each creates .venv and (re)installs the package when it is missing or
# setup.py changed, so both work on a fresh clone.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GIN_FILE ?= gin/nin_cifar10.gin
MODEL_DIR ?= runs/nin_cifar10
# The offline CIFAR-10 copy, when this machine has one: make train then
# prepares data/cifar10 from it instead of downloading through TFDS.
OFFLINE_CIFAR10 ?= ../shared/data/cifar10-jpg.tar.gz
DATA_SOURCE ?= $(if $(findstring cifar100,$(GIN_FILE))$(findstring svhn,$(GIN_FILE)),,$(wildcard $(OFFLINE_CIFAR10)))
# pytest-xdist workers; TF already uses both cores inside each test, so two
# workers mostly overlap Python and I/O time. --dist=loadgroup keeps the
# tests that share one expensive run (marked xdist_group) on one worker.
TEST_WORKERS ?= 2

.PHONY: train test venv clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[tf,fit,test,reports]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m normprop_tf.train --gin_file=$(GIN_FILE) --model_dir=$(MODEL_DIR) \
	    $(if $(DATA_SOURCE),--gin_bindings="dataset.source = '$(DATA_SOURCE)'")

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist=loadgroup tests

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
