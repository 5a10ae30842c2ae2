# Two commands do all set-up on a fresh machine:
#   make book   -> builds the book into _build/html from the chapters' committed (CI-verified) outputs
#   make test   -> unit tests (papermill parameter injection included); nbval re-executes chapters 1-6 and
#                  checks them against their committed outputs (chapter 7, Flower: make flower)
#   make execute book -> re-executes every chapter in place, then builds the book
#   make browser -> opens every page of the built book in headless Chromium (tests/browser)
# Each creates the virtual environment .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# chapter 7 needs the Flower extra: `make flower` executes and checks it, `make nbval` the others
FLOWER_NOTEBOOKS := notebooks/07_flower.ipynb
CORE_NOTEBOOKS := $(filter-out $(FLOWER_NOTEBOOKS),$(NOTEBOOKS))
export FUHELPERS_PROGRESS ?= 0
# Tests run in WORKERS processes (pytest-xdist, default one per core), each test file or chapter whole in one of
# them. Two chapters side by side each get CORES/WORKERS torch threads: on 2 cores, nbval took 16-17 min this way
# against 27.6 min for one chapter after another at two threads (an AVX2 CPU; small models scale badly over
# threads). WORKERS=0 runs everything in the pytest process.
CORES   := $(shell $(PYTHON) -c "import os; print(os.cpu_count() or 1)")
WORKERS ?= $(CORES)
# $(call share,JOBS): shell code setting $workers (WORKERS, at most JOBS) and $threads (the cores shared out)
share = jobs=$(1); workers=$$(( $(WORKERS) < jobs ? $(WORKERS) : jobs )); \
	threads=$$(( workers > 0 ? $(CORES) / workers : $(CORES) )); [ $$threads -ge 1 ] || threads=1
