#!/usr/bin/env bash
# GPU check on one H100/H200 (< 8 minutes): prints one table (see bench/gpu_check.py).
# The GPU image has torch, transformers, peft, accelerate, safetensors, tokenizers, typer, rich, pandas,
# pyyaml: the source tree runs as is (no install, no internet needed).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export LFPO_BENCH_CACHE="${LFPO_BENCH_CACHE:-/tmp/lfpo-bench-cache}" LFPO_BENCH_PROGRESS=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 480 python3 bench/gpu_check.py
