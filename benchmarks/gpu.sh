#!/usr/bin/env bash
# The GPU benchmarks in one run, within 8 minutes on one GPU: results/*_gpu.{md,json} (the device is named
# in each file).  Needs a Python environment with jaxlmm installed and a CUDA-enabled jax; no R (the CPU
# runs time lme4 in the same run; the GPU files report jaxlmm's figures, cold and warm).
# Not yet run: no GPU has been lent to a session since it was written.
set -euo pipefail
cd "$(dirname "$0")/.."
export JAXLMM_BENCH_SUFFIX=gpu
python -c "import jax; print('devices:', jax.devices())"
timeout 170 python benchmarks/traits.py --skip-r
timeout 150 python benchmarks/kinship.py --skip-external
timeout 100 python benchmarks/insteval.py --skip-r --repeat 2
timeout 60 python benchmarks/inference.py --skip-r
timeout 420 python benchmarks/scan.py --gpu-workload
timeout 120 python benchmarks/glmm.py --skip-r --traits 10000   # GLMMs: single fits and 10,000 binary traits  # 1000 traits x 100k synthetic markers: time and device memory
