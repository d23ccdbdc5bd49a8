#!/usr/bin/env bash
# The CUDA paths, on a machine with a GPU (CI has none); sized for about 8 minutes on one H200:
#   bash benchmarks/gpu_check.sh
# 1. installs vitnas's needs: from ./.whl (wheels carried to a machine without network, into /tmp/site), else
#    from this working tree into a fresh venv; 2. runs the tests marked `cuda`; 3. exactness on the GPU and
#    eager-vs-cudagraph latency per axis (benchmarks/cuda_check.py); 4. `search run --runtime cudagraph
#    --dtype float16` on a DeiT-S-shaped base at 60% of its latency, 30 trials, its winner retrained and
#    re-measured in a fresh process (run does both); 5. the runtime table (benchmarks/runtimes.py) on the GPU.
# Each step has a time cap so that one slow step cannot starve the rest; a step that fails or runs out is
# reported and the next one runs. With $OUT set, the search's summary and CSVs are copied there.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  py=python3
else
  venv=${VITNAS_GPU_VENV:-/tmp/vitnas-gpu-venv}
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet -e ".[dev]" || exit 1
  py="$venv/bin/python"
fi
export VITNAS_CACHE=${VITNAS_CACHE:-/tmp/vitnas-gpu-cache} PYTHONUNBUFFERED=1
"$py" -c "import torch, timm, optuna; print('torch', torch.__version__, torch.cuda.get_device_name(0), '| timm', timm.__version__, '| optuna', optuna.__version__)" || exit 1
failed=()
step() {  # step NAME CAP_SECONDS COMMAND...
  local name=$1 cap=$2; shift 2
  echo "== $name (cap ${cap} s, at ${SECONDS} s)"
  timeout "$cap" "$@"; local rc=$?
  [ $rc -eq 0 ] || { echo "!! $name: exit $rc$([ $rc -eq 124 ] && echo ', out of time')"; failed+=("$name"); }
}
step "tests marked cuda" 150 "$py" -m pytest -q -p no:cacheprovider -m cuda tests
step "exactness and latency per axis on the GPU" 150 "$py" benchmarks/cuda_check.py
cfg=configs/deit_s_digits.yaml
search() {
  local budget
  budget=$("$py" -c "
from search.setup import prepare
p = prepare('$cfg', 'cuda', 'cudagraph', 'float16', log=lambda *a: None)
print(round(0.6 * p.base_latency.median_ms, 4))" | tail -1) || return 1  # training logs come first
  echo "budget: $budget ms (60% of the base model's cudagraph float16 latency)"
  "$py" -m search run --config $cfg --device cuda --runtime cudagraph --dtype float16 --budget-ms "$budget" \
    --trials 30 --out results/gpu-check || return 1
  echo "-- the shipped (retrained) winner, re-measured by run in a fresh process, next to the base model"
  head -14 results/gpu-check/summary.md
}
export -f search; export py cfg  # `timeout` runs programs, not functions
step "search: cudagraph, float16, 60% of the base model's latency, 30 trials" 300 bash -c search
step "the runtime table on the GPU" $((540 - SECONDS > 30 ? 540 - SECONDS : 30)) "$py" benchmarks/runtimes.py \
  --config $cfg --device cuda --runtimes cudagraph,torch-eager --ratio 0.5 --trials 30 --out results/gpu-runtimes
if [ -n "${OUT:-}" ]; then
  for f in results/gpu-check/summary.md results/gpu-check/pareto.csv results/gpu-check/best/metrics.json \
           results/gpu-runtimes/cross.csv; do [ -f "$f" ] && cp "$f" "$OUT/$(echo "$f" | tr / _)"; done
fi
echo "== done in ${SECONDS} s; failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