# Executing a chapter rewrites its record results/<chapter>.json. nbval and smoke only check the chapters, and a
# failed execute adopts nothing: $(call keep,DIR) saves the records before, $(call restore,DIR) puts them back.
keep = rm -rf $(1) && mkdir -p $(1) && cp results/[0-9]*.json $(1)/
restore = cp $(1)/*.json results/

.PHONY: book test unit nbval smoke browser clean execute colab-pin flower

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W --keep-going

test: unit nbval

unit: $(STAMP)
	$(PY) -m pytest -n $(WORKERS) --dist loadfile tests --ignore=tests/flower

# nbval re-executes each committed notebook and compares its text outputs, except in cells tagged
# nbval-ignore-output: those print numbers of seeded training, which depend on the CPU's rounding (another CPU,
# kernel cap or thread count gives other digits). The committed outputs come from the offline data
# (../shared/data); without it the chapters run on embedded data and only execution is checked.
# NBVAL_TESTS: test files run beside the chapters (make flower).
nbval: $(STAMP)
	@$(call keep,_build/kept-nbval); \
	if $(PY) -c "import sys; from fuhelpers.data import available_datasets; sys.exit('mnist' not in available_datasets(present_only=True))"; then \
	  mode=--nbval; \
	else \
	  mode=--nbval-lax; \
	  echo "NOTE: offline MNIST not found: notebooks run on embedded data; nbval checks execution only (--nbval-lax)."; \
	fi; \
	$(call share,$(words $(CORE_NOTEBOOKS) $(NBVAL_TESTS))); \
	echo "nbval: $$jobs files in $$workers workers, $$threads torch threads each"; \
	FUHELPERS_THREADS=$${FUHELPERS_THREADS:-$$threads} $(PY) -m pytest $$mode -n $$workers --dist loadfile \
	  --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider $(CORE_NOTEBOOKS) \
	  $(NBVAL_TESTS); status=$$?; $(call restore,_build/kept-nbval); exit $$status

# papermill runs each notebook with scale="smoke" injected (the switch readers use for full runs). Not part of
# `make test`: on a CPU it executes exactly what nbval executes; tests/test_notebooks.py checks the injection.
smoke: $(STAMP)
	rm -rf _build/papermill && mkdir -p _build/papermill
	@$(call keep,_build/kept-smoke); $(call share,$(words $(NOTEBOOKS))); \
	echo "smoke: $$jobs chapters in $$workers processes, $$threads torch threads each"; \
	printf '%s\n' $(NOTEBOOKS) | FUHELPERS_THREADS=$${FUHELPERS_THREADS:-$$threads} xargs -P $$(( workers > 0 ? workers : 1 )) \
	  -I NB sh -c '$(VENV)/bin/papermill --no-progress-bar -p scale smoke NB _build/papermill/$$(basename NB)'; \
	status=$$?; $(call restore,_build/kept-smoke); exit $$status

# Every page of _toc.yml in headless Chromium, served from _build/html by a local server: pages load offline,
# MathJax typesets every formula, images and internal links resolve, no traceback is shown. Needs `chromium`
# (Debian: apt-get install chromium; or CHROMIUM=/path). Screenshots: _build/screenshots/. Builds the book first
# only when there is none.
browser: $(STAMP)
	@test -f _build/html/index.html || $(MAKE) book
	$(PY) -m pytest -p no:cacheprovider tests/browser

# Re-execute the committed notebooks at smoke scale (after editing a chapter). Each runs on a copy in
# _build/executed, and the copies replace the chapters only when all have run: a chapter's record then names
# a clean commit (an executed chapter in the tree would make the next chapter's provenance "-dirty").
# They run side by side, as under nbval (WORKERS processes, the cores shared out among them).
execute: $(STAMP)
	rm -rf _build/executed && mkdir -p _build/executed && cp $(NOTEBOOKS) _build/executed/
	@$(call keep,_build/kept-execute); $(call share,$(words $(NOTEBOOKS))); \
	echo "execute: $$jobs chapters in $$workers processes, $$threads torch threads each"; \
	printf '%s\n' $(addprefix _build/executed/,$(notdir $(NOTEBOOKS))) | FUHELPERS_THREADS=$${FUHELPERS_THREADS:-$$threads} \
	  xargs -n 1 -P $$(( workers > 0 ? workers : 1 )) $(VENV)/bin/jupyter execute --inplace --timeout=900 \
	  || { $(call restore,_build/kept-execute); echo "execute: a chapter failed: no chapter or record replaced"; exit 1; }
	cp _build/executed/*.ipynb notebooks/

# The Flower adapter (fuhelpers.flower): installs the extra into the same environment (torch pinned in the same
# pip call), then checks that Flower's simulation gives the in-process weights and that a loopback deployment
# serves an unlearning request. Part of CI (.ci/run), not of `make test`.
FLOWER_STAMP := $(VENV)/.flower-installed
$(FLOWER_STAMP): $(STAMP) requirements-flower.txt
	$(PY) -m pip install -q -r requirements.txt -r requirements-flower.txt
	touch $(FLOWER_STAMP)

flower: $(FLOWER_STAMP)
	$(MAKE) nbval CORE_NOTEBOOKS="$(FLOWER_NOTEBOOKS)" NBVAL_TESTS=tests/flower   # chapter 7 beside the tests

# Pin the package revision the chapters install on Colab to the current commit (commit the package first, then
# commit what this rewrites: pyproject.toml and the chapters' setup cells). See book/colab.py.
colab-pin: $(STAMP)
	$(PY) book/colab.py --pin

# Throughput of FedAvg on full Fashion-MNIST (10 IID clients x 6000, MnistCNN, batch 32): plain PyTorch fp32 vs
# fl.train fp32 vs fl.train bf16 vs bf16 with the clients in worker processes (ClientProcesses), alternating,
# plus the matmul peak and accuracy over 3 seeds.
# Needs the offline Fashion-MNIST and an idle machine; a few minutes on 2 cores. Options: BENCH_ARGS="--rounds 2
# --repeats 5 --threads 2" (or --quick for a seconds-long smoke check). Not part of `make test`.
.PHONY: bench
bench: $(STAMP)
	$(PY) benchmarks/fedavg_throughput.py $(BENCH_ARGS)

# Many small models (<= 50k parameters, 16 and 32 of them): fl.train's clients in turn against BatchedClients.
.PHONY: bench-batched
bench-batched: $(STAMP)
	$(PY) benchmarks/batched_clients.py $(BENCH_ARGS)

clean:
	rm -rf _build
