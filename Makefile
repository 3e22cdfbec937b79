# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv and install p3s into it first (and, as later parts need them, Debian packages).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install system demo test bench clean

install: $(VENV)/.installed

system:
	bin/install-system-packages

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/p3s-demo

# The suite twice: on the embedded store, then over pymongo against the MongoDB wire-protocol
# server that tests/conftest.py starts (tests/wire_server.py).
# Both passes run whatever the first gave; the target fails if either did.
test: install system
	$(BIN)/pytest; first=$$?; P3S_TEST_DB=wire $(BIN)/pytest; second=$$?; exit $$(( first || second ))

bench: install
	$(BIN)/python bench/broker.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/floor.py
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/freshness.py --quick
	$(BIN)/python bench/control.py

clean:
	rm -rf $(VENV) build *.egg-info
