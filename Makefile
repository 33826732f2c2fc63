# Single entry point. `make test` is what CI runs (.ci/run); `make demo` is the whole story.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv binaries test unit demo bench clean

venv: $(VENV)/.installed

# Re-installed only when pyproject.toml changes; pip's own cache makes that quick.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Builds etcd, kube-apiserver and kube-controller-manager once (cached in ~/.cache/k8sctl).
binaries: venv
	$(BIN)/k8sctl sandbox binaries

test: binaries
	$(BIN)/pytest -q

unit: venv
	$(BIN)/pytest -q tests/unit

demo: binaries
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

bench: binaries
	$(BIN)/python benchmarks/create_clientconfig.py
	$(BIN)/python benchmarks/reconcile.py

clean:
	rm -rf $(VENV) .pytest_cache
