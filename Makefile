# The two commands a new user needs (see README): `make quickstart` and `make test`.
PYTHON ?= python3
STAMP := .install-stamp

.PHONY: setup test quickstart reproduce

$(STAMP): scripts/setup.sh pyproject.toml
	PYTHON=$(PYTHON) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PYTHON) -m pytest -q

quickstart: setup
	bench quickstart --jobs 2

reproduce: setup
	bench reproduce --profile mini --jobs 2
