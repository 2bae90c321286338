# Trellis: `make run` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
HOST ?= 127.0.0.1
PORT ?= 8000
SIM_PORT ?= 9200

.PHONY: uv install run test lint bench clean chromium

uv:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@command -v $(UV) >/dev/null 2>&1 || { echo "uv could not be installed"; exit 1; }

# Bytecode is compiled at install time, for the dependencies and for Trellis itself: where
# PYTHONDONTWRITEBYTECODE is set (as on some CI machines), Python would otherwise compile every
# module from source on every start, and a CLI command took seconds longer to start.
install: uv
	$(UV) sync --frozen --compile-bytecode
	$(UV) run --frozen python -m compileall -q src

# The service on SQLite with the bundled examples registered, plus the examples' fake agents,
# services and model (loopback :9100 and :9101), and a SIMULATED fleet of four vLLM-like
# instances for the performance agent (loopback :$(SIM_PORT)..+3), all stopped with the service.
run: install
	@mkdir -p .trellis
	@$(UV) run python examples/agents.py > .trellis/example-services.log 2>&1 & pid=$$!; \
	$(UV) run python -m trellis.workflows.performance.simulator --instances 4 --server vllm \
		--port-base $(SIM_PORT) > .trellis/simulator.log 2>&1 & sim=$$!; \
	trap "kill $$pid $$sim 2>/dev/null" EXIT INT TERM; \
	echo "example agents and model: pid $$pid (log: .trellis/example-services.log)"; \
	echo "simulated vLLM fleet on :$(SIM_PORT)-$$(( $(SIM_PORT) + 3 )): pid $$sim (log: .trellis/simulator.log)"; \
	$(UV) run trellis --config examples/trellis.toml serve --host $(HOST) --port $(PORT) --examples

lint: install
	$(UV) run ruff check src tests benchmarks examples
	$(UV) run ruff format --check src tests benchmarks examples
	$(UV) run mypy
	$(UV) run mypy benchmarks examples

# Debian's headless Chromium for the dashboard's browser tests (tests/test_ui_browser.py; as
# root, no sudo). Playwright drives it by path: `playwright install` is never used.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }

test: lint chromium
	$(UV) run pytest

bench: install
	$(UV) run python -m benchmarks

clean:
	rm -rf .trellis .pytest_cache .mypy_cache .ruff_cache
