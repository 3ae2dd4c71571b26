# chromasnap — the two commands a new user needs: `make demo` and `make test`.
# Everything else is installed on demand: a virtualenv with pinned Python deps
# (.venv) and Go-built infrastructure binaries in $(CACHE)/bin (outside the repo).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(or $(CHROMASNAP_CACHE),$(HOME)/.cache/chromasnap)
export CHROMASNAP_CACHE := $(CACHE)
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv tools lint unit test demo dev bench soak cluster-up cluster-down \
        kind-up kind-e2e kind-down image clean

help:
	@echo "make demo   - run the whole loop locally (no cluster, no cloud account)"
	@echo "make test   - lint, type-check and run all tests against real MinIO and kube-apiserver"
	@echo "make bench  - benchmarks vs. peers; writes docs/benchmarks.{md,json}"
	@echo "make soak   - an hour of churn through real processes beside chroma run (SOAK_ARGS=--faults)"
	@echo "make dev    - writer + compactor + reader on a local bucket, for chromadb.HttpClient"
	@echo "make cluster-up / cluster-down - a real local control plane (kube-apiserver, etcd, kwok)"
	@echo "make kind-up / kind-e2e / kind-down - a kind cluster with the real image (Docker is installed if missing)"
	@echo "make image - build the chromasnap image offline (images/Dockerfile on a local Debian base)"

$(STAMP): pyproject.toml requirements.lock
	@echo "==> creating virtualenv $(VENV) with pinned dependencies"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --progress-bar on -c requirements.lock -e '.[dev]'
	@touch $@

venv: $(STAMP)

tools:
	@bash hack/build-tools.sh test

lint: $(STAMP)
	@echo "==> ruff"
	@$(VENV)/bin/ruff check operator tests hack benchmarks
	@echo "==> mypy --strict operator/"
	@$(VENV)/bin/mypy

unit: $(STAMP)
	@$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

# Everything, the kind end-to-end tests included: hack/test.sh installs the system
# packages once, builds the Go binaries and images in the background while the venv,
# lint and the unit tests run, and prints the wall time of every step at the end.
test:
	@bash hack/test.sh

demo: $(STAMP)
	@$(VENV)/bin/chromasnap demo

dev: $(STAMP)
	@$(VENV)/bin/chromasnap dev

bench: $(STAMP) tools
	@$(PY) -m benchmarks.run

# Not part of `make test`: an hour by default (SOAK_ARGS="--minutes 15 --faults" for less).
SOAK_ARGS ?=
soak: $(STAMP)
	@bash hack/build-tools.sh minio
	@$(PY) -m benchmarks.soak $(SOAK_ARGS)

cluster-up: $(STAMP) tools
	@$(PY) hack/cluster.py up --dir .cache/cluster

cluster-down: $(STAMP)
	@$(PY) hack/cluster.py down --dir .cache/cluster

# kind: Docker (installed and started if missing), the image, an offline kind node image,
# a cluster with MinIO; kind-up also installs the CRDs and the chart as the README says.
# kind-e2e runs tests/e2e on it (creating what is missing; it deletes a cluster it created).
kind-up kind-e2e kind-down: $(STAMP)
	@bash hack/kind.sh $(patsubst kind-%,%,$@)

# The chromasnap image, built offline on a local Debian base (hack/kind-images.sh).
image:
	@bash hack/kind-images.sh chromasnap

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
