# The two commands: `make dev` runs durapod locally with a demo; `make test` runs every check.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp

.PHONY: setup dev test lint crds chart clean bench soak

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh scripts/install_kube_tools.py
	bash scripts/setup.sh
	touch $@

dev: setup
	$(BIN)/durapod dev --demo

lint: setup
	$(BIN)/ruff check durapod tests examples scripts benchmarks
	$(BIN)/ruff format --check durapod tests examples scripts benchmarks
	$(BIN)/mypy durapod
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -n 2 --dist loadfile

# The CRDs, and the chart's copies of them and of durapod/permissions.py's RBAC rules.
crds: setup
	$(BIN)/durapod crds --output-dir crds
	$(BIN)/python -m durapod.chart helm/durapod

chart: setup
	$(BIN)/python -m durapod.chart helm/durapod

clean:
	rm -rf $(VENV) .durapod .pytest_cache .mypy_cache .ruff_cache

bench: setup
	$(BIN)/python benchmarks/checkpoint_path.py
	$(BIN)/python benchmarks/standin_memory.py

# The chaos soak's long mode (a bounded run is part of `make test`); SEED=N replays one.
soak: setup
	$(BIN)/python benchmarks/soak.py --runs 300 $(if $(SEED),--seed $(SEED))
