# registry-service: `make run` serves the embedded default, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install browser run test lint format bench clean

$(STAMP): setup.cfg pyproject.toml
	@echo ">> installing registry-service and its dependencies into $(VENV)"
	@echo ">> (MLflow, scikit-learn, ...: a few minutes on the first run; later runs skip this)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/registry-service db upgrade
	$(BIN)/registry-service tokens bootstrap
	HOST=$(HOST) PORT=$(PORT) $(BIN)/registry-service serve

# The browser tests drive Debian's Chromium (never a browser download of Playwright's).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		echo ">> installing Debian's chromium for the browser tests"; \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; }

# pytest exits 5 when it collected nothing: that is a failure, never a pass.
test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check registry_service tests bench examples

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format registry_service tests bench examples

bench: $(STAMP)
	$(BIN)/python bench/version_latency.py
	$(BIN)/python bench/promotion_latency.py
	$(BIN)/python bench/audit_scale.py
	$(BIN)/python bench/runs_latency.py
	$(BIN)/python bench/read_path.py
	$(BIN)/python bench/serving_latency.py

clean:
	rm -rf $(VENV) .registry .pytest_cache .ruff_cache *.egg-info
