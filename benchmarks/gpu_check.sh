#!/usr/bin/env bash
# The CUDA paths, on a machine with a GPU (CI has none); sized for about 8 minutes on one H200:
#   bash benchmarks/gpu_check.sh
# 1. installs vitnas from this working tree into a fresh venv; 2. runs the tests marked `cuda`;
# 3. exactness on the GPU and eager-vs-cudagraph latency per axis (benchmarks/cuda_check.py);
# 4. `search run --runtime cudagraph --dtype float16` on a DeiT-S-shaped base at 60% of its latency, 30 trials,
#    its winner retrained and re-measured in a fresh process (run does both); 5. the runtime table (benchmarks/runtimes.py) on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VITNAS_GPU_VENV:-/tmp/vitnas-gpu-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet -e ".[dev]"
py="$venv/bin/python"
export VITNAS_CACHE=${VITNAS_CACHE:-/tmp/vitnas-gpu-cache}
"$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
echo "== tests marked cuda"
"$py" -m pytest -q -p no:cacheprovider -m cuda tests
echo "== exactness and latency per axis on the GPU"
"$py" benchmarks/cuda_check.py
echo "== search: cudagraph, float16, 60% of the base model's latency, 30 trials"
cfg=configs/deit_s_digits.yaml
budget=$("$py" -c "
from search.setup import prepare
p = prepare('$cfg', 'cuda', 'cudagraph', 'float16', log=lambda *a: None)
print(round(0.6 * p.base_latency.median_ms, 4))")
"$py" -m search run --config $cfg --device cuda --runtime cudagraph --dtype float16 --budget-ms "$budget" \
  --trials 30 --out results/gpu-check
echo "== the shipped (retrained) winner, re-measured by run in a fresh process, next to the base model"
head -12 results/gpu-check/summary.md
echo "== the runtime table on the GPU"
"$py" benchmarks/runtimes.py --config $cfg --device cuda --runtimes cudagraph,torch-eager --ratio 0.5 \
  --trials 30 --out results/gpu-runtimes
