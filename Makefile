# mailgate: `make run` serves with etc/mailgate.yaml in the foreground,
# `make test` runs the whole test suite. Both set up .venv on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONF ?= etc/mailgate.yaml
DEB_OUT ?= packaging/dist

.PHONY: run test venv clean deb ci-debian

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

clean:
	rm -rf $(VENV) run *.egg-info .pytest_cache packaging/dist
