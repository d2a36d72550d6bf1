# Two commands do all the set-up on a fresh machine:
#   make run    installs what is missing, then trains, evaluates and saves (run_mtl.py) on the bundled encoder
#   make test   installs what is missing, then runs the test suite
# In the edit loop, `make test-fast` runs the fast subset (docs/development.md#tests).
PYTHON ?= python3
# Installed only when no torch is importable. The CPU wheel keeps a fresh set-up small; set TORCH_SPEC=torch
# (or a CUDA build) on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
# The corpus: a local copy when there is one (tests and CI read ../shared), otherwise run_mtl.py downloads it.
DATA_DIR ?= $(wildcard ../shared/data/sentiment_labelled_sentences)
# STS-B dev pairs, when they are beside the checkout: the run also reports the embedding's general similarity.
STS_EVAL_FILE ?= $(wildcard ../shared/data/stsbenchmark/sts-dev.csv)
OUTPUT_DIR ?= output/sentmtl
PYTEST_ARGS ?=
# Extra run_mtl.py flags, e.g. RUN_ARGS=--overwrite_output_dir to train again into the same OUTPUT_DIR.
RUN_ARGS ?=

STAMP := .make/installed

.PHONY: install run embed test test-fast lint format clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -e ".[dev]"
	@mkdir -p $(dir $@) && touch $@

install: $(STAMP)

run: $(STAMP)
	$(PYTHON) run_mtl.py $(if $(DATA_DIR),--data_dir $(DATA_DIR)) $(if $(STS_EVAL_FILE),--sts_eval_file $(STS_EVAL_FILE)) \
		--output_dir $(OUTPUT_DIR) $(RUN_ARGS)

embed: $(STAMP)
	$(PYTHON) run_embed.py

test: $(STAMP)
	$(if $(DATA_DIR),SENTMTL_DATA_DIR=$(abspath $(DATA_DIR))) $(PYTHON) -m pytest $(PYTEST_ARGS)

# The edit loop's subset: the tests beside each module, without tests/e2e/ (subprocesses, two processes, the real
# encoder, whole runs), tests/test_docs.py and the slow, real-encoder and GPU marks; it stops at the first failure.
# `make test` (CI) runs everything.
FAST_ARGS := tests --ignore=tests/e2e --ignore=tests/test_docs.py -m "not slow and not real_encoder and not gpu" -x -q
test-fast: $(STAMP)
	$(if $(DATA_DIR),SENTMTL_DATA_DIR=$(abspath $(DATA_DIR))) $(PYTHON) -m pytest $(FAST_ARGS) $(PYTEST_ARGS)

# ruff, pinned in the dev extra: the formatter's check and the linter (rules in pyproject.toml). CI runs it.
lint: $(STAMP)
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m ruff check .

format: $(STAMP)
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

clean:
	rm -rf .make build *.egg-info .pytest_cache
