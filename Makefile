# mailgate: `make run` serves with etc/mailgate.yaml in the foreground,
# `make test` runs the whole test suite. Both set up .venv on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONF ?= etc/mailgate.yaml
DEB_OUT ?= packaging/dist

.PHONY: run test venv clean deb ci-debian bench bench-quick

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv
	mkdir -p run
	$(PY) -m mailgate -c $(CONF) start --foreground

test: venv
	$(PY) -m pytest

# The Debian package (bookworm): build it, or build, lint, install, run and
# purge it as CI does (as root).
deb:
	packaging/build-deb.sh $(DEB_OUT)

ci-debian:
	packaging/ci-debian.sh

# Benchmarks against nginx's mail proxy (bench/README.md); not part of test or CI.
bench: venv
	bench/setup.sh
	$(PY) bench/run.py --out bench/results/latest.json

bench-quick: venv
	bench/setup.sh
	$(PY) bench/run.py --quick --out bench/results/quick.json

clean:
	rm -rf $(VENV) run *.egg-info .pytest_cache packaging/dist
