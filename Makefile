# The two commands of the README: `make up` and `make test`. Each sets up what it needs first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# A real interpreter, not a pyenv shim: venvs made from it start fast.
SYSPY  ?= $(shell command -v /usr/bin/python3 || command -v python3)

.PHONY: up test setup system test-system clean

up: setup
	$(VENV)/bin/pysup up -f examples/compose/demo.yaml

# The cgroup v2 tests run in a VM when this host is not v2 (scripts/test-cgroup2-vm.sh says SKIP
# with the reason where no VM can start); then the whole suite on the host.
test: setup test-system
	bash scripts/test-cgroup2-vm.sh
	$(PY) -m pytest -q

setup: system $(STAMP)

system:
	@bash scripts/install-system.sh

test-system:
	@bash scripts/install-system.sh --test

$(STAMP): pyproject.toml
	test -x $(PY) || $(SYSPY) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV)
