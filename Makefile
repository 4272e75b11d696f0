# mailgate: `make run` serves with etc/mailgate.yaml in the foreground,
# `make test` runs the whole test suite. Both set up .venv on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONF ?= etc/mailgate.yaml

.PHONY: run test venv clean

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

clean:
	rm -rf $(VENV) run *.egg-info .pytest_cache
