# SPANet2 — everything installs into .venv; torch is pinned first (a local CPU wheel),
# so pip never resolves a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed
EXTRAS ?= dev,pythia,exact

.PHONY: install demo medium test test-fast bench lint clean slurm-deps chromium-deps

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/spanet2 study configs/study/demo.yaml --output runs/demo

# the medium study: sized to rank the methods (pairing σ ≤ 0.01 at κλ −5/1/5, AUC σ ≤ 0.005); ≈ 2 h on 2 cores
medium: $(STAMP)
	$(BIN)/spanet2 study configs/study/medium.yaml --output runs/medium

test: $(STAMP) slurm-deps chromium-deps
	$(BIN)/python -m pytest -q

# Best effort: the SLURM tests (sbatch slurm/*.sh on a one-node cluster) need slurm-wlm + munge; as root with
# apt they are installed, otherwise those tests skip with the reason. Never fails.
slurm-deps:
	@if command -v sbatch >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge) >/dev/null 2>&1 \
	    && echo "slurm-deps: installed slurm-wlm munge" \
	    || echo "slurm-deps: apt-get install slurm-wlm munge failed; SLURM tests will skip"; \
	else echo "slurm-deps: not root or no apt-get; SLURM tests will skip"; fi

# Best effort: the report.html test opens the page in headless Chromium; as root with apt it is installed,
# otherwise that test skips with the reason. Never fails.
chromium-deps:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) >/dev/null 2>&1 \
	    && echo "chromium-deps: installed chromium" \
	    || echo "chromium-deps: apt-get install chromium failed; the report.html browser test will skip"; \
	else echo "chromium-deps: not root or no apt-get; the report.html browser test will skip"; fi

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not slurm"

bench: $(STAMP)
	for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done  # _*.py: helpers

lint: $(STAMP)
	$(BIN)/ruff check spanet2 tests benchmarks
	$(BIN)/ruff format --check spanet2 tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
