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
# Each pass runs on TEST_WORKERS pytest-xdist workers: most tests wait on servers, pilots and
# daemons rather than compute, so more workers than cores pays; `--dist loadgroup` keeps the tests
# of one Slurm cluster, Grid Engine cell or sshd on one worker (tests/conftest.py).
# compileall first: where PYTHONDONTWRITEBYTECODE is set, every server, pilot and command the
# tests start would otherwise compile p3s from source again.
TEST_WORKERS ?= 4
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup
test: install system
	$(BIN)/python -m compileall -q p3s backends fleet web tests >/dev/null
	$(PYTEST); first=$$?; P3S_TEST_DB=wire $(PYTEST); second=$$?; exit $$(( first || second ))

bench: install
	$(BIN)/python bench/broker.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/floor.py
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/freshness.py --quick
	$(BIN)/python bench/control.py
	$(BIN)/python bench/mongo.py

clean:
	rm -rf $(VENV) build *.egg-info
