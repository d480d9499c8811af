# edgeloop — the two commands: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= sim,edge,plant,trainer,dev,console

.PHONY: demo demo-secure demo-signals test setup system-deps tools lint format bench clean lock pi-check

demo: setup  ## broker + trainer + pi_edge + simulator + dashboards, in tmux
	$(BIN)/python -m scripts.demo

demo-secure: setup  ## the same in the secure profile: TLS only, one identity per device, the ACL
	$(BIN)/python -m scripts.demo --secure

demo-signals: setup  ## the same with per-signal readings (deploy/signals*.example.toml), 4 machines and 2 fans
	$(BIN)/python -m scripts.demo --signals

test: setup  ## lint and type-check, then the whole test suite against a private Mosquitto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile  # two workers, one test file each: 2 cores

setup: $(STAMP) system-deps tools

tools: $(STAMP) system-deps  ## Home Assistant, Prometheus, Node-RED for the tests: once per machine, in ~/.cache/edgeloop/tools
	$(BIN)/python -m scripts.tools

system-deps:
	@bash scripts/system_deps.sh
	@test -d tests/tools/sparkplug/node_modules || npm ci --prefix tests/tools/sparkplug --no-audit --no-fund  # the tests' independent Sparkplug decoder
	@test -d tests/tools/plant/node_modules || npm ci --prefix tests/tools/plant --no-audit --no-fund  # node-opcua's OPC UA and modbus-serial's Modbus TCP servers for the source tests

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found; install Python 3.11 (apt-get install python3.11 python3.11-venv)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23.2"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

format:
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: setup  ## the whole benchmark suite (< 15 min on 2 cores) → bench/results.md + bench/plots/
	$(BIN)/python -m bench

pi-check: $(STAMP)  ## the README's Pi install on arm64 and armhf Debian roots, pi_edge emulated as a Pi's CPU (root; not in `make test`)
	$(BIN)/python -m scripts.pi_check $(PI_CHECK_ARGS)

lock:  ## refresh constraints.txt from the current venv
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
