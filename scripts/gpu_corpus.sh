#!/usr/bin/env bash
# Build gpu_corpus/ (git-ignored, a few MiB) for scripts/gpu_check.sh step 4: float16 log-mel of a
# seeded sample of the mini pretraining corpus (tiny when mini is not built) in train/, and the
# probe's labelled ESC-50 / Speech Commands clips in probe/, each with meta.json (the index) and
# SHA256SUMS. Run here, where the corpus is built ($BENCH_DATA or the user cache); the GPU machine
# gets it with the checkout (the device tool carries ignored paths only when named: carry
# ["wheelhouse", "gpu_corpus"], 64 MiB in all). Options go to `python -m upstreams.m2d.carried_corpus`:
#
#   bash scripts/gpu_corpus.sh                       # defaults: 6 MiB of training log-mel, 4 clips x 20 classes per probe set
#   bash scripts/gpu_corpus.sh --profile tiny --root .cache/test-data
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${GPU_CORPUS:-gpu_corpus}
"$PY" -m upstreams.m2d.carried_corpus "$OUT" "$@"
total=$(du -sk "$OUT" | cut -f1)
wheels=$( [ -d wheelhouse ] && du -sk wheelhouse | cut -f1 || echo 0)
echo "gpu_corpus: $OUT holds $((total / 1024)) MiB; with wheelhouse/ $(((total + wheels) / 1024)) MiB of the 64 MiB that travel"
[ $((total + wheels)) -lt $((64 * 1024)) ] || { echo "gpu_corpus: over 64 MiB with wheelhouse/: lower --train-mib" >&2; exit 1; }
