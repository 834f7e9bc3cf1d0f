# Every target creates .venv when it is missing and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run serve simulate lab lite lite-serve test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-lab: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[lab]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-test: pyproject.toml lite/requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,lab,sweep,redis]' -r lite/requirements.txt
	touch $@ $(VENV)/.installed $(VENV)/.installed-lab $(VENV)/.installed-lite

# The lab extra brings the JupyterLab extensions (plotly, ipywidgets, anywidget) the site copies.
$(VENV)/.installed-lite: pyproject.toml lite/requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[lab]' -r lite/requirements.txt
	touch $@ $(VENV)/.installed $(VENV)/.installed-lab

$(VENV)/.installed-bench: pyproject.toml lite/requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench,redis,lab]' -r lite/requirements.txt
	touch $@ $(VENV)/.installed $(VENV)/.installed-lab $(VENV)/.installed-lite

run: $(VENV)/.installed
	$(BIN)/gwlab run $(ARGS)

serve: $(VENV)/.installed
	$(BIN)/gwlab serve $(ARGS)

simulate: $(VENV)/.installed
	$(BIN)/gwlab simulate $(ARGS)

# JupyterLab refuses to run as root without --allow-root; containers often run as root.
lab: $(VENV)/.installed-lab
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

# The browser site (JupyterLite on Pyodide) of the notebooks, in build/lite: Pyodide and every
# wheel served by the site itself. What it downloads (npm's pyodide, the wheels) stays in
# build/lite-cache, so a rebuild is offline. lite-serve serves it on 127.0.0.1 (a free port, or
# LITE_PORT), building it first when it is older than its inputs, and prints the URL.
LITE_PORT ?= 0
lite: $(VENV)/.installed-lite
	$(BIN)/python -m lite.build $(ARGS)

lite-serve: $(VENV)/.installed-lite
	$(BIN)/python -m lite.build --if-stale
	$(BIN)/python -m lite.serve --port $(LITE_PORT) $(ARGS)

# The tests run in two processes at once, one core each: the tests that drive other processes
# (a browser, the benchmarks' servers, the command line, the replicas), and the rest, whose
# output comes first. The notebooks follow the rest as soon as it ends, beside the first
# process's tests: under nbval in strict mode (every output not marked NBVAL_IGNORE_OUTPUT must
# come out the same as the committed one), NOTEBOOK_WORKERS at a time, each in a kernel of its
# own and mostly waiting on its live lab. (pytest-xdist's workers run the tests at a stack
# depth that makes CPython 3.11 map and unmap a frame chunk on every call of some hot loops,
# several times slower: hence two plain processes.) ARGS go to every run; a run that ARGS
# leave without tests (pytest's exit status 5) is not a failure.
NOTEBOOK_WORKERS ?= 3
PROCESS_TESTS := tests/test_browser.py tests/test_lite.py tests/test_benchmarks.py tests/test_cli.py tests/test_replicas.py
test: $(VENV)/.installed-test
	@mkdir -p build; status=0; \
	$(BIN)/python -m pytest -rs --durations=5 $(PROCESS_TESTS) $(ARGS) > build/process-tests.log 2>&1 & \
	process_tests=$$!; \
	$(BIN)/python -m pytest -rs --durations=15 tests $(PROCESS_TESTS:%=--ignore=%) $(ARGS) || [ $$? -eq 5 ] || status=1; \
	$(BIN)/python -m pytest -rs -n $(NOTEBOOK_WORKERS) --dist loadfile --nbval \
		--nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks $(ARGS) || [ $$? -eq 5 ] || status=1; \
	wait $$process_tests || [ $$? -eq 5 ] || status=1; \
	cat build/process-tests.log; \
	exit $$status

# Measurements side by side with a bare aiohttp server (needs Debian's wrk, valgrind and
# redis-server; the browser site's rows chromium and npm); writes
# benchmarks/results.json. ARGS="--smoke" runs each once at a tiny size.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
