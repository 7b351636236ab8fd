# Two commands on a fresh machine: `make repro` (the default pipeline) and `make test` (the test suite).
# Both create .venv from the pinned requirements when it is missing or older than requirements.txt.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
# Stage commands call `python` and `dvc`: run them from the venv.
RUN := PATH="$(BIN):$$PATH"

.PHONY: repro compress cohort test data-fashion-mnist room compare compare-ablation compare-distill compare-token compare-cohort bench bench-steps bench-dvc bench-repro travel bench-gpu bench-memory clean-venv

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

# The DVC stage `check` validates params.yaml and its data first in every repro; pipeline.tools.check runs the same
# checks before DVC reads params.yaml at all, so a file DVC cannot parse (a duplicate key) gets our one line too.
# The default pipeline: the continual branch, E0 to `evaluate`. Each other branch has a target of its own, since
# the three together took 663 s from a fresh clone, past the 10-minute budget (metrics/bench_repro.json's stages):
# `make compress` (the compression branch, 4 minutes) and `make cohort` (its networks need about 48 epochs to be a
# model at all: 4 gave 34.6 and 16.5 %).
repro: $(STAMP)
	$(RUN) python -m pipeline.tools.check
	$(RUN) dvc repro evaluate

# The compression branch: target -> teacher -> distill (distill.method's student), and student_alone beside it:
# models/student, metrics/distill.json, metrics/student_alone.json
compress: $(STAMP)
	$(RUN) python -m pipeline.tools.check
	$(RUN) dvc repro student_alone distill

# Online distillation's cohort (stage `cohort`, cohort.method on cohort.networks) on the target: metrics/cohort.json
cohort: $(STAMP)
	$(RUN) python -m pipeline.tools.check
	$(RUN) dvc repro cohort

test: $(STAMP)
	$(RUN) python -m pytest -q

# Fashion-MNIST for `target.benchmark: fashion_mnist`, into <target.root>/FashionMNIST/raw/ (datasets/ by default):
# Debian's dataset-fashion-mnist package, installed through apt where apt is (as root or through `sudo -n`),
# else torchvision's download where there is a network. The pipeline never downloads at run time.
DEBIAN_FASHION_MNIST := /usr/share/datasets/fashion-mnist
data-fashion-mnist: $(STAMP)
	@if [ ! -d $(DEBIAN_FASHION_MNIST) ] && command -v apt-get >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y dataset-fashion-mnist; \
	  else sudo -n apt-get install -y dataset-fashion-mnist; fi \
	  || echo "apt could not install dataset-fashion-mnist: trying torchvision's download"; fi
	$(RUN) python -m pipeline.tools.get_data fashion-mnist --source $(DEBIAN_FASHION_MNIST) --download

# The room probe: the teacher, the students and the cohort's networks alone, 3 seeds, on compare.room_setting's target
# (Fashion-MNIST: `make data-fashion-mnist` first), and the criterion they meet or not: metrics/room_fashion_mnist.json.
# `python -m pipeline.tools.room --commands` prints the commands that queue the tables on that setting.
room: $(STAMP)
	$(RUN) python -m pipeline.tools.room

compare: $(STAMP)
	$(RUN) python -m pipeline.tools.compare

compare-ablation: $(STAMP)
	$(RUN) python -m pipeline.tools.compare --branch ablation

compare-distill: $(STAMP)
	$(RUN) python -m pipeline.tools.compare --branch distill

compare-token: $(STAMP)
	$(RUN) python -m pipeline.tools.compare --branch token

compare-cohort: $(STAMP)
	$(RUN) python -m pipeline.tools.compare --branch cohort

# CPU inference throughput of the teacher and the student (needs `make compress` first): metrics/throughput.json
bench: $(STAMP)
	$(RUN) python -m pipeline.tools.bench

# Training step time of every compression method (each student's, the cohort's), interleaved in one process,
# periodic work timed apart (needs `make compress` first): metrics/bench_steps.json
bench-steps: $(STAMP)
	$(RUN) python -m pipeline.tools.bench_steps

# A stage's start-up cost and a return to params already run (needs `make repro` first): metrics/bench_dvc.json
bench-dvc: $(STAMP)
	$(RUN) python -m pipeline.tools.bench_dvc

# `make repro` from 3 fresh clones of HEAD, stage by stage (a quiet machine only): metrics/bench_repro.json
bench-repro: $(STAMP)
	$(RUN) VENV=$(abspath $(VENV)) python -m pipeline.tools.bench_repro

# The default's metrics under another CPU's kernels (capped on this one), read against the committed comparison's
# seed interval: metrics/travel.json (a fresh clone's `make repro`; slower than native kernels)
travel: $(STAMP)
	$(RUN) VENV=$(abspath $(VENV)) python -m pipeline.tools.travel

# On a GPU: training images/s and peak memory of fine-tuning, dual-teacher and ZSCL steps (open_clip ViT-B-16, random
# weights, bf16, batch 64, 224 px) and the students' inference images/s, on synthetic data (no `make repro` needed):
# metrics/bench_gpu.json. Refused without CUDA, in a line that gives the CPU smoke form.
bench-gpu: $(STAMP)
	$(RUN) python -m pipeline.tools.bench_gpu

# Peak resident memory of prepare, pretrain, prototypes and train@<task> on generated folder benchmarks of
# 2,000 and 20,000 images (streaming data, README "Real scale"): metrics/bench_memory.json
bench-memory: $(STAMP)
	$(RUN) python -m pipeline.tools.bench_memory

clean-venv:
	rm -rf $(VENV)
