#!/usr/bin/env bash
# One prepared run for a machine with a CUDA GPU: the CUDA tests, then the
# speed benchmark on the GPU. Results go to $OUT (default benchmarks/out/gpu).
# Usage, from the repository root with the project installed:
#   bash benchmarks/gpu_check.sh
set -euo pipefail
out="${OUT:-benchmarks/out/gpu}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python -c "import torch; assert torch.cuda.is_available(), 'torch finds no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$out/gpu.txt"
python -m pytest -q tests/nuonuo_core/test_cuda.py 2>&1 | tee "$out/tests.txt"
python -m benchmarks.speed --device cuda --sizes "${SIZES:-1000,20000,100000,1000000}" --out "$out/speed" 2>&1 | tee "$out/speed.txt"
