# Set-up and checks. `make demo` and `make test` are the two commands a new user needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-napari docs bench lint clean

install: $(VENV)/.installed

# torch==2.13.0 first: any other torch request would download a multi-GB CUDA build
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(BIN)/attention-unet demo

test: install
	$(BIN)/python -m pytest -q

# the napari plugin's tests: the optional extra, and a virtual display (Debian: xvfb, libgl1-mesa-dri)
test-napari: install
	$(BIN)/pip install --quiet -e ".[napari]" "pytest-qt>=4.4"
	xvfb-run -a $(BIN)/python -m pytest -q tests/test_napari.py

# the docs site (offline, every link and reference checked) and the tutorial notebook, executed
docs: install
	$(BIN)/pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
	$(BIN)/python -m pytest -q --nbmake examples/ -o addopts=""

bench: install
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench.py

lint: install
	$(BIN)/pip install --quiet "ruff>=0.4"
	$(BIN)/ruff check src tests tools benchmarks
	$(BIN)/ruff format --check src tests tools benchmarks

clean:
	rm -rf $(VENV) runs evaluation .pytest_cache
