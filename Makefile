# Trellis: `make run` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: uv install run test lint bench clean

uv:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@command -v $(UV) >/dev/null 2>&1 || { echo "uv could not be installed"; exit 1; }

install: uv
	$(UV) sync --frozen

# The service on SQLite with the bundled examples registered, plus the examples' fake agents,
# services and model (loopback :9100 and :9101, stopped with the service).
run: install
	@mkdir -p .trellis
	@$(UV) run python examples/agents.py > .trellis/example-services.log 2>&1 & pid=$$!; \
	trap "kill $$pid 2>/dev/null" EXIT INT TERM; \
	echo "example agents and model: pid $$pid (log: .trellis/example-services.log)"; \
	$(UV) run trellis --config examples/trellis.toml serve --host $(HOST) --port $(PORT) --examples

lint: install
	$(UV) run ruff check src tests benchmarks examples
	$(UV) run ruff format --check src tests benchmarks examples
	$(UV) run mypy
	$(UV) run mypy benchmarks examples

test: lint
	$(UV) run pytest

bench: install
	$(UV) run python -m benchmarks

clean:
	rm -rf .trellis .pytest_cache .mypy_cache .ruff_cache
