# Two commands matter: `make demo` and `make test`. Both create .venv when it is missing and
# install torch *before* anything that depends on it, so that pip takes the pinned CPU wheel
# instead of resolving an unpinned torch to a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# The stamp names the torch spec, so `make test TORCH=torch==2.5.1` reinstalls once and a
# second run with the same spec reinstalls nothing.
STAMP := $(VENV)/.installed-$(subst =,_,$(subst <,_,$(subst >,_,$(TORCH))))

MLFLOW_PORT ?= 5000
# Test processes: one per core by default (make test TEST_WORKERS=0 runs in this process).
TEST_WORKERS ?= auto

.PHONY: install demo test lint format clean help mlflow-server bench bench-quick bench-report java chromium
# root runs apt-get itself; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

help:
	@echo "make demo   - install, generate demo data, train/calibrate/evaluate/score, log to MLflow"
	@echo "make test   - install what is missing and run the whole test suite"
	@echo "make lint   - ruff check and ruff format --check"
	@echo "make bench  - quality and speed of each model on ../shared/data/magnetic_tile (bench-quick: a smoke run)"
	@echo "make format - ruff format and ruff check --fix"
	@echo "make mlflow-server - MLflow tracking server on 127.0.0.1:$(MLFLOW_PORT) (store in mlruns-server/)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install --quiet -e ".[test,pretrained]"
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/anomaly demo

# Whole test files go to one worker each (--dist loadfile), so a module's trained model or
# MLflow server is made once.
test: $(STAMP) java chromium
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The Spark test needs a Java runtime (17+); Debian's default one when none is installed.
java:
	@command -v java >/dev/null 2>&1 || { \
		echo "installing a Java runtime for the Spark tests (default-jre-headless)"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends default-jre-headless; }

# The report's browser tests read it with Debian's Chromium (Playwright drives that
# executable and never downloads a browser of its own).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Chromium for the report's browser tests (chromium)"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

# Quality and speed on ../shared/data/magnetic_tile (results in bench/, git-ignored), then
# the default recipe and the tuned draem on KolektorSDD and on the demo's data: a table
# per data set (bench/kolektorsdd/results.md, bench/demo/results.md).
bench: $(STAMP)
	$(BIN)/anomaly bench
	$(BIN)/anomaly bench data_root=../shared/data/kolektorsdd output=bench/kolektorsdd \
		'only=[default,draem]' 'speed_sizes=[]' lineage_images=0
	$(BIN)/python -c "from anomaly.data.demo import make_demo_dataset as m; m('data/demo')"
	$(BIN)/anomaly bench data_root=data/demo output=bench/demo \
		'only=[default,draem]' 'speed_sizes=[]' lineage_images=0
	$(MAKE) bench-report

# The report's size, build time and first page in Chromium: Magnetic Tile's 583 scored test
# images (from the bench above) and a synthetic batch of 10 000 (bench/report/results.md).
bench-report: $(STAMP) chromium
	$(BIN)/python -m anomaly.report.bench --synthetic 10000 --output bench/report \
		$(if $(wildcard bench/runs/default/score/scores.csv),--folder bench/runs/default/score \
		--screenshot bench/report/magnetic_tile.png)

bench-quick: $(STAMP)
	$(BIN)/anomaly bench --quick

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# A real tracking server on loopback: SQLite backend and artifact store inside the project.
# Point runs at it with tracking.uri=http://127.0.0.1:$(MLFLOW_PORT).
# Without MLflow's GenAI job runner: seven extra processes that nothing here uses.
mlflow-server: $(STAMP)
	mkdir -p mlruns-server/artifacts
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) \
		--backend-store-uri sqlite:///$(CURDIR)/mlruns-server/mlflow.db \
		--artifacts-destination $(CURDIR)/mlruns-server/artifacts

clean:
	rm -rf outputs mlruns data/demo .pytest_cache dist build
