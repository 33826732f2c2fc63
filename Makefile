# Single entry point. `make test` is what CI runs (.ci/run); `make demo` is the whole story.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv binaries lint test unit demo demo-operator bench clean

venv: $(VENV)/.installed

# Re-installed only when pyproject.toml changes; pip's own cache makes that quick.
# Both distributions, editable: the CLI (k8sctl) and its test bed (k8sctl-sandbox, in sandbox/).
$(VENV)/.installed: pyproject.toml sandbox/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' -e ./sandbox
	touch $@

# Builds etcd, kube-apiserver and kube-controller-manager once (cached in ~/.cache/k8sctl).
binaries: venv
	$(BIN)/k8sctl sandbox binaries

# ruff (pyflakes, bugbear, import order) and mypy: part of `make test`, so of CI.
lint: venv
	$(BIN)/ruff check k8sctl sandbox tests benchmarks hack
	$(BIN)/mypy k8sctl sandbox/k8sctl_sandbox

test: binaries lint
	$(BIN)/pytest -q

unit: venv
	$(BIN)/pytest -q tests/unit

demo: binaries
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

# The real k8ssandra-operator (built from ../shared/upstream/k8ssandra-operator) beside k8sctl.
demo-operator: binaries
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo-operator.sh

bench: binaries
	$(BIN)/python benchmarks/create_clientconfig.py
	$(BIN)/python benchmarks/reconcile.py
	$(BIN)/python benchmarks/clientconfig_lifecycle.py

clean:
	rm -rf $(VENV) .pytest_cache
